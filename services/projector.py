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

Steps 2-4 of the next batch (folding, pure CPU) run while the previous batch commits (waiting on
Postgres). The next batch folds on the cached rows of the one being committed; if that commit
fails, the runner drops both and re-positions from the checkpoint in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

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


@dataclass(slots=True)
class Prepared:
    """A batch folded and ready to commit on top of checkpoint ``expected``."""

    batch: list[Delivery]
    expected: int
    last: int
    rows: Rows
    dead: list[tuple[Delivery, str, str]]
    result: BatchResult


async def prepare(
    conn: Conn,
    projection: Projection,
    batch: list[Delivery],
    expected: int,
    cache: RowCache | None = None,
) -> Prepared:
    """Admit and fold ``batch`` as if the checkpoint were ``expected``. Reads rows only."""
    result = BatchResult()
    items: list[tuple[Event, Meta]] = []
    dead: list[tuple[Delivery, str, str]] = []
    seen: set[str] = set()
    for d in batch:
        if d.seq <= expected:
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
    result.dead.update(reason for _, reason, _ in dead)
    return Prepared(batch, expected, max(expected, batch[-1].seq), rows, dead, result)


async def commit(conn: Conn, projection: Projection, prep: Prepared) -> None:
    """Write a prepared batch and move the checkpoint, inside the caller's transaction. Raises
    ``Resync`` when the checkpoint is not the one the batch was folded on."""
    checkpoint = await conn.fetchval(q("checkpoint_lock"), projection.name)
    if checkpoint != prep.expected:
        raise Resync(f"checkpoint is {checkpoint}, this writer expected {prep.expected}")
    for table in projection.tables:
        changed = prep.rows.changed(table)
        if changed:
            await db.write_rows(conn, table, changed)
    if prep.dead:
        await conn.executemany(
            q("dead_letter_insert"),
            [
                (projection.name, projection.stream, d.seq, d.subject, reason, detail[:2000],
                 d.data, d.time)
                for d, reason, detail in prep.dead
            ],
        )  # fmt: skip
    status = await conn.execute(q("checkpoint_advance"), projection.name, checkpoint, prep.last)
    if status != "UPDATE 1":
        raise Resync("checkpoint compare-and-set failed")


class RowCache:
    """Rows this runner committed or read, by table and key. A runner is its projection's only
    writer, so these equal the database as long as no other writer commits; any re-positioning
    (another writer moved the checkpoint, an error) empties the cache."""

    def __init__(self, limit: int = 250_000) -> None:
        self.limit = limit
        self.tables: dict[str, dict[Key, Row]] = {}
        # True while the cache holds every row of the projection's tables (it started on empty
        # tables and has evicted nothing): then a key it lacks has no row, and is not queried.
        self.complete = False

    def clear(self, *, tables_empty: bool = False) -> None:
        self.tables.clear()
        self.complete = tables_empty

    def remember(self, rows: Rows) -> None:
        """Keep a committed batch's rows (called after the commit)."""
        for name, bucket in rows.data.items():
            cached = self.tables.setdefault(name, {})
            if len(cached) + len(bucket) > self.limit:
                cached.clear()
                self.complete = False
            cached.update(bucket)


async def load_rows(
    conn: Conn,
    projection: Projection,
    items: list[tuple[Event, Meta]],
    cache: RowCache | None = None,
) -> Rows:
    """The rows the batch touches, from the cache, the rest in one query per table; then, in a
    second round, the rows ``touches_more`` names from what the first round found."""
    rows = Rows()
    wanted: dict[Table, set[Key]] = {}
    for event, meta in items:
        for table, key in projection.touches(event, meta):
            wanted.setdefault(table, set()).add(key)
    await _load(conn, rows, wanted, cache)
    more: dict[Table, set[Key]] = {}
    for event, meta in items:
        for table, key in projection.touches_more(rows, event, meta):
            if key not in rows.data.get(table.name, {}):
                more.setdefault(table, set()).add(key)
    if more:
        await _load(conn, rows, more, cache)
    return rows


