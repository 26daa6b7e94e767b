"""Oversight: approval requests and their decisions, tool policies, and the tool calls that
broke them (DESIGN 3.10; projection ``approvals``, views ``fleet.approvals``,
``fleet.policies``, ``fleet.policy_violations``).

It reads ``fw.approval.>``, ``fw.policy.>`` and ``fw.agent.>`` (each agent's team and risk
class, by the agents' state machine, projections/lifecycle.py, and its tool calls):

- Requests and decisions fold with the one approval state machine (projections/gates.py); a
  request or decision it refuses is dead-lettered ``approval_forbidden`` (the agent that sent
  it is told, ``refused``). A decision is stamped with the tool policy in force at its
  position (``policy_id``, ``policy_version``: the policy that decides the tool asked for, or
  the agent's most specific policy for another step) and sent to the asking agent's inbox as
  the durable command ``approval`` (payload: ``approval``, ``decision`` granted or denied,
  ``by``, ``expired``, ``policy``, ``policy_version``), by ``svc:oversight``.
- ``policy.set`` replaces its scope's policy as the next version (schemas/policies.py); one
  whose id is not its scope's is refused (``invalid``).
- Every ``tool.called`` is judged by the policies in force for its agent at its position
  (schemas/policies.py ``verdict``), whatever client sent it: a denied tool (``denied``), a
  gated tool without a granted approval of this agent for this tool that no call used before
  (``unapproved``), or a cost above the cap (``over_cap``, USD) is a violation: a row in
  ``fleet.policy_violations`` and an escalation (``policy_violation``: critical for agents of
  risk class high or critical, else warning), one per agent and tool, raised again (reopened
  once resolved) by each violation. A granted approval is used by the first call naming it.

Team and risk class are the agent's at its last registration that counts; a request keeps
those of its agent when it was made, so its decision is stamped by the policies of then.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar, Final

import msgspec

from fleetward.projections import gates, lifecycle
from fleetward.projections.base import Key, Meta, Projection, Row, Rows, Table
from fleetward.schemas.admission import Rejected
from fleetward.schemas.events import (
    AgentRegistered,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    CommandIssued,
    EscalationRaised,
    Event,
    Evidence,
    PolicySet,
    Tier,
    ToolCalled,
)
from fleetward.schemas.ids import deterministic_id
from fleetward.schemas.policies import Policy, Verdict, event_problem, ids_of, in_force, verdict
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import wildcard

OVERSIGHT: Final = "svc:oversight"  # the actor of its commands and escalations
VIOLATION: Final = "policy_violation"  # the escalations' reason
HIGH_RISK: Final = frozenset({"high", "critical"})

AGENTS = Table(
    name="fleetward.oversight_agents",
    key=("agent_id",),
    key_types=("text",),
    columns=("agent_id", "team", "risk_class", "status", "paused_by", "registered_by", "last_seq"),
)
POLICIES = Table(
    name="fleetward.policies",
    key=("policy_id",),
    key_types=("text",),
    columns=(
        "policy_id", "scope", "scope_id", "version", "allow", "deny", "approve",
        "default_verdict", "max_cost_usd", "reason", "set_by", "set_at", "created_at", "last_seq",
    ),
)  # fmt: skip
APPROVALS = Table(
    name="fleetward.approvals",
    key=("approval_id",),
    key_types=("text",),
    columns=(
        "approval_id", "agent", "team", "risk_class", "kind", "name", "summary", "arguments",
        "risk", "task", "run", "on_expiry", "requested_at", "deadline_at", "expires_at",
        "state", "decided_by", "decided_at", "reason", "expired", "policy_id",
        "policy_version", "used_by", "last_seq",
    ),
)  # fmt: skip
VIOLATIONS = Table(
    name="fleetward.policy_violations",
    key=("violation_id",),
    key_types=("text",),
    columns=(
        "violation_id", "agent", "tool", "kind", "detail", "policy_id", "policy_version",
        "approval", "cost_usd", "max_cost_usd", "risk_class", "task", "run", "escalation_id",
        "tier", "at", "seq",
    ),
    write_only=True,
)  # fmt: skip


def gate_of(row: Row | None) -> gates.Gate | None:
    """The request a row of ``fleetward.approvals`` holds (None: no row)."""
    if row is None:
        return None
    return gates.Gate(
        row["approval_id"], row["agent"], row["kind"], row["name"], row["risk"],
        row["requested_at"], row["deadline_at"], row["expires_at"], row["on_expiry"],
        row["state"], row["decided_by"], row["decided_at"], row["reason"], row["expired"],
    )  # fmt: skip


def escalation_of(agent: str, tool: str) -> str:
    """The escalation of an agent's violations of one tool's policy: ``policy-<20 hex>``."""
    return f"policy-{deterministic_id(VIOLATION, agent, tool).replace('-', '')[:20]}"


class Oversight(Projection):
    name: ClassVar[str] = "approvals"
    stream: ClassVar[str] = EVENTS_STREAM
    subjects: ClassVar[tuple[str, ...]] = (
        wildcard("approval"), wildcard("policy"), wildcard("agent"),
    )  # fmt: skip
    tables: ClassVar[tuple[Table, ...]] = (AGENTS, POLICIES, APPROVALS, VIOLATIONS)

    def touches(self, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        match event:
            case ToolCalled():
                yield AGENTS, (event.agent,)
                if event.approval is not None:
                    yield APPROVALS, (event.approval,)
            case ApprovalRequested():
                yield APPROVALS, (event.approval,)
                yield AGENTS, (event.agent,)
            case ApprovalGranted() | ApprovalDenied():
                yield APPROVALS, (event.approval,)
            case PolicySet():
                yield POLICIES, (event.policy,)
            case AgentRegistered():
                yield AGENTS, (event.agent,)
                # the policies of the team and risk class it registers into: a call later in
                # the batch is judged by them, and ``touches_more`` sees only the rows as they
                # were before the batch (with the old team)
                yield from ((POLICIES, (i,)) for i in ids_of(event.agent, event.team,
                                                             event.risk_class))  # fmt: skip
            case _ if isinstance(event, lifecycle.EVENTS):
                yield AGENTS, (getattr(event, "agent"),)  # noqa: B009  # each has one

    def touches_more(self, rows: Rows, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        """The policies that cover the agent as its row was before the batch (or as its request
        recorded it); every team and risk class a registration in the batch moves it into
        is named by ``touches``: together, every policy the fold can read, however the events
        are batched (tests/unit/test_oversight_batches.py)."""
        match event:
            case ToolCalled() | ApprovalRequested():
                who = rows.get(AGENTS, (event.agent,)) or {}
                ids = ids_of(event.agent, who.get("team"), who.get("risk_class"))
            case ApprovalGranted() | ApprovalDenied():
                row = rows.get(APPROVALS, (event.approval,))
                if row is None:
                    return
                ids = ids_of(row["agent"], row["team"], row["risk_class"])
            case _:
                return
        yield from ((POLICIES, (i,)) for i in ids)

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        match event:
            case ToolCalled():
                _tool_called(rows, event, meta)
            case ApprovalRequested():
                _requested(rows, event, meta)
            case ApprovalGranted() | ApprovalDenied():
                _decided(rows, event, meta)
            case PolicySet():
                _policy_set(rows, event, meta)
            case _ if isinstance(event, lifecycle.EVENTS):
                _lifecycle(rows, event, meta)


def _policies(rows: Rows, agent: str, team: str | None, risk: str | None) -> list[Policy]:
    found = (rows.get(POLICIES, (i,)) for i in ids_of(agent, team, risk))
    return in_force(Policy.from_row(r) if r is not None else None for r in found)


def _stamp(policies: list[Policy], kind: str, name: str) -> Verdict:
    """The policy a decision is taken under: the one deciding the tool asked for, else the
    agent's most specific policy (an empty verdict when none is in force)."""
    if kind == "tool_call":
        return verdict(name, policies)
    first = policies[0] if policies else None
    return Verdict("allow", first.policy, first.version) if first else Verdict("allow")


