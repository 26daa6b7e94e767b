"""Committing a window: a projection's rows, dead letters and checkpoint in one transaction.

Inside the caller's transaction (one for the windows of all the projections a runner feeds):
1. lock the projection's checkpoint and compare it with the one the window was folded on;
   another writer (a rebuild) may have moved it: ``Moved``, and the runner re-positions;
2. write the rows the fold changed, and the window's dead letters;
3. advance the checkpoint to the window's last sequence (compare-and-set).
The runner acknowledges the window (one AckAll) only after the transaction commits. A crash
anywhere before the commit leaves nothing behind; a crash after it only causes redelivery of
events the checkpoint then skips.
"""

from __future__ import annotations

from fleetward.projections import Projection
from fleetward.services import db
from fleetward.services.db import Conn, q
from fleetward.services.projector.window import Window


class Resync(Exception):
    """The checkpoint moved under this runner: re-position the consumer and go on."""

    def __init__(self, message: str, projections: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.projections = projections  # the ones whose checkpoint moved (empty: unknown)


class Moved(Resync):
    """Another writer (a rebuild) moved a projection's checkpoint: found before any write."""


async def commit(conn: Conn, projection: Projection, window: Window) -> None:
    """Write a window's rows and dead letters and move the checkpoint, inside the caller's
    transaction. Raises ``Moved`` when the checkpoint is not the one the window was folded on
    (nothing written), ``Resync`` when the compare-and-set of the new checkpoint fails."""
    checkpoint = await conn.fetchval(q("checkpoint_lock"), projection.name)
    if checkpoint != window.expected:
        raise Moved(f"checkpoint is {checkpoint}, this writer expected {window.expected}")
    for table in projection.tables:
        changed = window.rows.changed(table)
        if changed:
            await db.write_rows(conn, table, changed)
    if window.dead:
        await conn.executemany(
            q("dead_letter_insert"),
            [
                (projection.name, projection.stream, d.seq, d.subject, reason, detail[:2000],
                 d.data, d.time)
                for d, reason, detail in window.dead
            ],
        )  # fmt: skip
    status = await conn.execute(q("checkpoint_advance"), projection.name, checkpoint, window.last)
    if status != "UPDATE 1":
        raise Resync("checkpoint compare-and-set failed")