async def _load(
    conn: Conn, rows: Rows, wanted: dict[Table, set[Key]], cache: RowCache | None
) -> None:
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
        if not missing or (cache is not None and cache.complete):
            continue
        found = await conn.fetch(db.load_sql(table), *db.key_arrays(table, missing))
        key_of = table.key_of
        for record in found:
            row = dict(record)
            bucket[key_of(row)] = row


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
        self.folded = 0  # the checkpoint the next batch folds on (ahead while one commits)
        self.pending = -1  # messages the server had left after the last batch taken
        self._inflight: asyncio.Future[None] | None = None

    async def position(self) -> None:
        """Read the checkpoint and put the consumer right after it (dropping anything folded
        or being committed: it will be delivered again)."""
        p = self.projection
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            with contextlib.suppress(Exception):
                await inflight
        async with self.rt.pool.acquire() as conn:
            await conn.execute(q("checkpoint_init"), p.name, p.stream)
            self.checkpoint = await conn.fetchval(q("checkpoint_get"), p.name)
            empty = self.checkpoint == 0 and await _tables_empty(conn, p)
        self.cache.clear(tables_empty=empty)
        self.folded = self.checkpoint
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
        """Take one batch (waiting up to ``wait``) and fold it, while the previous batch
        commits; then start its commit. Returns its size. ``flush`` waits for the commit."""
        assert self.consumer is not None
        if self.consumer.gone:
            raise Resync("the consumer was deleted")
        batch = await self.consumer.next_batch(self.batch_size, wait)
        if not batch:
            await self.flush()
            return 0
        started = time.perf_counter()
        async with self.rt.pool.acquire() as conn:
            prep = await prepare(conn, self.projection, batch, self.folded, self.cache)
        # optimistic: the next batch folds on these rows; a failed commit re-positions
        self.cache.remember(prep.rows)
        self.folded = prep.last
        self.pending = batch[-1].pending
        await self.flush()
        self._inflight = asyncio.ensure_future(self._commit(prep, started))
        return len(batch)

    async def flush(self) -> None:
        """Wait for the batch being committed, if any (and raise what it raised)."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight

    async def _commit(self, prep: Prepared, started: float) -> None:
        assert self.consumer is not None
        async with self.rt.pool.acquire() as conn, conn.transaction():
            await commit(conn, self.projection, prep)
        last = prep.batch[-1]
        await self.consumer.ack(last)
        self.checkpoint = prep.last
        self.caught_up = last.pending == 0
        name, result = self.projection.name, prep.result
        metrics.BATCH_SECONDS.labels(name).observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.labels(name).observe(len(prep.batch))
        metrics.CHECKPOINT.labels(name).set(prep.last)
        metrics.LAG_EVENTS.labels(name).set(last.pending)
        lag = 0.0 if self.caught_up else time.time() - last.time.timestamp()
        metrics.LAG_SECONDS.labels(name).set(max(lag, 0.0))
        metrics.SKIPPED.labels(name).inc(result.skipped)
        for type_, n in result.applied.items():
            metrics.EVENTS.labels(name, type_).inc(n)
        for reason, n in result.dead.items():
            metrics.DEAD_LETTERS.labels(name, reason).inc(n)

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Apply batches until ``stopping()``; the batches in hand are always committed first."""
        backoff = 0.1
        await self._position_retrying(stopping)
        while not stopping():
            try:
                await self.step()
                if stopping():
                    await self.flush()
                backoff = 0.1
            except Exception as exc:  # Resync, NATS or Postgres trouble: start again
                log.warning("projection %s: %s; re-positioning", self.projection.name, exc)
                metrics.RESYNCS.labels(self.projection.name).inc()
                metrics.count_postgres_error("projector", exc)
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
                metrics.count_postgres_error("projector", exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)


async def _tables_empty(conn: Conn, projection: Projection) -> bool:
    for table in projection.tables:
        if await conn.fetchval(db.any_row_sql(table)):
            return False
    return True


async def reset(rt: Runtime, projection: Projection) -> None:
    """Empty a projection's tables, dead letters and checkpoint, in one transaction."""
    async with rt.pool.acquire() as conn, conn.transaction():
        await conn.execute(q("checkpoint_init"), projection.name, projection.stream)
        await conn.fetchval(q("checkpoint_lock"), projection.name)
        for table in projection.tables:
            await conn.execute(db.truncate_sql(table))
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
        if n and runner.pending == 0:
            await runner.flush()
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