def _lifecycle(rows: Rows, event: Event, meta: Meta) -> None:
    """An agent's team and risk class, by the agents' state machine: an event it refuses
    changes nothing here (the registry dead-letters it: projections/agents.py)."""
    agent = getattr(event, "agent")  # noqa: B009  # every lifecycle event has one
    old = rows.get(AGENTS, (agent,))
    life = lifecycle.Life.of(old)
    if lifecycle.problem(life, event) is not None:
        return
    now, _ = lifecycle.after(life, event)
    row = dict(old) if old else {"agent_id": agent, "team": None, "risk_class": None}
    if isinstance(event, AgentRegistered):
        row.update(team=event.team, risk_class=event.risk_class)
    row.update(status=now.status, paused_by=now.paused_by, registered_by=now.registered_by,
               last_seq=meta.seq)  # fmt: skip
    rows.put(AGENTS, row)


def _policy_set(rows: Rows, event: PolicySet, meta: Meta) -> None:
    why = event_problem(event)
    if why is not None:
        raise Rejected("invalid", why)
    old = rows.get(POLICIES, (event.policy,))
    rows.put(
        POLICIES,
        {
            "policy_id": event.policy, "scope": event.scope, "scope_id": event.scope_id,
            "version": (old["version"] if old else 0) + 1, "allow": list(event.allow),
            "deny": list(event.deny), "approve": list(event.approve),
            "default_verdict": event.default, "max_cost_usd": event.max_cost_usd,
            "reason": event.reason, "set_by": event.actor, "set_at": meta.time,
            "created_at": old["created_at"] if old else meta.time, "last_seq": meta.seq,
        },
    )  # fmt: skip


