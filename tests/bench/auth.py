"""What authentication costs (issue #13): the same work on a server with Fleetward's
authentication (operator mode, per-identity permissions) and on one without, in one run.

- agents publishing their own events (each on its own connection, acknowledged publishes);
- claims (tests/bench/claims.py) with the agents' own credentials;
- raw consumption of the stream (what the projector's ingest is bounded by);
- connects: agents signing in with credentials (the server verifies the JWT chain) against
  plain connects, and how fast Fleetward issues credentials;
- revocation: pushing an account with many revoked keys to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import psutil
from nats.aio.client import Client as NatsClient
from nats.aio.client import RawCredentials

from fleetward.schemas import new_id
from fleetward.schemas.events import Heartbeat
from fleetward.schemas.grants import inbox_prefix
from fleetward.schemas.streams import all_streams
from fleetward.services.auth.server import push_account
from fleetward.services.auth.store import AuthStore
from fleetward.services.config import Settings
from fleetward.services.jetstream.connection import connect, connect_as
from fleetward.services.jetstream.publish import encode
from fleetward.services.jetstream.streams import ensure_streams
from fleetward.services.runtime.connect import Runtime, connect_nats, open_runtime
from fleetward.services.runtime.embedded import EmbeddedNats
from tests.bench.claims import Connect, run_claims_bench
from tests.helpers import as_harness

Say = Callable[[str], None]


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted`` (servers started later inherit
    it); returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def with_credentials(rt: Runtime) -> Connect:
    store = AuthStore(rt.settings.auth_dir)

    async def open_as(identity: str) -> NatsClient:
        return await connect_as(rt.nats_url, store.ensure(identity), identity)

    return open_as


def without_credentials(url: str) -> Connect:
    async def open_as(identity: str) -> NatsClient:
        return await connect(url, name=identity)

    return open_as


async def agents_publishing(open_as: Connect, agents: int, each: int) -> float:
    """Events/s: ``agents`` agents, each on its own connection, publishing ``each`` heartbeats
    (acknowledged) on their own subjects."""
    conns = [await open_as(f"pub-{i:04d}") for i in range(agents)]

    async def one(i: int, nc: NatsClient) -> None:
        js, agent = nc.jetstream(timeout=10), f"pub-{i:04d}"
        for _ in range(each):
            hb = Heartbeat(id=new_id(), actor=agent, at=datetime.now(UTC), agent=agent)
            await js.publish(f"fw.hb.{agent}", encode(hb), headers={"Nats-Msg-Id": hb.id})

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i, nc in enumerate(conns):
            tg.start_soon(one, i, nc)
    rate = agents * each / (time.perf_counter() - started)
    for nc in conns:
        await nc.close()
    return rate


Fleet = list[tuple[str, Path | None]]  # identity, its credentials file (None: no authentication)


@dataclass(frozen=True)
class SignIns:
    """One run of a fleet signing in: connects/s over every client process together; how many
    failed; the server's CPU seconds over the sign-ins and its RSS (MiB) holding them all; the
    client processes' CPU seconds."""

    per_s: float
    failed: int
    server_cpu_s: float
    server_rss_mib: float
    clients_cpu_s: float


def _sign_in_worker(
    job: tuple[str, list[tuple[str, str | None]], int], go: Any, release: Any, results: Any
) -> None:
    """A client process (spawned). ``job``: the server's URL, the share of the fleet to sign
    in (identity, credentials file or None) and how many at a time. Reads the credentials, then
    once ``go`` is set signs them in; reports ``("done", connected, failed, finished at
    (time.time()), CPU seconds)`` on ``results``; holds the connections until ``release`` is
    set."""
    url, share, in_flight = job
    raise_fd_limit(len(share) + 256)
    held = [(i, None if c is None else RawCredentials(Path(c).read_text())) for i, c in share]
    results.put(("ready", 0, 0, 0.0, 0.0))
    go.wait()
    asyncio.run(_sign_in_share(url, held, in_flight, release, results))


