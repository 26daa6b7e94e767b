"""The HTTP API (``fleetward api``): its routes, their query parameters, request bodies and
answers, as frozen msgspec Structs. Pure: ``schemas/openapi.py`` publishes them as OpenAPI 3.1
(``schemas/openapi.json``), and ``services/api/app.py`` serves exactly these routes.

Invariants:
- Every ``Route`` is a GET that reads the public views (docs/views.md) and writes nothing.
- Every ``WriteRoute`` is a POST of an operator's action, the CLI's (``services/api/write.py``):
  a JSON body checked against its Struct (unknown fields refused, the contract's bounds) before
  anything is read, published as the person whose operator token asks.
- Query parameters are checked against their Struct before any read: an unknown parameter, a
  value of the wrong type or out of its bounds is answered 400 with ``{"error": ...}``.
- Lists are pages: ``limit`` (1 to ``MAX_LIMIT``) and ``offset``; ``next_offset`` is the offset
  of the next page, null on the last one.
- Money is a decimal string (exact, as the views sum it); times are RFC 3339 in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Final, Literal

from msgspec import Meta, Struct

from fleetward.schemas.bounds import IDENT_PATTERN, Ident, ShortText, SlaS, Text
from fleetward.schemas.events import Verdict

API_VERSION: Final = "1.0.0"  # of the HTTP API; a breaking change is /api/v2
MAX_LIMIT: Final = 500
DEFAULT_LIMIT: Final = 100
API_ROOT: Final = "/api/v1"
EVENTS_PATH: Final = f"{API_ROOT}/events"  # the server-sent events stream

Limit = Annotated[int, Meta(ge=1, le=MAX_LIMIT, description="rows in one page")]
Offset = Annotated[int, Meta(ge=0, le=2_147_483_647, description="rows to skip")]
Filter = Annotated[str, Meta(min_length=1, max_length=200)]
AgentStatus = Literal["active", "paused", "offline", "retired"]
AgentState = Literal["idle", "busy", "waiting", "error"]
TaskStatus = Literal["inbox", "assigned", "in_progress", "blocked", "review", "done", "cancelled"]
Priority = Literal["urgent", "high", "medium", "low"]
Tier = Literal["info", "warning", "critical"]
Usd = Annotated[Decimal, Meta(description="US dollars, exact")]


class Query(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What every list takes."""

    limit: Limit = DEFAULT_LIMIT
    offset: Offset = 0


class NoQuery(Struct, frozen=True, forbid_unknown_fields=True):
    """A route without query parameters."""


class Error(Struct, frozen=True):
    """A request the API refused (4xx), or could not answer (503), and why: one line."""

    error: str


# ---- agents ------------------------------------------------------------------------------------


class AgentsQuery(Query, frozen=True, kw_only=True, forbid_unknown_fields=True):
    status: AgentStatus | None = None
    state: AgentState | None = None
    team: Filter | None = None
    q: (
        Annotated[str, Meta(min_length=1, max_length=200, description="part of id or name")] | None
    ) = None


class Agent(Struct, frozen=True, kw_only=True):
    """One row of the agents table: ``fleet.agents`` with its last heartbeat
    (``fleet.utilization``) and its spend today (``fleet.spend_daily``, UTC day)."""

    agent_id: str
    name: str
    team: str
    status: str
    state: str | None
    current_task: str | None
    last_seen: datetime | None
    cost_today: Usd


class AgentsPage(Struct, frozen=True, kw_only=True):
    items: list[Agent]
    next_offset: int | None


class AgentDetail(Struct, frozen=True, kw_only=True):
    """One agent: who it is, what it does now, what it holds, what it cost, when last seen."""

    agent_id: str
    name: str
    owner: str | None
    team: str
    purpose: str | None
    risk_class: str | None
    version: str | None
    status: str
    status_reason: str | None
    paused_by: str | None
    roles: list[str] | None
    max_concurrent_tasks: int | None
    heartbeat_interval_s: float | None
    state: str | None
    current_task: str | None
    message: str | None
    last_seen: datetime | None
    holds: list[str]
    cost_today: Usd
    cost_month: Usd
    cost_total: Usd
    tasks_done: int | None
    utilization: float | None