def _requested(rows: Rows, event: ApprovalRequested, meta: Meta) -> None:
    gate = gates.step(gate_of(rows.get(APPROVALS, (event.approval,))), event, meta.time)
    assert gate is not None
    who = rows.get(AGENTS, (event.agent,)) or {}
    team, risk_class = who.get("team"), who.get("risk_class")
    stamp = _stamp(_policies(rows, event.agent, team, risk_class), event.kind, event.name)
    rows.put(
        APPROVALS,
        {
            "approval_id": event.approval, "agent": event.agent, "team": team,
            "risk_class": risk_class, "kind": event.kind, "name": event.name,
            "summary": event.summary, "arguments": msgspec.json.encode(event.arguments).decode(),
            "risk": event.risk, "task": event.task, "run": event.run,
            "on_expiry": event.on_expiry, "requested_at": gate.requested_at,
            "deadline_at": gate.deadline, "expires_at": gate.expires, "state": gate.state,
            "decided_by": None, "decided_at": None, "reason": "", "expired": False,
            "policy_id": stamp.policy, "policy_version": stamp.version, "used_by": None,
            "last_seq": meta.seq,
        },
    )  # fmt: skip


def _decided(rows: Rows, event: ApprovalGranted | ApprovalDenied, meta: Meta) -> None:
    old = rows.get(APPROVALS, (event.approval,))
    gate = gates.step(gate_of(old), event, meta.time)
    assert gate is not None and old is not None
    policies = _policies(rows, old["agent"], old["team"], old["risk_class"])
    stamp = _stamp(policies, old["kind"], old["name"])
    rows.put(APPROVALS, {
        **old, "state": gate.state, "decided_by": gate.decided_by, "decided_at": gate.decided_at,
        "reason": gate.reason, "expired": gate.expired, "policy_id": stamp.policy,
        "policy_version": stamp.version, "last_seq": meta.seq,
    })  # fmt: skip
    payload: Evidence = {
        "approval": gate.approval, "decision": gate.state, "by": event.actor,
        "expired": gate.expired, "policy": stamp.policy, "policy_version": stamp.version,
        "kind": gate.kind, "name": gate.name, "reason": gate.reason,
    }  # fmt: skip
    told = CommandIssued(
        id=deterministic_id(event.id, "approval"), actor=OVERSIGHT, at=event.at,
        agent=gate.agent, command="approval", reason=(gate.reason or gate.state)[:8000],
        task=old["task"], payload=payload,
    )  # fmt: skip
    rows.emit(told, meta)


