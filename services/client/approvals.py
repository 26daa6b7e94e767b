"""Approval requests and tool policies read straight from the stream (message gets, as
``read_budget`` reads a budget), folded with the rules every reader applies: a request with the
approval state machine (projections/gates.py), a policy as its last ``policy.set`` whose author
held the role it needs at its position (schemas/roles.py). No projection is needed, and what was
published a moment ago is seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NatsClient

from fleetward.projections import gates
from fleetward.schemas import Rejected
from fleetward.schemas.events import PolicySet
from fleetward.schemas.policies import Policy, event_problem, ids_of, in_force
from fleetward.schemas.roles import RoleBook, check_role
from fleetward.schemas.subjects import boundary_wildcard
from fleetward.services.client.intents import IntentRefused
from fleetward.services.client.roles import read_roles
from fleetward.services.client.taskstate import read_subjects


@dataclass(frozen=True, slots=True)
class GateState:
    """A request as its subjects say now (``gate`` None: never requested) and the last
    sequence over them (0: nothing there), for a decision published compare-and-set on it."""

    gate: gates.Gate | None
    last_seq: int


async def read_gate(nc: NatsClient, approval: str, roles: RoleBook | None = None) -> GateState:
    """Fold every message of ``fw.approval.<approval>.>`` in stream order: what admission,
    the role book or the state machine refuses is skipped, as the projection skips it."""
    stored = await read_subjects(nc, boundary_wildcard("approval", approval))
    book = await read_roles(nc, roles)
    gate: gates.Gate | None = None
    seen: set[str] = set()
    for m in stored:
        if m.event is None or m.event.id in seen:
            continue
        seen.add(m.event.id)
        try:
            check_role(m.event, m.seq, book)
            gate = gates.step(gate, m.event, m.time)
        except Rejected:
            continue
    return GateState(gate, max((m.seq for m in stored), default=0))


async def read_policy(nc: NatsClient, policy: str, roles: RoleBook | None = None) -> Policy | None:
    """The policy under id ``policy`` as its last valid ``policy.set`` left it (with its
    version: how many valid sets it had), or None when it was never set."""
    stored = await read_subjects(nc, boundary_wildcard("policy", policy))
    book = await read_roles(nc, roles)
    latest: Policy | None = None
    seen: set[str] = set()
    for m in stored:
        event = m.event
        if not isinstance(event, PolicySet) or event.id in seen or event_problem(event):
            continue
        seen.add(event.id)
        try:
            check_role(event, m.seq, book)
        except Rejected:
            continue
        latest = Policy.of(event, (latest.version if latest else 0) + 1)
    return latest


async def read_policies(
    nc: NatsClient,
    agent: str,
    team: str | None,
    risk_class: str | None,
    roles: RoleBook | None = None,
) -> list[Policy]:
    """The policies in force for an agent of ``team`` and ``risk_class``, most specific first."""
    book = await read_roles(nc, roles)
    return in_force([await read_policy(nc, i, book) for i in ids_of(agent, team, risk_class)])


class ToolDenied(IntentRefused):
    """A tool call its policy refuses (denied, or an estimate over the cost cap): nothing was
    called or published."""


class ApprovalRefused(IntentRefused):
    """The request ``approval`` was denied by ``by`` (a person, or the watchdog at its second
    deadline: ``expired``), for ``reason``."""

    def __init__(self, approval: str, by: str, reason: str, *, expired: bool = False) -> None:
        what = "expired (no decision in time)" if expired else f"denied by {by}"
        super().__init__(f"approval {approval} {what}" + (f": {reason}" if reason else ""))
        self.approval, self.by, self.reason, self.expired = approval, by, reason, expired


class ApprovalExpired(ApprovalRefused):
    """No one decided by the request's second deadline: the watchdog denied it."""


@dataclass(frozen=True, slots=True)
class Approval:
    """A granted request: its id (``tool.called`` names it), who granted it and why, and the
    tool policy in force at the decision (None: none)."""

    approval: str
    by: str
    reason: str
    policy: str | None
    policy_version: int | None


def decision_of(payload: Mapping[str, Any]) -> Approval | ApprovalRefused:
    """What an ``approval`` command's payload says: the grant, or the refusal to raise."""
    approval, by = str(payload.get("approval")), str(payload.get("by"))
    reason = str(payload.get("reason") or "")
    if payload.get("decision") == "granted":
        policy, version = payload.get("policy"), payload.get("policy_version")
        return Approval(approval, by, reason, policy if isinstance(policy, str) else None,
                        version if isinstance(version, int) else None)  # fmt: skip
    if payload.get("expired"):
        return ApprovalExpired(approval, by, reason, expired=True)
    return ApprovalRefused(approval, by, reason)


def decision_of_gate(gate: gates.Gate) -> Approval | ApprovalRefused | None:
    """What a request read from the stream says (None: still open). Its policy stamp is the
    projection's (``fleet.approvals``); the stream read leaves it None."""
    if gate.open:
        return None
    payload = {"approval": gate.approval, "by": gate.decided_by, "reason": gate.reason,
               "decision": gate.state, "expired": gate.expired}  # fmt: skip
    return decision_of(payload)
