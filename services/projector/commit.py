"""Committing a window: a projection's rows, dead letters and checkpoint in one transaction.

Inside the caller's transaction (one for the windows of all the projections a runner feeds):
1. lock the projection's checkpoint and compare it with the one the window was folded on;
   another writer (a rebuild) may have moved it: ``Moved``, and the runner re-positions;
2. write the rows the fold changed, and the window's dead letters (whose text is made storable:
   the dead-letter row itself is never refused);
3. advance the checkpoint to the window's last sequence (compare-and-set).
The same steps serve ``isolate.py``, which commits a failed window again in parts.
The runner acknowledges the window (one AckAll) only after the transaction commits. A crash
anywhere before the commit leaves nothing behind; a crash after it only causes redelivery of
events the checkpoint then skips.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import msgspec

from fleetward.projections import Projection, Rows
from fleetward.schemas import subject_of
from fleetward.schemas.admission import Rejected, admit, sender_of
from fleetward.schemas.bounds import storable
from fleetward.schemas.events import CommandIssued, Event
from fleetward.schemas.ids import deterministic_id
from fleetward.services import db
from fleetward.services.db import Conn, q
from fleetward.services.jetstream.consumer import Delivery
from fleetward.services.jetstream.publish import encode
from fleetward.services.projector import outbox
from fleetward.services.projector.window import Window

DETAIL_CHARS: Final = 2000  # a dead letter's detail is cut here
PROJECTOR: Final = "svc:projector"  # the actor of the refusals it reports


class Resync(Exception):
    """The checkpoint moved under this runner: re-position the consumer and go on."""

    def __init__(self, message: str, projections: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.projections = projections  # the ones whose checkpoint moved (empty: unknown)


class Moved(Resync):
    """Another writer (a rebuild) moved a projection's checkpoint: found before any write."""


class Fenced(Exception):
    """The fence failed: the lease session no longer holds every lock of the lease (lease.py);
    nothing was written."""


Fence = tuple[list[int], int]
"""A lease's fence: its advisory lock keys and the backend pid of the session that must hold
them (lease.py)."""


async def commit_windows(
    conn: Conn,
    windows: Sequence[tuple[Projection, Window]],
    *,
    fence: Fence | None = None,
    first: Callable[[Conn], Awaitable[None]] | None = None,
    steps: dict[str, float] | None = None,
) -> dict[str, Moved]:
    """Commit ``windows`` in one transaction on ``conn``, a connection of the caller's own
    (outside any transaction, with the staging tables of the windows' tables: ``stage_sql``).
    The steps of the module docstring for each window, in few round trips (each one waits for the
    caller's event loop as well as for Postgres): BEGIN; the fence and every checkpoint's
    compare-and-set in one statement (``checkpoint_claim``); ``first`` (the event ids a
    runner records: ledger.py), the COPY of each changed table into its staging table, the
    emitted events and dead letters; then every upsert and the COMMIT in one script.

    Returns the windows not written because their checkpoint moved (``Moved``: another
    writer, a rebuild, moved it); the others are committed. Raises ``Fenced`` when the fence
    fails (nothing written), and whatever Postgres or the driver raise (failures.py); the
    transaction is then rolled back, or the connection terminated when that cannot be done
    (cancelled midway, the connection lost). ``steps`` (tracing) gets the unix time at which
    each step ended: ``acquired`` (BEGIN), ``fenced``, ``wrote``, ``committed``."""
    await conn.execute("BEGIN")
    try:
        if steps is not None:
            steps["acquired"] = time.time()
        keys, backend = fence if fence is not None else (None, 0)
        row = await conn.fetchrow(
            q("checkpoint_claim"),
            [p.name for p, _ in windows],
            [w.expected for _, w in windows],
            [w.last for _, w in windows],
            keys,
            backend,
        )
        assert row is not None  # one row, always
        held, claimed = row
        if not held:
            raise Fenced("the lease session no longer holds the locks")
        moved: dict[str, Moved] = {}
        for p, w in windows:
            if p.name not in claimed:
                now = await conn.fetchval(q("checkpoint_get"), p.name)
                moved[p.name] = Moved(f"checkpoint is {now}, this writer expected {w.expected}")
        if steps is not None:
            steps["fenced"] = time.time()
        if first is not None:
            await first(conn)
        merges = []
        for p, w in windows:
            if p.name in moved:
                continue
            for table in p.tables:
                changed = w.rows.changed(table)
                if changed:
                    await db.stage_rows(conn, table, changed)
                    merges.append(db.merge_sql(table))
            await store_emitted(conn, p, w.rows)
            await record_dead(conn, p, w.dead)
        if steps is not None:
            steps["wrote"] = time.time()
        await conn.execute(";\n".join([*merges, "COMMIT"]))
    except Exception:
        await _roll_back(conn)
        raise
    except BaseException:  # cancelled: the protocol may be midway through a statement
        conn.terminate()
        raise
    return moved


