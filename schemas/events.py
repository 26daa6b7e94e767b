"""The event catalogue: every fact an agent, a person or a Fleetward service can publish.

Invariants (the contract; see docs and the generated JSON Schema / AsyncAPI):
- Every event is a frozen msgspec Struct in the tagged union ``AnyEvent``; ``type`` is the tag.
- The envelope (``id``, ``type``, ``v``, ``at``, ``actor``, ``corr``) is shared by all events.
- New fields always get defaults; unknown fields are ignored; a breaking change is a new ``v``.
  ``v`` 2 (the default) is contract v2: the event's subject carries its actor
  (``schemas/subjects.py``); ``v`` 1 is v1 history, on the subject without the actor.
- Each event type lives on exactly one subject kind (``SUBJECT_KIND``) and names the key of that
  subject in one field (``SUBJECT_KEY``), so the subject can be derived from the event (and its
  ``actor``, from ``v`` 2 on).
- ``SENDERS`` says which actors may publish the type: ``self`` (the agent the event is about),
  ``agent`` (any agent), ``user`` (``user:<name>``), ``svc`` (``svc:<name>``). A person needs a
  role too (schemas/roles.py), and an agent's own lifecycle events may not overrule the people
  and services who operate it (projections/lifecycle.py, judged in stream order).
- Every field is bounded by a type from ``schemas/bounds.py`` (the bounds policy): integers fit
  their columns, floats are finite and in range, text has no NUL, ids are subject-safe.

This module is pure: no I/O.
"""

from __future__ import annotations

import typing
from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta, Struct

from fleetward.schemas.bounds import (
    Actor,
    ContentText,
    CorrText,
    CostUsd,
    CurrentEpoch,
    DurationMs,
    Epoch,
    FiniteFloat,
    Ident,
    Int8,
    LimitTokens,
    LimitUsd,
    Percent,
    PeriodS,
    PersonName,
    SealPeriodS,
    Sha256,
    Share,
    ShortText,
    SlaS,
    StreamSeq,
    TaskLimit,
    Text,
    Tokens,
    ToolList,
    UriText,
    Version,
    WaitS,
)

Priority = Literal["urgent", "high", "medium", "low"]
RiskClass = Literal["low", "medium", "high", "critical"]
HeartbeatStatus = Literal["idle", "busy", "waiting", "error"]
RunOutcome = Literal["succeeded", "failed", "cancelled"]
Tier = Literal["info", "warning", "critical"]
Verdict = Literal["approve", "reject"]
BudgetScope = Literal["agent", "team", "project", "org"]  # org: the organisation
BudgetWindow = Literal["day", "month", "lifetime"]
CommandName = Literal[
    "pause", "resume", "retire", "wake", "review_feedback", "approval", "lease_lost", "refused"
]
DeliverableKind = Literal["markdown", "code", "link", "file"]
Role = Literal[
    "viewer",
    "operator",
    "reviewer",
    "approver",
    "budget-admin",
    "policy-admin",
    "auditor",
    "admin",
]
ApprovalKind = Literal["tool_call", "deliverable", "action"]
OnExpiry = Literal["deny", "wait"]  # at the second deadline: denied, or left to people
PolicyScope = Literal["agent", "team", "risk"]  # risk: an agent's risk class
ToolVerdict = Literal["allow", "deny", "approve"]  # approve: the call needs an approval
Sender = Literal["self", "agent", "user", "svc"]

# Evidence and command payloads: a flat map of scalars (stored as jsonb).
EvidenceValue = Text | Int8 | FiniteFloat | bool | None
Evidence = Annotated[dict[ShortText, EvidenceValue], Meta(max_length=32)]


