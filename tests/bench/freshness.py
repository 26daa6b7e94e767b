"""Freshness: publish -> visible in ``fleet.utilization`` while a steady load of heartbeats
arrives, and, for the slow probes, where their time went.

A probe is a heartbeat of the agent ``probe`` whose ``message`` numbers it, published every
``PROBE_EVERY_S``; a watcher polls the view and stamps each number when it shows, until the
last one has (a probe still unseen when the load stops counts too). The clock starts once the
projector shows a first probe (``_started``): its start after a restart is not freshness. With
``trace``, the projector process writes its timeline (services/trace.py) and ``timeline`` lays
each probe's path along it: stored in the stream, buffered by the consumer, taken in a batch,
its commit begun, a connection in hand, fenced, written, committed; and what else happened in
the process then (garbage collections, event-loop stalls, fleet gauge readings) and in Postgres
(checkpoints, from its log). Times are unix times of one machine's clock.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import psutil
from nats.js.errors import NotFoundError

from fleetward.projections.utilization import partition
from fleetward.schemas import new_id
from fleetward.schemas.events import Heartbeat
from fleetward.schemas.partitions import partition_filter
from fleetward.schemas.streams import HEARTBEATS_STREAM
from fleetward.schemas.subjects import subject_of
from fleetward.services.config import Settings
from fleetward.services.runtime.connect import Runtime, open_runtime
from tests.bench import partitions as partitions_bench
from tests.bench.kit import percentile
from tests.bench.run import (
    ROOT,
    Figure,
    backlog,
    ingest,
    publish_backlog,
    say,
    start_projector_with,
    wait_all_applied,
)
from tests.bench.sql import bench_q
from tests.helpers import as_harness

TARGET_S = 0.1  # freshness p99 (issue #18)
PROBE_EVERY_S = 0.02  # 50 probes a second: 0.5% of the default load, enough for a p99.9
PROBE = "probe"
PROBE_SUBJECT = subject_of(Heartbeat(id=new_id(), actor=PROBE, at=datetime.now(UTC), agent=PROBE))
# the steps of a probe's path, in order: (label, where its time comes from)
STEPS = (
    ("stored", "sent"),
    ("arrived", "stored"),
    ("taken", "arrived"),
    ("began", "taken"),
    ("acquired", "began"),
    ("fenced", "acquired"),
    ("wrote", "fenced"),
    ("committed", "wrote"),
    ("seen", "committed"),
)


@dataclass
class Load:
    """What the projector spent on a run's load: its CPU seconds (user + system) over the run,
    and the events published meanwhile (probes included)."""

    cpu_s: float
    events: int

    @property
    def us_per_event(self) -> float:
        return self.cpu_s / self.events * 1e6 if self.events else 0.0


@dataclass
class Probe:
    """One probe: its number, when it was published and when the view first showed it."""

    n: int
    sent: float
    seen: float

    @property
    def lag(self) -> float:
        return self.seen - self.sent


async def freshness(
    rt: Runtime,
    rate: int,
    agents: int,
    seconds: float,
    log: Path,
    *,
    trace: Path | None = None,
    root: Path = ROOT,
    partitions: int = 1,
) -> tuple[list[Probe], Load]:
    """The probes seen in ``fleet.utilization`` while ``rate`` heartbeats/s from ``agents``
    agents are published, over ``seconds``, by a ``fleetward projector`` started for it (with
    ``trace``: its timeline written there; ``root``: the checkout whose code it runs), and what
    the projector spent on them. With ``partitions`` > 1 (FW_HEARTBEATS stored in that many
    partitions: ``use_partitions``), one ``fleetward projector --partition i/n`` process per
    partition instead, their CPU summed; the probes are one agent's, so they measure the
    partition that agent's heartbeats go to."""
    env = {} if trace is None else {"FLEETWARD_TRACE": str(trace),
                                    "FLEETWARD_TRACE_SUBJECT": PROBE_SUBJECT}  # fmt: skip
    layout = [[]] if partitions == 1 else [["--partition", f"{i}/{partitions}"]
                                            for i in range(partitions)]  # fmt: skip
    procs = [start_projector_with(rt, log, args, env, root) for args in layout]
    try:
        async with anyio.create_task_group() as tg:
            for proc in procs:
                tg.start_soon(_exited, proc, log)
            if partitions == 1:
                await wait_all_applied(rt)
            else:
                await _partitions_applied(rt, partitions)
            await _started(rt)
            cpus = [psutil.Process(proc.pid) for proc in procs]
            before = sum(sum(c.cpu_times()[:2]) for c in cpus)
            probes, events = await _measure(rt, rate, agents, seconds)
            load = Load(sum(sum(c.cpu_times()[:2]) for c in cpus) - before, events)
            tg.cancel_scope.cancel()
        return probes, load
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