async def _roll_back(conn: Conn) -> None:
    """End the failed transaction on ``conn``; terminate the connection if that fails (the
    caller raises its own error, not this one's)."""
    if conn.is_closed():
        return
    try:
        await conn.execute("ROLLBACK")
    except Exception:
        conn.terminate()
    except BaseException:
        conn.terminate()
        raise


async def lock(conn: Conn, projection: Projection, window: Window) -> int:
    """Lock the projection's checkpoint for the transaction and return it; ``Moved`` unless it
    is the one ``window`` was folded on."""
    checkpoint: int = await conn.fetchval(q("checkpoint_lock"), projection.name)
    if checkpoint != window.expected:
        raise Moved(f"checkpoint is {checkpoint}, this writer expected {window.expected}")
    return checkpoint


async def write(conn: Conn, projection: Projection, rows: Rows) -> None:
    """Write the rows a fold changed, table by table (in the projection's order), and the
    events it emitted into the outbox."""
    for table in projection.tables:
        changed = rows.changed(table)
        if changed:
            await db.write_rows(conn, table, changed)
    await store_emitted(conn, projection, rows)


async def store_emitted(conn: Conn, projection: Projection, rows: Rows) -> None:
    """Store the events the fold emitted in the outbox (services/projector/outbox.py), in the
    caller's transaction, each under its ``rekeyed`` id; an id stored before is kept as it is.
    Raises ``ValueError`` for an emitted event admission refuses (a fold's bug): the window
    fails and the event that caused it is dead-lettered (``projection_error``, failures.py)
    with the reason, rather than a verdict nobody can apply being published."""
    if rows.outbox:
        secret = await conn.fetchval(q("outbox_secret"))
        stored = []
        for event, seq in rows.outbox:
            out = rekeyed(secret, event, seq)
            subject, data = subject_of(out), encode(out)
            try:
                admit(subject, data)
            except Rejected as exc:  # a fold emitted what no reader would apply: its bug
                msg = f"{projection.name} emitted an event admission refuses: {exc}"
                raise ValueError(msg) from exc
            stored.append((out.id, subject, data, projection.name, seq))
        await conn.executemany(q("outbox_insert"), stored)
        outbox.stored(conn)  # (committed with the caller's transaction: published after it)


def rekeyed(secret: str, event: Event, seq: int) -> Event:
    """``event`` under the id the outbox publishes it with: derived from the id the fold gave
    it (itself derived from its cause's), the cause's stream sequence and the deployment's
    secret. The same on every rebuild; not one a publisher can compute and take first."""
    return msgspec.structs.replace(event, id=deterministic_id(secret, event.id, str(seq)))


async def record_dead(
    conn: Conn, projection: Projection, dead: list[tuple[Delivery, str, str]]
) -> None:
    """Insert dead letters: (delivery, reason, detail). Never refused for its text: subject,
    reason and detail are made storable (a NUL or a lone surrogate is escaped; the detail is cut
    at ``DETAIL_CHARS``); the raw bytes are kept as they are."""
    if not dead:
        return
    await tell_senders(conn, projection, dead)
    store = storable
    await conn.executemany(
        q("dead_letter_insert"),
        [
            (projection.name, projection.stream, d.seq, store(d.subject), store(reason),
             store(detail[:DETAIL_CHARS]), d.data, d.time)
            for d, reason, detail in dead
        ],
    )  # fmt: skip


async def tell_senders(
    conn: Conn, projection: Projection, dead: list[tuple[Delivery, str, str]]
) -> None:
    """Report each dead letter to the agent that sent it, if one can be named
    (``schemas.admission.sender_of``; never a server's answer, which its requester aimed at the
    subject): a ``refused`` command in its inbox, through the outbox.
    One per stream message, however many projections refused it (the id derives from the
    stream and sequence)."""
    rows = []
    secret: str | None = None
    for d, reason, detail in dead:
        if reason == "server_answer":  # aimed here by whoever asked: no sender to tell
            continue
        agent = sender_of(d.subject, d.data)
        if agent is None:
            continue
        if secret is None:
            secret = await conn.fetchval(q("outbox_secret"))
        told = CommandIssued(
            id=deterministic_id(secret, "refused", projection.stream, str(d.seq)), actor=PROJECTOR,
            at=d.time, agent=agent, command="refused",
            reason=storable(f"{reason}: {detail}"[:DETAIL_CHARS]),
            payload={"seq": d.seq, "stream": projection.stream, "reason": reason,
                     "subject": storable(d.subject)[:200]},
        )  # fmt: skip
        rows.append((told.id, subject_of(told), encode(told), projection.name, d.seq))
    if rows:
        await conn.executemany(q("outbox_insert"), rows)


async def advance(conn: Conn, projection: Projection, checkpoint: int, last: int) -> None:
    """Move the checkpoint from ``checkpoint`` to ``last`` (compare-and-set); ``Resync`` if
    another writer moved it meanwhile."""
    status = await conn.execute(q("checkpoint_advance"), projection.name, checkpoint, last)
    if status != "UPDATE 1":
        raise Resync("checkpoint compare-and-set failed")
