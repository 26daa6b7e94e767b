"""The last message of one consistency boundary of FW_EVENTS (an escalation, a task), across
both subject forms (schemas/subjects.py): its v2 subjects (``fw.esc.<id>.>``, every actor's)
and, for a boundary with contract v1 history, its v1 subject (``fw.esc.<id>``)."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import boundary, boundary_wildcard


@dataclass(frozen=True, slots=True)
class Last:
    """``expect``: the sequence a compare-and-set over the boundary sends (the last over its
    v2 subjects, 0 when they hold nothing); ``msg``: the boundary's last message (its v2
    subjects', else its v1 subject's), None when the boundary holds nothing."""

    expect: int
    msg: RawStreamMsg | None


async def last_of(js: JetStreamContext, kind: str, key: str, *, direct: bool = False) -> Last:
    """The last message of a boundary: one request, two when its v2 subjects hold nothing; by
    direct get when ``direct`` (services only: see services/client/direct.py), else by a
    wrapped message get."""
    try:
        msg = await js.get_last_msg(EVENTS_STREAM, boundary_wildcard(kind, key), direct=direct)
    except NotFoundError:
        pass
    else:
        assert msg.seq is not None
        return Last(msg.seq, msg)
    try:
        return Last(0, await js.get_last_msg(EVENTS_STREAM, boundary(kind, key), direct=direct))
    except NotFoundError:
        return Last(0, None)
