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
from fleetward.services.jetstream.reads import answering_within, ride_out


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
    wrapped message get. Each rides out a leader election (reads.py: ``StreamUnavailable``
    after ``READ_RIDE_OUT_S`` seconds without an answer)."""
    msg = await _last_msg(js, boundary_wildcard(kind, key), direct)
    if msg is not None:
        assert msg.seq is not None
        return Last(msg.seq, msg)
    return Last(0, await _last_msg(js, boundary(kind, key), direct))


async def _last_msg(js: JetStreamContext, subjects: str, direct: bool) -> RawStreamMsg | None:
    """The last message of FW_EVENTS on ``subjects``, None when there is none."""

    async def get(try_s: float) -> RawStreamMsg | None:
        try:
            return await answering_within(js, try_s).get_last_msg(
                EVENTS_STREAM, subjects, direct=direct
            )
        except NotFoundError:
            return None

    return await ride_out(get, f"reading {EVENTS_STREAM}")