class Event(Struct, frozen=True, kw_only=True, tag_field="type"):
    """The envelope every event carries."""

    id: Annotated[
        Ident,
        Meta(
            description="unique; UUIDv7 or ULID so ids sort by time (events that several "
            "replicas may publish use a deterministic UUIDv5); also the Nats-Msg-Id header",
        ),
    ]
    actor: Annotated[
        Actor,
        Meta(
            description="who publishes it: an agent id, 'user:<name>' or 'svc:<name>'; from v 2 "
            "on it is also the last token of the event's subject, so it holds no '.'",
        ),
    ]
    at: Annotated[datetime, Meta(tz=True, description="producer clock; informational only")]
    v: Annotated[
        Version,
        Meta(
            description="the contract version: 2 (subjects carry their actor); 1 is history, "
            "published on the subject without the actor (an event without `v` on such a "
            "subject is read as 1)",
        ),
    ] = 2
    corr: CorrText | None = None

    SUBJECT_KIND: ClassVar[str]
    SUBJECT_KEY: ClassVar[str]
    SENDERS: ClassVar[frozenset[Sender]]


_SELF_USER_SVC: frozenset[Sender] = frozenset({"self", "user", "svc"})
_SELF: frozenset[Sender] = frozenset({"self"})
_USER_SVC: frozenset[Sender] = frozenset({"user", "svc"})


class _AgentEvent(Event, frozen=True, kw_only=True):
    SUBJECT_KIND: ClassVar[str] = "agent"
    SUBJECT_KEY: ClassVar[str] = "agent"
    agent: Ident


# ---- agent lifecycle: fw.agent.<agent>.<actor> -----------------------------------------------


class AgentRegistered(_AgentEvent, frozen=True, kw_only=True, tag="agent.registered"):
    """An agent announces itself and its profile: name, owner, team, roles, risk class,
    heartbeat interval. Once a person or a service has registered the agent, its roles and
    max_concurrent_tasks are theirs (the agent's own registration changes only the rest), and
    a retired agent's own registration is refused: a person or a service brings it back by
    registering it.

    The rule every reader applies, in stream order: projections/lifecycle.py; a refused event
    is dead-lettered ``lifecycle_forbidden``."""

    SENDERS: ClassVar[frozenset[Sender]] = _SELF_USER_SVC
    name: ShortText
    owner: ShortText
    team: Ident
    purpose: Text = ""
    risk_class: RiskClass = "medium"
    version: ShortText = "1"
    heartbeat_interval_s: PeriodS = 60.0
    roles: tuple[Ident, ...] = ()
    max_concurrent_tasks: TaskLimit = 1


class AgentVersionChanged(_AgentEvent, frozen=True, kw_only=True, tag="agent.version_changed"):
    """The agent runs another version from here on: what it is made of (prompt, model, tool
    set). Every deliverable it submits from this event's position on records ``version``
    (``fleet.deliverable_versions``), and its KPIs are kept per version (``fleet.kpi_versions``).
    A version id published again with other details keeps the latest ones. A rollback
    (``fleetward agents rollback ID --to VERSION``) is this event too, with ``rollback`` true:
    a version the agent ran before is in force again, with the details it had, and every reader
    of versions (deliverables, KPIs, drift) follows it as it follows any change; who took it
    back and when is kept (``fleet.agent_versions.rolled_back_by``)."""

    SENDERS: ClassVar[frozenset[Sender]] = _SELF_USER_SVC
    version: ShortText
    rollback: Annotated[
        bool,
        Meta(description="a version the agent ran before is put in force again "
             "(`fleetward agents rollback`), with the details it had"),
    ] = False  # fmt: skip
    notes: Text = ""
    prompt: Annotated[
        ShortText, Meta(description="the prompt in force: a name, tag or hash; '': not said")
    ] = ""
    model: Annotated[ShortText, Meta(description="the model it calls; '': not said")] = ""
    tools: Annotated[
        tuple[ShortText, ...], Meta(max_length=64, description="the tools it may call")
    ] = ()


class AgentPaused(_AgentEvent, frozen=True, kw_only=True, tag="agent.paused"):
    """The agent was paused: it should take no new work until resumed. Who paused it decides
    who may resume it: an agent lifts only a pause of its own (projections/lifecycle.py)."""

    SENDERS: ClassVar[frozenset[Sender]] = _SELF_USER_SVC
    reason: Text = ""


