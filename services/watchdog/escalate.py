"""Publishing the watchdog's plans: exactly one escalation per incident, however many replicas.

Every event has a deterministic id, sent as ``Nats-Msg-Id``. Raises and resolutions are also
published compare-and-set over the escalation's subjects (``fw.esc.<id>.>``, every actor's:
``jetstream.publish``): 0 for the first raise (they must be empty), else the last sequence known
over them. A replica that loses the race gets "wrong last sequence" (JetStream error 10071) or a
duplicate PubAck, reads the escalation's last event (``jetstream.boundary``: on its v1 subject
when it has only history) and decides:

- the event is there already, or a raise of the same or a higher tier: done (a duplicate);
- the escalation is resolved: the rest of the plan is dropped (a person or a heartbeat closed
  the incident; nothing is marked offline for it);
- anything else (an acknowledgement, a lower tier): publish again after that sequence.

An approval's expiry denial is published "gate": the publisher reads the request's subjects
(``fw.approval.<id>.>``, folded with the approval state machine and the role book, as every
reader does: services/client/approvals.py ``read_gate``) and, while the request is open, stores
the denial compare-and-set on the last sequence read there; "wrong last sequence" reads again.
A request decided by someone else (a person first) drops the denial and the rest of its plan
(the watchdog resolves the escalation when it reads that decision); one denied by this very
denial (another replica's) is a duplicate.

A lease expiry is published "exact": only on top of the sequence the lease was last seen at. If
anything arrived on the task since (a progress just in time), it is dropped; the lease book
sees that event and judges the lease again. That sequence may be one of the task's v1 history
(the last event the book saw of a task claimed under contract v1): when the server refuses it,
the task's v2 subjects are read, and if they hold nothing after it the expiry is published on
top of their last sequence.

Plans with the same key are published one at a time, in order; different keys concurrently,
up to ``window`` at once. A transient failure (NATS away) retries the step for up to
``give_up_s``: deduplication and compare-and-set make the retries safe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from nats.js import JetStreamContext
from nats.js.errors import APIError

from fleetward.schemas import subject_of
from fleetward.schemas.admission import Rejected, decode
from fleetward.schemas.events import ApprovalDenied, EscalationRaised, EscalationResolved, Event
from fleetward.schemas.headers import WRONG_LAST_SEQUENCES
from fleetward.schemas.subjects import key_of
from fleetward.services import metrics
from fleetward.services.client.approvals import GateState
from fleetward.services.jetstream.boundary import last_of
from fleetward.services.jetstream.plans import PlanPublisher, retrying
from fleetward.services.jetstream.publish import publish
from fleetward.services.watchdog.core.incidents import TIER_RANK, Plan, Publish

log = logging.getLogger("fleetward.watchdog")


Outcome = Literal["stored", "duplicate", "closed"]


class Publisher(PlanPublisher):
    """Publishes the watchdog's plans (see above). ``on_stored`` gets each event stored under
    compare-and-set with its sequence, ``on_closed`` each escalation found resolved, ``on_done``
    the key of each plan finished (published, found done already, or dropped); ``clock`` is the
    watchdog's, in seconds since the epoch, for the detection delay; ``read_gate`` reads an
    approval request's state from its subjects (for "gate" steps)."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        on_stored: Callable[[Event, int], None],
        on_closed: Callable[[str], None],
        on_done: Callable[[str], None] | None = None,
        window: int = 256,
        give_up_s: float = 120.0,
        clock: Callable[[], float] = time.time,
        read_gate: Callable[[str], Awaitable[GateState]] | None = None,
    ) -> None:
        super().__init__(
            log=log, failed_metric=metrics.WATCHDOG_PUBLISHED.labels("failed").inc, window=window
        )
        self.js = js
        self.on_stored, self.on_closed, self.on_done = on_stored, on_closed, on_done
        self.give_up_s = give_up_s
        self.clock = clock
        self.read_gate = read_gate

    def finished(self, plan: Plan, result: None) -> None:
        if self.on_done is not None:
            self.on_done(plan.key)

    async def execute(self, plan: Plan) -> None:
        """Publish a plan's steps in order; stop when one finds its escalation resolved."""
        for step in plan.steps:
            outcome = await self._retrying(step)
            self.outcomes[outcome] += 1
            metrics.WATCHDOG_PUBLISHED.labels(outcome).inc()
            if outcome == "closed":
                if isinstance(esc := getattr(step.event, "escalation", None), str):
                    self.on_closed(esc)
                return
            event = step.event
            if isinstance(event, EscalationRaised) and outcome == "stored":
                metrics.ESCALATIONS_RAISED.labels(event.tier, event.reason).inc()
                if plan.deadline is not None:
                    delay = max(0.0, self.clock() - plan.deadline)
                    metrics.DETECTION_DELAY.labels(event.reason).observe(delay)
                log.info(
                    "escalation %s %s %s: %s",
                    event.escalation,
                    event.tier,
                    event.agent or event.task,
                    event.message,
                )

    async def _retrying(self, step: Publish) -> Outcome:
        return await retrying(lambda: self.step(step), subject_of(step.event), log, self.give_up_s)

    async def step(self, step: Publish) -> Outcome:
        event = step.event
        if step.expect == "any":
            ack = await publish(self.js, event)
            return "duplicate" if ack.duplicate else "stored"
        if step.expect == "exact":  # only on top of step.seq; if the task moved, drop it
            return await self._exact(event, step.seq)
        if step.expect == "gate":  # only while the request is open
            assert isinstance(event, ApprovalDenied), event
            return await self._gate(event)
        expected: int | None = 0 if step.expect == "empty" else (step.seq or None)
        for _ in range(8):
            if expected is None:
                seq, found, last = await self._last(event)
                # a last message no one can read (dead-lettered garbage) says nothing: publish
                # after it, whatever the event (a resolution must not be taken for a duplicate)
                verdict = None if found and last is None else _judge_last(event, last)
                if verdict is not None:
                    return verdict
                expected = seq
            try:
                ack = await publish(self.js, event, expect=expected)
            except APIError as exc:
                if exc.err_code not in WRONG_LAST_SEQUENCES:
                    raise
                expected = None  # someone wrote on the escalation: look again
                continue
            self.on_stored(event, ack.seq)
            return "duplicate" if ack.duplicate else "stored"
        raise RuntimeError(f"{subject_of(event)} keeps changing; gave up publishing {event.id}")

    async def _gate(self, event: ApprovalDenied) -> Outcome:
        """Publish the denial only on top of an open request (see the module)."""
        if self.read_gate is None:
            raise RuntimeError(f"no reader of approval requests to publish {event.id}")
        for _ in range(8):
            state = await self.read_gate(event.approval)
            gate = state.gate
            if gate is None or gate.agent != event.agent:
                return "closed"  # nothing to deny (a reader that saw otherwise was wrong)
            if not gate.open:
                mine = gate.decided_by == event.actor and gate.expired
                return "duplicate" if mine else "closed"
            try:
                ack = await publish(self.js, event, expect=state.last_seq)
            except APIError as exc:
                if exc.err_code not in WRONG_LAST_SEQUENCES:
                    raise
                continue  # something was stored on the request meanwhile: read it again
            return "duplicate" if ack.duplicate else "stored"
        raise RuntimeError(f"{subject_of(event)} keeps changing; gave up publishing {event.id}")

    async def _exact(self, event: Event, seq: int) -> Outcome:
        """Publish ``event`` only if nothing was stored on its task after ``seq``."""
        expect = seq
        while True:
            try:
                ack = await publish(self.js, event, expect=expect)
            except APIError as exc:
                if exc.err_code not in WRONG_LAST_SEQUENCES:
                    raise
                if expect != seq:
                    return "duplicate"
                # news after seq (the lease book judges again), or seq is of v1 history
                last = await last_of(self.js, event.SUBJECT_KIND, key_of(event), direct=True)
                if last.expect >= seq:
                    return "duplicate"
                expect = last.expect
                continue
            return "duplicate" if ack.duplicate else "stored"

    async def _last(self, event: Event) -> tuple[int, bool, Event | None]:
        """The compare-and-set sequence over ``event``'s escalation, whether it holds anything,
        and its last event (None: nothing, or nothing readable)."""
        last = await last_of(self.js, event.SUBJECT_KIND, key_of(event), direct=True)
        if last.msg is None:
            return last.expect, False, None
        try:
            return last.expect, True, decode(last.msg.data or b"")
        except (Rejected, RecursionError):  # nested too deep for the decoder: not ours either
            return last.expect, True, None  # not ours to judge: the caller publishes after it


def _judge_last(event: Event, last: Event | None) -> Outcome | None:
    """What the subject's last event means for ``event``, or None: publish after it."""
    if last is None:  # nothing raised (yet): a raise goes first, a resolution has nothing to do
        return "duplicate" if isinstance(event, EscalationResolved) else None
    if isinstance(last, EscalationResolved):
        return "closed" if not isinstance(event, EscalationResolved) else "duplicate"
    if last.id == event.id:
        return "duplicate"
    if (
        isinstance(event, EscalationRaised)
        and isinstance(last, EscalationRaised)
        and TIER_RANK[last.tier] >= TIER_RANK[event.tier]
    ):
        return "duplicate"
    return None
