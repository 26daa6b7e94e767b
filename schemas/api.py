"""The services' request/reply API: subjects ``fw.api.*`` (core NATS, nothing stored). Pure.

Each endpoint is one subject, a request and a reply, all frozen msgspec Structs bounded with the
types of ``schemas/bounds.py``; ``schemas/contract.py`` publishes them as JSON Schema
(``schemas/jsonschema/api/``) and as AsyncAPI request/reply operations.

Invariants:
- Every request gets exactly one reply, a malformed one too: a failed reply carries ``error``
  (one line for people) beside the endpoint's empty answer (``Endpoint.empty``).
- ``error`` is absent from a reply that succeeded; nothing else tells success from failure.
- Answers come from the projections: as fresh as the projector, a hint and never a decision
  (whether a claim takes a task is decided on the stream); except ``fw.api.budgets.*``,
  which the guard answers by storing the decision on the budgets' subjects.
- A per-actor endpoint (``Endpoint.per_actor``) is asked on ``<subject>.<actor>``: the subject,
  which only that actor's credentials may publish on, is its identity (schemas/grants.py); an
  ``agent`` in the request must agree with it.
- As for events: new fields get defaults; unknown fields are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from fleetward.schemas.bounds import (
    MAX_COST_USD,
    Actor,
    Ident,
    PeriodS,
    ShortText,
    StreamSeq,
    TaskLimit,
    Text,
    storable,
    text,
)
from fleetward.schemas.events import RiskClass
from fleetward.schemas.subjects import (
    API_AGENTS_GET,
    API_BUDGETS_RELEASE,
    API_BUDGETS_RESERVE,
    API_PREFIX,
    API_TASKS_CLAIMABLE,
)

MAX_CLAIMABLE: Final = 200  # task ids in one fw.api.tasks.claimable reply
MAX_ERROR: Final = 1000  # characters of a reply's error

ErrorText = Annotated[
    str, text(MAX_ERROR), Meta(description="why the request failed; absent on success")
]
AgentStatus = Literal["active", "paused", "offline", "retired"]


class Reply(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What every reply carries: ``error`` when the request failed, else nothing more."""

    error: ErrorText | UnsetType = UNSET


# ---- fw.api.tasks.claimable ---------------------------------------------------------------------


class ClaimableRequest(Struct, frozen=True, kw_only=True):
    """Which tasks may this agent claim now?"""

    agent: Annotated[Ident, Meta(description="the agent that would claim")]
    roles: Annotated[tuple[Ident, ...], Meta(description="the roles the agent holds")] = ()
    limit: Annotated[
        int, Meta(ge=1, le=MAX_CLAIMABLE, description="the most task ids to return")
    ] = 20


class ClaimableReply(Reply, frozen=True, kw_only=True, omit_defaults=True):
    """Task ids the agent may claim now: the most urgent first (urgent, high, medium, low),
    the oldest first within a priority. Empty when the request failed."""

    tasks: Annotated[tuple[Ident, ...], Meta(max_length=MAX_CLAIMABLE)]


# ---- fw.api.agents.get --------------------------------------------------------------------------


class AgentRequest(Struct, frozen=True, kw_only=True):
    """Who is this agent, and what is its status?"""

    agent: Annotated[Ident, Meta(description="the agent's id")]


class AgentProfile(Struct, frozen=True, kw_only=True):
    """One agent in the registry (the view fleet.agents): who it is and its status."""

    agent_id: Ident
    name: ShortText
    owner: ShortText
    team: Ident
    status: AgentStatus
    status_reason: Annotated[Text, Meta(description="why the status last changed; may be empty")]
    roles: tuple[Ident, ...]
    max_concurrent_tasks: TaskLimit
    heartbeat_interval_s: Annotated[PeriodS, Meta(description="seconds between heartbeats")]
    version: ShortText
    risk_class: RiskClass
    purpose: Text = ""
    paused_by: Annotated[
        Actor | None,
        Meta(description="whose pause is in force, while paused (else null): an agent may lift "
             "only its own pause; a person with the role operator or a service lifts any"),
    ] = None  # fmt: skip
    registered_by: Annotated[
        Actor | None,
        Meta(description="the person or service that registered the agent last, whose roles "
             "and task limit hold; null when only the agent registered itself"),
    ] = None  # fmt: skip


class AgentReply(Reply, frozen=True, kw_only=True, omit_defaults=True):
    """The agent's profile; null when the registry has no such agent (and when the request
    failed). ``checkpoint``: how far the registry had applied FW_EVENTS when it answered; the
    agent's events stored after it (on ``fw.agent.<agent>.>``) are not in the profile yet, and
    a writer that judges on the profile reads them too (services/client/operator.py)."""

    agent: AgentProfile | None
    checkpoint: Annotated[
        StreamSeq, Meta(description="the FW_EVENTS sequence the registry had applied (the "
                        "agents projection's checkpoint) when it read the profile")
    ] = 0  # fmt: skip


# ---- fw.api.budgets.reserve.<agent>, fw.api.budgets.release.<agent> ---------------------------

MAX_RESERVE_TTL_S: Final = 86_400.0  # a reservation lasts at most a day
MIN_RESERVE_USD: Final = 1e-6  # a reservation of less than a millionth of a dollar is refused
MAX_OPEN_RESERVATIONS: Final = 16  # open reservations of one agent at once


