"""``make bench BENCH_ARGS="--only cluster"``: past one machine (issue #18).

- **Failover time**: two projector processes on the same projections, one active, one standing
  by (services/projector/lease.py); the active one is killed with SIGKILL while heartbeats
  trickle in; the figure is the time from the kill to the standby's first commit (the first
  commit of ``utilization`` begun after the kill), next to the standby's retry period
  (``RETRY_S``), the bound the design gives.
- **Ingest on a three-node R3 cluster** (tests/cluster.py starts three nats-servers of
  deploy/nats/cluster-node.conf on this machine) next to a single nats-server in the same run:
  the same backlog published to each (acknowledged publishes/s), read by raw consumption
  (msgs/s), then drained through every projection by one projector process (events/s, timed
  until every checkpoint reaches its stream's last sequence: ``run.ingest``). An ingest faster
  than the raw consumption of the same servers ends the run.

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
from datetime import UTC, datetime
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
    raw_consumption,
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


async def _last_commit(rt: Runtime, projection: str) -> tuple[int, datetime]:
    """``projection``'s checkpoint and the start of the transaction that committed it (its
    ``updated_at``: Postgres's ``now()``, on this machine's clock)."""
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(q("projections_list"))
    row = next(r for r in rows if r["projection"] == projection)
    return int(row["checkpoint"]), row["updated_at"]


async def _until(check: Callable[[], Awaitable[bool]], deadline_s: float, what: str) -> None:
    deadline = time.monotonic() + deadline_s
    while not await check():
        if time.monotonic() > deadline:
            raise SystemExit(f"cluster bench: timed out waiting for {what}")
        await anyio.sleep(0.01)


async def failover_once(rt: Runtime, log: Path) -> float:
    """Seconds from SIGKILL of the active projector to the standby's first commit. Timed once
    the first holds every lease, the second stands by, and the first has committed heartbeats
    stored after that (both running as they will at the kill, no sleep); the standby's commit
    is the first of ``utilization`` whose transaction began after the killed process was
    reaped, observed by polling every 10 ms."""
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
            stood_by, _ = await _last_commit(rt, "utilization")

            async def committing() -> bool:  # the active one applies the trickle meanwhile
                return (await _last_commit(rt, "utilization"))[0] > stood_by

            await _until(committing, 60, "a commit of the active projector past that point")
            first.send_signal(signal.SIGKILL)
            killed = time.perf_counter()
            first.wait()  # reaped: it can begin no transaction any more
            dead = datetime.now(UTC)

            async def standby_committed() -> bool:
                # a commit that began after the death is the standby's; one of the killed
                # process's in flight (begun before, landing after) is not
                return (await _last_commit(rt, "utilization"))[1] > dead

            await _until(standby_committed, 60, "the standby's first commit")
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


async def _measure(
    rt: Runtime, layout: str, n: int, seed: int, log: Path
) -> tuple[float, float, float]:
    """Publish a backlog of ``n`` more events to ``rt``'s streams, then drain all they hold:
    acknowledged publishes/s, raw consumption (msgs/s), and ingest by one projector process
    (events/s), which ``ingest`` refuses to report above raw consumption. ``layout`` names the
    servers in the line printed."""
    items = backlog(n, max(1, n // 10), seed)
    started = time.perf_counter()
    await publish_backlog(rt, items)
    published = len(items) / (time.perf_counter() - started)
    del items
    gc.collect()
    raw = await raw_consumption(rt)
    rate, _ = await ingest(rt, await _stored(rt), log, "one", raw=raw)
    say(f"  {layout}: published {published:,.0f}/s, raw consumption {raw:,.0f} msgs/s, "
        f"ingest {rate:,.0f} events/s")  # fmt: skip
    return published, raw, rate


async def cluster_figures(args: argparse.Namespace) -> list[Figure]:
    """Failover time, and publish and ingest on three R3 nodes next to one node (see above)."""
    home = Path(tempfile.mkdtemp(prefix="fleetward-bench-cluster-"))
    settings = Settings.from_env({**os.environ, "FLEETWARD_HOME": str(home)})
    log = home / "projector.log"
    n = args.cluster_events
    failovers: list[float] = []
    rates: dict[str, list[float]] = {"single": [], "r3": []}
    ingests: dict[str, list[float]] = {"single": [], "r3": []}
    raws: dict[str, list[float]] = {"single": [], "r3": []}  # each ingest's bound
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
                        measured = await _measure(target, layout, n, args.seed + i, log)
                        for series, value in zip((rates, raws, ingests), measured, strict=True):
                            series[layout].append(value)
        finally:
            cluster.stop()
    fail = median_of(failovers)
    pub, ing = median_of(rates["r3"]), median_of(ingests["r3"])
    one_pub, one_ing = statistics.median(rates["single"]), statistics.median(ingests["single"])
    raw_r3 = statistics.median(raws["r3"])
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
        Figure(f"ingest from a three-node R3 cluster against raw consumption from it, {setup}",
               ing[0], "events/s", "raw consumption from the R3 cluster, msgs/s", raw_r3,
               ing[0] / raw_r3, "(context: < 1x, else the run fails)", ing[1], ing[2],
               args.runs),
    ]  # fmt: skip
