"""Heartbeat ingest with one and with two partitions, in one run (``make bench BENCH_ARGS="--only
partitions"``; schemas/partitions.py).

The same heartbeat backlog is drained into ``fleet.utilization`` three ways, each run on a fresh
FW_HEARTBEATS holding exactly that backlog:

- one partition: the stream unpartitioned, ``fleetward projector --only utilization``;
- two partitions, two processes: ``--partition 0/2`` and ``--partition 1/2``;
- two partitions, one process: ``--only utilization`` (its two partition runners in one process).

Each layout's figure stands next to raw consumption of the same stream in the same run (one
consumer, no processing), and the machine's load average is recorded at each measurement, since
the two cores are shared with whatever else runs.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import anyio
import msgspec

from fleetward.projections.utilization import Utilization, partition
from fleetward.schemas import new_id
from fleetward.schemas.events import Heartbeat
from fleetward.schemas.streams import HEARTBEATS_STREAM, heartbeats_stream
from fleetward.services.jetstream.streams import ensure_streams
from fleetward.services.projector.consumers import durable_name
from fleetward.services.projector.rebuild import reset
from fleetward.services.runtime.connect import Runtime
from tests.bench.kit import ProcessWatch

# name: (partitions of the stream, the projector processes' arguments)
LAYOUTS: dict[str, tuple[int, list[list[str]]]] = {
    "one partition, one process": (1, [["--only", "utilization"]]),
    "two partitions, two processes": (2, [["--partition", "0/2"], ["--partition", "1/2"]]),
    "two partitions, one process": (2, [["--only", "utilization"]]),
}


Start = Callable[[Runtime, Path, list[str]], subprocess.Popen[bytes]]


@dataclass(frozen=True)
class Tools:
    """What the section borrows from tests/bench/run.py: publishing a backlog with
    acknowledgements, raw consumption of one stream (msgs/s), starting a projector process with
    arguments (logging to a file), and printing a line."""

    publish: Callable[[Runtime, list[tuple[str, bytes]]], Awaitable[None]]
    raw: Callable[[Runtime, str], Awaitable[float]]
    start: Start
    say: Callable[[str], None]


@dataclass
class Measured:
    """What one layout's runs measured: events/s, raw consumption of the same stream (msgs/s),
    the CPU seconds of each of its processes, and the 1-minute load average at each end."""

    rates: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    cpu: list[list[float]] = field(default_factory=list)
    load: list[tuple[float, float]] = field(default_factory=list)


def heartbeats(events: int, agents: int, seed: int) -> list[tuple[str, bytes]]:
    """(subject as published, payload) of ``events`` heartbeats from ``agents`` agents."""
    rng = random.Random(seed)
    enc = msgspec.json.Encoder()
    at = datetime.now(UTC)
    out = []
    for _ in range(events):
        a = f"agent-{rng.randrange(agents):06d}"
        beat = Heartbeat(id=new_id(), actor=a, at=at, agent=a, status=rng.choice(("idle", "busy")))
        out.append((f"fw.hb.{a}", enc.encode(beat)))
    return out


async def fresh_stream(rt: Runtime, parts: int) -> None:
    """FW_HEARTBEATS again, empty, stored in ``parts`` partitions; utilization emptied."""
    await rt.js.delete_stream(HEARTBEATS_STREAM)
    await ensure_streams(rt.js, (heartbeats_stream(parts),))
    await reset(rt, Utilization())  # its partitions' checkpoints too


def durables(parts: int) -> list[str]:
    """The durable consumers that feed utilization on a stream of ``parts`` partitions."""
    if parts == 1:
        return [durable_name(Utilization())]
    return [durable_name(partition(i, parts)) for i in range(parts)]


async def _wait(deadline: float, log: Path) -> None:
    if time.monotonic() > deadline:
        raise SystemExit(f"the projector did not drain the backlog ({log})")
    await anyio.sleep(0.02)


async def created(rt: Runtime, names: list[str]) -> bool:
    """Whether every one of the durable consumers ``names`` exists."""
    try:
        for name in names:
            await rt.js.consumer_info(HEARTBEATS_STREAM, name)
    except Exception:  # not created yet by a starting projector
        return False
    return True


async def drained(rt: Runtime, names: list[str]) -> bool:
    for name in names:
        try:
            info = await rt.js.consumer_info(HEARTBEATS_STREAM, name)
        except Exception:  # not created yet by a starting projector
            return False
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def ingest_once(
    rt: Runtime, events: int, layout: tuple[int, list[list[str]]], log: Path, start: Start
) -> tuple[float, list[float]]:
    """Drain the stream's backlog with the layout's (partitions, processes' arguments);
    events/s and each process's CPU seconds over that time (its start-up left out)."""
    parts, processes = layout
    names = durables(parts)
    procs = [start(rt, log, args) for args in processes]
    watch = ProcessWatch(*(p.pid for p in procs))
    stop = anyio.Event()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.sample, stop)
            deadline = time.monotonic() + 1800
            # timed from the moment every runner has its consumer (started, connected, leases
            # taken, positioned): two processes start no faster than one, and that is not ingest
            while not await created(rt, names):
                await _wait(deadline, log)
            started, cpu0 = time.perf_counter(), watch.cpu()
            while not await drained(rt, names):
                await _wait(deadline, log)
            elapsed = time.perf_counter() - started
            cpu = [c - c0 for c, c0 in zip(watch.cpu(), cpu0, strict=True)]
            stop.set()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    return events / elapsed, cpu


def load() -> float:
    return os.getloadavg()[0]


async def run_partitions_bench(
    rt: Runtime, items: list[tuple[str, bytes]], runs: int, log: Path, tools: Tools
) -> dict[str, Measured]:
    """Every layout ``runs`` times, interleaved (run 1 of each, then run 2 ...)."""
    out = {name: Measured() for name in LAYOUTS}
    for _ in range(runs):
        for name, layout in LAYOUTS.items():
            await fresh_stream(rt, layout[0])
            await tools.publish(rt, items)
            m = out[name]
            m.raw.append(await tools.raw(rt, HEARTBEATS_STREAM))
            before = load()
            rate, cpu = await ingest_once(rt, len(items), layout, log, tools.start)
            m.rates.append(rate)
            m.cpu.append(cpu)
            m.load.append((before, load()))
            cpus = ", ".join(f"{c:.1f}" for c in cpu)
            tools.say(f"  {name}: {rate:,.0f} heartbeats/s (raw {m.raw[-1]:,.0f} msgs/s; "
                      f"CPU {cpus} s; load {before:.1f} -> {m.load[-1][1]:.1f})")  # fmt: skip
    return out