class AgentResumed(_AgentEvent, frozen=True, kw_only=True, tag="agent.resumed"):
    """The agent was resumed after a pause. An agent may resume itself only from a pause it
    made itself: its own resume from a person's or a service's pause, from retirement or while
    offline is refused (``lifecycle_forbidden``, projections/lifecycle.py)."""

    SENDERS: ClassVar[frozenset[Sender]] = _SELF_USER_SVC
    reason: Text = ""


class AgentRetired(_AgentEvent, frozen=True, kw_only=True, tag="agent.retired"):
    """The agent left the fleet for good: it cannot come back on its own; a person or a
    service brings it back by registering it (projections/lifecycle.py)."""

    SENDERS: ClassVar[frozenset[Sender]] = _SELF_USER_SVC
    reason: Text = ""


class AgentPromoted(_AgentEvent, frozen=True, kw_only=True, tag="agent.promoted"):
    """A person with the role ``operator`` marks the agent, at ``version``, as one that pays
    (the lifecycle review's "promote": top value per cost): a tag every team sees in the
    registry (``fleet.agents.promoted_by``, ``promoted_at``, ``promoted_version``). A later
    promotion replaces it; ``withdrawn`` takes it away. It changes nothing the agent may do."""

    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"user"})
    version: Annotated[ShortText, Meta(description="the agent's version that is promoted")]
    reason: Text = ""
    withdrawn: Annotated[bool, Meta(description="the tag is taken away")] = False


class AgentOffline(_AgentEvent, frozen=True, kw_only=True, tag="agent.offline"):
    """The watchdog judged the agent dead (a critical escalation); its leases are released."""

    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"svc"})
    escalation: Ident
    last_seen: datetime | None = None


class AgentOnline(_AgentEvent, frozen=True, kw_only=True, tag="agent.online"):
    """A heartbeat arrived from an agent the watchdog had judged offline."""

    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"svc"})
    escalation: Ident | None = None


# ---- agent activity: fw.agent.<agent>.<actor> ------------------------------------------------


class RunStarted(_AgentEvent, frozen=True, kw_only=True, tag="run.started"):
    SENDERS: ClassVar[frozenset[Sender]] = _SELF
    run: Ident
    task: Ident | None = None
    trigger: ShortText = ""


class RunFinished(_AgentEvent, frozen=True, kw_only=True, tag="run.finished"):
    SENDERS: ClassVar[frozenset[Sender]] = _SELF
    run: Ident
    outcome: RunOutcome
    latency_ms: DurationMs
    task: Ident | None = None


class ToolCalled(_AgentEvent, frozen=True, kw_only=True, tag="tool.called"):
    SENDERS: ClassVar[frozenset[Sender]] = _SELF
    tool: ShortText
    duration_ms: DurationMs
    ok: bool
    error: Text | None = None
    cost_usd: CostUsd = 0.0
    run: Ident | None = None
    task: Ident | None = None
    reservation: Annotated[
        Ident | None,
        Meta(description="the budget reservation this cost settles (budget.reserved); null: none"),
    ] = None
    approval: Annotated[
        Ident | None,
        Meta(
            description="the granted approval this call was gated by (approval.granted); a "
            "tool that its policy gates, called without one, is a violation"
        ),
    ] = None


class SpendRecorded(_AgentEvent, frozen=True, kw_only=True, tag="spend.recorded"):
    SENDERS: ClassVar[frozenset[Sender]] = _SELF
    model: ShortText
    tokens_in: Tokens = 0
    tokens_out: Tokens = 0
    cost_usd: CostUsd
    run: Ident | None = None
    task: Ident | None = None
    reservation: Annotated[
        Ident | None,
        Meta(description="the budget reservation this cost settles (budget.reserved); null: none"),
    ] = None


# ---- liveness: fw.hb.<agent> (stream FW_HEARTBEATS) ------------------------------------------


class Heartbeat(Event, frozen=True, kw_only=True, tag="agent.heartbeat"):
    SUBJECT_KIND: ClassVar[str] = "hb"
    SUBJECT_KEY: ClassVar[str] = "agent"
    SENDERS: ClassVar[frozenset[Sender]] = _SELF
    agent: Ident
    status: HeartbeatStatus = "idle"
    task: Ident | None = None
    message: ShortText = ""


