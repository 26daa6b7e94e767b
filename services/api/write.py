"""The HTTP API's writes (issue 17): each ``WriteRoute`` of ``schemas/http.py`` is the CLI's
operator action, made with the same ``FleetClient`` call, as the person whose token asks.

Invariants:
- Only an operator's token writes: a viewer's gets 403 before its body is read.
- A write is published with the person's own NATS credentials (``People``), so the stream's
  role rules judge it exactly as they judge that person's CLI; a person whose credentials are
  missing, revoked or expired cannot write (403). The API's own identity (``svc:api``) never
  publishes an operator's event.
- The checks are the client's (``services/client/intents.py``, ``FleetClient``): their one-line
  reason is the answer, with the status of its kind (``STATUS``). The body is checked against
  its Struct first (400), its size (413) and media type (415) before that.
- Never a 500: NATS or the task API away is a 503 with the reason.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec
import nats.errors
from nats.js.api import PubAck
from starlette.requests import Request

from fleetward.schemas import Event, http, type_name
from fleetward.services.auth.store import AuthStore, is_expired
from fleetward.services.client import FleetClient
from fleetward.services.client.intents import IntentRefused, Refusal
from fleetward.services.client.respond import respond
from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.connect import CLOSE_S, connect_nats

MAX_PEOPLE: Final = 32  # people with a NATS connection open at once; the least recent closes
STATUS: Final[dict[Refusal, int]] = {
    "missing": 404, "forbidden": 403, "invalid": 400, "conflict": 409,
}  # fmt: skip
OUTAGE: Final = (FleetwardError, nats.errors.Error, OSError)  # 503: NATS, the task API away


class Refused(Exception):
    """A write refused before the client was asked: ``status`` and the one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class _Recording(FleetClient):
    """A ``FleetClient`` that remembers the last event it published (the answer names it)."""

    sent: Event | None = None

    async def send(self, event: Event, *, expect: int | None = None) -> PubAck:
        self.sent = event
        return await super().send(event, expect=expect)


@dataclass
class _Person:
    client: _Recording
    creds: tuple[Path, float]  # the file and its mtime: a new file is a new connection
    lock: anyio.Lock  # one write of a person at a time: the client's caches are not shared


class People:
    """The NATS connections the API writes with, one per person (``MAX_PEOPLE`` at most; the
    least recently used is closed first), each signed in with the person's own credentials from
    ``auth_dir`` (``fleetward people add NAME``). ``aclose`` closes them all."""

    def __init__(self, nats_url: str, auth_dir: Path, size: int = MAX_PEOPLE) -> None:
        self.nats_url, self.store, self.size = nats_url, AuthStore(auth_dir), size
        self._open: OrderedDict[str, _Person] = OrderedDict()
        self._lock = anyio.Lock()

    def credentials(self, person: str) -> Path:
        """``person``'s credentials file, from the folder of people's credentials under
        ``auth_dir`` (``creds/users/NAME.creds``: where ``fleetward people add`` writes them
        beside the signing keys, or where the admin copies them on an API host without the keys,
        with ``revoked.json``). ``Refused`` 403 when there is none or it was revoked or has
        expired: nothing is issued here, so revoking a person stops their writes."""
        path = self.store.creds_path(person)
        name = person.split(":", 1)[1]
        try:
            if self.store.is_revoked(path):
                problem = "were revoked"
            elif is_expired(path):
                problem = "have expired"
            else:
                return path
        except (OSError, ValueError):
            problem = "are missing"
        copy = f"; on an API host without the signing keys, copy them to {path}"
        raise Refused(403, f"{person}'s NATS credentials {problem}: writes are published as "
                      f"the person (fleetward people add {name}"
                      f"{copy if problem == 'are missing' else ''})")  # fmt: skip

    def revoked_at(self, identity: str) -> int | None:
        """When ``identity``'s credentials were last revoked here (``AuthStore.revoked_at``),
        None when never or unknown; a token issued before it is refused (``Gate``)."""
        try:
            return self.store.revoked_at(identity)
        except (OSError, ValueError, msgspec.DecodeError):
            return None

    @asynccontextmanager
    async def client(self, person: str) -> AsyncIterator[_Recording]:
        """A client acting as ``person``, for one write at a time. ``Refused`` as
        ``credentials``; ``FleetwardError`` when NATS cannot be reached."""
        path = self.credentials(person)
        key = (path, path.stat().st_mtime)
        gone: list[_Person] = []
        async with self._lock:
            held = self._open.get(person)
            if held is None or held.creds != key or held.client.nc.is_closed:
                if held is not None:
                    gone.append(self._open.pop(person))
                nc = await connect_nats(self.nats_url, creds=path, reconnect=True)
                held = _Person(_Recording(nc, person), key, anyio.Lock())
                self._open[person] = held
            self._open.move_to_end(person)
            while len(self._open) > self.size:
                gone.append(self._open.popitem(last=False)[1])
        for old in gone:
            await _close(old)
        async with held.lock:
            held.client.sent = None
            yield held.client

    async def aclose(self) -> None:
        """Close every connection (each once its write in hand is done, within ``CLOSE_S``,
        even when cancelled)."""
        gone, self._open = list(self._open.values()), OrderedDict()
        for old in gone:
            await _close(old)


