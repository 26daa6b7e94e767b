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
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio

from fleetward.schemas import new_id
from fleetward.schemas.events import Heartbeat
from fleetward.services.client import AgentClient, ClaimLost, FleetClient
from fleetward.services.jetstream.publish import encode
from fleetward.services.runtime.connect import Runtime
from tests.bench.kit import percentile
from tests.helpers import creds


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
    rt: Runtime, agents: int = 100, tasks: int = 1000, seed: int = 1
) -> ClaimFigures:
    """``agents`` agents claim ``tasks`` tasks until every task is held; each agent keeps what
    it wins and picks its next target at random among tasks it has not seen taken."""
    run = new_id()[-8:]
    ops = await FleetClient.connect(rt.nats_url, creds(rt, "user:bench"))
    names = [f"task-{run}-{i:05d}" for i in range(tasks)]
    for name in names:
        await ops.create_task(name, project="bench", title=name)
    await ops.close()
    clients = []
    for i in range(agents):
        client = await AgentClient.connect(rt.nats_url, creds(rt, f"claimer-{run}-{i:03d}"))
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
