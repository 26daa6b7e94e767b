"""Rebuilding a projection from its stream: empty its tables, dead letters and checkpoint
(``reset``), then apply everything again (``catch_up``) with a runner of its own, on a durable
consumer with the suffix ``_rebuild``. Safe beside a running projector: both commit by
compare-and-set on the checkpoint, and the live runner re-positions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fleetward.projections import Projection
from fleetward.services import db
from fleetward.services.db import q
from fleetward.services.errors import FleetwardError
from fleetward.services.jetstream.reads import stream_info
from fleetward.services.projector.isolate import Isolate
from fleetward.services.projector.runner import ProjectionRunner
from fleetward.services.runtime.connect import Runtime


async def reset(rt: Runtime, projection: Projection) -> None:
    """Empty a projection's tables, dead letters and checkpoint, in one transaction (with those
    of its heartbeat partitions, whose runners then re-position). A partition itself cannot be
    reset: its tables are shared with the other partitions (``FleetwardError``)."""
    if projection.alone:
        raise FleetwardError(f"{projection.name} is a partition: rebuild the whole projection")
    async with rt.pool.acquire() as conn, conn.transaction():
        await conn.execute(q("checkpoint_init"), projection.name, projection.stream)
        await conn.fetchval(q("checkpoint_lock"), projection.name)
        for table in projection.tables:
            await conn.execute(db.truncate_sql(table))
        await conn.execute(q("dead_letters_clear"), projection.name)
        await conn.execute(q("checkpoint_reset"), projection.name)


async def stream_last_seq(rt: Runtime, stream: str) -> int:
    """The last sequence stored in ``stream`` (0 when it is empty): how far a rebuild goes."""
    info = await stream_info(rt.js, stream)
    return int(info.state.last_seq)


async def catch_up(runner: ProjectionRunner, progress: Callable[[int], Any] | None = None) -> None:
    """Apply batches until the runner's consumer (positioned) has nothing pending and nothing
    unacknowledged; ``progress`` gets the runner's checkpoint after each batch. A consumer
    that has nothing pending from the start returns at once (no wait for an empty batch)."""
    assert runner.consumer is not None
    if await _drained(runner):
        return
    while True:
        try:
            n = await runner.step(wait=0.2)
            if progress is not None:
                progress(runner.checkpoint)
            if n and runner.pending == 0:
                await runner.flush()
                return
        except Isolate as exc:  # a window failed for an event: find it, then go on
            runner.isolating(exc)
            await runner.position()
            continue
        if n == 0 and await _drained(runner):
            return


async def _drained(runner: ProjectionRunner) -> bool:
    """The runner's consumer has nothing pending and nothing unacknowledged (a delivery is
    acknowledged only once committed)."""
    info = await runner.rt.js.consumer_info(runner.stream, runner.durable)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


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
        await runner.close()
        await rt.js.delete_consumer(projection.stream, runner.durable)
    return runner.checkpoint
