"""``make bench BENCH_ARGS="--only cluster"``: past one machine (issue #18).

- **Failover time**: two projector processes on the same projections, one active, one standing
  by (services/projector/lease.py); the active one is killed with SIGKILL while heartbeats
  trickle in; the figure is the time from the kill to the standby's first commit (the
  checkpoint of ``utilization`` moving again), next to the standby's retry period
  (``RETRY_S``), the bound the design gives.
- **Ingest on a three-node R3 cluster** (tests/cluster.py starts three nats-servers of
  deploy/nats/cluster-node.conf on this machine) next to a single nats-server in the same run:
  the same backlog published to each (acknowledged publishes/s), then drained through every
  projection by one projector process (events/s).

Every server here shares the machine's cores: three nats-servers replicating to each other on
2 cores measure the cost of replication on one host, not a cluster's throughput on three.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import anyio
import msgspec

from fleetward import projections
from fleetward.schemas import new_id
from fleetward.schemas.events import Heartbeat
from fleetward.schemas.subjects import subject_of
from fleetward.services.auth.store import AuthStore
from fleetward.services.config import Settings
from fleetward.services.db import q
from fleetward.services.projector.consumers import by_stream, durable_name
from fleetward.services.projector.lease import RETRY_S
from fleetward.services.runtime.connect import Runtime, ensure_database, open_runtime
from fleetward.services.runtime.embedded import database_url
from tests.bench.run import (
    Figure,
    backlog,
    ingest,
    median_of,
    publish_backlog,
    say,
    start_projector,
)
from tests.cluster import jetstream_ready, start_cluster
from tests.helpers import HARNESS, as_harness, now

TRICKLE_S = 0.005  # a heartbeat every 5 ms while the failover is timed


async def _sessions(rt: Runtime) -> list[tuple[str, int, bool]]:
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(q("lease_sessions"))
    return [(r["durable"], r["pid"], r["active"]) for r in rows]


async def _checkpoint(rt: Runtime, projection: str) -> int:
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(q("projections_list"))
    return next(int(r["checkpoint"]) for r in rows if r["projection"] == projection)


async def _until(check: Callable[[], Awaitable[bool]], deadline_s: float, what: str) -> None:
    deadline = time.monotonic() + deadline_s
    while not await check():
        if time.monotonic() > deadline:
            raise SystemExit(f"cluster bench: timed out waiting for {what}")
        await anyio.sleep(0.01)


async def failover_once(rt: Runtime, log: Path) -> float:
    """Seconds from SIGKILL of the active projector to the standby's first commit."""
    first = start_projector(rt, log, [])
    second = None
    stop = anyio.Event()

    async def trickle() -> None:
        while not stop.is_set():
            beat = Heartbeat(id=new_id(), actor="bench-failover", at=now(), agent="bench-failover")
            await rt.js.publish(subject_of(beat), msgspec.json.encode(beat))
            await anyio.sleep(TRICKLE_S)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(trickle)

            durables = {durable_name(*group) for group in by_stream(projections.ALL)}

            async def first_active() -> bool:
                rows = await _sessions(rt)
                return {d for d, pid, active in rows if pid == first.pid and active} == durables

            await _until(first_active, 60, "the first projector to hold every lease")
            second = start_projector(rt, log, [])

            async def standing_by() -> bool:
                rows = await _sessions(rt)
                standby = {d for d, pid, active in rows if pid == second.pid and not active}
                return standby == durables

            await _until(standing_by, 60, "the second projector to stand by")
            await anyio.sleep(1.0)  # both settled
            before = await _checkpoint(rt, "utilization")
            first.send_signal(signal.SIGKILL)
            killed = time.perf_counter()

            async def moved() -> bool:
                return await _checkpoint(rt, "utilization") > before

            await _until(moved, 60, "the standby's first commit")
            took = time.perf_counter() - killed
            stop.set()
        return took
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)


async def _stored(rt: Runtime) -> int:
    """Events in the streams the projections read."""
    streams = {p.stream for p in projections.ALL}
    total = 0
    for stream in streams:
        total += int((await rt.js.stream_info(stream)).state.messages or 0)
    return total


async def _publish_rate(rt: Runtime, items: list[tuple[str, bytes]]) -> float:
    started = time.perf_counter()
    await publish_backlog(rt, items)
    return len(items) / (time.perf_counter() - started)


async def cluster_figures(args: argparse.Namespace) -> list[Figure]:
    """Failover time, and publish and ingest on three R3 nodes next to one node (see above)."""
    home = Path(tempfile.mkdtemp(prefix="fleetward-bench-cluster-"))
    settings = Settings.from_env({**os.environ, "FLEETWARD_HOME": str(home)})
    log = home / "projector.log"
    n = args.cluster_events
    failovers: list[float] = []
    rates: dict[str, list[float]] = {"single": [], "r3": []}
    ingests: dict[str, list[float]] = {"single": [], "r3": []}
    async with open_runtime(settings, identity=as_harness(settings), embed=True) as rt:
        for _ in range(args.runs):
            failovers.append(await failover_once(rt, log))
            say(f"  failover: standby's first commit {failovers[-1]:.3f} s after the SIGKILL")
        cluster = start_cluster(home / "cluster", AuthStore(settings.auth_dir))
        try:
            server = database_url(rt.database_url, "postgres")
            r3_settings = replace(
                settings,
                nats_url=",".join(node.url for node in cluster.nodes),
                database_url=await ensure_database(server, "fleetward_r3"),
                stream_replicas=3,
            )
            async with open_runtime(r3_settings, identity=HARNESS, prepare=False) as probe:
                await jetstream_ready(probe.nc)
            async with open_runtime(r3_settings, identity=HARNESS) as r3:
                for i in range(args.runs):  # interleaved: neither gets the warmer caches
                    for layout, target in (("single", rt), ("r3", r3)):
                        items = backlog(n, max(1, n // 10), args.seed + i)
                        rates[layout].append(await _publish_rate(target, items))
                        del items
                        gc.collect()
                        rate, _ = await ingest(target, await _stored(target), log, "one")
                        ingests[layout].append(rate)
                        say(f"  {layout}: published {rates[layout][-1]:,.0f}/s, "
                            f"ingest {rate:,.0f} events/s")  # fmt: skip
        finally:
            cluster.stop()
    fail = median_of(failovers)
    pub, ing = median_of(rates["r3"]), median_of(ingests["r3"])
    one_pub, one_ing = statistics.median(rates["single"]), statistics.median(ingests["single"])
    setup = f"{n:,} events, 3 nats-servers on this machine's {os.cpu_count()} cores"
    return [
        Figure("projector failover (SIGKILL of the active -> the standby's first commit)",
               fail[0], "s", "standby retry period, s", RETRY_S, fail[0] / RETRY_S,
               "a few seconds", fail[1], fail[2], len(failovers)),
        Figure(f"acknowledged publishes on a three-node R3 cluster, {setup}", pub[0], "events/s",
               "one nats-server, events/s", one_pub, pub[0] / one_pub, "(context)", pub[1],
               pub[2], args.runs),
        Figure(f"ingest from a three-node R3 cluster, {setup}", ing[0], "events/s",
               "from one nats-server, events/s", one_ing, ing[0] / one_ing, "(context)", ing[1],
               ing[2], args.runs),
    ]  # fmt: skip