# ---- tasks: fw.task.<task>.<actor> -----------------------------------------------------------


class _TaskEvent(Event, frozen=True, kw_only=True):
    SUBJECT_KIND: ClassVar[str] = "task"
    SUBJECT_KEY: ClassVar[str] = "task"
    task: Ident


class Deliverable(Struct, frozen=True, kw_only=True):
    kind: DeliverableKind
    sha256: Sha256
    content: ContentText = ""
    uri: UriText | None = None


class TaskCreated(_TaskEvent, frozen=True, kw_only=True, tag="task.created"):
    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"agent", "user", "svc"})
    project: Ident
    title: ShortText
    description: Text = ""
    priority: Priority = "medium"
    depends_on: tuple[Ident, ...] = ()
    required_role: Ident | None = None
    sla_s: SlaS | None = None


class TaskAssigned(_TaskEvent, frozen=True, kw_only=True, tag="task.assigned"):
    SENDERS: ClassVar[frozenset[Sender]] = _USER_SVC
    agent: Ident


class TaskClaimed(_TaskEvent, frozen=True, kw_only=True, tag="task.claimed"):
    SENDERS: ClassVar[frozenset[Sender]] = _SELF
    agent: Ident
    epoch: Epoch
    lease_s: PeriodS = 300.0


class TaskProgressed(_TaskEvent, frozen=True, kw_only=True, tag="task.progressed"):
    SENDERS: ClassVar[frozenset[Sender]] = _SELF
    agent: Ident
    epoch: Epoch
    note: Text = ""
    percent: Percent | None = None


class TaskBlocked(_TaskEvent, frozen=True, kw_only=True, tag="task.blocked"):
    SENDERS: ClassVar[frozenset[Sender]] = _SELF
    agent: Ident
    epoch: Epoch
    reason: Text


class TaskReleased(_TaskEvent, frozen=True, kw_only=True, tag="task.released"):
    SENDERS: ClassVar[frozenset[Sender]] = _SELF
    agent: Ident
    epoch: Epoch
    reason: Text = ""


class TaskSubmitted(_TaskEvent, frozen=True, kw_only=True, tag="task.submitted"):
    SENDERS: ClassVar[frozenset[Sender]] = _SELF
    agent: Ident
    epoch: Epoch
    deliverable: Deliverable


class TaskReviewed(_TaskEvent, frozen=True, kw_only=True, tag="task.reviewed"):
    """A verdict on the agent's latest deliverable; the reviewer is the actor."""

    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"agent", "user", "svc"})
    agent: Annotated[Ident, Meta(description="the agent whose deliverable is reviewed")]
    verdict: Verdict
    feedback: Text = ""


class TaskCancelled(_TaskEvent, frozen=True, kw_only=True, tag="task.cancelled"):
    SENDERS: ClassVar[frozenset[Sender]] = _USER_SVC
    reason: Text = ""


class TaskLeaseExpired(_TaskEvent, frozen=True, kw_only=True, tag="task.lease_expired"):
    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"svc"})
    agent: Ident
    epoch: Epoch


class TaskClaimRefused(_TaskEvent, frozen=True, kw_only=True, tag="task.claim_refused"):
    """The board's verdict on a claim that broke a rule the task's own subject cannot show (the
    claimer unregistered, paused, retired or offline, lacking the role, at its limit of
    concurrent tasks, or a dependency not done). It undoes that claim: the task is again as it
    was before it. It applies only while ``claim`` (the claim's event id) is the task's current
    claim (DESIGN 3.3)."""

    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"svc"})
    agent: Ident
    epoch: Epoch
    claim: Annotated[Ident, Meta(description="the event id of the refused task.claimed")]
    reason: Text


class TaskReviewRefused(_TaskEvent, frozen=True, kw_only=True, tag="task.review_refused"):
    """The board's verdict on a review by an agent that lacks the role ``reviewer``: the review
    is undone (the task waits in review again). It applies only while ``review`` (the review's
    event id) is the last review applied to the task."""

    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"svc"})
    agent: Annotated[Ident, Meta(description="the author of the deliverable")]
    reviewer: Actor
    review: Annotated[Ident, Meta(description="the event id of the refused task.reviewed")]
    reason: Text


