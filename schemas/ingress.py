"""The HTTPS ingress (``/api/v1/ingress``): agents that cannot speak NATS take part over HTTP with
an agent token (``fleetward api token --agent ID``). Pure: the routes, their JSON bodies and
answers as frozen msgspec Structs; ``schemas/openapi.py`` publishes them beside the read API and
``services/api/ingress.py`` serves exactly these routes.

Invariants (the contract of docs/agents.md, "Agents over HTTPS"):
- Every route acts as the token's agent and publishes with that agent's own NATS credentials,
  on the subjects naming it: readers judge the events exactly as if the agent had published
  them over NATS. A body never says who acts; one that names another agent is refused (403).
- Bodies are JSON objects checked against their Struct (unknown fields refused, the event
  contract's bounds): 400 with msgspec's reason. A claim or report that loses its
  compare-and-set, or is not the agent's to make, is 409 with the reason the SDK raises.
- Answers: 200 with what was published (or the commands read); 4xx/503 ``{"error": ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final, Literal

from msgspec import Meta, Struct

from fleetward.schemas.bounds import (
    ContentText,
    Epoch,
    Ident,
    Percent,
    PeriodS,
    ShortText,
    StreamSeq,
    TaskLimit,
    Text,
    UriText,
)
from fleetward.schemas.events import (
    CommandIssued,
    DeliverableKind,
    HeartbeatStatus,
    RiskClass,
)

INGRESS_ROOT: Final = "/api/v1/ingress"
MAX_BODY: Final = 512 * 1024  # bytes: room for the largest event (admission.MAX_EVENT_BYTES)
MAX_INBOX_WAIT_S: Final = 10.0
MAX_INBOX_LIMIT: Final = 100


class Register(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``agent.registered`` for the token's agent (as ``AgentClient.register``): roles and task
    limit left out (null) keep those in force."""

    name: ShortText
    owner: ShortText
    team: Ident
    purpose: Text = ""
    risk_class: RiskClass = "medium"
    version: ShortText = "1"
    heartbeat_interval_s: PeriodS = 60.0
    roles: Annotated[tuple[Ident, ...], Meta(max_length=64)] | None = None
    max_concurrent_tasks: TaskLimit | None = None


class Beat(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``agent.heartbeat`` for the token's agent; naming a task renews that task's lease."""

    status: HeartbeatStatus = "idle"
    task: Ident | None = None
    message: ShortText = ""


class ClaimBody(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A claim of the path's task for a new epoch (compare-and-set over its subjects)."""

    lease_s: PeriodS = 300.0


class _Held(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A report on a task the agent holds: the claim's epoch and event id (``claim_id`` from the
    claim's answer; without it only the epoch is compared)."""

    epoch: Epoch
    claim_id: Ident | None = None


class Progress(_Held, frozen=True, kw_only=True, forbid_unknown_fields=True):
    note: Text = ""
    percent: Percent | None = None


class Block(_Held, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Text


class Release(_Held, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Text = ""


class Submit(_Held, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A deliverable (its ``sha256`` is computed from ``content``, or ``uri``, as the SDK does)."""

    kind: DeliverableKind = "markdown"
    content: ContentText = ""
    uri: UriText | None = None


class EventBody(Struct, frozen=True):
    """Any event of the contract the agent may send (docs/events.md), as on the wire. ``actor``
    may be left out (the token's agent), and so may ``id`` (a new UUIDv7) and ``at`` (now)."""


class Published(Struct, frozen=True, kw_only=True):
    """What was stored: the event's type, the subject (naming the agent) and the stream
    sequence; ``duplicate`` when the stream had that event id already (a retry of the events
    route with the same ``id``); ``id``, the event id, where the route made it (heartbeat,
    events; null where the agent SDK did)."""

    type: str
    subject: str
    seq: StreamSeq
    duplicate: bool = False
    id: str | None = None


class Claimed(Struct, frozen=True, kw_only=True):
    """The claim that took the task: send ``epoch`` and ``claim_id`` with each report."""

    task: str
    epoch: int
    lease_s: float
    claim_id: str


class InboxQuery(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    wait: Annotated[
        float, Meta(ge=0, le=MAX_INBOX_WAIT_S, description="seconds to wait for a first command")
    ] = 0.0
    limit: Annotated[int, Meta(ge=1, le=MAX_INBOX_LIMIT, description="commands at most")] = 20


class Inbox(Struct, frozen=True, kw_only=True):
    """Commands to the agent (docs/agents.md section 3), oldest first; each is acknowledged as it
    is returned here, so it is returned once (unless the API dies before answering)."""

    commands: list[CommandIssued]


Method = Literal["get", "post"]


@dataclass(frozen=True, slots=True)
class IngressRoute:
    """One ingress route: its handler's name (the operationId), method, path, the body Struct
    (POST) or query Struct (GET), its answer, and the refusals it can give."""

    name: str
    method: Method
    path: str
    summary: str
    body: type[Struct]
    answer: type[Struct]
    conflict: bool = False  # answers 409 (a lost claim, a report the agent may no longer make)


_TASK = f"{INGRESS_ROOT}/tasks/{{task_id}}"

INGRESS_ROUTES: Final[tuple[IngressRoute, ...]] = (
    IngressRoute("ingress_register", "post", f"{INGRESS_ROOT}/register",
                 "Register (or re-register) the token's agent", Register, Published, True),
    IngressRoute("ingress_heartbeat", "post", f"{INGRESS_ROOT}/heartbeat",
                 "One heartbeat of the token's agent", Beat, Published),
    IngressRoute("ingress_event", "post", f"{INGRESS_ROOT}/events",
                 "Publish one event of the contract as the token's agent", EventBody, Published),
    IngressRoute("ingress_claim", "post", f"{_TASK}/claim",
                 "Claim a task (compare-and-set: 409 to the loser)", ClaimBody, Claimed, True),
    IngressRoute("ingress_progress", "post", f"{_TASK}/progress",
                 "Report progress on a held task (renews its lease)", Progress, Published, True),
    IngressRoute("ingress_block", "post", f"{_TASK}/block",
                 "Report a held task blocked", Block, Published, True),
    IngressRoute("ingress_release", "post", f"{_TASK}/release",
                 "Give a held task back", Release, Published, True),
    IngressRoute("ingress_submit", "post", f"{_TASK}/submit",
                 "Submit a deliverable for a held task", Submit, Published, True),
    IngressRoute("ingress_inbox", "get", f"{INGRESS_ROOT}/inbox",
                 "Take the commands waiting for the token's agent", InboxQuery, Inbox),
)  # fmt: skip

# the event types the events route leaves to a route of their own (compare-and-set on the task)
OWN_ROUTE: Final[dict[str, str]] = {
    "task.claimed": "claim",
    "task.progressed": "progress",
    "task.blocked": "block",
    "task.released": "release",
    "task.submitted": "submit",
}
