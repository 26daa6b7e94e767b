"""An approval request's state machine (DESIGN 3.10). Pure.

The one rule every reader of ``fw.approval.<id>.>`` applies, in stream order: the oversight
projection (projections/approvals.py, ``fleet.approvals``), the watchdog (which escalates and
expires open requests: services/watchdog/core/approvals.py), the operator client (which refuses
a decision at once: services/client/approvals.py) and the agent's client.

- A request opens a gate under its approval id; an id is used once: a second request under it
  is refused, whoever sends it.
- The first decision (``approval.granted`` / ``approval.denied``) in stream order closes it;
  a decision on an unknown or closed request, or one naming another agent than the request's,
  is refused. Who may decide at all is judged before: a person needs the role ``approver``
  (schemas/roles.py), an agent may decide nothing, and nobody decides their own request
  (schemas/admission.py ``check_sender``).
- Deadlines are the request's stream time plus ``escalate_after_s`` (escalated to the
  approvers) and plus ``expire_after_s`` (denied by the watchdog unless ``on_expiry`` is
  ``wait``); the second is never before the first.

A refusal raises ``Rejected("approval_forbidden", why)``: the projector dead-letters the event
(and tells the agent, when an agent sent it); the watchdog ignores it; the clients refuse it
before publishing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from fleetward.schemas.admission import Rejected
from fleetward.schemas.events import ApprovalDenied, ApprovalGranted, ApprovalRequested, Event

FORBIDDEN: Final = "approval_forbidden"  # the dead letters' reason (schemas.admission.REASONS)
DECISIONS: Final = (ApprovalGranted, ApprovalDenied)
EVENTS: Final = (ApprovalRequested, ApprovalGranted, ApprovalDenied)


@dataclass(frozen=True, slots=True)
class Gate:
    """One request as every reader keeps it. Times are stream times (UTC)."""

    approval: str
    agent: str
    kind: str
    name: str
    risk: str
    requested_at: datetime
    deadline: datetime  # escalated to the approvers when still open then
    expires: datetime  # denied then (unless on_expiry is "wait")
    on_expiry: str
    state: str = "open"  # open, granted, denied
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str = ""
    expired: bool = False

    @property
    def open(self) -> bool:
        return self.state == "open"


def problem(gate: Gate | None, event: Event) -> str | None:
    """Why ``event`` may not apply to the request in state ``gate`` (None: never requested),
    or None."""
    if isinstance(event, ApprovalRequested):
        if gate is not None:
            return f"approval {event.approval} was requested already (by {gate.agent})"
        return None
    if not isinstance(event, DECISIONS):
        return None
    if gate is None:
        return f"no approval {event.approval} was requested"
    if event.agent != gate.agent:
        return f"approval {event.approval} is {gate.agent}'s request, not {event.agent}'s"
    if not gate.open:
        return f"approval {event.approval} is {gate.state} already (by {gate.decided_by})"
    return None


def after(gate: Gate | None, event: Event, at: datetime) -> Gate | None:
    """The request after ``event`` stored at stream time ``at`` (one ``problem`` lets through)."""
    match event:
        case ApprovalRequested():
            escalate = timedelta(seconds=event.escalate_after_s)
            expire = timedelta(seconds=max(event.expire_after_s, event.escalate_after_s))
            return Gate(
                event.approval, event.agent, event.kind, event.name, event.risk, at,
                at + escalate, at + expire, event.on_expiry,
            )  # fmt: skip
        case ApprovalGranted() | ApprovalDenied() if gate is not None:
            state = "granted" if isinstance(event, ApprovalGranted) else "denied"
            expired = isinstance(event, ApprovalDenied) and event.expired
            return replace(gate, state=state, decided_by=event.actor, decided_at=at,
                           reason=event.reason, expired=expired)  # fmt: skip
    return gate


def step(gate: Gate | None, event: Event, at: datetime) -> Gate | None:
    """``problem``, then ``after``. Raises ``Rejected(FORBIDDEN, why)``."""
    why = problem(gate, event)
    if why is not None:
        raise Rejected(FORBIDDEN, why)
    return after(gate, event, at)