class TaskRevoked(_TaskEvent, frozen=True, kw_only=True, tag="task.revoked"):
    """A person or a service takes a task back from ``agent``, who holds it (or has it in
    review, or has it assigned and not yet claimed) at claim epoch ``epoch``; the task goes to
    the inbox, or is assigned to ``assign_to``."""

    SENDERS: ClassVar[frozenset[Sender]] = _USER_SVC
    agent: Ident
    epoch: CurrentEpoch
    reason: Text = ""
    assign_to: Ident | None = None


class TaskDependenciesChanged(
    _TaskEvent, frozen=True, kw_only=True, tag="task.dependencies_changed"
):
    """The task's dependencies are now ``depends_on`` (drop one, or replace it with a task
    created before this one, so the graph stays acyclic)."""

    SENDERS: ClassVar[frozenset[Sender]] = _USER_SVC
    depends_on: tuple[Ident, ...]
    reason: Text = ""


# ---- escalations: fw.esc.<escalation>.<actor> ------------------------------------------------


class _EscalationEvent(Event, frozen=True, kw_only=True):
    SUBJECT_KIND: ClassVar[str] = "esc"
    SUBJECT_KEY: ClassVar[str] = "escalation"
    escalation: Ident


class EscalationRaised(_EscalationEvent, frozen=True, kw_only=True, tag="escalation.raised"):
    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"svc"})
    tier: Tier
    reason: Ident
    agent: Ident | None = None
    task: Ident | None = None
    message: Text = ""
    evidence: Evidence = msgspec.field(default_factory=dict)


class EscalationAcknowledged(
    _EscalationEvent, frozen=True, kw_only=True, tag="escalation.acknowledged"
):
    SENDERS: ClassVar[frozenset[Sender]] = _USER_SVC
    note: Text = ""


class EscalationResolved(_EscalationEvent, frozen=True, kw_only=True, tag="escalation.resolved"):
    SENDERS: ClassVar[frozenset[Sender]] = _USER_SVC
    resolution: Text = ""


# ---- budgets: fw.budget.<budget>.<actor> -----------------------------------------------------


class BudgetSet(Event, frozen=True, kw_only=True, tag="budget.set"):
    """A person set a spend limit (USD, optionally tokens) for an agent, a team, a project or
    the org, per window (UTC day, month, lifetime).

    The person needs the role budget-admin. The window is counted by the stream's time of
    record; the latest set of a budget id replaces the earlier ones; the budget warns once
    ``warn_at`` of a limit is spent (docs/views.md, ``fleet.budgets``)."""

    SUBJECT_KIND: ClassVar[str] = "budget"
    SUBJECT_KEY: ClassVar[str] = "budget"
    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"user"})
    budget: Ident
    scope: BudgetScope
    scope_id: Annotated[
        Ident, Meta(description="the agent, team, project or organisation the budget limits")
    ]
    window: BudgetWindow
    limit_usd: Annotated[LimitUsd, Meta(description="USD")]
    warn_at: Annotated[Share, Meta(description="the share of a limit that warns")] = 0.8
    limit_tokens: Annotated[
        LimitTokens | None, Meta(description="tokens in and out together; null: no token limit")
    ] = None


class _BudgetEvent(Event, frozen=True, kw_only=True):
    SUBJECT_KIND: ClassVar[str] = "budget"
    SUBJECT_KEY: ClassVar[str] = "budget"
    budget: Ident


class BudgetExhausted(_BudgetEvent, frozen=True, kw_only=True, tag="budget.exhausted"):
    """The guard found a budget's hard limit reached in its current window (spent >= limit, in
    USD or in tokens, as ``fleet.budgets`` judges ``exhausted``): it pauses every agent in the
    budget's scope (``agent.paused`` by the guard, reason ``budget <id> exhausted ...``).

    Published by the guard (services/guard) once per budget and window: a deterministic id and
    compare-and-set over the budget's subjects. ``window_start`` is the window's first UTC day
    (null: lifetime)."""

    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"svc"})
    window: BudgetWindow
    window_start: Annotated[datetime, Meta(tz=True, description="UTC midnight")] | None = None
    spent_usd: Annotated[LimitUsd, Meta(description="USD spent in the window")]
    limit_usd: Annotated[LimitUsd, Meta(description="USD")]
    spent_tokens: Annotated[LimitTokens, Meta(description="tokens in and out")] = 0
    limit_tokens: LimitTokens | None = None