async def _sign_in_share(
    url: str, share: list[tuple[str, RawCredentials | None]], in_flight: int, release: Any,
    results: Any,
) -> None:  # fmt: skip
    """Sign ``share`` in with nats-py, the credentials held in memory: nats-py 2.16 reads a
    credentials file one byte at a time on every sign-in (about 2 ms of CPU), which would
    measure the clients rather than the server on a small machine."""
    cpu = time.process_time()
    held: list[NatsClient] = []
    failed = 0
    limiter = anyio.Semaphore(in_flight)

    async def one(identity: str, creds: RawCredentials | None) -> None:
        nonlocal failed
        auth: dict[str, Any] = {}
        if creds is not None:
            auth = {"user_credentials": creds, "inbox_prefix": inbox_prefix(identity)}
        async with limiter:
            nc = NatsClient()
            try:
                await nc.connect(url, name=identity, allow_reconnect=False, **auth)
            except Exception:  # counted: any failure is a failed sign-in
                failed += 1
                return
            held.append(nc)

    async with anyio.create_task_group() as tg:
        for identity, creds in share:
            tg.start_soon(one, identity, creds)
    results.put(("done", len(held), failed, time.time(), time.process_time() - cpu))
    await anyio.to_thread.run_sync(release.wait)
    async with anyio.create_task_group() as tg:
        for nc in held:
            tg.start_soon(nc.close)


