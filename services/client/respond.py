"""What a person does about an escalation: acknowledge it ("I am on it") or resolve it.

Both are checked against the escalation's own subject, not a projection, so an escalation raised
a moment ago can be acknowledged at once. They are published with compare-and-set on that
subject: an acknowledgement racing a resolution fails cleanly instead of landing after it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from fleetward.schemas import new_id
from fleetward.schemas.admission import Rejected, decode
from fleetward.schemas.events import EscalationAcknowledged, EscalationResolved, Event
from fleetward.schemas.headers import EXPECTED_LAST_SUBJECT_SEQ, WRONG_LAST_SEQUENCE
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import subject
from fleetward.services.errors import FleetwardError
from fleetward.services.jetstream.publish import publish

_IDENT = re.compile(r"[A-Za-z0-9_-]{1,64}")


async def _last(js: JetStreamContext, esc: str) -> tuple[int, Event | None]:
    if not _IDENT.fullmatch(esc):
        raise FleetwardError(f"no escalation {esc!r}")
    try:
        msg = await js.get_last_msg(EVENTS_STREAM, subject("esc", esc))
    except NotFoundError:
        raise FleetwardError(f"no escalation {esc!r}") from None
    assert msg.seq is not None and msg.data is not None
    try:
        return msg.seq, decode(msg.data)
    except Rejected:
        return msg.seq, None


async def respond(
    js: JetStreamContext, esc: str, *, who: str, resolve: bool, text: str = ""
) -> int:
    """Acknowledge or resolve ``esc`` as ``who`` (the actor of ``js``'s credentials: the
    server refuses any other). Returns the stream sequence."""
    seq, last = await _last(js, esc)
    if isinstance(last, EscalationResolved):
        raise FleetwardError(f"escalation {esc!r} is already resolved")
    now = datetime.now(UTC)
    event: Event = (
        EscalationResolved(id=new_id(), actor=who, at=now, escalation=esc, resolution=text)
        if resolve
        else EscalationAcknowledged(id=new_id(), actor=who, at=now, escalation=esc, note=text)
    )
    try:
        ack = await publish(js, event, headers={EXPECTED_LAST_SUBJECT_SEQ: str(seq)})
    except APIError as exc:
        if exc.err_code != WRONG_LAST_SEQUENCE:
            raise
        raise FleetwardError(
            f"escalation {esc!r} changed while you answered it; look again and retry"
        ) from None
    return ack.seq
