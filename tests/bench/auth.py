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

import os
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import anyio
from nats.aio.client import Client as NatsClient

from fleetward.schemas import new_id
from fleetward.schemas.events import Heartbeat
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


async def connect_rate(open_as: Connect, agents: int, in_flight: int = 200) -> float:
    """Connects/s: ``agents`` agents signing in, ``in_flight`` at a time; each connection is
    held until all have connected (as a fleet would hold them), then closed."""
    held: list[NatsClient] = []
    limiter = anyio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with limiter:
            held.append(await open_as(f"fleet-{i:05d}"))

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(agents):
            tg.start_soon(one, i)
    rate = agents / (time.perf_counter() - started)
    async with anyio.create_task_group() as tg:
        for nc in held:
            tg.start_soon(nc.close)
    return rate


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


async def auth_bench(
    *, runs: int, agents: int, each: int, claim_agents: int, claim_tasks: int,
    fleet: int, revoked: int, say: Say,
) -> dict[str, tuple[list[float], list[float]]]:  # fmt: skip
    """The measurements, as ``{figure: (with authentication, without)}`` per run."""
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
            started = time.perf_counter()
            for i in range(fleet):
                store.issue(f"fleet-{i:05d}")
            out["issue"] = ([fleet / (time.perf_counter() - started)], [0.0])
            say(f"  credentials issued/s: {out['issue'][0][0]:,.0f}")
            out["connect"] = await measure(
                runs,
                lambda: connect_rate(with_creds, fleet),
                lambda: connect_rate(without, fleet),
            )
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
