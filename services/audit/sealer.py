"""The auditor (``fleetward auditor``, identity ``svc:audit``; part of ``make run``): follows
FW_EVENTS, keeps chain(n) of the last message read, and once per period (``period_s``, daily by
default: ``FLEETWARD_AUDIT_SEAL_S``) publishes the head as ``audit.sealed`` on
``fw.audit.FW_EVENTS.svc:audit``.

Twice, once: the seal's id is deterministic per period (``Nats-Msg-Id`` dedupes a retry) and it
is published compare-and-set over ``fw.audit.FW_EVENTS.>`` on the last seal the replica read, so
of two replicas sealing the same period one is stored; the other reads the stored seal and
waits for the next period. At start the auditor takes up the chain at its last seal (reading
what was stored since), or at the genesis when there is none.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
from nats.js.errors import APIError

from fleetward.schemas.events import AuditSealed
from fleetward.schemas.headers import WRONG_LAST_SEQUENCES
from fleetward.schemas.ids import deterministic_id
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.services import metrics
from fleetward.services.audit import chain
from fleetward.services.audit.export import seals
from fleetward.services.audit.read import How, stored
from fleetward.services.jetstream.publish import publish
from fleetward.services.runtime.connect import Runtime

log = logging.getLogger("fleetward.auditor")

DAY_S = 86_400.0
POLL_S = 1.0  # how often the auditor reads what was stored since
CONSUMER_FROM = 10_000  # read this many messages or more with a consumer, fewer by direct gets


class Auditor:
    """One replica of the auditor on ``rt`` (acting as ``svc:audit``)."""

    def __init__(
        self, rt: Runtime, period_s: float = DAY_S, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.rt, self.period_s, self.clock = rt, period_s, clock
        self.seq = -1  # chain(seq) = head is known; -1 until the auditor has started
        self.anchor = 0
        self.head = chain.GENESIS
        self.last_seal: AuditSealed | None = None
        self.last_seal_at = 0  # where the last seal is stored (compare-and-set)
        self.caught_up = False

    def health(self) -> tuple[bool, str]:
        """Ready once the chain is taken up and caught up with the stream."""
        if self.seq < 0:
            return False, "taking up the chain"
        if not self.caught_up:
            return False, f"reading FW_EVENTS (chain at seq {self.seq})"
        return True, f"chain at seq {self.seq}"

    async def start(self) -> None:
        """Take the chain up at the last seal (or the genesis) and read to the stream's head."""
        found = await seals(self.rt, "direct")
        first_held = max((await self.rt.js.stream_info(EVENTS_STREAM)).state.first_seq, 1)
        if found:
            self.last_seal_at, self.last_seal = found[-1]
        usable = [s for _, s in found if s.seq >= first_held - 1]
        if usable:
            seal = max(usable, key=lambda s: s.seq)
            self.seq, self.head, self.anchor = seal.seq, bytes.fromhex(seal.head), seal.anchor
        elif first_held == 1:
            self.seq, self.head, self.anchor = 0, chain.GENESIS, 0
        else:  # the stream forgot its start before any seal: a chain of its own from here
            self.seq, self.anchor = first_held - 1, first_held - 1
            self.head = chain.unanchored(self.anchor)
        await self.catch_up()

    async def catch_up(self) -> int:
        """Chain what was stored since ``seq``; the messages read."""
        last = (await self.rt.js.stream_info(EVENTS_STREAM)).state.last_seq
        read = 0
        how: How = "consumer" if last - self.seq > CONSUMER_FROM else "direct"
        async for m in stored(self.rt.nc, EVENTS_STREAM, self.seq + 1, last, how=how):
            self.head = chain.step(self.head, m.seq, m.time, m.subject, m.data)
            self.seq, read = m.seq, read + 1
        self.caught_up = True
        metrics.AUDIT_CHAIN_SEQ.set(self.seq)
        return read

    def period(self) -> int:
        """The index of the current period (whole periods since the epoch)."""
        return math.floor(self.clock() / self.period_s)

    def due(self) -> bool:
        """Whether the current period has no seal yet."""
        if self.last_seal is None:
            return True
        sealed = math.floor(self.last_seal.period_start.timestamp() / self.last_seal.period_s)
        return self.last_seal.period_s != self.period_s or sealed < self.period()

    async def seal(self) -> bool:
        """Publish the head for the current period; False when another replica had (10071:
        its seal is read instead)."""
        index = self.period()
        event = AuditSealed(
            id=deterministic_id("audit.sealed", EVENTS_STREAM, f"{self.period_s:g}", str(index)),
            actor=chain.SEALER, at=datetime.now(UTC), stream=EVENTS_STREAM, seq=self.seq,
            head=self.head.hex(), anchor=self.anchor,
            period_start=datetime.fromtimestamp(index * self.period_s, UTC),
            period_s=self.period_s,
        )  # fmt: skip
        try:
            ack = await publish(self.rt.js, event, expect=self.last_seal_at)
        except APIError as exc:
            if exc.err_code not in WRONG_LAST_SEQUENCES:
                raise
            found = await seals(self.rt, "direct")
            if found:
                self.last_seal_at, self.last_seal = found[-1]
            metrics.AUDIT_SEALS.labels("lost").inc()
            return False
        self.last_seal_at, self.last_seal = ack.seq, event
        outcome = "duplicate" if ack.duplicate else "stored"
        metrics.AUDIT_SEALS.labels(outcome).inc()
        metrics.AUDIT_LAST_SEAL.set(time.time())
        log.info("sealed FW_EVENTS at seq %d: %s (%s)", self.seq, self.head.hex()[:16], outcome)
        return True

    async def run(self, stopping: Callable[[], bool], poll_s: float = POLL_S) -> None:
        """Start, then read and seal when due until ``stopping()``; a failed round (NATS
        away) is logged and tried again."""
        while not stopping():
            try:
                if self.seq < 0:
                    await self.start()
                else:
                    await self.catch_up()
                if self.due():
                    await self.seal()
            except Exception:
                self.caught_up = False
                metrics.AUDIT_FAILURES.inc()
                log.exception("auditor round failed; trying again")
            await anyio.sleep(poll_s)
