"""Dead ends: tasks that wait for something that will not come by itself (DESIGN 3.2, 3.12).
Pure: fed the task mirror's changes (``TaskWatch``, mirror.py) with an explicit ``now``;
they return ``Plan``s.

- ``ReviewDetector``: a task in review (submitted, no verdict yet) longer than its SLA (the
  task's ``sla_s``, else ``review_sla_s``; 0: none): ``review_overdue``, warning, about the task
  and the agent that submitted. One incident per submission (its stream time names it);
  resolved when the verdict arrives, or the task is cancelled, revoked or its claim refused.
- ``DependencyDetector``: an open task that depends on a cancelled task can never be claimed:
  ``dependency_cancelled``, warning, one incident per task and dependency. Resolved when the
  task's dependencies change (``task.dependencies_changed``) to ones without it, or the task
  ends (cancelled, done).

Both raise only while the watchdog judges (the service's ``tick``), never in grace: a dead end
found while catching up waits for the end of the grace period. Resolutions are published as
soon as the condition ends, grace or not, as the other detectors' are. Replicas judge the tasks
of the agents they own (review: the submitter) or the tasks they own (dependencies: by task
id), with deterministic escalation ids, so two replicas raise one escalation.
"""

from __future__ import annotations

from fleetward.schemas.events import (
    Event,
    TaskCancelled,
    TaskClaimRefused,
    TaskDependenciesChanged,
    TaskReviewed,
    TaskRevoked,
)
from fleetward.services.watchdog.core.detectors import DeadlineDetector, Owns
from fleetward.services.watchdog.core.failures import Failures
from fleetward.services.watchdog.core.incidents import (
    DEPENDENCY_CANCELLED,
    REVIEW_OVERDUE,
    Escalations,
    Open,
    Plan,
    Publish,
    escalation_id,
    iso,
    raised_event,
    resolve_step,
)
from fleetward.services.watchdog.core.limits import period
from fleetward.services.watchdog.core.mirror import TaskWatch


def why_ended(event: Event) -> str:
    """The resolution of a dead end that ``event`` ended, in words."""
    match event:
        case TaskReviewed():
            return f"the review arrived ({event.verdict})"
        case TaskCancelled():
            return "the task was cancelled"
        case TaskRevoked():
            return "the task was revoked"
        case TaskClaimRefused():
            return "the claim was refused"
        case TaskDependenciesChanged():
            return "the task's dependencies changed"
    return "the task no longer waits"


def _resolve(escalations: Escalations, esc: Open | None, now: float, why: str) -> list[Plan]:
    if esc is None:
        return []
    escalations.close(esc.id)
    return [Plan(f"esc:{esc.id}", (resolve_step(esc.id, now, why, esc.seq),))]


class ReviewDetector(DeadlineDetector):
    reason = REVIEW_OVERDUE
    stage = "review"

    def sla(self, task: str) -> tuple[float, str] | None:
        """The time ``task`` may wait in review, and where it comes from; None: no limit."""
        own = self.watch.sla(task)
        if own is not None:
            return own, "task"
        return (period(self.s.review_sla_s), "default") if self.s.review_sla_s > 0 else None

    @staticmethod
    def incident(task: str, submitted_us: int) -> str:
        return escalation_id("ro", task, str(submitted_us))

    def changed(
        self, task: str, before: int | None, after: int | None, now: float, why: str
    ) -> list[Plan]:
        """The submission ``task`` waits a review for went from ``before`` to ``after`` (stream
        times in µs; None: not in review)."""
        plans: list[Plan] = []
        if before is not None:
            self.heap.cancel(task)
            found = self.escalations.get(self.incident(task, before))
            plans += _resolve(self.escalations, found, now, why)
        if after is not None:
            sla = self.sla(task)
            if sla is not None:
                self.heap.schedule(task, after / 1e6 + sla[0])
        return plans

    def current(self) -> set[str]:
        """The incidents of the tasks in review now (for reconciling at start)."""
        return {self.incident(task, w.submitted_us) for task, w in self.watch.submitted.items()}

    def _judge(self, task: str, now: float, owns: Owns, healthy: Owns) -> Plan | None:
        """Raised if this replica owns the submitter, healthy or not: the review is awaited
        from someone else."""
        waiting = self.watch.submitted.get(task)
        sla = self.sla(task)
        if waiting is None or sla is None or not owns(waiting.agent):
            return None
        agent, epoch, submitted = waiting
        limit, source = sla
        due = submitted / 1e6 + limit
        if now < due:
            self.heap.schedule(task, due)
            return None
        esc = self.incident(task, submitted)
        if self.escalations.known(esc):
            return None
        raised = raised_event(
            esc, "warning", REVIEW_OVERDUE, now, agent=agent, task=task,
            message=f"waiting for a review for {now - submitted / 1e6:.1f}s, SLA {limit:g}s",
            evidence={"submitted_at": iso(submitted / 1e6), "sla_s": limit, "sla_from": source,
                      "epoch": epoch},
        )  # fmt: skip
        self.escalations.raised(raised)
        return Plan(f"esc:{esc}", (Publish(raised, "empty"),), due)


class DependencyDetector:
    reason = DEPENDENCY_CANCELLED

    def __init__(
        self, escalations: Escalations, watch: TaskWatch, failures: Failures | None = None
    ) -> None:
        self.escalations, self.watch = escalations, watch
        self.failures = failures if failures is not None else Failures()
        self.dead: dict[str, set[str]] = {}  # task -> its cancelled dependencies
        self.waiting: dict[tuple[str, str], float] = {}  # (task, dependency) -> since, to raise

    @staticmethod
    def incident(task: str, dep: str) -> str:
        return escalation_id("dc", task, dep)

    def changed(self, task: str, now: float, since: float, why: str) -> list[Plan]:
        """Look at ``task``'s dependencies again (they, or its own state, changed at stream
        time ``since``): new dead ends wait for the next judging round, ended ones resolve."""
        now_dead = set(self.watch.cancelled_deps(task))
        was_dead = self.dead.pop(task, set())
        if now_dead:
            self.dead[task] = now_dead
        plans: list[Plan] = []
        for dep in sorted(was_dead - now_dead):
            self.waiting.pop((task, dep), None)
            found = self.escalations.get(self.incident(task, dep))
            plans += _resolve(self.escalations, found, now, why)
        for dep in sorted(now_dead - was_dead):
            self.waiting[(task, dep)] = since
        return plans

    def current(self) -> set[str]:
        """The incidents of the dead ends there are now (for reconciling at start)."""
        return {self.incident(task, dep) for task, deps in self.dead.items() for dep in deps}

    def next_due(self) -> float | None:
        return min(self.waiting.values(), default=None)

    def due(self, now: float, owns: Owns) -> list[Plan]:
        """Raise the dead ends found since the last judging round, of the tasks this replica
        owns (the others are another replica's)."""
        plans: list[Plan] = []
        waiting, self.waiting = self.waiting, {}
        for (task, dep), since in sorted(waiting.items()):
            esc = self.incident(task, dep)
            with self.failures.isolated("dependency", task):
                if not owns(task) or self.escalations.known(esc):
                    continue
                raised = raised_event(
                    esc, "warning", DEPENDENCY_CANCELLED, now, task=task,
                    message=f"depends on {dep}, which was cancelled: it can never be claimed",
                    evidence={"dependency": dep,
                              "depends_on": ", ".join(self.watch.deps(task))[:2000]},
                )  # fmt: skip
                self.escalations.raised(raised)
                plans.append(Plan(f"esc:{esc}", (Publish(raised, "empty"),), since))
        return plans
