"""The watchdog's detectors besides liveness. Pure: fed events with their stream time and an
explicit ``now``; they return ``Plan``s.

- The task detectors judge what the task mirror (``TaskWatch``, mirror.py: every open task's
  row as the task state machine folds it) says of the held tasks: which claim holds each, since
  when, and the holder's last report.
- ``OverdueDetector``: a task held longer than its SLA (``sla_s``, else the default): warning.
- ``StallDetector``: a held task with no report from its holder (claim, progress, block) for
  the stall time: warning. Both resolve their escalation when the condition ends.
- ``ErrorSpikeDetector``: an agent's share of failed tool calls over a sliding window above the
  threshold (with enough calls to judge): critical, and the agent is paused (``agent.paused``,
  the path an operator's pause takes; incidents.pause_step).
- ``WakeLoopDetector``: an agent finishing run after run with no task progress: warning;
  resolved by its next progress.
- ``FailedRunsDetector``: an agent whose last ``failed_runs`` runs all failed, however far apart:
  critical, and the agent is paused; resolved by a run that succeeds or by the agent's resume.

SLAs enter through ``limits.period`` (clamped). A task whose judgement raises anyway is noted
as a failure (failures.py) and left unjudged until it changes again; the others are judged.

Incident ids are deterministic from what every replica reads in the same order (task and epoch;
task, epoch and last report; agent and the triggering event; agent and the first failure of a
streak), so two replicas raise the same escalation. The window detectors fire only on recent
events (within their window of ``now``), so replaying old events at start raises nothing. The
failed-runs detector has no window: it counts every run it reads, and raises only on a failure
read while judging (see ``FailedRunsDetector``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from fleetward.schemas.events import RunFinished, ToolCalled
from fleetward.services.config import WatchdogSettings
from fleetward.services.watchdog.core.failures import Failures
from fleetward.services.watchdog.core.incidents import (
    FAILED_RUNS,
    TASK_OVERDUE,
    TASK_STALLED,
    TOOL_ERROR_SPIKE,
    WAKE_LOOP,
    Escalations,
    Plan,
    Publish,
    escalation_id,
    iso,
    pause_step,
    raised_event,
    resolve_step,
)
from fleetward.services.watchdog.core.limits import period
from fleetward.services.watchdog.core.liveness import DeadlineHeap
from fleetward.services.watchdog.core.mirror import Change, Held, TaskWatch

Owns = Callable[[str], bool]


# ---- task detectors --------------------------------------------------------------------------


class DeadlineDetector:
    """Tasks with a deadline in a heap: ``due`` judges those whose deadline passed, each apart
    (one whose judgement raises is noted as a failure of ``stage`` and skipped)."""

    reason: str
    stage: str  # of its failures (failures.STAGES)

    def __init__(
        self,
        settings: WatchdogSettings,
        escalations: Escalations,
        watch: TaskWatch,
        failures: Failures | None = None,
    ) -> None:
        self.s, self.escalations, self.watch = settings, escalations, watch
        self.failures = failures if failures is not None else Failures()
        self.heap: DeadlineHeap[str] = DeadlineHeap()

    def due(self, now: float, owns: Owns, healthy: Owns) -> list[Plan]:
        """Judge the tasks whose deadline passed (``_judge``)."""
        plans: list[Plan] = []
        for task in self.heap.pop_due(now):
            with self.failures.isolated(self.stage, task):
                plan = self._judge(task, now, owns, healthy)
                if plan is not None:
                    plans.append(plan)
        return plans

    def _judge(self, task: str, now: float, owns: Owns, healthy: Owns) -> Plan | None:
        """The plan for ``task``, whose deadline passed at ``now``; None: nothing to raise (or
        not yet: it is scheduled again)."""
        raise NotImplementedError


class _TaskDetector(DeadlineDetector):
    """A held task's deadline (deadline, incident, describe): a warning when it passes, if this
    replica owns the holder. A holder in a liveness incident is judged later: its silence is
    the incident (and at critical its leases are released)."""

    def deadline(self, h: Held) -> float | None:
        raise NotImplementedError

    def incident(self, h: Held) -> str:
        raise NotImplementedError

    def describe(self, h: Held, now: float) -> tuple[str, dict[str, str | int | float | None]]:
        raise NotImplementedError

    def changed(self, change: Change, now: float) -> list[Plan]:
        kind, h = change
        plans: list[Plan] = []
        open_ = self.escalations.open_for(self.reason, h.task)
        ends = kind == "ended" or (kind == "touched" and self.reason == TASK_STALLED)
        if open_ is not None and (ends or kind == "claimed"):
            self.escalations.close(open_.id)
            why = "the task is no longer held" if kind != "touched" else "the holder reported"
            plans.append(Plan(f"esc:{open_.id}", (resolve_step(open_.id, now, why, open_.seq),)))
        if kind == "ended":
            self.heap.cancel(h.task)
        elif kind == "claimed" or (ends and h.task not in self.heap):
            due = self.deadline(h)
            if due is not None:
                self.heap.schedule(h.task, due)
        return plans

    def _judge(self, task: str, now: float, owns: Owns, healthy: Owns) -> Plan | None:
        h = self.watch.held.get(task)
        due = self.deadline(h) if h is not None else None
        if h is None or due is None or not owns(h.agent):
            return None
        if now < due:
            self.heap.schedule(task, due)  # reported since it was scheduled
            return None
        if not healthy(h.agent):
            self.heap.schedule(task, now + period(self.s.interval_s))
            return None
        esc = self.incident(h)
        if self.escalations.known(esc):
            return None
        message, evidence = self.describe(h, now)
        raised = raised_event(esc, "warning", self.reason, now, agent=h.agent, task=task,
                              message=message, evidence=evidence)  # fmt: skip
        self.escalations.raised(raised)
        return Plan(f"esc:{esc}", (Publish(raised, "empty"),), due)


class OverdueDetector(_TaskDetector):
    reason = TASK_OVERDUE
    stage = "overdue"

    def deadline(self, h: Held) -> float | None:
        sla = h.sla if h.sla is not None else self.s.default_sla_s
        return h.claimed + sla if sla > 0 else None

    def incident(self, h: Held) -> str:
        return escalation_id("od", h.task, str(h.epoch))

    def describe(self, h: Held, now: float) -> tuple[str, dict[str, str | int | float | None]]:
        sla = h.sla if h.sla is not None else self.s.default_sla_s
        return (
            f"in progress for {now - h.claimed:.1f}s, SLA {sla:g}s",
            {"claimed_at": iso(h.claimed), "sla_s": sla, "epoch": h.epoch,
             "sla_from": "task" if h.sla is not None else "default"},
        )  # fmt: skip


class StallDetector(_TaskDetector):
    reason = TASK_STALLED
    stage = "stall"

    def deadline(self, h: Held) -> float | None:
        return h.touched + self.s.stall_s

    def incident(self, h: Held) -> str:
        return escalation_id("st", h.task, str(h.epoch), str(h.touched_us))

    def describe(self, h: Held, now: float) -> tuple[str, dict[str, str | int | float | None]]:
        return (
            f"no report from the holder for {now - h.touched:.1f}s",
            {"last_report": iso(h.touched), "stall_s": self.s.stall_s, "epoch": h.epoch},
        )


# ---- agent activity detectors ----------------------------------------------------------------


@dataclass(slots=True)
class _Rate:
    """Calls and errors in the current window and the one before (a sliding-window estimate:
    the previous window counts in proportion to how much of it the sliding window still covers;
    O(1) memory per agent)."""

    window: int = -1
    calls: int = 0
    errors: int = 0
    prev_calls: int = 0
    prev_errors: int = 0
    quiet_until: float = 0.0

    def add(self, t: float, size: float, ok: bool) -> tuple[float, float]:
        w = int(t // size)
        if w != self.window:
            shift = w == self.window + 1
            self.prev_calls = self.calls if shift else 0
            self.prev_errors = self.errors if shift else 0
            self.window, self.calls, self.errors = w, 0, 0
        self.calls += 1
        self.errors += not ok
        weight = 1.0 - (t % size) / size
        return self.calls + self.prev_calls * weight, self.errors + self.prev_errors * weight


class ErrorSpikeDetector:
    def __init__(self, settings: WatchdogSettings, escalations: Escalations) -> None:
        self.s, self.escalations = settings, escalations
        self.rates: dict[str, _Rate] = {}

    def observe(
        self, event: ToolCalled, seq: int, t: float, now: float, judging: bool
    ) -> list[Plan]:
        s = self.s
        rate = self.rates.get(event.agent)
        if rate is None:
            rate = self.rates[event.agent] = _Rate()
        calls, errors = rate.add(t, s.error_window_s, event.ok)
        if (
            not judging
            or event.ok
            or calls < s.error_min_calls
            or errors / calls < s.error_threshold
            or t < rate.quiet_until
            or t < now - s.error_window_s  # an old event (a replay): judge only the present
            or self.escalations.open_for(TOOL_ERROR_SPIKE, event.agent) is not None
        ):
            return []
        rate.quiet_until = t + s.error_window_s  # one incident per window at most
        esc = escalation_id("te", event.agent, str(int(t // s.error_window_s)))
        share = errors / calls
        raised = raised_event(
            esc, "critical", TOOL_ERROR_SPIKE, now, agent=event.agent,
            message=f"{share:.0%} of ~{calls:.0f} tool calls failed in {s.error_window_s:g}s; "
            "paused",
            evidence={"error_share": round(share, 3), "calls": round(calls, 1),
                      "window_s": s.error_window_s, "threshold": s.error_threshold,
                      "last_error": (event.error or "")[:200], "tool": event.tool[:200],
                      "trigger_seq": seq},
        )  # fmt: skip
        self.escalations.raised(raised)
        pause = pause_step(esc, event.agent, now, "tool-error spike")
        return [Plan(f"esc:{esc}", (Publish(raised, "empty"), pause), t)]


class WakeLoopDetector:
    def __init__(self, settings: WatchdogSettings, escalations: Escalations) -> None:
        self.s, self.escalations = settings, escalations
        self.runs: dict[str, deque[float]] = {}  # finished runs since the last progress

    def finished(
        self, event: RunFinished, seq: int, t: float, now: float, judging: bool
    ) -> list[Plan]:
        s = self.s
        runs = self.runs.get(event.agent)
        if runs is None:
            runs = self.runs[event.agent] = deque(maxlen=s.wake_runs)
        runs.append(t)
        if (
            not judging
            or len(runs) < s.wake_runs
            or runs[0] < t - s.wake_window_s
            or t < now - s.wake_window_s
            or self.escalations.open_for(WAKE_LOOP, event.agent) is not None
        ):
            return []
        esc = escalation_id("wl", event.agent, str(seq))
        raised = raised_event(
            esc, "warning", WAKE_LOOP, now, agent=event.agent,
            message=f"{len(runs)} runs finished in {t - runs[0]:.1f}s without task progress",
            evidence={"runs": len(runs), "first_run_at": iso(runs[0]),
                      "window_s": s.wake_window_s, "trigger_seq": seq},
        )  # fmt: skip
        self.escalations.raised(raised)
        runs.clear()
        return [Plan(f"esc:{esc}", (Publish(raised, "empty"),), t)]

    def progressed(self, agent: str, now: float) -> list[Plan]:
        self.runs.pop(agent, None)
        open_ = self.escalations.open_for(WAKE_LOOP, agent)
        if open_ is None:
            return []
        self.escalations.close(open_.id)
        step = resolve_step(open_.id, now, "the agent made task progress", open_.seq)
        return [Plan(f"esc:{open_.id}", (step,))]


@dataclass(slots=True)
class _Streak:
    """An agent's runs failed in a row, as far as this watchdog has read."""

    first_seq: int  # stream sequence of the first failure read: names the incident
    first: float  # its stream time, seconds
    failed: int = 0
    judged: bool = False  # raised, or found raised already: once per streak


