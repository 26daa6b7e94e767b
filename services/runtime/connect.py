"""One way to get connections: to the servers named in the settings, or to embedded ones.

``open_runtime`` connects, refuses servers that are too old, creates or verifies the streams and
runs the migrations. Every failure is a ``FleetwardError`` whose text says what to fix.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio
import asyncpg
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from fleetward.schemas.grants import API_SERVICE, identity_kind
from fleetward.schemas.streams import all_streams
from fleetward.services import db, metrics
from fleetward.services.auth.store import AuthStore, identity_of
from fleetward.services.config import Settings
from fleetward.services.errors import FleetwardError
from fleetward.services.jetstream.connection import FleetwardNats, sign_in
from fleetward.services.jetstream.streams import ensure_streams
from fleetward.services.runtime.embedded import EmbeddedNats, EmbeddedPostgres, database_url
from fleetward.services.runtime.orphans import stop_orphans
from fleetward.services.runtime.ownership import FolderLock

MIN_NATS = (2, 11)
MIN_POSTGRES = 14
NATS_CONNECT_DEADLINE_S = 5.0  # the first connect, retries included
CLOSE_S = 5.0  # a connection of acting_as closes within this long, cancelled or not
DATABASE = "fleetward"

log = logging.getLogger("fleetward.runtime")


# Postgres settings of every session Fleetward opens for work. Safe for exactly-once: an
# asynchronous commit is still atomic and ordered, so a Postgres crash can only lose the newest
# batches together with their checkpoint, and the projector applies them again from the stream.
POSTGRES_SETTINGS = {"synchronous_commit": "off"}


class Writers:
    """Connections of their own for writers that commit one transaction after another (a
    projection runner: services/projector/runner.py), outside the pool: no pool round trip
    per commit, and their staging tables made once. Closed by their owner, or at the latest
    when the runtime closes (``close``)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._open: set[asyncpg.Connection] = set()

    async def connect(self) -> asyncpg.Connection:
        """A new connection with ``POSTGRES_SETTINGS`` (raises what asyncpg raises)."""
        conn = await asyncpg.connect(
            self.database_url, timeout=5, server_settings=dict(POSTGRES_SETTINGS)
        )
        self._open.add(conn)
        return conn

    async def release(self, conn: asyncpg.Connection) -> None:
        """Close ``conn`` (terminated if that takes more than 5 s or fails)."""
        self._open.discard(conn)
        if conn.is_closed():
            return
        try:
            with anyio.fail_after(5, shield=True):
                await conn.close()
        except Exception:
            conn.terminate()

    def terminate(self, conn: asyncpg.Connection) -> None:
        """Close ``conn`` at once, whatever it is doing (its owner gives it up midway)."""
        self._open.discard(conn)
        conn.terminate()

    async def close(self) -> None:
        """Close every connection still open."""
        for conn in list(self._open):
            await self.release(conn)


@dataclass
class Runtime:
    settings: Settings
    actor: str  # the identity of ``nc``'s credentials (services/auth)
    nats_url: str
    database_url: str
    nc: NatsClient
    js: JetStreamContext
    pool: asyncpg.Pool
    # the runtime's writer connections (copies made by ``replace`` share them)
    writers: Writers = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.writers is None:
            self.writers = Writers(self.database_url)


def check_nats_version(version: str) -> None:
    parts = version.lstrip("v").split("-")[0].split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise FleetwardError(f"cannot read the NATS server version {version!r}") from None
    if (major, minor) < MIN_NATS:
        raise FleetwardError(
            f"nats-server {version} is too old: Fleetward needs "
            f"{MIN_NATS[0]}.{MIN_NATS[1]} or newer "
            "(per-subject optimistic concurrency was fixed there); upgrade the server "
            "or point FLEETWARD_NATS_URL at a newer one"
        )


def credentials(settings: Settings, identity: str) -> Path:
    """The credentials file a process acts with: ``FLEETWARD_CREDS`` when set (whatever
    identity it holds), else ``identity``'s, issued from the signing keys in
    ``FLEETWARD_AUTH_DIR`` when this machine holds them (``fleetward dev``, the tests, an admin's
    machine). Raises ``FleetwardError`` when there is neither."""
    if settings.creds is not None:
        return settings.creds
    store = AuthStore(settings.auth_dir)
    if store.exists():
        return store.ensure(identity)
    raise FleetwardError(
        f"no credentials: set FLEETWARD_CREDS to a .creds file issued by Fleetward "
        f"('fleetward agents credentials ID', 'fleetward people add NAME'), or FLEETWARD_AUTH_DIR "
        f"to the folder with Fleetward's signing keys (none in {settings.auth_dir})"
    )


