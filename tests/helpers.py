"""Test helpers: waiting on conditions (never fixed sleeps), snapshots, event builders."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import asyncpg
import msgspec
from nats.errors import NoRespondersError

from fleetward.projections import ALL, Projection
from fleetward.schemas import new_id
from fleetward.schemas.events import RoleGranted
from fleetward.schemas.grants import Grants
from fleetward.schemas.headers import MSG_ID
from fleetward.schemas.roles import ROLE_AUTHORITY
from fleetward.schemas.streams import COMMANDS_STREAM
from fleetward.schemas.subjects import API_AGENTS_GET
from fleetward.services import db
from fleetward.services.api.tasks import serve_task_api
from fleetward.services.auth.store import AuthStore
from fleetward.services.client import AgentClient
from fleetward.services.config import Settings
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.projector.consumers import by_stream
from fleetward.services.projector.outbox import Outbox
from fleetward.services.projector.rebuild import catch_up
from fleetward.services.projector.runner import ProjectionRunner
from fleetward.services.runtime.connect import Runtime
from fleetward.services.runtime.embedded import database_url
from fleetward.services.runtime.orphans import stop_orphans
from fleetward.services.runtime.ownership import FolderLock

T = TypeVar("T")

SESSION_PREFIX = "fleetward-tests-"  # a test session's folder for its servers' data


@contextlib.contextmanager
def session_folder_owned(parent: Path) -> Iterator[Path]:
    """A new folder ``parent/fleetward-tests-*`` owned by this process (its lock, held from
    the moment it is visible) while the block runs; then deleted."""
    folder = Path(tempfile.mkdtemp(prefix=SESSION_PREFIX, dir=parent))
    lock = FolderLock.create(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        lock.release()


def sweep_dead_sessions(parent: Path) -> list[str]:
    """For every session folder in ``parent`` whose owner died: stop its servers
    (``stop_orphans``: nats-servers configured in it, the Postgres of its ``pg``) and delete
    it. Folders of live sessions, and folders without a lock file, are left alone. One line per
    folder swept, saying what was stopped (every folder swept is deleted)."""
    swept = []
    for folder in sorted(parent.glob(f"{SESSION_PREFIX}*")):
        lock = FolderLock.take_abandoned(folder)
        if lock is None:
            continue
        try:
            stopped = stop_orphans(folder, folder / "pg")
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            lock.release()
        if stopped:
            what = f"stopped {' and '.join(stopped)} left running in {folder}"
        else:
            what = f"deleted {folder} (nothing of it was running)"
        swept.append(f"{what}, by a test session that died")
    return swept


# The tests' own identity: the harness writes history "by other means" (any subject, any
# actor), as a stream's owner could; admission still judges every event it writes. Services
# under test run with their own credentials (run_services, acting_as).
HARNESS = "svc:root"
HARNESS_GRANTS = Grants(publish=(">",), subscribe=(">",), respond=True)


# The people the tests act as, made admins at the start of every test's stream (roles are
# events: schemas/roles.py); tests of roles use other names, with the roles they need.
TEST_ADMINS = ("admin", "o", "ops", "op", "p", "r", "alice", "alice@example", "ann", "bench", "bob",
               "bob@example", "pass", "planner", "rev", "reviewer", "sre")  # fmt: skip


async def grant_test_admins(rt: Runtime) -> None:
    """``TEST_ADMINS`` granted ``admin`` by the signing keys' holder (the harness may publish
    as anyone), every acknowledgement awaited at once."""
    grants = [RoleGranted(**envelope(ROLE_AUTHORITY), person=p, role="admin") for p in TEST_ADMINS]
    await publish_many(rt.js, grants)


def as_harness(where: Settings | AuthStore) -> str:
    """``HARNESS``, with its credential issued in the signing keys of ``where`` (created if
    missing): ``open_runtime(settings, identity=as_harness(settings))``."""
    store = (where if isinstance(where, AuthStore) else AuthStore(where.auth_dir)).init()
    if not store.creds_path(HARNESS).exists():
        store.issue(HARNESS, grants=HARNESS_GRANTS)
    return HARNESS


def creds(rt: Runtime | Settings, identity: str) -> Path:
    """``identity``'s credentials file, issued from the test's signing keys on first use."""
    settings = rt.settings if isinstance(rt, Runtime) else rt
    return AuthStore(settings.auth_dir).ensure(identity)


def settings_env(settings: Settings, **more: str) -> dict[str, str]:
    """The ``FLEETWARD_*`` variables that give ``settings`` again (its servers, home, keys and
    replica count), with ``more`` over them."""
    assert settings.nats_url and settings.database_url
    env = {
        "FLEETWARD_NATS_URL": settings.nats_url,
        "FLEETWARD_DATABASE_URL": settings.database_url,
        "FLEETWARD_HOME": str(settings.home),
        "FLEETWARD_AUTH_DIR": str(settings.auth_dir),
    }
    if settings.stream_replicas is not None:
        env["FLEETWARD_STREAM_REPLICAS"] = str(settings.stream_replicas)
    return env | more


def person(env: dict[str, str], name: str) -> Path:
    """``user:<name>``'s credentials, for a ``fleetward`` subprocess run with ``env``."""
    return AuthStore(Path(env["FLEETWARD_AUTH_DIR"])).ensure(f"user:{name}")


