"""Finding the events that make a window's commit fail, by bisection (DESIGN 3.6).

When a window's commit fails for a reason an event caused (failures.py: a NUL in a text column,
an integer past its column's range, ...), retrying it can never succeed. The runner then
re-positions and folds the same events again in careful windows (window.py: one batch each,
keeping the events they fold, committed one at a time). When a careful window fails, ``isolate``
commits it again, in a new transaction, in parts:

1. lock and compare the checkpoint (as commit.py does);
2. fold the window's events on fresh rows read from the database (never the row cache: its rows
   hold the failed window's effects) and write them, inside a savepoint;
3. if the write fails for an event, roll the savepoint back and try each half the same way, in
   stream order; a single event that still fails is the culprit: it becomes a dead letter
   (``projection_error``, with the error), and the parts after it fold on rows without it;
4. record the window's dead letters and advance the checkpoint past the whole window.

Any other failure (the connection lost midway, ...) leaves the transaction and the runner tries
again later. The happy path never comes here: a window is bisected only after its commit failed.

Limit: a value that would be refused but is replaced within the same window (a name with a NUL,
renamed again by the next event before the window is written) never reaches Postgres, so that
event is applied; with other window bounds (a rebuild) it would be dead-lettered. Admission
refuses such values (the contract's bounds), so only what it misses can meet this.
"""

from __future__ import annotations

from collections import deque

from fleetward.projections import Projection, Rows
from fleetward.schemas import Event
from fleetward.services import db
from fleetward.services.db import Conn
from fleetward.services.jetstream.consumer import Delivery
from fleetward.services.projector.cache import load_rows
from fleetward.services.projector.commit import Resync, advance, lock, record_dead, store_emitted
from fleetward.services.projector.failures import classify, describe
from fleetward.services.projector.window import (
    PROJECTION_ERROR,
    BatchResult,
    Window,
    fold,
    tally,
)

Part = list[tuple[Event, Delivery]]


class Isolate(Exception):
    """A window failed to commit because of an event, and was not kept (not careful): fold the
    events up to sequence ``until`` again in careful windows, and bisect the one that fails."""

    def __init__(self, until: int, cause: BaseException) -> None:
        super().__init__(f"an event up to sequence {until} cannot be written: {describe(cause)}")
        self.until = until


async def isolate(conn: Conn, projection: Projection, window: Window) -> BatchResult:
    """Commit a careful ``window`` (its ``kept`` events) in parts, dead-lettering each event
    whose writes Postgres or the driver refuse; inside the caller's transaction. Returns what
    the window did (replacing the result its first fold counted). Raises ``Moved`` or
    ``Resync`` when the checkpoint moved (``lock``, ``advance``), and any failure that is not an
    event's (failures.py)."""
    assert window.kept is not None, "only a careful window keeps its events"
    checkpoint = await lock(conn, projection, window)
    result = BatchResult(skipped=window.result.skipped)
    dead = list(window.refused)
    for _, reason, _ in dead:
        result.dead[reason] += 1
    parts: deque[Part] = deque([window.kept])
    while parts:
        part = parts.popleft()
        try:
            async with conn.transaction():  # a savepoint inside the caller's transaction
                failed = await _apply(conn, projection, part)
        except Resync:
            raise
        except Exception as exc:
            if classify(exc) != "event":
                raise
            if len(part) > 1:
                middle = len(part) // 2
                parts.extendleft((part[middle:], part[:middle]))  # the first half first
            else:
                dead.append((part[0][1], PROJECTION_ERROR, describe(exc)))
                result.dead[PROJECTION_ERROR] += 1
            continue
        tally(part, failed, dead, result)
    await record_dead(conn, projection, sorted(dead, key=lambda x: x[0].seq))
    await advance(conn, projection, checkpoint, window.last)
    return result


async def _apply(
    conn: Conn, projection: Projection, part: Part
) -> list[tuple[Event, Delivery, str, str]]:
    """Fold ``part`` on rows read from the database and write them; the fold's refusals."""
    rows = Rows()
    await load_rows(conn, projection, part, rows)
    failed = fold(projection, part, rows)
    for table in projection.tables:
        changed = rows.changed(table)
        if not changed:
            continue
        try:
            await db.write_rows(conn, table, changed)
        except Exception as exc:
            exc.add_note(f"writing {table.name}")
            raise
        await conn.execute(db.clear_stage_sql(table))  # the next part stages its own rows
    await store_emitted(conn, projection, rows)
    return failed
