"""The watchdog's mind, without I/O: liveness and the detectors behind one face, plus grace and
partitioning. services/watchdog/service.py feeds it what it reads and publishes the ``Plan``s
it returns.

- Grace: nothing is judged before the readers have caught up once (``ready``), nor until
  ``grace_until``, which the watchdog pushes to one grace period after its start, a reconnect,
  or the moment its readers caught up again after an outage (``enter_grace``). Heartbeats and
  events are still followed meanwhile, so afterwards only the truly silent are escalated.
  Recoveries (a heartbeat after an escalation) are published at once, grace or not.
- Partitioning: this replica judges agent ``a`` iff ``partition_of(a, n) == i`` (the heartbeat
  partition token's mapping, schemas/partitions.py: projector partition ``i/n`` owns the same
  agents); tasks by their
  holder (a review by the agent that submitted), a task's cancelled dependencies by the task's
  id. Other agents' heartbeats are dropped before any work.
- Start: the state comes from the projections (``load_*``) as of their checkpoints; events of a
  kind at or below its projection's checkpoint are already in that state and are skipped.
- Tasks: one truth of who holds a task (DESIGN 3.3). The task mirror (mirror.py) folds every
  task event with the board's own task state machine; the task detectors, the dead ends and the
  leases all follow what it says changed (``Moved``), never the events themselves.
- Isolation: durations are clamped where they enter (limits.py); whatever raises anyway while
  judging one agent, task, lease or escalation is noted in ``failures`` (failures.py) for the
  service to log and count, and everything else is judged as usual.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date
from typing import Final

from fleetward.projections.base import Row
from fleetward.projections.gates import Gate
from fleetward.schemas.events import (
    AgentResumed,
    EscalationAcknowledged,
    EscalationRaised,
    EscalationResolved,
    Event,
    RunFinished,
    TaskClaimed,
    TaskLeaseExpired,
    TaskProgressed,
    TaskSubmitted,
    ToolCalled,
)
from fleetward.schemas.partitions import partition_of
from fleetward.services.config import WatchdogSettings
from fleetward.services.watchdog.core.approvals import ApprovalDeadlines
from fleetward.services.watchdog.core.dead_ends import (
    DependencyDetector,
    ReviewDetector,
    why_ended,
)
from fleetward.services.watchdog.core.detectors import (
    ErrorSpikeDetector,
    FailedRunsDetector,
    OverdueDetector,
    StallDetector,
    WakeLoopDetector,
)
from fleetward.services.watchdog.core.drift import AgentVersions, DriftDetector, Sums
from fleetward.services.watchdog.core.failures import Failures
from fleetward.services.watchdog.core.incidents import (
    DEPENDENCY_CANCELLED,
    HEARTBEAT_MISSED,
    REVIEW_OVERDUE,
    TASK_REASONS,
    WATCHDOG,
    Escalations,
    Open,
    Plan,
    Publish,
    at,
    resolve_step,
)
from fleetward.services.watchdog.core.leases import Lapse, LeaseBook
from fleetward.services.watchdog.core.liveness import LIFECYCLE, Liveness
from fleetward.services.watchdog.core.mirror import Moved, TaskWatch, stream_time

# the projection whose checkpoint covers each subject kind of FW_EVENTS
CHECKPOINTS: Final = {
    "agent": "agents", "task": "tasks", "esc": "escalations", "approval": "approvals"
}  # fmt: skip
_ESCALATION_EVENTS: Final = (EscalationRaised, EscalationAcknowledged, EscalationResolved)


class Judge:
    def __init__(self, settings: WatchdogSettings) -> None:
        self.s = settings
        self.failures = Failures()
        self.escalations = Escalations()
        self.liveness = Liveness(settings, self.escalations, self.failures)
        self.tasks = TaskWatch()
        self.overdue = OverdueDetector(settings, self.escalations, self.tasks, self.failures)
        self.stall = StallDetector(settings, self.escalations, self.tasks, self.failures)
        self.review = ReviewDetector(settings, self.escalations, self.tasks, self.failures)
        self.deps = DependencyDetector(self.escalations, self.tasks, self.failures)
        self.spike = ErrorSpikeDetector(settings, self.escalations)
        self.wake = WakeLoopDetector(settings, self.escalations)
        self.failed = FailedRunsDetector(settings, self.escalations)
        self.leases = LeaseBook()
        self.approvals = ApprovalDeadlines(self.escalations)
        self.drift = DriftDetector(settings, self.escalations)
        self.checkpoints: dict[str, int] = dict.fromkeys(CHECKPOINTS, 0)
        self.ready = False  # the readers have caught up once
        self.grace_until = math.inf
        self._part, self._parts = settings.partition

    # ---- grace and partitions ----------------------------------------------------------------

    def owns(self, agent: str) -> bool:
        """Whether ``agent`` is in this replica's partition: the heartbeat partition token's
        mapping (schemas/partitions.py), so projector partition i/n reads the same agents."""
        return self._parts == 1 or partition_of(agent, self._parts) == self._part

    def enter_grace(self, now: float) -> None:
        """Judge no one until one grace period from ``now``."""
        until = now + self.s.grace_s
        self.grace_until = until if math.isinf(self.grace_until) else max(self.grace_until, until)

    def judging(self, now: float) -> bool:
        return self.ready and now >= self.grace_until

    # ---- the state at start ------------------------------------------------------------------

    def load_agent(
        self,
        agent: str,
        status: str,
        interval: float,
        updated_us: int,
        paused_by: str | None = None,
    ) -> None:
        if self.owns(agent):
            self.liveness.load(agent, status, interval, updated_us, paused_by)

    def load_ended(self, task: str, status: str) -> None:
        """A task that is done or cancelled (before the open tasks that depend on it)."""
        self.tasks.load_ended(task, status)

    def load_task(self, row: Row, now: float) -> None:
        """An open task as the board has it (``mirror.MIRRORED`` columns of fleetward.tasks)."""
        moved = self.tasks.load(row)
        with self.failures.isolated("lease", moved.task):
            self.leases.observe(moved.task, self.tasks.rows.get(moved.task), row["last_seq"])
        self._moved(moved, "", now, now)

    def load_escalation(self, raised: EscalationRaised, seq: int, now: float) -> None:
        """An open escalation (fleet.escalations), ``raised`` standing for its latest raise."""
        found = self.escalations.raised(raised, seq)
        if found is not None and found.reason == HEARTBEAT_MISSED and self.owns(found.agent or ""):
            self.liveness.adopt(found, now)  # no heartbeat is known yet: nothing to recover

    def load_approval(self, gate: Gate) -> None:
        """An open approval request (fleet.approvals)."""
        self.approvals.load(gate)

    # ---- what is read --------------------------------------------------------------------------

    def heartbeat(
        self,
        agent: str,
        seq: int,
        ns: int,
        now: float,
        task: str | None = None,
        *,
        event_id: str | None = None,
    ) -> list[Plan]:
        """A heartbeat (the watchdog checks ``owns`` before it even decodes one); one that
        names a task renews the holder's lease on it. With its ``event_id``, a heartbeat that
        is not newer than the agent's last counted one (a copy stored late) changes nothing."""
        if not self.owns(agent):
            return []
        plans = self.liveness.heartbeat(agent, seq, ns // 1000, now, event_id)
        counted = event_id is None or self.liveness.clock(agent).hb_id == event_id
        if task is not None and counted:
            self.leases.heartbeat(agent, task, stream_time(ns // 1000))
        return plans

    def event(self, kind: str, event: Event, seq: int, ns: int, now: float) -> list[Plan]:
        """An event of FW_EVENTS, ``kind`` being its subject kind (agent, task, esc)."""
        us = ns // 1000
        fresh = seq > self.checkpoints.get(kind, 0)
        if isinstance(event, _ESCALATION_EVENTS):
            return self._escalation(event, seq, now) if fresh else []
        if kind == "approval":
            agent = getattr(event, "agent", "")
            if not fresh or not self.owns(agent):
                return []
            return self.approvals.event(event, stream_time(us), now)
        if isinstance(event, LIFECYCLE):
            if not self.owns(event.agent):
                return []
            # an event before the checkpoint is in the loaded state already (applied or not)
            applied = self.liveness.lifecycle(event, us) if fresh else True
            if isinstance(event, AgentResumed) and applied:  # a fresh start: a new streak
                return self.failed.ended(event.agent, now, "the agent was resumed", fresh)
            return []
        plans: list[Plan] = []
        agent = getattr(event, "agent", None)
        if kind == "task" and fresh:
            moved = self.tasks.apply(event, seq, us)
            task = moved.task
            if task:  # every event on the task moves its last sequence, fitting or not
                with self.failures.isolated("lease", task):
                    self.leases.observe(task, self.tasks.rows.get(task), seq)
            plans += self._moved(moved, why_ended(event), us / 1e6, now)
        if agent is None or not self.owns(agent):
            return plans
        judging = self.judging(now) and self.liveness.judgeable(agent)
        match event:
            case ToolCalled():
                plans += self.spike.observe(event, seq, us / 1e6, now, judging)
            case RunFinished():
                plans += self.wake.finished(event, seq, us / 1e6, now, judging)
                plans += self.failed.finished(
                    event, seq, us / 1e6, now, judging=judging, fresh=fresh
                )
            case TaskProgressed() | TaskSubmitted() | TaskClaimed():
                plans += self.wake.progressed(agent, now)
        return plans

    def _moved(self, moved: Moved, why: str, since: float, now: float) -> list[Plan]:
        """What the task detectors make of what an event changed of its task (``why``: the
        resolution of a dead end it ends; ``since``: its stream time, seconds): the held
        claim, the review the task waits for, and its and its dependents' dependencies."""
        plans: list[Plan] = []
        task = moved.task
        for change in moved.changes:
            with self.failures.isolated("overdue", task):
                plans += self.overdue.changed(change, now)
            with self.failures.isolated("stall", task):
                plans += self.stall.changed(change, now)
        before, after = moved.submitted
        if after != before:
            with self.failures.isolated("review", task):
                plans += self.review.changed(task, before, after, now, why)
        for waiting in moved.dead_ends:
            with self.failures.isolated("dependency", waiting):
                plans += self.deps.changed(waiting, now, since, why)
        return plans

    def _escalation(self, event: Event, seq: int, now: float) -> list[Plan]:
        if isinstance(event, EscalationResolved):
            closed = self.escalations.apply(event, seq)
            if closed is not None:
                self.closed(closed)
            return []
        found = self.escalations.apply(event, seq)
        if (
            isinstance(event, EscalationRaised)
            and found is not None
            and found.reason == HEARTBEAT_MISSED
            and self.owns(found.agent or "")
        ):
            return self.liveness.adopt(found, now)
        return []

    def closed(self, esc: Open) -> None:
        if esc.reason == HEARTBEAT_MISSED:
            self.liveness.closed(esc)

    def found_resolved(self, esc: str) -> None:
        """The publisher found ``esc`` resolved on its subject (e.g. before a restart)."""
        closed = self.escalations.close(esc)
        if closed is not None:
            self.closed(closed)

    def stored(self, esc: str, seq: int) -> None:
        """An event of escalation ``esc`` is stored at ``seq`` (a PubAck)."""
        self.escalations.stored(esc, seq)

    # ---- the timer -------------------------------------------------------------------------

    def tick(self, now: float) -> list[Plan]:
        if not self.judging(now):
            return []
        plans = self.liveness.due(now, self.tasks.holdings)
        for plan in plans:  # a dead agent's leases are released with its critical escalation
            for step in plan.steps:
                if isinstance(step.event, TaskLeaseExpired):
                    self.leases.release(step.event.task)
        healthy = self.liveness.healthy
        plans += self.overdue.due(now, self.owns, healthy)
        plans += self.stall.due(now, self.owns, healthy)
        plans += self.review.due(now, self.owns, healthy)
        plans += self.deps.due(now, self.owns)
        plans += self.approvals.due(now, self.owns)
        for lapse in self.leases.due(at(now)):
            with self.failures.isolated("lease", lapse.task):
                if self.owns(lapse.agent):
                    plans.append(lease_plan(lapse, now))
        return plans

    def kpi_drift(
        self,
        agents: Iterable[AgentVersions],
        sums: dict[tuple[str, str, str], Sums],
        today: date,
        now: float,
    ) -> list[Plan]:
        """The KPI drift of the agents this replica owns (core/drift.py), read at ``now``;
        nothing while it is not judging."""
        if not self.judging(now):
            return []
        with self.failures.isolated("kpi_drift", ""):
            return self.drift.judge(agents, sums, today, now, self.owns)
        return []

    def next_due(self) -> float | None:
        heaps = (self.liveness.heap, self.overdue.heap, self.stall.heap, self.review.heap)
        dues = [h.next_due() for h in heaps]
        dues += [self.leases.next_due(), self.deps.next_due(), self.approvals.next_due()]
        return min((d for d in dues if d is not None), default=None)

    def reconcile(self, now: float) -> list[Plan]:
        """Once caught up: resolve open task escalations whose task is no longer held at the
        epoch they are about, and dead ends that ended (while no watchdog was looking)."""
        plans: list[Plan] = []
        dead_ends = self.review.current() | self.deps.current()
        for esc in list(self.escalations.open.values()):
            if esc.reason in (REVIEW_OVERDUE, DEPENDENCY_CANCELLED):
                owner = esc.agent if esc.reason == REVIEW_OVERDUE else esc.task
                if esc.id not in dead_ends and self.owns(owner or ""):
                    self.escalations.close(esc.id)
                    step = resolve_step(esc.id, now, "the task no longer waits", esc.seq)
                    plans.append(Plan(f"esc:{esc.id}", (step,)))
                continue
            if esc.reason not in TASK_REASONS or esc.task is None or not self.owns(esc.agent or ""):
                continue
            with self.failures.isolated("reconcile", esc.id):
                held = self.tasks.held.get(esc.task)
                if held is None or (esc.epoch and held.epoch != esc.epoch):
                    self.escalations.close(esc.id)
                    step = resolve_step(esc.id, now, "the task ended", esc.seq)
                    plans.append(Plan(f"esc:{esc.id}", (step,)))
        return plans

    # ---- for metrics -------------------------------------------------------------------------

    def tracked(self) -> int:
        return len(self.liveness.agents)

    def states(self) -> Iterable[tuple[str, int]]:
        return ((k, n) for k, n in self.liveness.counts.items() if n)


def lease_plan(lapse: Lapse, now: float) -> Plan:
    """Publish the lapse, but only if nothing was published on the task since the lease was
    last seen (a progress that arrived in time wins; the book then judges again)."""
    expired = TaskLeaseExpired(id=lapse.event_id, actor=WATCHDOG, at=at(now), task=lapse.task,
                               agent=lapse.agent, epoch=lapse.epoch)  # fmt: skip
    step = Publish(expired, expect="exact", seq=lapse.expected_seq)
    return Plan(f"task:{lapse.task}", (step,), lapse.deadline.timestamp())
