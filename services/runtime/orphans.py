"""Servers of ours left running by an owner that died, found and stopped.

"Ours" is decided by the data folder, never by a name or a port alone:

- a nats-server is ours when its configuration file (``-c``) lies inside the folder
  (``EmbeddedNats`` writes it there);
- a Postgres is ours when ``postmaster.pid`` of our data folder names a live ``postgres``
  process whose working folder or command line is that data folder.

Call ``stop_orphans`` only while holding the folder's lock (``ownership.FolderLock``): then no
live owner runs these servers, and whatever still runs there is an orphan. Servers of other
folders, and the machine's own services (5432, 4222), never match.

Stopping is clean: SIGTERM for nats-server (it flushes JetStream), a fast shutdown for Postgres
(SIGINT: transactions rolled back, a checkpoint written, as ``pg_ctl stop -m fast``); only a
server that outlasts its grace is killed harder.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil

NATS_STOP_S = 10.0  # nats-server flushes its streams and exits within this long of SIGTERM
POSTGRES_STOP_S = 30.0  # a fast shutdown ends within this long (it writes a checkpoint)
HARDER_S = 5.0  # after SIGQUIT (Postgres: immediate shutdown), before SIGKILL
STARTING_S = 30.0  # how long a pg_ctl or initdb of the folder may still be running


def stop_orphans(folder: Path, pgdata: Path | None) -> list[str]:
    """Stop the nats-servers configured inside ``folder`` and the Postgres of ``pgdata`` (when
    given); the caller holds ``folder``'s lock. Returns one phrase per server stopped, e.g.
    ``nats-server (pid 812)``, for the caller's log line. A ``postmaster.pid`` that names no
    Postgres of ``pgdata`` (a stale one, its pid reused) is removed: Postgres refuses to start
    beside it."""
    stopped = []
    for process in nats_servers_in(folder):
        stop(process, signal.SIGTERM, NATS_STOP_S)
        stopped.append(f"nats-server (pid {process.pid})")
    if pgdata is not None:
        pid = stop_postgres(pgdata)
        if pid is not None:
            stopped.append(f"Postgres (pid {pid})")
        else:
            (pgdata / "postmaster.pid").unlink(missing_ok=True)
    return stopped


def nats_servers_in(folder: Path) -> Iterator[psutil.Process]:
    """The running nats-servers whose configuration file lies inside ``folder``."""
    inside = folder.resolve()
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] != "nats-server":
            continue
        config = _option(process.info["cmdline"] or [], ("-c", "--config"))
        if config is not None and Path(config).resolve().is_relative_to(inside):
            yield process


def postmaster_of(pgdata: Path) -> psutil.Process | None:
    """The live postmaster that ``pgdata/postmaster.pid`` names, if it is a Postgres serving
    ``pgdata``; None otherwise (no file, a file being written, a dead or reused pid)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        process = psutil.Process(pid)
        if process.name() not in ("postgres", "postmaster"):
            return None
        data = pgdata.resolve()
        if Path(process.cwd()) == data or str(data) in process.cmdline():
            return process
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def stop_postgres(pgdata: Path, timeout: float = POSTGRES_STOP_S) -> int | None:
    """Stop the Postgres serving ``pgdata`` (fast shutdown), once any ``pg_ctl`` or ``initdb``
    still working on it has finished; its pid, or None when none was running."""
    for starting in _tools_on(pgdata):
        with contextlib.suppress(psutil.Error):
            starting.wait(STARTING_S)
    process = postmaster_of(pgdata)
    if process is None:
        return None
    stop(process, signal.SIGINT, timeout)
    return process.pid


def stop(process: psutil.Process, how: signal.Signals, timeout: float) -> None:
    """Send ``how`` and wait ``timeout`` seconds for the exit; then SIGQUIT (Postgres: an
    immediate shutdown) and SIGKILL, each after ``HARDER_S`` more. Gone already is fine."""
    for sig, wait in ((how, timeout), (signal.SIGQUIT, HARDER_S), (signal.SIGKILL, HARDER_S)):
        try:
            process.send_signal(sig)
            process.wait(wait)
            return
        except psutil.NoSuchProcess:
            return
        except psutil.TimeoutExpired:
            continue


def _tools_on(pgdata: Path) -> Iterator[psutil.Process]:
    """``pg_ctl`` or ``initdb`` processes working on ``pgdata`` (a start a dead owner left)."""
    data = str(pgdata.resolve())
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] in ("pg_ctl", "initdb") and data in (process.info["cmdline"] or []):
            yield process


def _option(cmdline: list[str], names: tuple[str, ...]) -> str | None:
    """The value of the first of ``names`` in ``cmdline`` (``-c FILE`` or ``-c=FILE``)."""
    for i, arg in enumerate(cmdline):
        if arg in names and i + 1 < len(cmdline):
            return cmdline[i + 1]
        for name in names:
            if arg.startswith(f"{name}="):
                return arg[len(name) + 1 :]
    return None
