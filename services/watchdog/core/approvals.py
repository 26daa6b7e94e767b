"""Approval deadlines (DESIGN 3.10): a request no one decided escalates to the approvers at its
first deadline and is denied at its second (unless it asked to ``wait``). Pure.

Requests fold with the one approval state machine (projections/gates.py), from the open ones
the projection held at start (``load``) and every approval event read after its checkpoint;
people's decisions are judged by the roles in force before (the watchdog's role book), so
this detector closes exactly the requests ``fleet.approvals`` closes.

- First deadline (``deadline``): escalation ``approval_overdue`` (id ``appr-<20 hex>`` of the
  request, first raise compare-and-set on an empty subject), warning, critical for a request of
  risk high or critical; its evidence names ``notify: approver`` (the approvers' on-call tier).
- Second deadline (``expires``), ``on_expiry`` ``deny``: ``approval.denied`` by the watchdog
  (``expired``, a deterministic id: replicas publish one), compare-and-set over the request's
  subjects while it is open (``Publish`` ``gate``): if a person's decision came first, the
  denial is not stored and the person's decision stands; then the escalation is resolved.
- A decision resolves the escalation it raised.
Deadlines sit in a heap (lazily cleaned), so a tick touches only requests that are due.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from datetime import datetime

from fleetward.projections import gates
from fleetward.schemas.admission import Rejected
from fleetward.schemas.events import ApprovalDenied, Event, Tier
from fleetward.services.watchdog.core.incidents import (
    WATCHDOG,
    Escalations,
    Plan,
    Publish,
    at,
    escalation_id,
    event_id,
    raised_event,
    resolve_step,
)

APPROVAL_OVERDUE = "approval_overdue"
HIGH_RISK = frozenset({"high", "critical"})


def escalation_of(approval: str) -> str:
    return escalation_id("appr", approval)


class ApprovalDeadlines:
    """Open requests and their deadlines (see the module)."""

    def __init__(self, escalations: Escalations) -> None:
        self.escalations = escalations
        self.gates: dict[str, gates.Gate] = {}
        self.heap: list[tuple[float, str]] = []  # (due, approval), stale entries skipped
        self.expired: set[str] = set()  # denials planned

    def load(self, gate: gates.Gate) -> None:
        """An open request as ``fleet.approvals`` holds it."""
        self._track(gate)

    def _track(self, gate: gates.Gate) -> None:
        self.gates[gate.approval] = gate
        heapq.heappush(self.heap, (gate.deadline.timestamp(), gate.approval))
        heapq.heappush(self.heap, (gate.expires.timestamp(), gate.approval))

    def event(self, event: Event, when: datetime, now: float) -> list[Plan]:
        """An approval event stored at stream time ``when`` (admitted, roles judged)."""
        approval = getattr(event, "approval", None)
        if not isinstance(approval, str):
            return []
        try:
            gate = gates.step(self.gates.get(approval), event, when)
        except Rejected:
            return []
        if gate is None:
            return []
        if gate.open:
            self._track(gate)
            return []
        self.gates.pop(approval, None)
        esc = escalation_of(approval)
        if self.escalations.get(esc) is not None:
            self.escalations.close(esc)
            step = resolve_step(esc, now, f"approval {approval} {gate.state} by {gate.decided_by}")
            return [Plan(f"esc:{esc}", (step,))]
        return []

    def due(self, now: float, owns: Callable[[str], bool]) -> list[Plan]:
        """What falls due by ``now`` for the requests of agents this replica ``owns``."""
        plans: list[Plan] = []
        while self.heap and self.heap[0][0] <= now:
            _, approval = heapq.heappop(self.heap)
            gate = self.gates.get(approval)
            if gate is None or not owns(gate.agent):
                continue
            if now >= gate.expires.timestamp() and gate.on_expiry == "deny":
                if approval not in self.expired:
                    self.expired.add(approval)
                    plans.append(self._expire(gate, now))
            elif now >= gate.deadline.timestamp() and not self._escalated(approval):
                plans.append(self._escalate(gate, now))
        return plans

    def _escalated(self, approval: str) -> bool:
        return self.escalations.known(escalation_of(approval))

    def next_due(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def _escalate(self, gate: gates.Gate, now: float) -> Plan:
        esc = escalation_of(gate.approval)
        tier: Tier = "critical" if gate.risk in HIGH_RISK else "warning"
        raised = raised_event(
            esc, tier, APPROVAL_OVERDUE, now, agent=gate.agent,
            message=f"approval {gate.approval} ({gate.kind} {gate.name}) of {gate.agent} has "
            f"waited past its deadline {gate.deadline.isoformat(timespec='seconds')}",
            evidence={"approval": gate.approval, "notify": "approver", "kind": gate.kind,
                      "name": gate.name, "risk": gate.risk,
                      "deadline": gate.deadline.isoformat(), "expires": gate.expires.isoformat(),
                      "on_expiry": gate.on_expiry},
        )  # fmt: skip
        self.escalations.raised(raised)
        return Plan(f"esc:{esc}", (Publish(raised, "empty"),), gate.deadline.timestamp())

    def _expire(self, gate: gates.Gate, now: float) -> Plan:
        denied = ApprovalDenied(
            id=event_id(gate.approval, "expired"), actor=WATCHDOG, at=at(now),
            approval=gate.approval, agent=gate.agent, expired=True,
            reason=f"no decision by {gate.expires.isoformat(timespec='seconds')}",
        )  # fmt: skip
        steps = [Publish(denied, "gate")]
        esc = escalation_of(gate.approval)
        if self._escalated(gate.approval):
            steps.append(resolve_step(esc, now, f"approval {gate.approval} expired, denied"))
        return Plan(f"esc:{esc}", tuple(steps), gate.expires.timestamp())