class BudgetRestored(_BudgetEvent, frozen=True, kw_only=True, tag="budget.restored"):
    """An exhausted budget has room again: its limit was raised (``budget.set``) or a new
    window began. The guard resumes exactly the agents it paused for the budget whose pause is
    still its own (``paused_by`` = the guard; an agent someone else paused meanwhile stays
    paused), unless another exhausted budget still covers them. ``window_start`` is the start
    of the exhausted window this ends (null: lifetime)."""

    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"svc"})
    window: BudgetWindow
    window_start: Annotated[datetime, Meta(tz=True, description="UTC midnight")] | None = None
    reason: Literal["limit_raised", "new_window", "budget_changed"]


class BudgetReserved(_BudgetEvent, frozen=True, kw_only=True, tag="budget.reserved"):
    """The guard set ``usd`` of the budget aside for one agent's next step
    (``fw.api.budgets.reserve.<agent>``): from this event until its ``budget.released``, the
    budget's remaining (limit - spent - open reservations) counts it as spent.

    Published by the guard with compare-and-set on its own subject of the budget
    (``fw.budget.<id>.svc:guard``) on the last sequence it had folded there, so two reservations
    are never judged against the same remainder, and nobody else's messages on the budget can
    hold a grant up. One reservation id spans every budget in the agent's scope: one
    ``budget.reserved`` on each. When the agent enters another budget's scope while the
    reservation is open (a team move, a claim on a project), the guard stores it there too.
    ``expires_at``: when the guard releases it if no spend has settled it."""

    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"svc"})
    reservation: Annotated[Ident, Meta(description="the reservation's id")]
    agent: Annotated[Ident, Meta(description="the agent it is for")]
    usd: Annotated[LimitUsd, Meta(description="USD set aside")]
    expires_at: Annotated[datetime, Meta(tz=True, description="UTC; released then if unsettled")]


class BudgetReleased(_BudgetEvent, frozen=True, kw_only=True, tag="budget.released"):
    """A reservation no longer holds the budget: ``usd`` (its whole amount) returns to the
    remainder. ``settled``: a spend event named it (that spend counts as spent instead);
    ``expired``: its ``expires_at`` passed unsettled; ``refused``: the reservation was refused
    on another budget of the agent's scope, so the part stored here is given back;
    ``returned``: the agent gave it back unspent (``fw.api.budgets.release.<agent>``).

    Published by the guard, at most once per reservation and budget (compare-and-set on the
    guard's subject of the budget and a deterministic id)."""

    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"svc"})
    reservation: Annotated[Ident, Meta(description="the reservation's id")]
    agent: Annotated[Ident, Meta(description="the agent it was for")]
    usd: Annotated[LimitUsd, Meta(description="USD returned to the budget")]
    reason: Literal["settled", "expired", "refused", "returned"]


# ---- people and their roles: fw.person.<person> (schemas/roles.py) ---------------------------


class _PersonEvent(Event, frozen=True, kw_only=True):
    SUBJECT_KIND: ClassVar[str] = "person"
    SUBJECT_KEY: ClassVar[str] = "person"
    person: Annotated[PersonName, Meta(description="the person: user:<person> in their events")]


class RoleGranted(_PersonEvent, frozen=True, kw_only=True, tag="role.granted"):
    """A person (user:<person>) holds a role from this event's position on; granted by an admin
    or by the holder of Fleetward's signing keys (svc:auth)."""

    SENDERS: ClassVar[frozenset[Sender]] = _USER_SVC
    role: Role
    reason: Text = ""


