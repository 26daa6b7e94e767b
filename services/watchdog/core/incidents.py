"""Incidents: what the watchdog's pure core asks the I/O layer to publish, and which escalations
are open. Pure: no I/O, no clock (every time is passed in).

- An incident has a deterministic escalation id (``escalation_id``), so every replica that
  judges the same stream names it the same way; each event about it has a deterministic event
  id (``event_id``), sent as ``Nats-Msg-Id``.
- A ``Plan`` is one step of one incident: events published in order. Plans with the same ``key``
  are published one after another (a critical after its warning, a recovery after the critical).
- ``Publish.expect`` is the compare-and-set intent on the event's subject:
  ``any``   no compare-and-set; the stream's deduplication only;
  ``empty`` the subject must be empty (the first raise of an escalation);
  ``open``  the subject must hold an escalation that is not resolved: published with the last
            sequence known on the subject (``seq``); on "wrong last sequence" the publisher reads
            the subject and tries again, or stops when the escalation is resolved or already
            holds what this event says.
  ``gate``  an approval's decision (the watchdog's expiry denial): stored only while its
            request is open, compare-and-set over the request's subjects
            (``fw.approval.<id>.>``) on the state the publisher reads there; a decision stored
            first (a person's) drops it and the rest of its plan.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

from fleetward.schemas.bounds import INT4_MAX
from fleetward.schemas.events import (
    AgentPaused,
    EscalationAcknowledged,
    EscalationRaised,
    EscalationResolved,
    Event,
    Evidence,
    Tier,
)
from fleetward.schemas.ids import deterministic_id

WATCHDOG: Final = "svc:watchdog"

# The reasons the watchdog raises escalations for (bounded: also a metric label).
HEARTBEAT_MISSED: Final = "heartbeat_missed"
TASK_OVERDUE: Final = "task_overdue"
TASK_STALLED: Final = "task_stalled"
TOOL_ERROR_SPIKE: Final = "tool_error_spike"
WAKE_LOOP: Final = "wake_loop"
FAILED_RUNS: Final = "failed_runs"
REVIEW_OVERDUE: Final = "review_overdue"
DEPENDENCY_CANCELLED: Final = "dependency_cancelled"
KPI_DRIFT: Final = "kpi_drift"
REASONS: Final = (
    HEARTBEAT_MISSED, TASK_OVERDUE, TASK_STALLED, TOOL_ERROR_SPIKE, WAKE_LOOP, FAILED_RUNS,
    REVIEW_OVERDUE, DEPENDENCY_CANCELLED, KPI_DRIFT,
)  # fmt: skip
TASK_REASONS: Final = frozenset({TASK_OVERDUE, TASK_STALLED})  # about a held task and its epoch
# about a task rather than an agent (an open escalation is found by its task)
BY_TASK: Final = TASK_REASONS | {REVIEW_OVERDUE, DEPENDENCY_CANCELLED}

TIER_RANK: Final[dict[str, int]] = {"info": 0, "warning": 1, "critical": 2}

Expect = Literal["any", "empty", "open", "exact", "gate"]


def escalation_id(prefix: str, *parts: str) -> str:
    """``<prefix>-<20 hex digits>``, the same for the same parts on every replica."""
    return f"{prefix}-{deterministic_id(prefix, *parts).replace('-', '')[:20]}"


def event_id(*parts: str) -> str:
    return deterministic_id(*parts)


def at(now: float) -> datetime:
    """The producer time of an event made at ``now`` (seconds since the epoch)."""
    return datetime.fromtimestamp(now, UTC)


def iso(seconds: float) -> str:
    return at(seconds).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Publish:
    event: Event
    expect: Expect = "any"
    seq: int = 0  # for "open": the last sequence known on the subject (0: read it)


@dataclass(frozen=True, slots=True)
class Plan:
    key: str  # plans with one key are published in order, one at a time
    steps: tuple[Publish, ...]
    deadline: float | None = None  # when the condition fell due (for the detection delay)

    @property
    def raised(self) -> EscalationRaised | None:
        for step in self.steps:
            if isinstance(step.event, EscalationRaised):
                return step.event
        return None


def raised_event(
    esc: str,
    tier: Tier,
    reason: str,
    now: float,
    *,
    agent: str | None = None,
    task: str | None = None,
    message: str = "",
    evidence: Evidence | None = None,
) -> EscalationRaised:
    return EscalationRaised(
        id=event_id(esc, "raised", tier),
        actor=WATCHDOG,
        at=at(now),
        escalation=esc,
        tier=tier,
        reason=reason,
        agent=agent,
        task=task,
        message=message,
        evidence=evidence or {},
    )


def pause_step(esc: str, agent: str, now: float, why: str) -> Publish:
    """Pause ``agent`` the way an operator does: ``agent.paused`` on its own subject, naming the
    escalation ``esc`` behind it. The projections mark the agent paused and the task board turns
    every ``agent.paused`` into the agent's durable ``pause`` command, so the watchdog never
    sends the command itself (one path for every pause). The id is the same on every replica."""
    paused = AgentPaused(id=event_id(esc, "paused"), actor=WATCHDOG, at=at(now), agent=agent,
                         reason=f"paused by the watchdog: {why} (escalation {esc})")  # fmt: skip
    return Publish(paused)


def resolve_step(esc: str, now: float, resolution: str, seq: int = 0) -> Publish:
    event = EscalationResolved(
        id=event_id(esc, "resolved"),
        actor=WATCHDOG,
        at=at(now),
        escalation=esc,
        resolution=resolution,
    )
    return Publish(event, "open", seq)


@dataclass(slots=True)
class Open:
    """An escalation that is not resolved, as far as this replica knows."""

    id: str
    reason: str
    tier: str
    agent: str | None
    task: str | None
    seq: int = 0  # last sequence known on its subject (0 until known)
    basis: int = 0  # for heartbeat_missed: the last heartbeat's sequence when it was raised
    epoch: int = 0  # for task reasons: the claim epoch it is about

    @property
    def key(self) -> tuple[str, str]:
        return (self.reason, (self.task if self.reason in BY_TASK else self.agent) or "")


@dataclass(slots=True)
class Escalations:
    """Open escalations by id and by (reason, agent or task); ids closed lately, so that a
    replayed or late event about them does not reopen them here."""

    remember: int = 100_000
    open: dict[str, Open] = field(default_factory=dict)
    by_key: dict[tuple[str, str], str] = field(default_factory=dict)
    closed: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def known(self, esc: str) -> bool:
        return esc in self.open or esc in self.closed

    def get(self, esc: str | None) -> Open | None:
        return self.open.get(esc) if esc else None

    def open_for(self, reason: str, key: str) -> Open | None:
        return self.open.get(self.by_key.get((reason, key), ""))

    def seq(self, esc: str | None) -> int:
        found = self.get(esc)
        return found.seq if found else 0

    def raised(self, event: EscalationRaised, seq: int = 0) -> Open | None:
        """Note a raise (seen on the stream, or planned here with ``seq == 0``). None when the
        escalation was closed lately."""
        if event.escalation in self.closed:
            return None
        found = self.open.get(event.escalation)
        if found is None:
            basis = event.evidence.get("last_heartbeat_seq")
            epoch = event.evidence.get("epoch")
            found = Open(
                event.escalation,
                event.reason,
                event.tier,
                event.agent,
                event.task,
                seq,
                basis if isinstance(basis, int) else 0,
                # evidence is free-form: an epoch the contract could not carry is no epoch
                epoch if isinstance(epoch, int) and 1 <= epoch <= INT4_MAX else 0,
            )
            self.open[found.id] = found
            self.by_key[found.key] = found.id
        elif TIER_RANK[event.tier] > TIER_RANK[found.tier]:
            found.tier = event.tier
        found.seq = max(found.seq, seq)
        return found

    def stored(self, esc: str, seq: int) -> None:
        """The subject of ``esc`` holds an event at ``seq`` (an acknowledgement, a PubAck)."""
        found = self.open.get(esc)
        if found is not None:
            found.seq = max(found.seq, seq)

    def close(self, esc: str) -> Open | None:
        found = self.open.pop(esc, None)
        if found is not None and self.by_key.get(found.key) == esc:
            del self.by_key[found.key]
        self.closed[esc] = None
        self.closed.move_to_end(esc)
        while len(self.closed) > self.remember:
            self.closed.popitem(last=False)
        return found

    def apply(self, event: Event, seq: int) -> Open | None:
        """Fold an escalation event read from the stream; returns the escalation it touched."""
        match event:
            case EscalationRaised():
                return self.raised(event, seq)
            case EscalationAcknowledged():
                self.stored(event.escalation, seq)
                return self.get(event.escalation)
            case EscalationResolved():
                return self.close(event.escalation)
        return None
