"""Claims benchmark: agents contending for tasks through the agent client, next to a plain
JetStream publish round trip measured in the same run.

A claim reads the task's subject (last sequence, then its events) and publishes with
Nats-Expected-Last-Subject-Sequence: several round trips, so its latency is reported both in
seconds and as a multiple of one publish round trip.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
from nats.aio.client import Client as NatsClient

from fleetward.schemas import new_id
from fleetward.schemas.events import Heartbeat
from fleetward.schemas.roles import ROLE_AUTHORITY
from fleetward.services.client import AgentClient, ClaimLost, FleetClient
from fleetward.services.jetstream.connection import connect_as
from fleetward.services.jetstream.publish import encode
from fleetward.services.runtime.connect import Runtime
from tests.bench.kit import percentile
from tests.helpers import creds

Connect = Callable[[str], Awaitable[NatsClient]]
"""A connection acting as an identity (with its credentials, or none on an open server)."""


@dataclass(frozen=True)
class ClaimFigures:
    claims_per_s: float
    attempts_per_s: float
    latency_p50_s: float
    latency_p99_s: float
    publish_rtt_p50_s: float
    publish_rtt_p99_s: float
    publishes_per_s: float  # plain publishes with the same concurrency


async def publish_baseline(rt: Runtime, publishers: int, each: int) -> tuple[list[float], float]:
    """Round trips of plain JetStream publishes (with Nats-Msg-Id), ``publishers`` at once."""
    latencies: list[float] = []

    async def one(i: int) -> None:
        agent = f"bench-pub-{i:03d}"
        for _ in range(each):
            hb = Heartbeat(id=new_id(), actor=agent, at=datetime.now(UTC), agent=agent)
            started = time.perf_counter()
            await rt.js.publish(f"fw.hb.{agent}", encode(hb), headers={"Nats-Msg-Id": hb.id})
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(publishers):
            tg.start_soon(one, i)
    return latencies, publishers * each / (time.perf_counter() - started)


async def run_claims_bench(
    rt: Runtime, agents: int = 100, tasks: int = 1000, seed: int = 1, *,
    connect: Connect | None = None,
) -> ClaimFigures:  # fmt: skip
    """``agents`` agents claim ``tasks`` tasks until every task is held; each agent keeps what
    it wins and picks its next target at random among tasks it has not seen taken. Each
    connects with ``connect`` (default: its own credentials)."""
    if connect is None:

        async def connect(identity: str) -> NatsClient:
            return await connect_as(rt.nats_url, creds(rt, identity), identity)

    run = new_id()[-8:]
    async with FleetClient(await connect(ROLE_AUTHORITY), ROLE_AUTHORITY) as authority:
        await authority.ensure_roles("bench", ["operator"], "the claims benchmark")
    ops = FleetClient(await connect("user:bench"), "user:bench")
    names = [f"task-{run}-{i:05d}" for i in range(tasks)]
    for name in names:
        await ops.create_task(name, project="bench", title=name)
    await ops.close()
    clients = []
    for i in range(agents):
        name = f"claimer-{run}-{i:03d}"
        client = AgentClient(await connect(name), name)
        await client.register(name=f"claimer {i}", owner="bench", team="bench",
                              max_concurrent_tasks=tasks)  # fmt: skip
        clients.append(client)
    rng = random.Random(seed)
    open_tasks = set(names)
    latencies: list[float] = []
    won = 0

    async def claimer(client: AgentClient) -> None:
        nonlocal won
        while open_tasks:
            task = rng.choice(sorted(open_tasks)) if len(open_tasks) < 64 else rng.choice(names)
            if task not in open_tasks:
                continue
            started = time.perf_counter()
            try:
                await client.claim(task, lease_s=600)
                won += 1
            except ClaimLost:
                pass
            latencies.append(time.perf_counter() - started)
            open_tasks.discard(task)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(claimer, client)
    elapsed = time.perf_counter() - started
    for client in clients:
        await client.close()
    rtts, publish_rate = await publish_baseline(rt, agents, max(10, 2000 // agents))
    return ClaimFigures(
        claims_per_s=won / elapsed,
        attempts_per_s=len(latencies) / elapsed,
        latency_p50_s=statistics.median(latencies),
        latency_p99_s=percentile(latencies, 0.99),
        publish_rtt_p50_s=statistics.median(rtts),
        publish_rtt_p99_s=percentile(rtts, 0.99),
        publishes_per_s=publish_rate,
    )