class RoleRevoked(_PersonEvent, frozen=True, kw_only=True, tag="role.revoked"):
    """A person no longer holds a role from this event's position on."""

    SENDERS: ClassVar[frozenset[Sender]] = _USER_SVC
    role: Role
    reason: Text = ""


# ---- approvals: fw.approval.<approval>.<actor> (DESIGN 3.10) ---------------------------------


class _ApprovalEvent(Event, frozen=True, kw_only=True):
    SUBJECT_KIND: ClassVar[str] = "approval"
    SUBJECT_KEY: ClassVar[str] = "approval"
    approval: Annotated[Ident, Meta(description="the request's id (chosen by the agent)")]
    agent: Annotated[Ident, Meta(description="the agent that asks")]


class ApprovalRequested(_ApprovalEvent, frozen=True, kw_only=True, tag="approval.requested"):
    """An agent asks a person before a gated step: a tool call, a deliverable or another action
    (``name`` says which), with a summary of its arguments and the step's risk.

    Deadlines count from the stream time of this event: with no decision after
    ``escalate_after_s`` seconds the watchdog escalates to the approvers (``approval_overdue``);
    after ``expire_after_s`` (at least ``escalate_after_s``) it denies the request
    (``on_expiry`` ``deny``), or leaves it to people (``wait``). An approval id is used once:
    a second request under it is refused (``approval_forbidden``, projections/approvals.py)."""

    SENDERS: ClassVar[frozenset[Sender]] = _SELF
    kind: ApprovalKind
    name: Annotated[ShortText, Meta(description="the tool, deliverable or action asked for")]
    summary: Annotated[Text, Meta(description="what the step will do, for the approver")] = ""
    arguments: Annotated[Evidence, Meta(description="a summary of its arguments")] = msgspec.field(
        default_factory=dict
    )
    risk: RiskClass = "medium"
    escalate_after_s: WaitS = 900.0
    expire_after_s: WaitS = 86_400.0
    on_expiry: OnExpiry = "deny"
    task: Ident | None = None
    run: Ident | None = None


class ApprovalGranted(_ApprovalEvent, frozen=True, kw_only=True, tag="approval.granted"):
    """A person with the role ``approver`` lets the request go ahead; the approver is the
    actor, never the asking agent (agents decide no approvals). The first decision of a request
    in stream order counts; a later one is refused (``approval_forbidden``). The tool policy in
    force at this event's position is stamped on the decision by every reader
    (``fleet.approvals.policy_version``, projections/approvals.py)."""

    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"user"})
    reason: Text = ""


class ApprovalDenied(_ApprovalEvent, frozen=True, kw_only=True, tag="approval.denied"):
    """A person with the role ``approver`` refuses the request, or the watchdog does at its
    second deadline (``expired``). As for ``approval.granted``, the first decision counts."""

    SENDERS: ClassVar[frozenset[Sender]] = _USER_SVC
    reason: Text = ""
    expired: Annotated[bool, Meta(description="denied because no one decided in time")] = False


# ---- tool policies: fw.policy.<policy>.<actor> -----------------------------------------------


class PolicySet(Event, frozen=True, kw_only=True, tag="policy.set"):
    """A person with the role ``policy-admin`` sets the tool policy of one agent, one team or
    one risk class: the tools it may call, may not call, and may call only with a granted
    approval; ``default`` for the tools it does not list; optionally a cost cap per call (USD).

    One policy per scope: ``policy`` must be ``schemas.ids.policy_id(scope, scope_id)``. Each set
    replaces the policy and is its next version (1, 2, ...). An agent is judged by the most
    specific policy that lists the tool (agent, then team, then risk class), else by the most
    specific policy's ``default``; with none at all, every tool is allowed
    (schemas/policies.py)."""

    SUBJECT_KIND: ClassVar[str] = "policy"
    SUBJECT_KEY: ClassVar[str] = "policy"
    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"user"})
    policy: Annotated[Ident, Meta(description="policy_id(scope, scope_id)")]
    scope: PolicyScope
    scope_id: Annotated[
        Ident, Meta(description="the agent, the team, or the risk class (low ... critical)")
    ]
    allow: ToolList = ()
    deny: ToolList = ()
    approve: Annotated[ToolList, Meta(description="tools that need a granted approval")] = ()
    default: ToolVerdict = "allow"
    max_cost_usd: Annotated[CostUsd | None, Meta(description="USD per call; null: none")] = None
    reason: Text = ""