class AgentEventsQuery(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    limit: Annotated[int, Meta(ge=1, le=MAX_LIMIT, description="events, the latest first")] = 50


class AgentEvent(Struct, frozen=True, kw_only=True):
    """One line of an agent's timeline, read from the views that keep a time per agent:
    ``kind`` is ``version`` (``fleet.agent_versions``), ``command`` (``fleet.commands``: pause,
    resume, lease_lost, review_feedback, ...), ``claimed`` / ``done`` (``fleet.tasks``),
    ``run_started`` / ``run_finished`` (``fleet.spend_runs``), ``submitted``
    (``fleet.deliverables``), ``escalation`` / ``escalation_resolved`` (``fleet.escalations``),
    ``approval_requested`` / ``approval_decided`` (``fleet.approvals``) or ``policy_violation``
    (``fleet.policy_violations``). ``at`` is stream time; ``by`` the actor, when the view keeps
    it."""

    at: datetime
    kind: str
    what: str
    task_id: str | None
    detail: str | None
    by: str | None


class AgentEventsPage(Struct, frozen=True, kw_only=True):
    """An agent's recent events, the latest first (at most ``limit``; no further pages)."""

    items: list[AgentEvent]


# ---- tasks -------------------------------------------------------------------------------------


class TasksQuery(Query, frozen=True, kw_only=True, forbid_unknown_fields=True):
    status: TaskStatus | None = None
    project: Filter | None = None
    priority: Priority | None = None
    assignee: Filter | None = None


class Task(Struct, frozen=True, kw_only=True):
    """One card of the board (``fleet.tasks``), with what it has cost (``fleet.spend_tasks``)."""

    task_id: str
    project: str
    title: str
    priority: str
    status: str
    assignee: str | None
    claim_epoch: int
    depends_on: list[str]
    waiting_on_dependencies: bool
    review_rounds: int
    cost_usd: Usd
    updated_at: datetime


class TasksPage(Struct, frozen=True, kw_only=True):
    items: list[Task]
    next_offset: int | None


class TaskDetail(Struct, frozen=True, kw_only=True):
    """One task of ``fleet.tasks`` in full, with its cost."""

    task_id: str
    project: str
    title: str
    description: str | None
    priority: str
    status: str
    assignee: str | None
    claim_epoch: int
    depends_on: list[str]
    waiting_on_dependencies: bool
    cancelled_dependencies: list[str] | None
    required_role: str | None
    review_rounds: int
    rework_count: int
    deliverable_version: int
    blocked_reason: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    cost_usd: Usd


# ---- spend, escalations, dead letters, budgets --------------------------------------------------


class SpendQuery(Query, frozen=True, kw_only=True, forbid_unknown_fields=True):
    by: Literal["team", "agent", "project", "model"] = "team"
    key: Annotated[str, Meta(max_length=200, description="only this team/agent/...")] | None = None
    since: Annotated[date, Meta(description="first UTC day (default: 30 days ago)")] | None = None
    until: Annotated[date, Meta(description="last UTC day (default: today)")] | None = None


class Spend(Struct, frozen=True, kw_only=True):
    """Spend per UTC day and team, agent, project or model (``fleet.spend_*daily``)."""

    key: str | None
    day: date
    cost_usd: Usd
    tokens_in: Decimal
    tokens_out: Decimal


class SpendPage(Struct, frozen=True, kw_only=True):
    items: list[Spend]
    next_offset: int | None


class EscalationsQuery(Query, frozen=True, kw_only=True, forbid_unknown_fields=True):
    state: Literal["open", "acknowledged", "resolved", "unresolved", "all"] = "unresolved"
    tier: Tier | None = None
    reason: Filter | None = None
    agent_id: Filter | None = None


class Escalation(Struct, frozen=True, kw_only=True):
    """One escalation (``fleet.escalations``); unresolved ones the oldest critical first."""

    escalation_id: str
    reason: str
    tier: str
    state: str
    agent_id: str | None
    task_id: str | None
    message: str
    raised_at: datetime
    tier_at: datetime
    acknowledged_by: str | None
    resolved_at: datetime | None


class EscalationsPage(Struct, frozen=True, kw_only=True):
    items: list[Escalation]
    next_offset: int | None


class DeadLettersQuery(Query, frozen=True, kw_only=True, forbid_unknown_fields=True):
    projection: Filter | None = None
    reason: Filter | None = None


class DeadLetter(Struct, frozen=True, kw_only=True):
    """An event a projection refused (``fleet.dead_letters``; the payload stays in the stream)."""

    projection: str
    stream: str
    seq: int
    subject: str
    reason: str
    detail: str
    stream_time: datetime | None
    recorded_at: datetime


class DeadLettersPage(Struct, frozen=True, kw_only=True):
    items: list[DeadLetter]
    next_offset: int | None


class BudgetsQuery(Query, frozen=True, kw_only=True, forbid_unknown_fields=True):
    state: Literal["ok", "warning", "exhausted"] | None = None
    scope: Literal["agent", "team", "project", "org"] | None = None


class Budget(Struct, frozen=True, kw_only=True):
    """A budget and what its scope spent in its current window (``fleet.budgets``)."""

    budget_id: str
    scope: str
    scope_id: str
    budget_window: str
    limit_usd: Usd
    spent_usd: Usd
    reserved_usd: Usd
    remaining_usd: Usd
    state: str


class BudgetsPage(Struct, frozen=True, kw_only=True):
    items: list[Budget]
    next_offset: int | None


class Overview(Struct, frozen=True, kw_only=True):
    """The dashboard's head: agents by status and by last heartbeat's state, open escalations
    by tier, tasks by status, throughput (tasks done this UTC day and in the last hour, by
    ``done_at`` of ``fleet.tasks``), spend today (UTC), budgets not ok, dead letters."""

    agents_by_status: dict[str, int]
    agents_by_state: dict[str, int]
    escalations_by_tier: dict[str, int]
    tasks_by_status: dict[str, int]
    tasks_done_today: int = 0
    tasks_done_last_hour: int = 0
    spend_today_usd: Usd
    budgets: list[Budget]
    dead_letters: int


class Whoami(Struct, frozen=True, kw_only=True):
    """Who the token says is asking, and what it lets them do: ``viewer`` reads, ``operator``
    also writes (as ``person``, with the person's own roles)."""

    person: str
    role: str
    expires_at: datetime | None


# ---- writes (an operator token; the CLI's operator actions) -----------------------------------


class NewTask(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A task to create, as ``fleetward tasks create``'s options: ``depends_on`` must exist
    already (so no cycle can form); ``required_role`` is the role an agent needs to claim it;
    ``sla_s`` the seconds it may stay in progress."""

    task_id: Ident
    project: Ident
    title: ShortText
    description: Text = ""
    priority: Priority = "medium"
    depends_on: list[Ident] = []
    required_role: Ident | None = None
    sla_s: SlaS | None = None


class Assignment(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The agent a task goes to."""

    agent_id: Ident


class Reassignment(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The agent a task goes to (a held one is taken from its holder), and why."""

    agent_id: Ident
    reason: Text = ""


class Reason(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Why (optional; the body may be empty)."""

    reason: Text = ""


class Review(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A verdict on the task's latest deliverable, with feedback for its author."""

    verdict: Verdict
    feedback: Text = ""


class Note(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A note on an escalation (optional; the body may be empty): acknowledging, what you are
    doing about it; resolving, the resolution."""

    note: Text = ""


class Written(Struct, frozen=True, kw_only=True):
    """What a write published: the event's type (e.g. ``task.cancelled``) and id, and who it
    was published as (the token's person)."""

    event: str
    event_id: str
    actor: str


# ---- routes ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """One GET route: its path (``{name}`` for a path parameter), its query Struct, its answer."""

    name: str  # the operationId, and the handler's name in services/api/app.py
    path: str
    summary: str
    query: type[Struct]
    answer: type[Struct]
    path_params: tuple[str, ...] = ()
    not_found: bool = False  # answers 404 for an unknown id


ROUTES: Final[tuple[Route, ...]] = (
    Route("overview", f"{API_ROOT}/overview", "The fleet at a glance", NoQuery, Overview),
    Route("agents", f"{API_ROOT}/agents", "Agents, filtered, the dearest today first",
          AgentsQuery, AgentsPage),
    Route("agent", f"{API_ROOT}/agents/{{agent_id}}", "One agent", NoQuery, AgentDetail,
          ("agent_id",), not_found=True),
    Route("agent_events", f"{API_ROOT}/agents/{{agent_id}}/events",
          "One agent's recent events (a timeline from the views), the latest first",
          AgentEventsQuery, AgentEventsPage, ("agent_id",), not_found=True),
    Route("tasks", f"{API_ROOT}/tasks", "The task board: open first, by priority then age",
          TasksQuery, TasksPage),
    Route("task", f"{API_ROOT}/tasks/{{task_id}}", "One task", NoQuery, TaskDetail,
          ("task_id",), not_found=True),
    Route("spend", f"{API_ROOT}/spend", "Spend per UTC day, the latest day first",
          SpendQuery, SpendPage),
    Route("escalations", f"{API_ROOT}/escalations", "Escalations, the oldest critical first",
          EscalationsQuery, EscalationsPage),
    Route("dead_letters", f"{API_ROOT}/dead-letters", "Events projections refused, latest first",
          DeadLettersQuery, DeadLettersPage),
    Route("budgets", f"{API_ROOT}/budgets", "Budgets, the nearest their limit first",
          BudgetsQuery, BudgetsPage),
    Route("whoami", f"{API_ROOT}/whoami", "Who the token belongs to", NoQuery, Whoami),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class WriteRoute:
    """One POST route: its path, its body Struct (``body_required``: an empty body is refused;
    otherwise it reads as ``{}``); the answer is ``Written``."""

    name: str  # the operationId, and the write's name in services/api/write.py
    path: str
    summary: str
    body: type[Struct]
    path_params: tuple[str, ...] = ()
    body_required: bool = False


TASK: Final = f"{API_ROOT}/tasks/{{task_id}}"
AGENT: Final = f"{API_ROOT}/agents/{{agent_id}}"
ESCALATION: Final = f"{API_ROOT}/escalations/{{escalation_id}}"
ID_PATTERN: Final = IDENT_PATTERN  # every id in a write route's path
MAX_BODY: Final = 64 * 1024  # bytes of a write's body; more is refused (413) unread

WRITE_ROUTES: Final[tuple[WriteRoute, ...]] = (
    WriteRoute("create_task", f"{API_ROOT}/tasks", "Create a task", NewTask,
               body_required=True),
    WriteRoute("assign_task", f"{TASK}/assign", "Assign a task nobody holds to an agent",
               Assignment, ("task_id",), body_required=True),
    WriteRoute("reassign_task", f"{TASK}/reassign",
               "Give a task to another agent (a held one is taken from its holder)",
               Reassignment, ("task_id",), body_required=True),
    WriteRoute("revoke_task", f"{TASK}/revoke", "Take a held task back to the inbox", Reason,
               ("task_id",)),
    WriteRoute("review_task", f"{TASK}/review", "Review the task's latest deliverable", Review,
               ("task_id",), body_required=True),
    WriteRoute("cancel_task", f"{TASK}/cancel", "Cancel a task", Reason, ("task_id",)),
    WriteRoute("pause_agent", f"{AGENT}/pause", "Pause an agent: it claims nothing until resumed",
               Reason, ("agent_id",)),
    WriteRoute("resume_agent", f"{AGENT}/resume", "Resume a paused agent", Reason,
               ("agent_id",)),
    WriteRoute("retire_agent", f"{AGENT}/retire", "Retire an agent (its tasks go back)", Reason,
               ("agent_id",)),
    WriteRoute("ack_escalation", f"{ESCALATION}/ack", "Acknowledge an escalation: you are on it",
               Note, ("escalation_id",)),
    WriteRoute("resolve_escalation", f"{ESCALATION}/resolve", "Resolve an escalation", Note,
               ("escalation_id",)),
)  # fmt: skip

# The server-sent events of EVENTS_PATH: name -> what its JSON data holds.
LIVE_EVENTS: Final[dict[str, str]] = {
    "ready": "the first event of every stream, sent once the subscription is in place: every "
    "change committed from here on follows, so read the routes now, not before (`{}`)",
    "agent": "an agent's row of the agents table changed (status, state, current task): "
    "the row (`Agent`), or `{agent_id, removed: true}`",
    "task": "a task moved, or its dependencies came to be done: `{task_id, status, assignee, "
    "priority, project, waiting_on_dependencies}`",
    "escalation": "an escalation was raised, changed tier or state: `{escalation_id, tier, "
    "state, reason, agent_id, task_id, message, raised_at, tier_at}`",
    "overview": "the overview changed (`Overview`)",
    "resync": "too much changed at once to send row by row: read the routes again (`{}`)",
}