def _violation(rows: Rows, event: ToolCalled, v: Verdict) -> tuple[str, str] | None:
    """(kind, detail) of the rule ``event`` breaks under verdict ``v``, or None. A granted
    approval it names is used by it (even by a call that breaks the cost cap)."""
    if v.verdict == "deny":
        return "denied", f"tool {event.tool} is denied by policy {v.stamp()}"
    if v.verdict == "approve":
        why = _unapproved(rows, event)
        if why is not None:
            return "unapproved", f"tool {event.tool} needs an approval ({v.stamp()}): {why}"
    if v.max_cost_usd is not None and event.cost_usd > v.max_cost_usd:
        return "over_cap", (
            f"tool {event.tool} cost {event.cost_usd:g} USD, over the cap of "
            f"{v.max_cost_usd:g} USD per call ({v.stamp()})"
        )
    return None


def _unapproved(rows: Rows, event: ToolCalled) -> str | None:
    """Why ``event`` has no approval that lets it run, or None (then the approval is used)."""
    if event.approval is None:
        return "the call names none"
    row = rows.get(APPROVALS, (event.approval,))
    if row is None or row["agent"] != event.agent:
        return f"approval {event.approval} is not one of {event.agent}'s requests"
    if row["kind"] != "tool_call" or row["name"] != event.tool:
        return f"approval {event.approval} is for {row['kind']} {row['name']}"
    if row["state"] != "granted":
        return f"approval {event.approval} is {row['state']}"
    if row["used_by"] is not None:
        return f"approval {event.approval} was used by an earlier call ({row['used_by']})"
    rows.put(APPROVALS, {**row, "used_by": event.id})
    return None


def _tool_called(rows: Rows, event: ToolCalled, meta: Meta) -> None:
    who = rows.get(AGENTS, (event.agent,)) or {}
    risk_class = who.get("risk_class")
    v = verdict(event.tool, _policies(rows, event.agent, who.get("team"), risk_class))
    broken = _violation(rows, event, v)
    if broken is None:
        return
    kind, detail = broken
    esc = escalation_of(event.agent, event.tool)
    tier: Tier = "critical" if risk_class in HIGH_RISK else "warning"
    rows.put(VIOLATIONS, {
        "violation_id": event.id, "agent": event.agent, "tool": event.tool, "kind": kind,
        "detail": detail, "policy_id": v.policy, "policy_version": v.version,
        "approval": event.approval, "cost_usd": event.cost_usd, "max_cost_usd": v.max_cost_usd,
        "risk_class": risk_class, "task": event.task, "run": event.run, "escalation_id": esc,
        "tier": tier, "at": meta.time, "seq": meta.seq,
    })  # fmt: skip
    evidence: dict[str, Any] = {
        "violation": event.id, "kind": kind, "tool": event.tool[:8000], "policy": v.policy,
        "policy_version": v.version, "approval": event.approval, "cost_usd": event.cost_usd,
        "seq": meta.seq, "at": _iso(meta.time),
    }  # fmt: skip
    raised = EscalationRaised(
        id=deterministic_id(event.id, VIOLATION), actor=OVERSIGHT, at=event.at, escalation=esc,
        tier=tier, reason=VIOLATION, agent=event.agent, task=event.task, message=detail[:8000],
        evidence=evidence,
    )  # fmt: skip
    rows.emit(raised, meta)


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds")