async def use_partitions(rt: Runtime, partitions: int, agents: int) -> None:
    """FW_HEARTBEATS again, stored in ``partitions`` partitions, utilization emptied
    (tests/bench/partitions.py ``fresh_stream``), and one heartbeat of each of ``agents``
    agents published: the freshness runs then find every agent's row, as with one partition."""
    await partitions_bench.fresh_stream(rt, partitions)
    at = datetime.now(UTC)
    enc = msgspec.json.Encoder()
    beats = []
    for i in range(agents):
        a = f"agent-{i:06d}"
        beats.append((f"fw.hb.{a}", enc.encode(Heartbeat(id=new_id(), actor=a, at=at, agent=a))))
    await publish_backlog(rt, beats)


async def _partitions_applied(rt: Runtime, partitions: int, deadline_s: float = 600) -> None:
    """Until each partition's checkpoint reaches the last heartbeat stored in it (its
    subjects' last sequence: a partition's consumer sees only those)."""
    heads = {}
    for i in range(partitions):
        try:
            last = await rt.js.get_last_msg(HEARTBEATS_STREAM, partition_filter(i))
        except NotFoundError:
            continue  # nothing stored in it yet
        heads[partition(i, partitions).name] = int(last.seq or 0)
    await wait_all_applied(rt, deadline_s, heads)


async def _started(rt: Runtime) -> None:
    """Until the view shows a probe numbered 0, published now: the projector has started,
    taken its lease, positioned and applies. Freshness is measured from there on (its start
    after a restart is not; the cluster section measures a takeover). The consumers' being
    drained says nothing of it: the last run's projector drained them."""
    hb = Heartbeat(id=new_id(), actor=PROBE, at=datetime.now(UTC), agent=PROBE, message="0")
    await rt.nc.publish(PROBE_SUBJECT, msgspec.json.encode(hb))
    async with rt.pool.acquire() as conn:
        with anyio.fail_after(300):
            while await conn.fetchval(bench_q("bench_probe")) != "0":  # noqa: ASYNC110
                await anyio.sleep(0.01)


