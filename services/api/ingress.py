"""The HTTPS ingress: the routes of ``schemas/ingress.py`` for agents that cannot speak NATS.

Each request carries an agent token (``Authorization: Bearer``, role ``agent``; never the
dashboard's cookie) and acts as that agent through the agent SDK (``AgentClient``) on the agent's
own NATS connection (``services/api/acting.py``): the same events, the same compare-and-set
claims and fenced reports, the same refusals as a NATS-speaking agent, judged by the same
permissions and readers. The events route applies the projections' admission
(``schemas.admission.admit``) before publishing.

Answers: 400 a body that is not its shape (msgspec's reason) or an event admission refuses;
401 no or a bad token; 403 not an agent's token, an event naming another agent, credentials
revoked; 409 a claim or report the SDK refuses (``ClaimLost``, ``IntentRefused``: its reason);
413 a body too large; 503 NATS (or the task API) unreachable. Never 500: anything unexpected is
logged with its traceback and answered 503.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from nats.errors import Error as NatsError
from nats.js.api import PubAck
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from fleetward.schemas import Rejected, admit, new_id, type_name
from fleetward.schemas import ingress as shapes
from fleetward.schemas.admission import decode, nul_at
from fleetward.schemas.events import CommandIssued, Heartbeat
from fleetward.schemas.subjects import FIRST_V2, parse, subject, subject_of
from fleetward.services.api.acting import Acting, AgentPool, NotActing
from fleetward.services.api.app import Gate, _error, _json, no_such_id
from fleetward.services.api.token import Claims
from fleetward.services.client import ClaimLost
from fleetward.services.client.claims import AgentPaused, Claim
from fleetward.services.client.intents import IntentRefused
from fleetward.services.errors import FleetwardError

log = logging.getLogger("fleetward.api")

# admission's reasons for an event that is not the token's agent's to send: 403, not 400
NOT_YOURS: Final = frozenset({"actor_forbidden", "actor_mismatch", "wrong_subject"})


class Refusal(Exception):
    """A request refused with ``status`` and a one-line reason."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


Handler = Callable[[Acting, Any, Request], Awaitable[msgspec.Struct]]


def _published(event_type: str, subj: str, ack: PubAck, event_id: str | None = None) -> Any:
    return shapes.Published(
        id=event_id, type=event_type, subject=subj, seq=ack.seq, duplicate=bool(ack.duplicate)
    )


