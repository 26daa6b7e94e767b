"""Our own processes never outlive or double up (services/runtime: ownership, orphans, keeper).

- ``fleetward dev`` (what ``make run`` runs) killed with SIGKILL takes its nats-server and
  Postgres with it; started again on the same data it runs exactly one of each, with the data
  intact; a second one beside it is refused in one line (exit 2) naming the running one.
- The orphan sweep stops only servers of its own folder (never another folder's, never a
  process that a stale ``postmaster.pid`` names by a reused pid).
- A test session that died is swept by the next one; a live one's folder is left alone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import asyncpg
import psutil
import pytest

from fleetward.services.auth.store import AuthStore
from fleetward.services.runtime.connect import connect_nats
from fleetward.services.runtime.embedded import EmbeddedNats
from fleetward.services.runtime.orphans import nats_servers_in, postmaster_of, stop_orphans
from fleetward.services.runtime.ownership import LOCK_FILE
from tests.helpers import session_folder_owned, sweep_dead_sessions, wait_for

ROOT = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "fleetward.services.cli")
START_S = 60.0  # generous: a bound on a start under load, not a timing check
GONE_S = 30.0  # the same for the servers to exit after their owner's death


def _dev_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWARD_")}
    return env | {"FLEETWARD_HOME": str(home)}


def _start_dev(home: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*CLI, "dev", "--simulate", "3", "--every", "0.5"],
            cwd=ROOT,
            env=_dev_env(home),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _line(proc: subprocess.Popen[bytes], log: Path, pattern: str) -> re.Match[str]:
    """The first match of ``pattern`` in ``proc``'s output, once it shows."""

    async def found() -> re.Match[str] | None:
        text = await anyio.Path(log).read_text(errors="replace")
        if proc.poll() is not None:
            raise AssertionError(f"fleetward dev exited {proc.returncode}:\n{text}")
        return re.search(pattern, text)

    return await wait_for(found, START_S, f"{pattern!r} in {log}")


def _postgres_on(pgdata: Path) -> list[psutil.Process]:
    """Every postmaster serving ``pgdata`` (a Postgres process whose parent is none)."""
    serving = [
        p
        for p in psutil.process_iter(["name", "cwd"])
        if p.info["name"] == "postgres" and p.info["cwd"] == str(pgdata)
    ]
    pids = {p.pid for p in serving}
    return [p for p in serving if p.ppid() not in pids]


def _keepers_of(pgdata: Path) -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if "fleetward.services.runtime.keeper" in (p.info["cmdline"] or [])
        and str(pgdata) in (p.info["cmdline"] or [])
    ]


async def _counts(home: Path) -> tuple[int, int]:
    """(tasks on the board in Postgres, messages in FW_EVENTS on NATS) of the running dev."""
    urls = json.loads((home / "runtime.json").read_text())
    conn = await asyncpg.connect(urls["database_url"])
    try:
        tasks = int(await conn.fetchval("SELECT count(*) FROM fleet.tasks"))
    finally:
        await conn.close()
    admin = AuthStore(home / "auth").creds_path("user:admin")
    nc = await connect_nats(urls["nats_url"], creds=admin, reconnect=False)
    try:
        events = (await nc.jetstream().stream_info("FW_EVENTS")).state.messages
    finally:
        await nc.close()
    return tasks, events


def _gone(process: psutil.Process) -> bool:
    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def _all_gone(processes: list[psutil.Process]) -> bool:
    return all(_gone(p) for p in processes)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.mark.slow