def sign_in_rate(url: str, fleet: Fleet, server_pid: int, *, procs: int, in_flight: int) -> SignIns:
    """``fleet`` (identity, credentials file or None) signing in to the server at ``url``
    (process ``server_pid``) from ``procs`` client processes, ``in_flight`` connects at a time
    over all of them. Every connection is held until all have connected (as a fleet would hold
    them), then closed. The clock runs from the moment the client processes (started and
    imported beforehand) are told to go until the last one has connected its share."""
    spawn = multiprocessing.get_context("spawn")
    go, release, results = spawn.Event(), spawn.Event(), spawn.Queue()
    each = max(1, in_flight // procs)
    jobs = [(url, [(i, None if c is None else str(c)) for i, c in fleet[p::procs]], each)
            for p in range(procs)]  # fmt: skip
    workers = [
        spawn.Process(target=_sign_in_worker, args=(job, go, release, results)) for job in jobs
    ]
    for w in workers:
        w.start()
    try:
        for _ in workers:
            results.get(timeout=120)  # ready
        server = psutil.Process(server_pid)
        cpu = server.cpu_times()
        started = time.time()
        go.set()
        done = [results.get(timeout=1800) for _ in workers]
        after = server.cpu_times()
        rss = server.memory_info().rss / 2**20
    finally:
        release.set()
        for w in workers:
            w.join(120)
            if w.is_alive():
                w.kill()
    connected = sum(d[1] for d in done)
    return SignIns(
        per_s=connected / (max(d[3] for d in done) - started),
        failed=sum(d[2] for d in done),
        server_cpu_s=(after.user + after.system) - (cpu.user + cpu.system),
        server_rss_mib=rss,
        clients_cpu_s=sum(d[4] for d in done),
    )


def server_pid(store: Path) -> int:
    """The pid of the nats-server (a child of this process) whose data is under ``store``
    (``EmbeddedNats.start(store, ...)``). Raises ``RuntimeError`` when there is none."""
    config = str(store / "nats-server.conf")
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.name() == "nats-server" and config in child.cmdline():
                return int(child.pid)
    raise RuntimeError(f"no nats-server of {store} among this process's children")


async def measure(
    runs: int, on: Callable[[], Awaitable[float]], off: Callable[[], Awaitable[float]]
) -> tuple[list[float], list[float]]:
    """``runs`` measurements of each, alternating (off first), so drift hits both alike."""
    ons: list[float] = []
    offs: list[float] = []
    for _ in range(runs):
        offs.append(await off())
        ons.append(await on())
    return ons, offs


def issue_rates(store: AuthStore, fleet: int) -> tuple[float, float, float]:
    """Issue credentials to ``fleet-00000`` ... in ``store``; credentials/s over all of them,
    over the first 1,000 and over the last 1,000 (the same when ``fleet`` is smaller)."""
    tail = min(1000, fleet)
    marks: dict[int, float] = {}
    started = time.perf_counter()
    for i in range(fleet):
        if i in (tail, fleet - tail):
            marks[i] = time.perf_counter()
        store.issue(f"fleet-{i:05d}")
    ended = time.perf_counter()
    first = tail / (marks.get(tail, ended) - started)
    last = tail / (ended - marks[fleet - tail]) if fleet - tail in marks else first
    return fleet / (ended - started), first, last


async def sign_in_runs(
    runs: int, servers: tuple[tuple[str, int, Fleet], tuple[str, int, Fleet]], procs: int,
    in_flight: int, say: Say,
) -> dict[str, tuple[list[float], list[float]]]:  # fmt: skip
    """``runs`` sign-ins of the fleet on each of ``servers`` (with authentication, without:
    URL, the server's pid, the fleet), alternating, the one without first. Returns
    ``{figure: (with, without)}``: connects/s; the server's CPU milliseconds per connect
    (``connect_server_cpu``, the clients' ``connect_clients_cpu``); its RSS in MiB holding the
    fleet; failed connects."""
    signed: tuple[list[SignIns], list[SignIns]] = ([], [])
    for _ in range(runs):
        for side in (1, 0):
            url, pid, fleet = servers[side]
            one = await anyio.to_thread.run_sync(
                functools.partial(sign_in_rate, url, fleet, pid, procs=procs, in_flight=in_flight)
            )
            signed[side].append(one)
            say(
                f"  sign-ins {('on', 'off')[side]}, {procs} processes, {in_flight} in flight: {one}"
            )
    figures: dict[str, Callable[[SignIns], float]] = {
        "connect": lambda r: r.per_s,
        "connect_server_cpu": lambda r: 1000 * r.server_cpu_s / len(servers[0][2]),
        "connect_clients_cpu": lambda r: 1000 * r.clients_cpu_s / len(servers[0][2]),
        "connect_server_rss": lambda r: r.server_rss_mib,
        "connect_failed": lambda r: float(r.failed),
    }
    return {
        k: ([of(r) for r in signed[0]], [of(r) for r in signed[1]]) for k, of in figures.items()
    }


async def auth_bench(
    *, runs: int, agents: int, each: int, claim_agents: int, claim_tasks: int,
    fleet: int, revoked: int, procs: int, in_flight: int, say: Say,
) -> dict[str, tuple[list[float], list[float]]]:  # fmt: skip
    """The measurements, as ``{figure: (with authentication, without)}`` per run; sign-ins from
    ``procs`` client processes, ``in_flight`` at a time over all of them. ``issue_tail`` is the
    issue rate over the last 1,000 identities of ``fleet`` against the first 1,000."""
    raise_fd_limit(2 * fleet + 1024)
    home = Path(tempfile.mkdtemp(prefix="fleetward-bench-auth-"))
    settings = Settings.from_env({**os.environ, "FLEETWARD_HOME": str(home)})
    out: dict[str, tuple[list[float], list[float]]] = {}
    async with open_runtime(settings, identity=as_harness(settings), embed=True) as on:
        server = EmbeddedNats.start(home / "nats-open", None)
        try:
            plain = await connect_nats(server.url, creds=None)
            js = plain.jetstream(timeout=10)
            await ensure_streams(js, all_streams(settings.retention_days))
            off = replace(on, nats_url=server.url, nc=plain, js=js)
            with_creds, without = with_credentials(on), without_credentials(server.url)

            out["publish"] = await measure(
                runs,
                lambda: agents_publishing(with_creds, agents, each),
                lambda: agents_publishing(without, agents, each),
            )
            say(f"  agents publishing (on, off): {out['publish']}")

            async def claims(rt: Runtime, open_as: Connect) -> float:
                figures = await run_claims_bench(rt, claim_agents, claim_tasks, connect=open_as)
                return figures.claims_per_s

            out["claims"] = await measure(
                runs, lambda: claims(on, with_creds), lambda: claims(off, without)
            )
            say(f"  claims/s (on, off): {out['claims']}")

            store = AuthStore(settings.auth_dir)
            overall, first, last = issue_rates(store, fleet)
            out["issue"], out["issue_tail"] = ([overall], [0.0]), ([last], [first])
            say(f"  credentials issued/s, {fleet:,} identities: {overall:,.0f} (the first 1,000: "
                f"{first:,.0f}/s, the last 1,000: {last:,.0f}/s)")  # fmt: skip
            identities = [f"fleet-{i:05d}" for i in range(fleet)]
            signing_in: Fleet = [(i, store.creds_path(i)) for i in identities]
            plain_fleet: Fleet = [(i, None) for i in identities]
            servers = (
                (on.nats_url, server_pid(settings.home / "nats"), signing_in),
                (server.url, server.process.pid, plain_fleet),
            )
            out |= await sign_in_runs(runs, servers, procs, in_flight, say)
            say(f"  connects/s, {fleet:,} agents (on, off): {out['connect']}")

            for i in range(revoked):
                store.revoke(f"fleet-{i:05d}")
            pushes = []
            for _ in range(runs):
                started = time.perf_counter()
                await push_account(on.nats_url, store)
                pushes.append(time.perf_counter() - started)
            size = len(store.account_jwt())
            out["revoke"] = (pushes, [float(size)])
            say(f"  account push with {revoked:,} revoked keys ({size:,} bytes): {pushes}")
            await plain.close()
        finally:
            server.stop()
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)