async def _close(person: _Person) -> None:
    with anyio.move_on_after(CLOSE_S, shield=True):
        async with person.lock:
            await person.client.close()


Write = Callable[[_Recording, Any, dict[str, str]], Awaitable[object]]


async def _create(c: _Recording, body: http.NewTask, _p: dict[str, str]) -> None:
    await c.create_task(
        body.task_id, project=body.project, title=body.title, description=body.description,
        priority=body.priority, depends_on=body.depends_on, required_role=body.required_role,
        sla_s=body.sla_s,
    )  # fmt: skip


async def _answer(c: _Recording, body: http.Note, p: dict[str, str], resolve: bool) -> Event:
    event, _seq = await respond(
        c.nc, p["escalation_id"], who=c.actor, resolve=resolve, text=body.note
    )
    return event


# route name -> the client's call (the event is the one it returns, else the one the client sent)
WRITES: Final[dict[str, Write]] = {
    "create_task": _create,
    "assign_task": lambda c, b, p: c.assign(p["task_id"], b.agent_id),
    "reassign_task": lambda c, b, p: c.reassign(p["task_id"], b.agent_id, b.reason),
    "revoke_task": lambda c, b, p: c.revoke(p["task_id"], b.reason),
    "review_task": lambda c, b, p: c.review(p["task_id"], b.verdict, b.feedback),
    "cancel_task": lambda c, b, p: c.cancel(p["task_id"], b.reason),
    "pause_agent": lambda c, b, p: c.pause_agent(p["agent_id"], b.reason),
    "resume_agent": lambda c, b, p: c.resume_agent(p["agent_id"], b.reason),
    "retire_agent": lambda c, b, p: c.retire_agent(p["agent_id"], b.reason),
    "ack_escalation": lambda c, b, p: _answer(c, b, p, resolve=False),
    "resolve_escalation": lambda c, b, p: _answer(c, b, p, resolve=True),
}


async def read_body(request: Request, route: http.WriteRoute) -> Any:
    """The request's body as ``route.body``; an empty body reads as ``{}``. ``Refused`` 413
    over ``MAX_BODY`` bytes, 415 when not ``application/json``, 400 when it does not fit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > http.MAX_BODY:
        raise Refused(413, f"the body is over {http.MAX_BODY} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > http.MAX_BODY:
            raise Refused(413, f"the body is over {http.MAX_BODY} bytes")
    if not data.strip():
        data = bytearray(b"{}")
    else:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise Refused(415, f"send the body as application/json, not {media or 'nothing'}")
    try:
        return msgspec.json.decode(data, type=route.body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Refused(400, f"bad body: {exc}") from None


async def write(
    people: People, person: str, route: http.WriteRoute, body: Any, params: dict[str, str]
) -> http.Written:
    """Make ``route``'s write as ``person``; what was published. ``Refused`` with the client's
    one-line reason and its status, or 503 when NATS or the task API cannot be reached."""
    try:
        async with people.client(person) as client:
            done = await WRITES[route.name](client, body, params)
            event = done if isinstance(done, Event) else client.sent
    except IntentRefused as exc:
        raise Refused(STATUS[exc.kind], str(exc)) from None
    except OUTAGE as exc:
        raise Refused(503, f"cannot write now: {exc}".splitlines()[0]) from None
    assert event is not None  # every write publishes or raises
    return http.Written(event=type_name(type(event)), event_id=event.id, actor=event.actor)