async def connect_nats(
    url: str, *, creds: Path | None, name: str | None = None, reconnect: bool = True
) -> NatsClient:
    """A connection to ``url`` acting as the identity of ``creds`` (a ``.creds`` file; replies
    come back on that identity's own inbox prefix, ``schemas/grants.py``). ``creds=None`` only
    reaches a server without authentication (the benchmark's baseline). Raises
    ``FleetwardError`` when the server cannot be reached, refuses the credentials, is older than
    2.11 or has JetStream off."""
    identity = identity_of(creds) if creds is not None else "anonymous"

    async def quiet(_exc: Exception) -> None:  # nats-py logs every failed attempt otherwise
        return None

    async def reconnected() -> None:
        metrics.NATS_RECONNECTS.inc()

    # With unlimited reconnects nats-py also retries the FIRST connect forever: bound it, so an
    # unreachable server is an error instead of a hang.
    nc = FleetwardNats()
    await sign_in(
        nc,
        url,
        creds=creds,
        identity=identity,
        deadline_s=NATS_CONNECT_DEADLINE_S,
        hint="; start it or fix FLEETWARD_NATS_URL",
        name=name or identity,
        connect_timeout=3,
        max_reconnect_attempts=-1 if reconnect else 0,
        allow_reconnect=reconnect,
        error_cb=quiet,
        reconnected_cb=reconnected,
        reconnect_time_wait=0.5,
    )
    try:  # nats-py exposes the server's INFO only as _server_info
        check_nats_version(str(nc._server_info.get("version", "")))
        if not nc._server_info.get("jetstream"):
            raise FleetwardError(f"NATS at {url} has JetStream off; start nats-server with -js")
    except FleetwardError:
        await nc.close()
        raise
    return nc