class FailedRunsDetector:
    """Runs failed in a row, counted whatever their spacing: ``failed_runs`` of them raise a
    critical escalation and pause the agent (``pause_step``), once per streak. A run that
    succeeds ends the streak, and so does the agent's resume (a person's "try again": failing
    on, it is escalated and paused anew); either resolves the open escalation. A cancelled run
    neither counts nor ends a streak.

    No replays raise: only a failure read while judging can raise, and the watchdog reads every
    event before its start (from the projections' checkpoints) before it judges. A streak that
    reached the count meanwhile (catching up, in grace, or while the agent was paused) is raised
    at its next failure read while judging: by stream order nothing the agent did after that
    failure has been read, so the streak is still the agent's latest word.

    A restart forgets the part of a streak before the point it reads from: it counts the streak
    again from there, so a streak that runs across a restart is raised once the watchdog has read
    ``failed_runs`` failures of it. An escalation of the agent's failed runs that is still open
    (raised before the restart, loaded with the open escalations) stops a second raise for the
    same streak. Resolutions come only from events after the projections' checkpoints
    (``fresh``): an older success or resume is already behind the escalations loaded at start.
    """

    def __init__(self, settings: WatchdogSettings, escalations: Escalations) -> None:
        self.s, self.escalations = settings, escalations
        self.streaks: dict[str, _Streak] = {}

    def finished(
        self, event: RunFinished, seq: int, t: float, now: float, *, judging: bool, fresh: bool
    ) -> list[Plan]:
        agent = event.agent
        if event.outcome == "succeeded":
            return self.ended(agent, now, f"a run succeeded (run {event.run})", fresh)
        if event.outcome != "failed":
            return []
        streak = self.streaks.get(agent)
        if streak is None:
            streak = self.streaks[agent] = _Streak(seq, t)
        streak.failed += 1
        if streak.judged or not judging or streak.failed < self.s.failed_runs:
            return []
        streak.judged = True
        esc = escalation_id("fr", agent, str(streak.first_seq))
        if self.escalations.known(esc) or self.escalations.open_for(FAILED_RUNS, agent):
            return []  # raised already (before a restart, or by another replica)
        n = streak.failed
        raised = raised_event(
            esc, "critical", FAILED_RUNS, now, agent=agent,
            message=f"{n} runs failed in a row since {iso(streak.first)}; paused",
            evidence={"failed_runs": n, "threshold": self.s.failed_runs,
                      "first_failed_at": iso(streak.first), "first_seq": streak.first_seq,
                      "trigger_seq": seq, "run": event.run},
        )  # fmt: skip
        self.escalations.raised(raised)
        pause = pause_step(esc, agent, now, f"{n} runs failed in a row")
        return [Plan(f"esc:{esc}", (Publish(raised, "empty"), pause), t)]

    def ended(self, agent: str, now: float, why: str, fresh: bool) -> list[Plan]:
        """The agent's streak ends (``why``); its open escalation is resolved if ``fresh``."""
        self.streaks.pop(agent, None)
        open_ = self.escalations.open_for(FAILED_RUNS, agent)
        if open_ is None or not fresh:
            return []
        self.escalations.close(open_.id)
        return [Plan(f"esc:{open_.id}", (resolve_step(open_.id, now, why, open_.seq),))]