async def wait_for(
    check: Callable[[], Awaitable[T]],
    timeout: float = 30.0,  # noqa: ASYNC109  # a polling deadline, not a cancellation scope
    what: str = "condition",
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.05)


async def http_get(port: int, path: str) -> tuple[int, str]:
    """A plain HTTP/1.1 GET against 127.0.0.1:port; (status code, body)."""
    chunks: list[bytes] = []
    with anyio.fail_after(5):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            with contextlib.suppress(anyio.EndOfStream):
                while True:
                    chunks.append(await stream.receive())
    head, _, body = b"".join(chunks).decode().partition("\r\n\r\n")
    return int(head.split(" ", 2)[1]), body


def now() -> datetime:
    return datetime.now(UTC)


def envelope(actor: str) -> dict[str, Any]:
    return {"id": new_id(), "actor": actor, "at": now()}


async def project_all(
    rt: Runtime, projections: tuple[Projection, ...] = ALL, *, outbox: bool = True
) -> None:
    """Run every projection until it has applied everything in its stream: one runner per
    stream, as the projector runs them. With ``outbox``, publish what the folds emitted (the
    board's verdicts, inbox commands) and apply again, until nothing more is emitted, as the
    projector's outbox does."""
    box = Outbox(rt)
    while True:
        for group in by_stream(projections):
            await run_to_end(ProjectionRunner(rt, *group))
        if not outbox or not await box.publish_once():
            return


async def run_to_end(runner: ProjectionRunner) -> None:
    """Position ``runner`` and apply until its consumer has nothing left."""
    await runner.position()
    try:
        await catch_up(runner)
    finally:
        assert runner.consumer is not None
        await runner.consumer.stop()


async def snapshot(rt: Runtime, projections: tuple[Projection, ...] = ALL) -> dict[str, list[Any]]:
    """Every row of every table the projections own, in key order, plus dead letters."""
    out: dict[str, list[Any]] = {}
    async with rt.pool.acquire() as conn:
        for projection in projections:
            for table in projection.tables:
                order = ", ".join(table.key)
                rows = await conn.fetch(f"SELECT * FROM {table.name} ORDER BY {order}")
                out[table.name] = [tuple(r.values()) for r in rows]
        rows = await conn.fetch(
            "SELECT projection, seq, subject, reason, raw FROM fleetward.dead_letters "
            "ORDER BY projection, seq"
        )
        out["dead_letters"] = [tuple(r.values()) for r in rows]
    return out


@contextlib.asynccontextmanager
async def migrated_before(
    pg_server: str, prefix: str
) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """A new database on ``pg_server`` with every migration before the one whose file name starts
    with ``prefix`` applied: a connection to it and that migration's SQL, for a test to put rows
    in, then upgrade. The database is dropped after the block."""
    name = f"fleetward_upgrade_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server)
    await admin.execute(f"CREATE DATABASE {name}")
    conn = await asyncpg.connect(database_url(pg_server, name))
    try:
        every = db.migrations()
        at = next(i for i, (file, _) in enumerate(every) if file.startswith(prefix))
        for _, sql in every[:at]:
            await conn.execute(sql)
        yield conn, every[at][1]
    finally:
        await conn.close()
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@contextlib.asynccontextmanager
async def task_api(rt: Runtime) -> AsyncIterator[None]:
    """The task API (``fw.api.*``) served on ``rt`` while the block runs, answering already."""

    async def answers() -> bool:
        with contextlib.suppress(NoRespondersError):
            reply = await rt.nc.request(API_AGENTS_GET, msgspec.json.encode({"agent": "-"}))
            return "agent" in msgspec.json.decode(reply.data)
        return False

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve_task_api, rt)
        await wait_for(answers, what="the task API")
        yield
        tg.cancel_scope.cancel()


async def agent(rt: Runtime, name: str, **profile: object) -> AgentClient:
    """A registered agent on its own connection (close it)."""
    client = await AgentClient.connect(rt.nats_url, creds(rt, name))
    await client.register(name=name, owner="o", team="t", **profile)  # type: ignore[arg-type]
    return client


async def past_the_duplicate_window(rt: Runtime) -> None:
    """Shorten FW_COMMANDS' duplicate window to half a second and wait until the server has
    forgotten the message ids stored so far: a probe id stored now is stored again (not a
    duplicate) once the window has passed for it, so for everything stored before it too. The
    server drops old ids on a timer of its own, later under load (a fixed 1 s sleep was not
    always enough: the command's republish was then dropped as a duplicate)."""
    config = (await rt.js.stream_info(COMMANDS_STREAM)).config
    config.duplicate_window = 0.5
    await rt.js.update_stream(config)
    probe = {MSG_ID: new_id()}
    await rt.js.publish("fw.cmd.probe.svc:window", b"{}", headers=probe)

    async def forgotten() -> bool:
        ack = await rt.js.publish("fw.cmd.probe.svc:window", b"{}", headers=probe)
        return not ack.duplicate

    await wait_for(forgotten, 60, "the server to forget the message ids of the window")