async def _exited(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Raise once ``proc`` has exited (a projector that cannot start must not hang the run)."""
    code = await anyio.to_thread.run_sync(proc.wait, abandon_on_cancel=True)
    raise RuntimeError(f"the projector exited with {code}; see {log}")


async def _measure(rt: Runtime, rate: int, agents: int, seconds: float) -> tuple[list[Probe], int]:
    """The probes seen, and the events published (load and probes)."""
    enc = msgspec.json.Encoder()
    at = datetime.now(UTC)
    sent: dict[int, float] = {}
    probes: list[Probe] = []
    stop = anyio.Event()

    published = 0

    async def load() -> None:
        nonlocal published
        tick = 0.05
        per_tick = int(rate * tick)
        i = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            for _ in range(per_tick):
                a = f"agent-{i % agents:06d}"
                i += 1
                hb = Heartbeat(id=new_id(), actor=a, at=at, agent=a, status="busy")
                await rt.nc.publish(subject_of(hb), enc.encode(hb))
            published = i
            await anyio.sleep(max(0.0, tick - (time.perf_counter() - t0)))

    async def probe() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            hb = Heartbeat(id=new_id(), actor=PROBE, at=at, agent=PROBE, message=str(n))
            sent[n] = time.time()
            await rt.nc.publish(PROBE_SUBJECT, enc.encode(hb))
            await anyio.sleep(PROBE_EVERY_S)

    async def watch() -> None:
        seen = 0
        async with rt.pool.acquire() as conn:  # after the load stops: until the last probe shows
            while not stop.is_set() or seen < max(sent, default=0):
                msg = await conn.fetchval(bench_q("bench_probe"))
                if msg and int(msg) != seen:
                    now = time.time()
                    probes.extend(Probe(k, sent[k], now)
                                  for k in range(seen + 1, int(msg) + 1) if k in sent)  # fmt: skip
                    seen = int(msg)
                await anyio.sleep(0.002)

    with anyio.fail_after(seconds + 600):
        async with anyio.create_task_group() as tg:
            tg.start_soon(load)
            tg.start_soon(probe)
            tg.start_soon(watch)
            await anyio.sleep(seconds)
            stop.set()  # the watcher goes on until the last probe shows: the slowest count too
    return probes, published + len(sent)


# ---- where the time went --------------------------------------------------------------------


def read_marks(trace: Path) -> list[dict[str, Any]]:
    """The marks of a trace file (services/trace.py), in the order written."""
    if not trace.exists():
        return []
    return [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]


CHECKPOINT_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) (\w+) \[\d+\] LOG:  (checkpoint (?:starting|complete)"
    r"[^\n]*)"
)


def checkpoints(pg_log: Path, since: float) -> list[dict[str, Any]]:
    """Postgres's checkpoint lines (log_checkpoints) at or after ``since``, as marks."""
    if not pg_log.exists():
        return []
    out = []
    for line in pg_log.read_text(errors="replace").splitlines():
        m = CHECKPOINT_LINE.match(line)
        if m is None or m.group(2) != "UTC":
            continue
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
        if t >= since:
            out.append({"t": t, "ev": "pg", "what": m.group(3)[:120]})
    return out


def paths(probes: list[Probe], marks: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Each traced probe's path: the unix time of each step (``STEPS``), by probe number."""
    arrived = {m["seq"]: m for m in marks if m["ev"] == "arrived"}
    taken = {s: m["taken"] for m in marks if m["ev"] == "batch" for s in m["traced"]}
    commits = {s: m for m in marks if m["ev"] == "commit" for s in m["traced"]}
    by_message = {int(m["message"]): seq for seq, m in arrived.items() if m.get("message")}
    out: dict[int, dict[str, float]] = {}
    for p in probes:
        seq = by_message.get(p.n)
        if seq is None or seq not in taken or seq not in commits:
            continue
        c = commits[seq]
        out[p.n] = {
            "sent": p.sent, "stored": arrived[seq]["stored"], "arrived": arrived[seq]["t"],
            "taken": taken[seq], "began": c["began"], "acquired": c["acquired"],
            "fenced": c["fenced"], "wrote": c["wrote"], "committed": c["committed"],
            "seen": p.seen,
        }  # fmt: skip
    return out


def timeline(probes: list[Probe], marks: list[dict[str, Any]], top: int = 5) -> list[str]:
    """Lines saying where the probes' time went: the median and p99 of each step over every
    traced probe, then the ``top`` slowest probes step by step, with what else the process and
    Postgres did while each was in flight."""
    traced = paths(probes, marks)
    if not traced:
        return ["  no probe was traced"]
    lines = [f"  {len(traced)} of {len(probes)} probes traced; per step, ms: median / p99 / max"]
    for step, after in STEPS:
        spans = [(t[step] - t[after]) * 1e3 for t in traced.values()]
        lines.append(f"    {after:>9} -> {step:<9} {statistics.median(spans):8.1f} "
                     f"{percentile(spans, 0.99):8.1f} {max(spans):8.1f}")  # fmt: skip
    others = [m for m in marks if m["ev"] in ("gc", "stall", "fleet_metrics", "pg", "commit")]
    slow = sorted(probes, key=lambda p: p.lag, reverse=True)[:top]
    for p in slow:
        lines.append(f"  probe {p.n}: {p.lag * 1e3:.0f} ms")
        t = traced.get(p.n)
        if t is None:
            lines.append("    (not traced)")
            continue
        lines.append("    " + ", ".join(f"{s} +{(t[s] - p.sent) * 1e3:.0f}" for s, _ in STEPS))
        for m in others:
            start = m.get("began", m["t"] - m.get("s", 0.0))
            if m["t"] >= p.sent - 0.05 and start <= p.seen:
                lines.append("    " + _describe(m, p.sent))
    return lines


def _describe(m: dict[str, Any], origin: float) -> str:
    at = (m["t"] - origin) * 1e3
    ev = m["ev"]
    if ev == "gc":
        return f"  +{at:.0f} ms gc gen {m['gen']}: {m['s'] * 1e3:.1f} ms, {m['collected']} freed"
    if ev == "stall":
        return f"  +{at:.0f} ms event loop held {m['s'] * 1e3:.1f} ms"
    if ev == "fleet_metrics":
        return f"  +{at:.0f} ms fleet gauges read, {(m['t'] - m['began']) * 1e3:.1f} ms"
    if ev == "commit":
        return (f"  +{at:.0f} ms commit of {m['events']} events "
                f"({(m['t'] - m['began']) * 1e3:.1f} ms, {(m['fenced'] - m['acquired']) * 1e3:.1f}"
                f" ms fence, {(m['wrote'] - m['fenced']) * 1e3:.1f} ms write, "
                f"{(m['committed'] - m['wrote']) * 1e3:.1f} ms COMMIT)")  # fmt: skip
    return f"  +{at:.0f} ms postgres: {m['what']}"


# ---- the section ------------------------------------------------------------------------------


async def freshness_runs(rt: Runtime, args: argparse.Namespace, home: Path) -> list[Figure]:
    """``args.runs`` freshness runs on ``rt`` (its backlog applied), each with a projector of
    its own; with ``args.trace``, each run's timeline is printed; with ``args.baseline_root``,
    each run is paired with one of that checkout's projector (in alternating order, the
    baseline's first). Their figures."""
    probes: list[Probe] = []
    before: list[Probe] = []
    pg_log = home / "pg" / "log"
    log = home / "projector.log"
    for i in range(args.runs):
        trace = home / f"trace-{i}.jsonl" if args.trace else None
        baseline = args.baseline_root is not None and i % 2 == 0
        if baseline:  # the baseline first in every other pair, from the first
            before += await _baseline_run(rt, args, log)
        since = time.time()
        run, load = await freshness(rt, args.rate, args.agents, args.seconds, log, trace=trace,
                                    partitions=args.fresh_partitions)  # fmt: skip
        say(f"  freshness: {_summary(run, load)}")
        if trace is not None:
            marks = sorted(read_marks(trace) + checkpoints(pg_log, since), key=lambda m: m["t"])
            for line in timeline(run, marks):
                say(line)
        probes += run
        if args.baseline_root is not None and not baseline:
            before += await _baseline_run(rt, args, log)
    out = figures(args, [p.lag for p in probes])
    if before:
        out += figures(args, [p.lag for p in before], f", the projector of {args.baseline_root}")
    return out


async def _baseline_run(rt: Runtime, args: argparse.Namespace, log: Path) -> list[Probe]:
    run, load = await freshness(rt, args.rate, args.agents, args.seconds, log,
                                root=args.baseline_root,
                                partitions=args.fresh_partitions)  # fmt: skip
    say(f"  freshness, {args.baseline_root}: {_summary(run, load)}")
    return run


def _summary(run: list[Probe], load: Load) -> str:
    spent = (f"projector CPU {load.cpu_s:.1f} s for {load.events:,} events "
             f"({load.us_per_event:.0f} us each)")  # fmt: skip
    lags = [p.lag for p in run]
    if not lags:
        return f"no probe seen; {spent}"
    ms = [percentile(lags, q) * 1e3 for q in (0.5, 0.99, 0.999)]
    return (f"{len(run)} probes, p50 {ms[0]:.0f} ms, p99 {ms[1]:.0f} ms, "
            f"p99.9 {ms[2]:.0f} ms, max {max(lags) * 1e3:.0f} ms; {spent}")  # fmt: skip


def figures(args: argparse.Namespace, lags: list[float], whose: str = "") -> list[Figure]:
    """The freshness figures: p50, p99 and p99.9 of ``lags`` (s), against the 100 ms target;
    ``whose``: appended to their names."""
    out: list[Figure] = []
    if not lags:
        return out
    spread = (min(lags), max(lags))
    for label, q, target in (("p50", 0.5, "(context)"), ("p99", 0.99, "p99 <= 0.1 s (ratio >= 1)"),
                             ("p99.9", 0.999, "(context)")):  # fmt: skip
        value = percentile(lags, q)
        parts = (
            ""
            if args.fresh_partitions == 1
            else (f", {args.fresh_partitions} heartbeat partitions, a process each")
        )
        name = f"freshness {label} at {args.rate:,} events/s{parts} ({len(lags):,} probes){whose}"
        ratio = TARGET_S / value if value else 0.0
        out.append(Figure(name, value, "s", "target, s", TARGET_S, ratio, target, *spread,
                          args.runs))  # fmt: skip
    return out


async def freshness_section(args: argparse.Namespace) -> list[Figure]:
    """``--only freshness``: the freshness runs alone, on servers of their own, after the
    backlog of ``--events`` from ``--agents`` agents is published and applied once by a
    projector (the state the pipeline section measures freshness in, row caches cold)."""
    home = Path(tempfile.mkdtemp(prefix="fleetward-bench-fresh-"))
    settings = Settings.from_env({**os.environ, "FLEETWARD_HOME": str(home)})
    async with open_runtime(
        settings, identity=as_harness(settings), embed=True, pool_size=12
    ) as rt:
        say(f"freshness: {args.events:,} events from {args.agents:,} agents; {home}")
        await publish_backlog(rt, backlog(args.events, args.agents, args.seed))
        gc.collect()
        await ingest(rt, args.events, home / "projector.log", "one")
        if args.fresh_partitions > 1:
            say(f"freshness: FW_HEARTBEATS in {args.fresh_partitions} partitions, one process "
                f"each; one heartbeat of each of {args.agents:,} agents first")  # fmt: skip
            await use_partitions(rt, args.fresh_partitions, args.agents)
        return await freshness_runs(rt, args, home)