async def connect_postgres(url: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=5,
            server_settings=dict(POSTGRES_SETTINGS),
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise FleetwardError(
            f"cannot reach Postgres at {_redact(url)} ({type(exc).__name__}: {exc}); "
            "start it or fix FLEETWARD_DATABASE_URL"
        ) from None
    async with pool.acquire() as conn:
        version = conn.get_server_version()
    try:
        check_postgres_version(version.major, version.minor)
    except FleetwardError:
        await pool.close()
        raise
    return pool


def check_postgres_version(major: int, minor: int) -> None:
    if major < MIN_POSTGRES:
        raise FleetwardError(
            f"PostgreSQL {major}.{minor} is too old: Fleetward needs {MIN_POSTGRES} or newer; "
            "point FLEETWARD_DATABASE_URL at a newer server"
        )


def _redact(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


async def ensure_database(server_url: str, name: str) -> str:
    """Create database ``name`` on an embedded server if it is missing; return its URL."""
    conn = await asyncpg.connect(server_url)
    try:
        if not await conn.fetchval(db.q("database_exists"), name):
            await conn.execute(f'CREATE DATABASE "{name}"')  # an identifier: not a parameter
    finally:
        await conn.close()
    return database_url(server_url, name)


def runtime_file(home: Path) -> Path:
    return home / "runtime.json"


def discover(settings: Settings) -> tuple[str, str]:
    """URLs of the servers to use: the settings', else those of a running ``fleetward dev``."""
    if settings.nats_url and settings.database_url:
        return settings.nats_url, settings.database_url
    path = runtime_file(settings.home)
    found: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    nats_url = settings.nats_url or found.get("nats_url")
    database = settings.database_url or found.get("database_url")
    if not nats_url or not database:
        raise FleetwardError(
            f"no Fleetward to talk to under FLEETWARD_HOME={settings.home}: start one with "
            "'make run' (or 'fleetward dev'), set FLEETWARD_HOME to the one a running "
            "'fleetward dev' uses, or set FLEETWARD_NATS_URL and FLEETWARD_DATABASE_URL"
        )
    return nats_url, database


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    identity: str = "svc:projector",
    embed: bool = False,
    prepare: bool = True,
    pool_size: int = 10,
) -> AsyncIterator[Runtime]:
    """Connections to NATS and Postgres, acting as ``identity`` (or as ``FLEETWARD_CREDS``, see
    ``credentials``). With ``embed``, servers not named in the settings are started under
    ``settings.home``, NATS with authentication on (the signing keys in
    ``settings.auth_dir``, created when missing). With ``prepare``, streams and migrations are
    ensured."""
    async with AsyncExitStack() as stack:
        if embed:
            nats_url, database = await _start_embedded(settings, stack)
        else:
            nats_url, database = discover(settings)
        creds = credentials(settings, identity)
        nc = await connect_nats(nats_url, creds=creds)
        stack.push_async_callback(nc.close)
        pool = await connect_postgres(database, max_size=pool_size)
        stack.push_async_callback(pool.close)
        js = nc.jetstream(timeout=10)
        if prepare:
            parts = settings.heartbeat_partitions
            await ensure_streams(
                js,
                all_streams(settings.retention_days, parts or 1),
                settings.stream_replicas,
                transforms=parts is not None,  # unset: the stream's partitions stay as they are
            )
            async with pool.acquire() as conn:
                await db.migrate(conn)
        rt = Runtime(settings, identity_of(creds), nats_url, database, nc, js, pool)
        stack.push_async_callback(rt.writers.close)
        yield rt


@asynccontextmanager
async def acting_as(rt: Runtime, identity: str) -> AsyncIterator[Runtime]:
    """``rt`` with a NATS connection of ``identity``'s own (one credential per service, DESIGN
    3.7). The credential is, in order: none (``rt`` itself) when ``rt`` acts as ``identity``
    already; ``FLEETWARD_API_CREDS`` for ``svc:api``; one issued from the signing keys when
    this machine holds them; else ``rt`` itself when the process was given one credential
    (``FLEETWARD_CREDS``, a person's: the server judges what it may do). Raises
    ``FleetwardError`` as ``credentials`` does, and when a service would act as another service
    without that one's credentials (its subscriptions would be refused by the server, silently
    for the caller)."""
    store = AuthStore(rt.settings.auth_dir)
    settings = rt.settings
    if rt.actor == identity:
        yield rt
        return
    if identity == API_SERVICE and settings.api_creds is not None:
        own = settings.api_creds
        if identity_of(own) != API_SERVICE:
            raise FleetwardError(
                f"FLEETWARD_API_CREDS={own} holds {identity_of(own)}'s credentials, not "
                f"{API_SERVICE}'s ('fleetward auth service api')"
            )
    elif store.exists():
        own = store.ensure(identity)
    elif settings.creds is not None:
        if identity_kind(identity) == "svc" and identity_kind(rt.actor) == "svc":
            hint = "FLEETWARD_API_CREDS" if identity == API_SERVICE else "its own process"
            raise FleetwardError(
                f"{rt.actor} cannot act as {identity} without its credentials: give it "
                f"{hint} ('fleetward auth service {identity.split(':', 1)[1]}')"
            )
        yield rt
        return
    else:
        own = credentials(settings, identity)
    nc = await connect_nats(rt.nats_url, creds=own)
    try:
        yield replace(rt, actor=identity, nc=nc, js=nc.jetstream(timeout=10))
    finally:
        # closed even when the block is cancelled (a cancelled close leaves the socket open)
        with anyio.move_on_after(CLOSE_S, shield=True):
            await nc.close()


async def _start_embedded(settings: Settings, stack: AsyncExitStack) -> tuple[str, str]:
    """Own ``settings.home`` (one ``fleetward dev`` per data folder: ``FleetwardError`` naming
    the running one otherwise), stop what a dead owner left running there (one log line), then
    start the servers the settings do not name; each stops when ``stack`` closes, or when this
    process dies (``embedded.py``)."""
    home = settings.home
    lock = FolderLock.take(
        home, hint="stop that one first, or set FLEETWARD_HOME to another folder"
    )
    stack.callback(lock.release)  # the last thing to go: after the servers have stopped
    stopped = await anyio.to_thread.run_sync(stop_orphans, home, home / "pg")
    if stopped:
        log.warning(
            "stopped %s left running in %s by a Fleetward that died", " and ".join(stopped), home
        )
    nats_url = settings.nats_url
    if nats_url is None:
        store = AuthStore(settings.auth_dir).init()
        # on this (the main) thread: the server's parent-death signal follows the thread
        server = EmbeddedNats.start(home / "nats", store)
        stack.callback(server.stop)
        nats_url = server.url
    database = settings.database_url
    if database is None:
        pg = await anyio.to_thread.run_sync(EmbeddedPostgres.start, home / "pg")
        stack.callback(pg.stop)
        database = await ensure_database(pg.url, DATABASE)
    path = runtime_file(home)
    path.write_text(json.dumps({"nats_url": nats_url, "database_url": database}))
    stack.callback(path.unlink, missing_ok=True)
    return nats_url, database
