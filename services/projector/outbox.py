"""The outbox: publishing what the projections' folds emit (verdicts on task subjects, commands
to agents' inboxes; projections/base.py ``Rows.emit``).

A fold's emitted events are stored in ``fleetward.outbox`` in the same transaction as the rows
and the checkpoint of the events that caused them (services/projector/commit.py), so an event
is emitted exactly when its cause is applied: never lost, never for a window that did not
commit. ``Outbox`` publishes them in the order stored, each with ``Nats-Msg-Id`` = its
event id, and marks them published once the stream acknowledged them. A crash between the two
publishes again: the stream's duplicate window drops the copy. Beyond it (the projector was
down for longer), an event stored ``LATE_S`` ago or more is looked for on its subject first
(``_stored_already``): one found there (its id in the ``Nats-Msg-Id`` of a message stored on
the subject since the event was) is marked published, not published again, so that a restarted
agent's inbox (which remembers command ids only in memory) never gets a second copy. The
projector's ledger applies an event id once anyway. Two projector processes may both publish:
the same.

When: as soon as a commit of this process that stored something ends (``stored()`` during the
transaction, ``committed()`` after it), and every ``POLL_S`` anyway, for what other processes
(a rebuild) stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import anyio

from fleetward.schemas.headers import MSG_ID
from fleetward.schemas.streams import all_streams, stream_for_kind
from fleetward.schemas.subjects import parse
from fleetward.services import metrics
from fleetward.services.client.direct import first_since, read_subjects
from fleetward.services.db import q
from fleetward.services.runtime.connect import Runtime

log = logging.getLogger("fleetward.outbox")

BATCH = 256
POLL_S = 1.0  # how often it asks Postgres anyway (what other processes stored)
RETRY_S = 2.0  # the longest wait before trying again after a failure
STUCK_S = 30.0  # the oldest waiting event older than this: the outbox is not healthy
# Waiting this long (seconds since stored), an event may have been published before a crash
# long enough ago that the stream's duplicate window (120 s at least, verified at start) no
# longer drops a copy: half of it, for clocks (Postgres' and the server's) that differ a little
LATE_S: Final = min(spec.duplicate_window_s for spec in all_streams()) / 2
LOOKUP_SKEW: Final = timedelta(minutes=5)  # looked for from this long before it was stored
# messages the lookups of one batch read at most (~1.5 s): past them, the late events not found
# are published again (a flood stored on the subjects cannot hold every agent's commands back)
LOOKUP_MAX: Final = 10_000

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
        found = await self._stored_already(rows)
        for r in rows:  # one at a time: commands to one agent keep their order
            if r["n"] in found:
                metrics.OUTBOX_PUBLISHED.labels("found").inc()
                done.append(r["n"])
                continue
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

    async def _stored_already(self, rows: Sequence[Any]) -> set[int]:
        """The outbox numbers (``n``) of ``rows`` (the oldest waiting) that the stream holds
        already, on the subjects with an event waiting ``LATE_S`` or more: the messages stored
        on such a subject since its oldest waiting event was stored here (less
        ``LOOKUP_SKEW``, for clocks that differ) are read (one message get each, from one get
        by start time), and a row is found when its event id is a message's ``Nats-Msg-Id``.
        Each row by its own id: rows commit out of ``n`` order across runners, and others can
        store messages on the subject too (a server's answer aimed there). None read in the
        usual case; past ``LOOKUP_MAX`` messages for the batch, the rows not found are
        published again."""
        since: dict[str, datetime] = {}
        for r in rows:
            if r["age_s"] >= LATE_S:
                at = r["created_at"] - LOOKUP_SKEW
                since[r["subject"]] = min(since.get(r["subject"], at), at)
        found: set[int] = set()
        read = 0
        for looked, (subject, start) in enumerate(since.items()):
            if read >= LOOKUP_MAX:
                left = len(since) - looked
                log.warning("outbox: the late events' lookups read %d messages: those on %d "
                            "more subject(s) are published again", read, left)  # fmt: skip
                break
            parsed = parse(subject)
            if parsed is None:
                continue
            stream = stream_for_kind(parsed.kind)
            first = await first_since(self.rt.nc, stream, subject, start)
            if first is None:
                continue  # nothing stored on it since: publish
            wanted = {r["event_id"]: r["n"] for r in rows if r["subject"] == subject}
            async for raw in read_subjects(self.rt.nc, stream, subject, after=first - 1):
                n = wanted.get(raw.headers.get(MSG_ID, ""))
                if n is not None:
                    found.add(n)
                read += 1
                if read >= LOOKUP_MAX:
                    break
        if found:
            log.info("outbox: %d waiting event(s) were stored already (before a restart): "
                     "marked published, not published again", len(found))  # fmt: skip
        return found

    async def _measure(self) -> None:
        try:
            async with self.rt.pool.acquire() as conn:
                r = await conn.fetchrow(q("outbox_backlog"))
        except Exception:  # Postgres away: keep the last figures
            return
        assert r is not None
        self.waiting, self.oldest_s = int(r["waiting"]), float(r["oldest_s"])
        metrics.OUTBOX_WAITING.set(self.waiting)
