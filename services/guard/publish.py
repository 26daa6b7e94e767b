"""Publishing the guard's plans: each event once, however many replicas (DESIGN 3.9).

Every event has a deterministic id (services/guard/core.py), sent as ``Nats-Msg-Id``, so a
replica's second publish within the stream's duplicate window (>= 2 minutes) is a duplicate.
On top of that:

- ``budget`` steps (``budget.exhausted``, ``budget.restored``, ``budget.reserved`` carried,
  ``budget.released``) are compare-and-set on the guard's own subject of the budget
  (``fw.budget.<id>.svc:guard``) on the last sequence the guard has seen there: only the
  guard's replicas publish there, so nobody else's messages on the budget (a person's refused
  flood) hold it up, and a change of the budget by a person is folded and judged after.
  Refused (JetStream 10071): the last event there is read; the same event, or an exhaustion or
  restore of the same window, means another replica stored it (a duplicate: the plan goes on,
  its pauses are deduplicated too); anything else (another reservation) means the budget
  moved: the plan is dropped and the core judges the budget again (a release is planned again
  by the next tick, if still due).
- ``empty`` steps (a warning escalation) are stored only on an empty escalation subject: once
  per budget and window, ever; refused means raised already.
- ``any`` steps (pauses, resumes): the stream's deduplication only.

Plans with the same key (a budget) are published one at a time, in order. A transient failure
(NATS away) retries the step for up to ``give_up_s`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from fleetward.schemas import subject_of
from fleetward.schemas.admission import Rejected, decode
from fleetward.schemas.events import AgentPaused, BudgetExhausted, BudgetRestored, Event
from fleetward.schemas.headers import WRONG_LAST_SEQUENCES
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import key_of
from fleetward.services import metrics
from fleetward.services.guard.core import Plan, Publish
from fleetward.services.jetstream.plans import PlanPublisher, retrying
from fleetward.services.jetstream.publish import publish

log = logging.getLogger("fleetward.guard")

Outcome = Literal["stored", "duplicate", "moved"]


class Publisher(PlanPublisher):
    """Publishes the guard's plans (see above). ``seq_of(budget)`` is the last sequence the
    guard has seen on its own subject of a budget; ``on_done(plan, stored)`` is told how each plan
    ended (``stored`` False: dropped, the budget moved); ``clock`` (seconds since the epoch)
    times the pause latency."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        seq_of: Callable[[str], int],
        on_done: Callable[[Plan, bool], None],
        give_up_s: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            log=log, failed_metric=metrics.GUARD_PUBLISHED.labels("failed").inc, window=None
        )
        self.js, self.seq_of, self.on_done = js, seq_of, on_done
        self.give_up_s, self.clock = give_up_s, clock

    def finished(self, plan: Plan, result: bool | None) -> None:
        self.on_done(plan, bool(result))

    async def execute(self, plan: Plan) -> bool:
        """Publish a plan's steps in order; False when the budget moved under it (dropped)."""
        for step in plan.steps:
            outcome = await self._retrying(step)
            self.outcomes[outcome] += 1
            metrics.GUARD_PUBLISHED.labels(outcome).inc()
            if outcome == "moved":
                return False
            event = step.event
            if outcome == "stored" and isinstance(event, BudgetExhausted):
                metrics.GUARD_EXHAUSTED.inc()
                log.info("budget %s exhausted: %s of %s USD", event.budget, event.spent_usd,
                         event.limit_usd)  # fmt: skip
            if outcome == "stored" and isinstance(event, AgentPaused):
                metrics.GUARD_PAUSED.inc()
                if plan.crossing_ns is not None:
                    lag = max(0.0, self.clock() - plan.crossing_ns / 1e9)
                    metrics.GUARD_PAUSE_LAG.observe(lag)
        return True

    async def _retrying(self, step: Publish) -> Outcome:
        return await retrying(lambda: self.step(step), subject_of(step.event), log, self.give_up_s)

    async def step(self, step: Publish) -> Outcome:
        event = step.event
        if step.expect == "any":
            ack = await publish(self.js, event)
            return "duplicate" if ack.duplicate else "stored"
        if step.expect == "empty":
            expected, over = 0, None
        else:
            expected, over = self.seq_of(key_of(event)), subject_of(event)
        try:
            ack = await publish(self.js, event, expect=expected, over=over)
        except APIError as exc:
            if exc.err_code not in WRONG_LAST_SEQUENCES:
                raise
            if step.expect == "empty":
                return "duplicate"
            return await self._judge_last(event)
        return "duplicate" if ack.duplicate else "stored"

    async def _judge_last(self, event: Event) -> Outcome:
        """After a refused compare-and-set on a budget: stored already, or moved."""
        try:
            msg = await self.js.get_last_msg(EVENTS_STREAM, subject_of(event), direct=True)
        except NotFoundError:
            return "moved"
        try:
            found = decode(msg.data or b"")
        except (Rejected, RecursionError):
            return "moved"
        same = found.id == event.id or (
            isinstance(event, BudgetExhausted | BudgetRestored)
            and type(found) is type(event)
            and getattr(found, "window_start", None) == getattr(event, "window_start", None)
        )
        return "duplicate" if same else "moved"