# ---- the audit log's seals: fw.audit.<stream>.<actor> ----------------------------------------


class AuditSealed(Event, frozen=True, kw_only=True, tag="audit.sealed"):
    """The head of the audit stream's hash chain at stream sequence ``seq``: the stream commits
    to everything stored up to ``seq``, so an exported file (``fleetward audit export``) can be
    checked against it (``fleetward audit verify``).

    ``head`` = chain(seq), where chain(0) is the genesis constant and chain(n) =
    sha256(chain(n-1) || the canonical bytes of the message stored at n) (docs/audit.md has
    the bytes; ``anchor`` is the sequence the chain was started from: 0 at the stream's
    genesis). Published by the auditor (svc:audit) once per period (daily by default) with a
    deterministic id and compare-and-set over ``fw.audit.<stream>.>``, so two replicas store
    one seal per period. Readers trust the seals of ``svc:audit`` only."""

    SUBJECT_KIND: ClassVar[str] = "audit"
    SUBJECT_KEY: ClassVar[str] = "stream"
    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"svc"})
    stream: Annotated[Ident, Meta(description="the sealed stream, FW_EVENTS")]
    seq: Annotated[StreamSeq, Meta(description="the last stream sequence the head covers")]
    head: Annotated[Sha256, Meta(description="chain(seq), lowercase hex")]
    anchor: Annotated[
        StreamSeq, Meta(description="the sequence the chain starts from (0: the genesis)")
    ] = 0
    period_start: Annotated[datetime, Meta(tz=True, description="start of the sealed period")]
    period_s: Annotated[SealPeriodS, Meta(description="the sealing period, seconds")]


# ---- commands to agents: fw.cmd.<agent>.<actor> (stream FW_COMMANDS) -------------------------


class CommandIssued(Event, frozen=True, kw_only=True, tag="command.issued"):
    """A durable command to one agent. Only Fleetward's services issue commands: a person acts
    through events (pause, assign, review) that a service turns into commands once it has
    judged them (state, roles), so every command an agent gets was checked."""

    SUBJECT_KIND: ClassVar[str] = "cmd"
    SUBJECT_KEY: ClassVar[str] = "agent"
    SENDERS: ClassVar[frozenset[Sender]] = frozenset({"svc"})
    agent: Ident
    command: CommandName
    reason: Text = ""
    task: Ident | None = None
    payload: Evidence = msgspec.field(default_factory=dict)


AnyEvent = (
    AgentRegistered
    | AgentVersionChanged
    | AgentPaused
    | AgentResumed
    | AgentRetired
    | AgentPromoted
    | AgentOffline
    | AgentOnline
    | RunStarted
    | RunFinished
    | ToolCalled
    | SpendRecorded
    | Heartbeat
    | TaskCreated
    | TaskAssigned
    | TaskClaimed
    | TaskProgressed
    | TaskBlocked
    | TaskReleased
    | TaskSubmitted
    | TaskReviewed
    | TaskCancelled
    | TaskLeaseExpired
    | TaskClaimRefused
    | TaskReviewRefused
    | TaskRevoked
    | TaskDependenciesChanged
    | EscalationRaised
    | EscalationAcknowledged
    | EscalationResolved
    | BudgetSet
    | BudgetExhausted
    | BudgetRestored
    | BudgetReserved
    | BudgetReleased
    | CommandIssued
    | RoleGranted
    | RoleRevoked
    | ApprovalRequested
    | ApprovalGranted
    | ApprovalDenied
    | PolicySet
    | AuditSealed
)

EVENT_TYPES: tuple[type[Event], ...] = typing.get_args(AnyEvent)


def type_name(cls: type[Event]) -> str:
    """The wire name of an event class (its tag), e.g. ``task.claimed``."""
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


BY_TYPE: dict[str, type[Event]] = {type_name(cls): cls for cls in EVENT_TYPES}
