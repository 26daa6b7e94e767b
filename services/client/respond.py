"""What a person does about an escalation: acknowledge it ("I am on it") or resolve it.

Both are checked against the escalation's own subjects, not a projection, so an escalation
raised a moment ago can be acknowledged at once. They are published with compare-and-set over
those subjects: an acknowledgement racing a resolution fails cleanly instead of landing after
it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import APIError

from fleetward.schemas import new_id
from fleetward.schemas.admission import Rejected, decode
from fleetward.schemas.events import EscalationAcknowledged, EscalationResolved, Event
from fleetward.schemas.headers import WRONG_LAST_SEQUENCES
from fleetward.schemas.roles import check_role
from fleetward.services.client.intents import IntentRefused, Missing
from fleetward.services.client.roles import read_roles
from fleetward.services.jetstream.boundary import last_of
from fleetward.services.jetstream.publish import publish

_IDENT = re.compile(r"[A-Za-z0-9_-]{1,64}")


async def _last(js: JetStreamContext, esc: str) -> tuple[int, Event | None]:
    """The compare-and-set sequence of ``esc`` and its last event (None: unreadable)."""
    if not _IDENT.fullmatch(esc):
        raise IntentRefused(Missing(f"no escalation {esc!r}"))
    last = await last_of(js, "esc", esc)
    if last.msg is None:
        raise IntentRefused(Missing(f"no escalation {esc!r}"))
    try:
        return last.expect, decode(last.msg.data or b"")
    except Rejected:
        return last.expect, None


async def respond(
    nc: NatsClient, esc: str, *, who: str, resolve: bool, text: str = ""
) -> tuple[EscalationAcknowledged | EscalationResolved, int]:
    """Acknowledge or resolve ``esc`` as ``who`` (the actor of ``nc``'s credentials: the
    server refuses any other), with ``text`` as the note or the resolution. Returns the event
    published and its stream sequence. ``IntentRefused`` (one line) for an unknown escalation
    (kind ``missing``), one resolved already or changed meanwhile, and a person without the
    role operator (``forbidden``)."""
    js = nc.jetstream(timeout=10)
    seq, last = await _last(js, esc)
    if isinstance(last, EscalationResolved):
        raise IntentRefused(f"escalation {esc!r} is already resolved")
    now = datetime.now(UTC)
    event: EscalationAcknowledged | EscalationResolved = (
        EscalationResolved(id=new_id(), actor=who, at=now, escalation=esc, resolution=text)
        if resolve
        else EscalationAcknowledged(id=new_id(), actor=who, at=now, escalation=esc, note=text)
    )
    book = await read_roles(nc)  # a person needs the role operator (schemas/roles.py)
    try:
        check_role(event, book.last_seq + 1, book)
    except Rejected as exc:
        raise IntentRefused(exc.detail, "forbidden") from None
    try:
        ack = await publish(js, event, expect=seq)
    except APIError as exc:
        if exc.err_code not in WRONG_LAST_SEQUENCES:
            raise
        raise IntentRefused(
            f"escalation {esc!r} changed while you answered it; look again and retry"
        ) from None
    return event, ack.seq
