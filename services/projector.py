"""The projector: runs each projection as a durable pull consumer, exactly once in effect.

For every batch, in one Postgres transaction:
1. lock the projection's checkpoint and compare it with the one this runner last wrote (another
   writer, e.g. a rebuild, may have moved it: then re-position and start again);
2. skip deliveries at or below the checkpoint, and repeated event ids within the batch;
3. admit each event (schemas.admission); a refused one becomes a dead letter;
4. load the rows the events touch, fold the events in stream order (pure), write changed rows;
5. advance the checkpoint to the batch's last sequence.
After the commit, one AckAll acknowledges the batch. A crash anywhere before the commit leaves
nothing behind; a crash after it only causes redelivery of events the checkpoint then skips.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import asyncpg

from projections import Meta, Projection, Rows
from projections.base import Key, Row, Table
from schemas import Event, Rejected, admit, type_name
from services import db, metrics
from services.db import Conn, q
from services.pull import Delivery, PullConsumer, recreate_consumer
from services.runtime import Runtime

log = logging.getLogger("fleetward.projector")

PROJECTION_ERROR = "projection_error"  # a valid event the fold could not apply (a bug of ours)


class Resync(Exception):
    """The checkpoint moved under this runner: re-position the consumer and go on."""


@dataclass(slots=True)
class BatchResult:
    applied: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    skipped: int = 0


def durable_name(projection: Projection, suffix: str = "") -> str:
    return f"fw_{projection.name}{suffix}"


def fold(
    projection: Projection, items: list[tuple[Event, Meta]], rows: Rows
) -> list[tuple[Meta, str, str]]:
    """Apply events in order; returns the ones the fold refused as (meta, reason, detail)."""
    failed = []
    for event, meta in items:
        try:
            projection.apply(rows, event, meta)
        except Exception as exc:  # one bad event must not stop the projection
            failed.append((meta, PROJECTION_ERROR, f"{type(exc).__name__}: {exc}"))
    return failed


async def apply_batch(
    conn: Conn,
    projection: Projection,
    batch: list[Delivery],
    expected: int,
    cache: RowCache | None = None,
) -> tuple[int, BatchResult, Rows]:
    """Apply ``batch`` inside the caller's transaction. Returns the new checkpoint."""
    result = BatchResult()
    checkpoint = await conn.fetchval(q("checkpoint_lock"), projection.name)
    if checkpoint != expected:
        raise Resync(f"checkpoint is {checkpoint}, this writer expected {expected}")
    items: list[tuple[Event, Meta]] = []
    dead: list[tuple[Delivery, str, str]] = []
    seen: set[str] = set()
    for d in batch:
        if d.seq <= checkpoint:
            result.skipped += 1
            continue
        try:
            event = admit(d.subject, d.data)
        except Rejected as r:
            dead.append((d, r.reason, r.detail))
            continue
        if event.id in seen:
            result.skipped += 1
            continue
        seen.add(event.id)
        items.append((event, Meta(d.seq, d.time, d.subject)))
    rows = await load_rows(conn, projection, items, cache)
    by_seq = {d.seq: d for d in batch}
    for meta, reason, detail in fold(projection, items, rows):
        dead.append((by_seq[meta.seq], reason, detail))
    failed = {d.seq for d, _, _ in dead}
    for event, meta in items:
        if meta.seq not in failed:
            result.applied[type_name(type(event))] += 1
    for table in projection.tables:
        changed = rows.changed(table)
        if changed:
            await db.write_rows(conn, table, changed)
    if dead:
        await conn.executemany(
            q("dead_letter_insert"),
            [
                (
                    projection.name,
                    projection.stream,
                    d.seq,
                    d.subject,
                    reason,
                    detail[:2000],
                    d.data,
                    d.time,
                )
                for d, reason, detail in dead
            ],
        )
        result.dead.update(reason for _, reason, _ in dead)
    last = max(checkpoint, batch[-1].seq)
    status = await conn.execute(q("checkpoint_advance"), projection.name, checkpoint, last)
    if status != "UPDATE 1":
        raise Resync("checkpoint compare-and-set failed")
    return last, result, rows


class RowCache:
    """Rows this runner committed or read, by table and key. A runner is its projection's only
    writer, so these equal the database as long as no other writer commits; any re-positioning
    (another writer moved the checkpoint, an error) empties the cache."""

    def __init__(self, limit: int = 250_000) -> None:
        self.limit = limit
        self.tables: dict[str, dict[Key, Row]] = {}

    def clear(self) -> None:
        self.tables.clear()

    def remember(self, rows: Rows) -> None:
        """Keep a committed batch's rows (called after the commit)."""
        for name, bucket in rows.data.items():
            cached = self.tables.setdefault(name, {})
            if len(cached) + len(bucket) > self.limit:
                cached.clear()
            cached.update(bucket)


async def load_rows(
    conn: Conn,
    projection: Projection,
    items: list[tuple[Event, Meta]],
    cache: RowCache | None = None,
) -> Rows:
    """The rows the batch touches: from the cache, the rest in one query per table."""
    wanted: dict[Table, set[Key]] = {}
    for event, meta in items:
        for table, key in projection.touches(event, meta):
            wanted.setdefault(table, set()).add(key)
    rows = Rows()
    for table, keys in wanted.items():
        bucket = rows.data.setdefault(table.name, {})
        cached = cache.tables.get(table.name, {}) if cache is not None else {}
        missing = []
        for key in keys:
            row = cached.get(key)
            if row is None:
                missing.append(key)
            else:
                bucket[key] = row
        if not missing:
            continue
        found = await conn.fetch(db.load_sql(table), *db.key_arrays(table, missing))
        key_of = table.key_of
        for record in found:
            row = dict(record)
            bucket[key_of(row)] = row
    return rows