class ReserveRequest(Struct, frozen=True, kw_only=True):
    """Set ``usd`` aside for the agent's next step in every budget whose scope covers it, and in
    the budgets of ``task``'s project. Sent on ``fw.api.budgets.reserve.<agent>``: the subject,
    which only the agent's credentials may publish on, names the agent (DESIGN 3.7)."""

    agent: Annotated[
        Ident | None,
        Meta(description="the agent that will spend; when given, it must be the subject's"),
    ] = None
    usd: Annotated[
        float,
        Meta(ge=MIN_RESERVE_USD, le=MAX_COST_USD, description="the estimated cost, USD"),
    ]
    ttl_s: Annotated[
        float, Meta(gt=0, le=MAX_RESERVE_TTL_S, description="seconds until released unsettled")
    ] = 300.0
    task: Annotated[
        Ident | None,
        Meta(description="the task the step spends on: its project's budgets are held too"),
    ] = None
    key: Annotated[
        Ident | None,
        Meta(description="the caller's idempotency key: a request repeated with the same key "
             "(a retry after a timeout) gets the reservation already granted, not a second one"),
    ] = None  # fmt: skip


class ReserveReply(Reply, frozen=True, kw_only=True, omit_defaults=True):
    """A granted reservation: its id (name it in the spend it settles: ``reservation``), the
    budgets it holds (empty when no budget covers the agent) and when it expires unsettled.
    Refused (``error``, empty answer): the agent is paused or retired, a budget in its scope is
    exhausted or has less than ``usd`` remaining, the agent holds ``MAX_OPEN_RESERVATIONS``
    already, or the guard is not caught up yet."""

    reservation: Annotated[Ident | None, Meta(description="null when refused")] = None
    budgets: Annotated[tuple[Ident, ...], Meta(description="the budgets it holds")] = ()
    expires_at: Annotated[datetime, Meta(tz=True, description="UTC; null when refused")] | None = (
        None
    )


class ReleaseRequest(Struct, frozen=True, kw_only=True):
    """Give back a reservation the step did not spend (sent on
    ``fw.api.budgets.release.<agent>``, by the agent that holds it)."""

    agent: Annotated[
        Ident | None,
        Meta(description="the agent that holds it; when given, it must be the subject's"),
    ] = None
    reservation: Annotated[Ident, Meta(description="the reservation's id")]


class ReleaseReply(Reply, frozen=True, kw_only=True, omit_defaults=True):
    """The budgets the reservation is released on (``budget.released``, reason ``returned``,
    stored by the time of the reply). Refused (``error``): no open reservation of this agent
    has that id (released already, settled by a spend, expired, or another agent's)."""

    budgets: Annotated[tuple[Ident, ...], Meta(description="the budgets given back")] = ()


# ---- the endpoints ------------------------------------------------------------------------------

Req = TypeVar("Req", bound=Struct)
Rep = TypeVar("Rep", bound=Reply)


@dataclass(frozen=True)
class Endpoint(Generic[Req, Rep]):
    """One request/reply subject: its request type, the empty answer a failed reply carries,
    and where the answer comes from (for people)."""

    subject: str
    request: type[Req]
    empty: Rep
    summary: str
    source: str
    per_actor: bool = False  # asked on ``<subject>.<actor>``: the subject names the requester

    def subject_for(self, actor: str) -> str:
        """The subject ``actor`` asks on: ``subject``, or ``<subject>.<actor>`` per actor."""
        return f"{self.subject}.{actor}" if self.per_actor else self.subject

    @property
    def pattern(self) -> str:
        """The subject pattern a responder subscribes to."""
        return f"{self.subject}.*" if self.per_actor else self.subject

    @property
    def name(self) -> str:
        """The subject without ``fw.api.``, e.g. ``tasks.claimable``."""
        return self.subject.removeprefix(API_PREFIX)

    @property
    def reply(self) -> type[Rep]:
        """The type of the reply."""
        return type(self.empty)

    def failed(self, error: str) -> Rep:
        """The reply to a request that failed: the empty answer and ``error``, made to fit the
        contract (no NUL, at most ``MAX_ERROR`` characters)."""
        return msgspec.structs.replace(self.empty, error=storable(error)[:MAX_ERROR])


TASKS_CLAIMABLE: Final = Endpoint(
    subject=API_TASKS_CLAIMABLE,
    request=ClaimableRequest,
    empty=ClaimableReply(tasks=()),
    summary="The tasks an agent may claim now, ranked by priority then age.",
    source="the task board",
)
AGENTS_GET: Final = Endpoint(
    subject=API_AGENTS_GET,
    request=AgentRequest,
    empty=AgentReply(agent=None),
    summary="One agent's profile and status from the registry.",
    source="the agent registry",
)
BUDGETS_RESERVE: Final = Endpoint(
    subject=API_BUDGETS_RESERVE,
    request=ReserveRequest,
    empty=ReserveReply(),
    summary="Reserve an estimated cost in every budget covering an agent, before it spends.",
    source="the guard",
    per_actor=True,
)
BUDGETS_RELEASE: Final = Endpoint(
    subject=API_BUDGETS_RELEASE,
    request=ReleaseRequest,
    empty=ReleaseReply(),
    summary="Give back a reservation the agent did not spend.",
    source="the guard",
    per_actor=True,
)
ENDPOINTS: Final[tuple[Endpoint[Any, Any], ...]] = (
    TASKS_CLAIMABLE, AGENTS_GET, BUDGETS_RESERVE, BUDGETS_RELEASE,
)  # fmt: skip


def bad_request(detail: str) -> str:
    """The error of a request that is not JSON or does not match the request's schema."""
    return f"bad request: {detail}"


def unavailable(endpoint: Endpoint[Req, Rep]) -> str:
    """The error when the projection behind ``endpoint`` cannot be read (retry later)."""
    return f"{endpoint.source} is unavailable"
