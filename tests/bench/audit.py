"""The audit export against raw consumption of the same stream (``make bench --only audit``):
``events`` events of a realistic FW_EVENTS mix (tool calls, spend, runs, task events; each with
its ``Nats-Msg-Id``, as Fleetward publishes them), then, in the same run, FW_EVENTS drained by a
pull consumer with no processing (the baseline) and ``fleetward audit export`` of the whole
stream to a file (services' fast path: a pull consumer of its own)."""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from fleetward.schemas import new_id
from fleetward.schemas.events import Event, RunStarted, SpendRecorded, TaskCreated, ToolCalled
from fleetward.schemas.headers import MSG_ID
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import subject_of
from fleetward.services.audit.export import export
from fleetward.services.audit.verify import check_file
from fleetward.services.jetstream.consumer import PullConsumer, recreate_consumer
from fleetward.services.runtime.connect import Runtime


def events(n: int, agents: int, seed: int) -> list[tuple[str, bytes, str]]:
    """(subject, payload, event id) of ``n`` FW_EVENTS events."""
    rng, at = random.Random(seed), datetime.now(UTC)
    enc = msgspec.json.Encoder()
    out: list[tuple[str, bytes, str]] = []
    for i in range(n):
        a = f"agent-{rng.randrange(agents):06d}"
        r = rng.random()
        e: Event
        if r < 0.5:
            e = ToolCalled(id=new_id(), actor=a, at=at, agent=a, tool="web.search",
                           duration_ms=120.0, ok=rng.random() > 0.05, cost_usd=0.001)  # fmt: skip
        elif r < 0.9:
            e = SpendRecorded(id=new_id(), actor=a, at=at, agent=a, model="m", tokens_in=900,
                              tokens_out=200, cost_usd=0.0042)  # fmt: skip
        elif r < 0.97:
            e = RunStarted(id=new_id(), actor=a, at=at, agent=a, run=f"run-{i}")
        else:
            e = TaskCreated(id=new_id(), actor="user:bench", at=at, task=f"t-{i}", project="p",
                            title="a task")  # fmt: skip
        out.append((subject_of(e), enc.encode(e), e.id))
    return out


async def publish(rt: Runtime, items: list[tuple[str, bytes, str]], window: int = 5_000) -> None:
    """Publish with their message ids, ``window`` acknowledgements in flight."""
    acked, more = 0, asyncio.Event()

    async def on_ack(_msg: Any) -> None:
        nonlocal acked
        acked += 1
        more.set()

    inbox = rt.nc.new_inbox()
    sub = await rt.nc.subscribe(inbox, cb=on_ack, pending_msgs_limit=4 * window)
    for sent, (subj, data, eid) in enumerate(items, 1):
        while sent - acked > window:
            more.clear()
            await asyncio.wait_for(more.wait(), 60)
        await rt.nc.publish(subj, data, reply=inbox, headers={MSG_ID: eid})
    while acked < len(items):
        more.clear()
        await asyncio.wait_for(more.wait(), 60)
    await sub.unsubscribe()


async def raw_events(rt: Runtime) -> float:
    """Messages/s draining FW_EVENTS with a pull consumer, ack-all, no processing."""
    pending = (await rt.js.stream_info(EVENTS_STREAM)).state.messages
    started = time.perf_counter()
    await recreate_consumer(rt.js, EVENTS_STREAM, "bench_audit_raw", (), 0)
    consumer = PullConsumer(rt.nc, EVENTS_STREAM, "bench_audit_raw", batch=1000)
    await consumer.start()
    got = 0
    while got < pending:
        batch = await consumer.next_batch(1000, wait=5)
        if not batch:
            raise SystemExit("raw consumption stalled")
        got += len(batch)
        await consumer.ack(batch[-1])
    await consumer.stop()
    await rt.js.delete_consumer(EVENTS_STREAM, "bench_audit_raw")
    return got / (time.perf_counter() - started)


async def export_rate(rt: Runtime) -> tuple[float, float]:
    """(events/s of ``fleetward audit export`` of the whole stream to a file, events/s of
    ``audit verify`` of that file on its own)."""
    with tempfile.TemporaryDirectory(prefix="fleetward-bench-audit-") as folder:
        path = Path(folder) / "audit.jsonl"
        started = time.perf_counter()
        with path.open("wb") as out:
            summary = await export(rt, out)
        exported = summary.records / (time.perf_counter() - started)
        started = time.perf_counter()
        check_file(path)
        return exported, summary.records / (time.perf_counter() - started)