async def _read_body(request: Request) -> bytes:
    """The body, at most ``MAX_BODY`` bytes (413 past it, unread)."""
    if int(request.headers.get("content-length") or 0) > shapes.MAX_BODY:
        raise Refusal(413, f"the body is larger than {shapes.MAX_BODY} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > shapes.MAX_BODY:
            raise Refusal(413, f"the body is larger than {shapes.MAX_BODY} bytes")
    return body


def _decode(raw: bytes, shape: type[msgspec.Struct]) -> Any:
    """The body as ``shape``, judged as admission judges the event it becomes (text without
    NUL, which a Struct's bounds do not check): ``Refusal`` 400 otherwise."""
    try:
        body = msgspec.json.decode(raw or b"{}", type=shape)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Refusal(400, f"bad body: {exc}") from None
    if where := nul_at(body):
        raise Refusal(400, f"bad body: Expected text without NUL (U+0000) - at `{where}`")
    return body


def _held(task: str, body: Any, client_agent: Acting) -> Claim:
    """The claim a report names, adopted by the agent's client (``AgentClient.adopt``)."""
    return client_agent.client.adopt(Claim(task, body.epoch, 0.0, body.claim_id or ""))


# ---- the handlers: (the agent's client, the decoded body, the request) -> the answer ------------


async def register(acting: Acting, body: shapes.Register, _r: Request) -> Any:
    fields = msgspec.structs.asdict(body)
    async with acting.lock:
        ack = await acting.client.register(**fields)
    agent = acting.client.agent
    return _published("agent.registered", subject("agent", agent, agent), ack)


async def heartbeat(acting: Acting, body: shapes.Beat, _r: Request) -> Any:
    client = acting.client
    event = Heartbeat(**client.envelope(), agent=client.agent, status=body.status,
                      task=body.task, message=body.message)  # fmt: skip
    return _published(type_name(type(event)), subject_of(event), await client.send(event), event.id)


async def claim(acting: Acting, body: shapes.ClaimBody, request: Request) -> Any:
    """A claim; asked again after its answer was lost, the claim the agent won already, as the
    task holds it now (read again: ``AgentClient.confirm``), or 409 once it is no longer its."""
    task, client = request.path_params["task_id"], acting.client
    async with acting.lock:
        try:
            held = await client.claim(task, lease_s=body.lease_s)
        except AgentPaused:
            raise
        except ClaimLost:
            if (held := client.claims.get(task)) is None:  # type: ignore[assignment]
                raise
            # what this client remembers may be stale (lost since, its inbox read by another
            # ingress process) or lack the id (adopted from an epoch-only report): the task says
            held = await client.confirm(held)
    return shapes.Claimed(task=held.task, epoch=held.epoch, lease_s=held.lease_s, claim_id=held.id)


def _report(
    kind: str, send: Callable[[Acting, Claim, Any], Awaitable[PubAck]]
) -> Callable[[Acting, Any, Request], Awaitable[Any]]:
    """The handler of one report on a held task (published fenced by the SDK)."""

    async def report(acting: Acting, body: Any, request: Request) -> Any:
        task = request.path_params["task_id"]
        async with acting.lock:
            ack = await send(acting, _held(task, body, acting), body)
        return _published(kind, subject("task", task, acting.client.agent), ack)

    return report


progress = _report("task.progressed", lambda a, c, b: a.client.progress(c, b.note, b.percent))
block = _report("task.blocked", lambda a, c, b: a.client.block(c, b.reason))
release = _report("task.released", lambda a, c, b: a.client.release(c, b.reason))
submit = _report(
    "task.submitted", lambda a, c, b: a.client.submit(c, kind=b.kind, content=b.content, uri=b.uri)
)


async def event(acting: Acting, raw: bytes, _r: Request) -> Any:
    """One event as on the wire, judged by admission as the projections will judge it."""
    agent = acting.client.agent
    try:
        given = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise Refusal(400, f"bad body: {exc}") from None
    if not isinstance(given, dict):
        raise Refusal(400, "bad body: send one event, a JSON object")
    actor = given.setdefault("actor", agent)
    if actor != agent:
        raise Refusal(403, f"the token is {agent}'s: it publishes as {agent}, not as {actor!r}")
    kind = given.get("type")
    if isinstance(kind, str) and kind in shapes.OWN_ROUTE:
        raise Refusal(400, f"publish {kind} with POST {shapes.INGRESS_ROOT}/tasks/TASK/"
                      f"{shapes.OWN_ROUTE[kind]} (compare-and-set on the task)")  # fmt: skip
    given.setdefault("id", new_id())
    given.setdefault("at", datetime.now(UTC).isoformat())
    data = msgspec.json.encode(given)
    try:
        decoded = decode(data)
        if decoded.v < FIRST_V2:
            raise Refusal(400, "contract v1 events are history: send v 2 (the default)")
        subj = subject_of(decoded)
        admitted = admit(subj, data)
    except Rejected as exc:
        raise Refusal(403 if exc.reason in NOT_YOURS else 400, str(exc)) from None
    except ValueError as exc:  # an actor that cannot be a subject token
        raise Refusal(400, f"invalid: {exc}") from None
    where = parse(subj)
    if where is None or not (where.actor == agent or (where.kind, where.key) == ("hb", agent)):
        raise Refusal(403, f"{type_name(type(admitted))} belongs on {subj}, which is not {agent}'s")
    ack = await acting.client.send(admitted)
    return _published(type_name(type(admitted)), subj, ack, admitted.id)


async def inbox(acting: Acting, query: shapes.InboxQuery, _r: Request) -> Any:
    client, taken = acting.client, list[CommandIssued]()
    async with acting.lock:
        await client.sync_inbox()
        while len(taken) < query.limit:
            command = await client.next_command(wait=0.0 if taken else query.wait)
            if command is None:
                break
            taken.append(command)
    return shapes.Inbox(commands=taken)


HANDLERS: Final[dict[str, Handler]] = {
    "ingress_register": register,
    "ingress_heartbeat": heartbeat,
    "ingress_event": event,
    "ingress_claim": claim,
    "ingress_progress": progress,
    "ingress_block": block,
    "ingress_release": release,
    "ingress_submit": submit,
    "ingress_inbox": inbox,
}


# ---- the endpoints ------------------------------------------------------------------------------


def _agent_of(gate: Gate, request: Request) -> Claims:
    who = gate.verified(request, cookie=False)
    if isinstance(who, Response):
        raise Refusal(401, msgspec.json.decode(bytes(who.body))["error"])
    if who.role != "agent":
        raise Refusal(403, f"a {who.role} token cannot publish: the ingress takes an agent's "
                      "token (fleetward api token --agent ID)")  # fmt: skip
    return who


def _endpoint(
    route: shapes.IngressRoute, gate: Gate, pool: AgentPool
) -> Callable[[Request], Awaitable[Response]]:
    handler = HANDLERS[route.name]

    async def endpoint(request: Request) -> Response:
        try:
            agent = _agent_of(gate, request).sub
            if (unknown := no_such_id(request)) is not None:
                return unknown
            if route.method == "get":
                try:
                    args: Any = msgspec.convert(
                        dict(request.query_params), route.body, strict=False
                    )
                except msgspec.ValidationError as exc:
                    raise Refusal(400, f"bad query: {exc}") from None
            else:
                raw = await _read_body(request)
                args = raw if route.body is shapes.EventBody else _decode(raw, route.body)
            async with pool.acting(agent) as acting:
                return _json(await handler(acting, args, request))
        except Refusal as exc:
            return _error(exc.status, str(exc))
        except NotActing as exc:
            return _error(403, str(exc))
        except (ClaimLost, IntentRefused) as exc:
            return _error(409, str(exc))
        except (FleetwardError, NatsError, OSError, TimeoutError) as exc:
            return _error(503, f"cannot reach NATS: {type(exc).__name__}: {exc}".strip(": "))
        except Exception as exc:  # never a 500: say what failed, keep the traceback in the log
            log.exception("ingress %s failed", route.name)
            return _error(503, f"the ingress failed: {type(exc).__name__}: {exc}")

    return endpoint


def ingress_routes(pool: AgentPool) -> Callable[[Gate], list[StarletteRoute]]:
    """The ingress's routes for ``make_app(more=...)``, acting through ``pool``."""

    def routes(gate: Gate) -> list[StarletteRoute]:
        return [
            StarletteRoute(r.path, _endpoint(r, gate, pool), methods=[r.method.upper()])
            for r in shapes.INGRESS_ROUTES
        ]

    return routes
