"""The outbox: publishing what the projections' folds emit (verdicts on task subjects, commands
to agents' inboxes; projections/base.py ``Rows.emit``).

A fold's emitted events are stored in ``fleetward.outbox`` in the same transaction as the rows
and the checkpoint of the events that caused them (services/projector/commit.py), so an event
is emitted exactly when its cause is applied: never lost, never for a window that did not
commit. ``Outbox`` publishes them in the order stored, each with ``Nats-Msg-Id`` = its
event id, and marks them published once the stream acknowledged them. A crash between the two
publishes again: the stream's duplicate window drops the copy, and beyond it every reader
applies an event id once (the projector's ledger; an agent's inbox skips a command id it has
seen). Two projector processes may both publish: the same.

When: as soon as a commit of this process that stored something ends (``stored()`` during the
transaction, ``committed()`` after it), and every ``POLL_S`` anyway, for what other processes
(a rebuild) stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from fleetward.schemas.headers import MSG_ID
from fleetward.services import metrics
from fleetward.services.db import q
from fleetward.services.runtime.connect import Runtime

log = logging.getLogger("fleetward.outbox")

BATCH = 256
POLL_S = 1.0  # how often it asks Postgres anyway (what other processes stored)
RETRY_S = 2.0  # the longest wait before trying again after a failure
STUCK_S = 30.0  # the oldest waiting event older than this: the outbox is not healthy

_stored: set[int] = set()  # the transactions (their connections' ids) that stored emitted events
_bell: list[anyio.Event] = []  # the running Outbox's: rung when there is something to publish


def stored(conn: object) -> None:
    """The transaction on ``conn`` is storing emitted events (commit.py)."""
    _stored.add(id(conn))


def committed(conn: object) -> None:
    """The transaction on ``conn`` ended; if it stored emitted events, wake the outbox. Kept
    per transaction: with several runners in a process, another runner's commit must not take
    this one's wake-up while this one's rows are not visible yet (the outbox then slept until
    its next poll: the pause commands' 1 s tail in ``make bench --only spend``)."""
    if id(conn) in _stored:
        _stored.discard(id(conn))
        if _bell:
            _bell[0].set()


class Outbox:
    """Publishes the outbox until stopped; ``health`` says whether it keeps up."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.waiting = 0
        self.oldest_s = 0.0
        self.error = ""

    def health(self) -> tuple[bool, str]:
        """(healthy, why): unhealthy when the oldest waiting event waited ``STUCK_S``."""
        if self.oldest_s > STUCK_S:
            why = f"; last error: {self.error}" if self.error else ""
            return False, (
                f"{self.waiting} event(s) waiting to be published, the oldest for "
                f"{self.oldest_s:.0f}s{why}"
            )
        return True, f"{self.waiting} waiting"

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Publish what is stored, as it is stored, until ``stopping()``."""
        delay = 0.0
        while not stopping():
            bell = anyio.Event()
            _bell[:] = [bell]
            try:
                sent = await self.publish_once()
                delay = 0.0
            except Exception as exc:  # NATS or Postgres away: try again, slower
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("outbox: %s; retrying", self.error)
                sent = 0
                delay = min(max(delay * 2, 0.05), RETRY_S)
                await self._measure()
            if sent == BATCH:
                continue  # more may wait
            with anyio.move_on_after(delay or POLL_S):
                if delay:
                    await anyio.sleep(delay)
                else:
                    await bell.wait()

    async def publish_once(self) -> int:
        """Publish up to ``BATCH`` waiting events, in order; how many."""
        async with self.rt.pool.acquire() as conn:
            rows = await conn.fetch(q("outbox_pending"), BATCH)
        if not rows:
            self.waiting, self.oldest_s = 0, 0.0
            metrics.OUTBOX_WAITING.set(0)
            return 0
        done = []
        for r in rows:  # one at a time: commands to one agent keep their order
            ack = await self.rt.js.publish(
                r["subject"], bytes(r["data"]), headers={MSG_ID: r["event_id"]}
            )
            metrics.OUTBOX_PUBLISHED.labels("duplicate" if ack.duplicate else "stored").inc()
            done.append(r["n"])
        async with self.rt.pool.acquire() as conn:
            await conn.execute(q("outbox_published"), done)
        await self._measure()
        self.error = ""
        return len(rows)

    async def _measure(self) -> None:
        try:
            async with self.rt.pool.acquire() as conn:
                r = await conn.fetchrow(q("outbox_backlog"))
        except Exception:  # Postgres away: keep the last figures
            return
        assert r is not None
        self.waiting, self.oldest_s = int(r["waiting"]), float(r["oldest_s"])
        metrics.OUTBOX_WAITING.set(self.waiting)