async def test_dev_killed_with_sigkill_then_started_again_runs_one_of_each_on_intact_data(
    tmp_path: Path, server_home: Path
) -> None:
    home = server_home
    pgdata = home / "pg"
    first = _start_dev(home, tmp_path / "first.log")
    second: subprocess.Popen[bytes] | None = None
    servers: list[psutil.Process] = []
    try:
        await _line(first, tmp_path / "first.log", r"tasks [1-9]")
        tasks, events = await _counts(home)
        servers = [*nats_servers_in(home), *_postgres_on(pgdata), *_keepers_of(pgdata)]
        assert len(servers) == 3, servers

        first.send_signal(signal.SIGKILL)
        first.wait()
        await wait_for(lambda: _all_gone(servers), GONE_S, f"the servers {servers} to exit")

        second = _start_dev(home, tmp_path / "second.log")
        await _line(second, tmp_path / "second.log", "Fleetward is running")
        assert len(list(nats_servers_in(home))) == 1
        assert len(_postgres_on(pgdata)) == 1
        assert len(_keepers_of(pgdata)) == 1
        tasks_after, events_after = await _counts(home)
        assert tasks_after >= tasks >= 1
        assert events_after >= events >= 1

        with anyio.fail_after(START_S):
            third = await anyio.run_process(
                [*CLI, "dev"], cwd=ROOT, env=_dev_env(home), check=False
            )
        refusal = third.stderr.decode().strip()
        assert third.returncode == 2, refusal
        assert refusal.count("\n") == 0, refusal
        assert f"{home} is in use by pid {second.pid}" in refusal, refusal
        assert "dev" in refusal  # the holder's command line
        servers = [*nats_servers_in(home), *_postgres_on(pgdata), *_keepers_of(pgdata)]
        assert len(servers) == 3, servers  # the refused one started nothing

        second.send_signal(signal.SIGINT)

        async def exited() -> bool:
            return second.poll() is not None

        await wait_for(exited, GONE_S, "fleetward dev to exit on SIGINT")
        assert second.returncode == 0, (tmp_path / "second.log").read_text()
        await wait_for(lambda: _all_gone(servers), GONE_S, f"the servers {servers} to exit")
    finally:
        for proc in (first, second):
            if proc is not None:
                _stop(proc)
        for server in (*nats_servers_in(home), *_postgres_on(pgdata)):
            server.kill()


async def test_the_sweep_stops_only_its_folders_servers(
    tmp_path: Path, auth: AuthStore, pg_server: str, session_folder: Path
) -> None:
    ours = EmbeddedNats.start(tmp_path / "ours" / "nats", auth)
    theirs = EmbeddedNats.start(tmp_path / "theirs" / "nats", auth)
    pgdata = tmp_path / "ours" / "pg"
    pgdata.mkdir()
    # stale postmaster.pid files whose pid was reused: by this process (no Postgres), and by
    # the session's Postgres, which serves another folder (none with FLEETWARD_DATABASE_URL)
    session = postmaster_of(session_folder / "pg")
    reused = [os.getpid()] + ([session.pid] if session is not None else [])
    try:
        for n, pid in enumerate(reused):
            (pgdata / "postmaster.pid").write_text(f"{pid}\n/elsewhere\n")
            assert postmaster_of(pgdata) is None

            stopped = stop_orphans(tmp_path / "ours", pgdata)

            assert stopped == ([f"nats-server (pid {ours.process.pid})"] if n == 0 else [])
            assert not (pgdata / "postmaster.pid").exists()  # Postgres would refuse to start
            assert ours.process.poll() is not None
            assert theirs.process.poll() is None
            assert session is None or session.is_running()
    finally:
        ours.stop()
        theirs.stop()


def test_a_dead_sessions_folder_is_swept_and_a_live_ones_left(
    tmp_path: Path, auth: AuthStore
) -> None:
    parent = tmp_path / "tmp"
    parent.mkdir()
    lockless = parent / "fleetward-tests-lockless"  # being created, or not ours: left alone
    lockless.mkdir()
    claim = (
        "import sys, pathlib, tempfile\n"
        "from fleetward.services.runtime.ownership import FolderLock\n"
        "folder = pathlib.Path(tempfile.mkdtemp(prefix='fleetward-tests-', dir=sys.argv[1]))\n"
        "FolderLock.create(folder)\n"
        "print(folder)\n"
    )
    made = subprocess.run(
        [sys.executable, "-c", claim, str(parent)], check=True, capture_output=True, text=True
    )
    dead = Path(made.stdout.strip())  # its owner has exited, holding the lock to the end
    assert (dead / LOCK_FILE).exists()
    left = EmbeddedNats.start(dead / "nats" / "test0", auth)  # one a dead session left
    try:
        with session_folder_owned(parent) as live:
            running = EmbeddedNats.start(live / "nats" / "test0", auth)
            try:
                swept = sweep_dead_sessions(parent)
                assert running.process.poll() is None
                assert live.is_dir()
            finally:
                running.stop()
        assert swept == [
            f"stopped nats-server (pid {left.process.pid}) left running in {dead}, "
            "by a test session that died"
        ]
        assert left.process.poll() is not None
        assert not dead.exists()
        assert lockless.is_dir()
        assert not live.exists()
    finally:
        left.stop()