class ProjectionRunner:
    """One projection's consumer loop."""

    def __init__(
        self,
        rt: Runtime,
        projection: Projection,
        *,
        batch_size: int = 1000,
        durable_suffix: str = "",
    ) -> None:
        self.rt, self.projection = rt, projection
        self.batch_size = batch_size
        self.durable = durable_name(projection, durable_suffix)
        self.checkpoint = 0
        self.consumer: PullConsumer | None = None
        self.caught_up = False  # the last committed batch left nothing pending
        self.cache = RowCache()

    async def position(self) -> None:
        """Read the checkpoint and put the consumer right after it."""
        p = self.projection
        self.cache.clear()
        async with self.rt.pool.acquire() as conn:
            await conn.execute(q("checkpoint_init"), p.name, p.stream)
            self.checkpoint = await conn.fetchval(q("checkpoint_get"), p.name)
        if self.consumer is not None:
            await self.consumer.stop()
        await recreate_consumer(
            self.rt.js,
            p.stream,
            self.durable,
            p.subjects,
            self.checkpoint,
            max_ack_pending=max(50_000, 4 * self.batch_size),
        )
        self.consumer = PullConsumer(self.rt.nc, p.stream, self.durable, batch=self.batch_size)
        await self.consumer.start()
        metrics.CHECKPOINT.labels(p.name).set(self.checkpoint)

    async def step(self, wait: float = 1.0) -> int:
        """Take one batch (waiting up to ``wait``), apply and commit it. Returns its size."""
        assert self.consumer is not None
        if self.consumer.gone:
            raise Resync("the consumer was deleted")
        batch = await self.consumer.next_batch(self.batch_size, wait)
        if not batch:
            return 0
        name = self.projection.name
        started = time.perf_counter()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            last, result, rows = await apply_batch(
                conn, self.projection, batch, self.checkpoint, self.cache
            )
        self.cache.remember(rows)
        await self.consumer.ack(batch[-1])
        self.checkpoint = last
        self.caught_up = batch[-1].pending == 0
        metrics.BATCH_SECONDS.labels(name).observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.labels(name).observe(len(batch))
        metrics.CHECKPOINT.labels(name).set(last)
        metrics.LAG_EVENTS.labels(name).set(batch[-1].pending)
        lag = 0.0 if self.caught_up else time.time() - batch[-1].time.timestamp()
        metrics.LAG_SECONDS.labels(name).set(max(lag, 0.0))
        metrics.SKIPPED.labels(name).inc(result.skipped)
        for type_, n in result.applied.items():
            metrics.EVENTS.labels(name, type_).inc(n)
        for reason, n in result.dead.items():
            metrics.DEAD_LETTERS.labels(name, reason).inc(n)
        return len(batch)

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Apply batches until ``stopping()``; the batch in hand is always finished first."""
        backoff = 0.1
        await self._position_retrying(stopping)
        while not stopping():
            try:
                await self.step()
                backoff = 0.1
            except (
                Resync,
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                TimeoutError,
                Exception,
            ) as exc:
                log.warning("projection %s: %s; re-positioning", self.projection.name, exc)
                metrics.RESYNCS.labels(self.projection.name).inc()
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                await self._position_retrying(stopping)
        if self.consumer is not None:
            await self.consumer.stop()

    async def _position_retrying(self, stopping: Callable[[], bool]) -> None:
        delay = 0.1
        while not stopping():
            try:
                await self.position()
                return
            except Exception as exc:  # NATS or Postgres away: keep trying
                log.warning(
                    "projection %s: cannot position (%s); retrying", self.projection.name, exc
                )
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)


async def reset(rt: Runtime, projection: Projection) -> None:
    """Empty a projection's tables, dead letters and checkpoint, in one transaction."""
    async with rt.pool.acquire() as conn, conn.transaction():
        await conn.execute(q("checkpoint_init"), projection.name, projection.stream)
        await conn.fetchval(q("checkpoint_lock"), projection.name)
        for table in projection.tables:
            await conn.execute(f"TRUNCATE {table.name}")
        await conn.execute(q("dead_letters_clear"), projection.name)
        await conn.execute(q("checkpoint_reset"), projection.name)


async def stream_last_seq(rt: Runtime, stream: str) -> int:
    info = await rt.js.stream_info(stream)
    return int(info.state.last_seq)


async def catch_up(runner: ProjectionRunner, progress: Callable[[int], Any] | None = None) -> None:
    """Apply batches until the consumer has nothing pending and nothing unacknowledged."""
    assert runner.consumer is not None
    while True:
        n = await runner.step(wait=0.2)
        if progress is not None:
            progress(runner.checkpoint)
        if n and runner.caught_up:
            return
        if n == 0:
            info = await runner.rt.js.consumer_info(runner.projection.stream, runner.durable)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return


async def rebuild(
    rt: Runtime,
    projection: Projection,
    *,
    batch_size: int = 1000,
    progress: Callable[[int], Any] | None = None,
) -> int:
    """Rebuild one projection from its stream. Safe beside a running projector: both commit by
    compare-and-set on the checkpoint. Returns the checkpoint reached."""
    await reset(rt, projection)
    runner = ProjectionRunner(rt, projection, batch_size=batch_size, durable_suffix="_rebuild")
    await runner.position()
    try:
        await catch_up(runner, progress)
    finally:
        assert runner.consumer is not None
        await runner.consumer.stop()
        await rt.js.delete_consumer(projection.stream, runner.durable)
    return runner.checkpoint
