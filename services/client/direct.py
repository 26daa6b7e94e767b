"""Reading a stream's messages on some subjects, in one of two ways (``direct``):

- services: batch direct gets (ADR-31, nats-server 2.11+): the server streams up to ``BATCH``
  messages to an inbox and ends with a status (204: end of batch; 404: nothing more);
- agents and people: one ``$JS.API.STREAM.MSG.GET`` per message (``next_by_subj``), answered
  with the message wrapped in JSON. A direct get answers with the stored bytes themselves, on
  whatever reply subject the requester names, and the server's answer is stored by any stream
  that captures that subject: a direct get is a way to re-publish any stored bytes (one's own
  refused ones too) on another actor's subject. Their credentials therefore allow no direct
  get (schemas/grants.py); a wrapped answer aimed at a stream is a JetStream API response
  there, which admission refuses as an unknown type.

Every read here rides out a stream's leader election (services/jetstream/reads.py): a get that
meets no leader is asked again for up to ``wait_s`` seconds, then fails with
``StreamUnavailable``. A batch of direct gets is asked for again from the message after the last
one it delivered, on an inbox of its own (a late answer to an abandoned request goes nowhere).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.errors import ServiceUnavailableError

from fleetward.schemas.headers import (
    DESCRIPTION,
    END_OF_BATCH,
    NO_MESSAGE_FOUND,
    NO_MESSAGES,
    NO_RESPONDERS,
    SEQUENCE,
    STATUS,
    SUBJECT,
    TIME_STAMP,
    direct_get_subject,
    msg_get_subject,
)
from fleetward.services.errors import FleetwardError
from fleetward.services.jetstream.reads import READ_RIDE_OUT_S, ride_out

BATCH = 1000


@dataclass(frozen=True, slots=True)
class Raw:
    """One stored message: its stream sequence, time of record, subject, bytes and headers
    (the server's ``Nats-*`` ones beside the publisher's)."""

    seq: int
    time: datetime
    subject: str
    data: bytes
    headers: dict[str, str]


async def read_subjects(
    nc: NatsClient,
    stream: str,
    subjects: str,
    *,
    after: int = 0,
    wait_s: float = READ_RIDE_OUT_S,
    direct: bool = False,
) -> AsyncGenerator[Raw, None]:
    """The messages of ``stream`` on ``subjects`` (a subject or a wildcard) stored after
    sequence ``after``, in order, as the server has them now; by batch direct gets when
    ``direct`` (services only), else by wrapped gets (see the module's docstring). Raises
    ``StreamUnavailable`` when nobody answers a get for ``wait_s`` seconds (an election longer
    than that, or no server), and ``FleetwardError`` when the server refuses a read."""
    if not direct:
        async for raw in _read_wrapped(nc, stream, subjects, after, wait_s):
            yield raw
        return
    last = after
    while True:  # one request per BATCH messages

        async def batch(try_s: float, start: int = last) -> list[Raw]:
            return await _direct_batch(nc, stream, subjects, start, try_s)

        got = await ride_out(batch, f"reading {stream}", ride_out_s=wait_s)
        for raw in got:
            yield raw
        if len(got) < BATCH:
            return
        last = got[-1].seq


async def _direct_batch(
    nc: NatsClient, stream: str, subjects: str, after: int, try_s: float
) -> list[Raw]:
    """One batch direct get: up to ``BATCH`` messages on ``subjects`` after ``after``, on an
    inbox of its own. Raises ``nats.errors.TimeoutError`` when a reply is ``try_s`` seconds
    late, ``ServiceUnavailableError`` on a 503 (no replica serves direct gets now),
    ``FleetwardError`` on any other status than the batch's end."""
    inbox = nc.new_inbox()
    replies = await nc.subscribe(inbox, pending_msgs_limit=2 * BATCH)
    try:
        request = {"batch": BATCH, "seq": after + 1, "next_by_subj": subjects}
        await nc.publish(direct_get_subject(stream), msgspec.json.encode(request), inbox)
        out: list[Raw] = []
        while True:
            msg = await replies.next_msg(timeout=try_s)
            headers = msg.headers or {}
            if SEQUENCE in headers:
                out.append(_direct_raw(msg, headers))
                continue
            status = headers.get(STATUS)
            if status in (END_OF_BATCH, NO_MESSAGES):
                return out
            if status == NO_RESPONDERS:
                raise ServiceUnavailableError(code=503, description="no responders")
            raise FleetwardError(f"{stream}: the server refused a read ({status} "
                                 f"{headers.get(DESCRIPTION, '')})")  # fmt: skip
    finally:
        await replies.unsubscribe()


def _direct_raw(msg: Msg, headers: dict[str, str]) -> Raw:
    """The stored message a direct get answered with."""
    when = parse_time(headers[TIME_STAMP])
    return Raw(int(headers[SEQUENCE]), when, headers[SUBJECT], msg.data, headers)


class Stored(msgspec.Struct):
    """A message as ``$JS.API.STREAM.MSG.GET`` wraps it (base64 headers and data)."""

    subject: str
    seq: int
    time: str
    data: str = ""
    hdrs: str = ""


class _Error(msgspec.Struct):
    code: int
    err_code: int = 0
    description: str = ""


class _Answer(msgspec.Struct):
    """The answer to a wrapped get: ``message``, or ``error``."""

    message: Stored | None = None
    error: _Error | None = None


async def get_wrapped(
    nc: NatsClient, stream: str, request: dict[str, object], wait_s: float = READ_RIDE_OUT_S
) -> Stored | None:
    """One ``$JS.API.STREAM.MSG.GET`` (``request``: ``{"seq": n}``, ``{"last_by_subj": s}``,
    ...): the message, None when there is none. Asked again while nobody answers (a leader
    election: services/jetstream/reads.py); raises ``StreamUnavailable`` after ``wait_s``
    seconds of that, ``FleetwardError`` when the server refuses."""

    async def get(try_s: float) -> Stored | None:
        msg = await nc.request(msg_get_subject(stream), msgspec.json.encode(request), try_s)
        answer = msgspec.json.decode(msg.data, type=_Answer)
        if answer.error is None:
            return answer.message
        if answer.error.err_code == NO_MESSAGE_FOUND:
            return None
        if answer.error.code == 503:  # "JetStream system temporarily unavailable": ask again
            raise ServiceUnavailableError(**msgspec.structs.asdict(answer.error))
        raise FleetwardError(f"{stream}: the server refused a read: {answer.error.description}")

    return await ride_out(get, f"reading {stream}", ride_out_s=wait_s)


def _raw(stored: Stored) -> Raw:
    data = base64.b64decode(stored.data) if stored.data else b""
    headers = parse_headers(base64.b64decode(stored.hdrs)) if stored.hdrs else {}
    return Raw(stored.seq, parse_time(stored.time), stored.subject, data, headers)


async def _read_wrapped(
    nc: NatsClient, stream: str, subjects: str, after: int, wait_s: float
) -> AsyncGenerator[Raw, None]:
    last = after
    while True:
        request = {"seq": last + 1, "next_by_subj": subjects}
        stored = await get_wrapped(nc, stream, request, wait_s)
        if stored is None:
            return
        last = stored.seq
        yield _raw(stored)


async def first_since(
    nc: NatsClient, stream: str, subjects: str, since: datetime, *, wait_s: float = READ_RIDE_OUT_S
) -> int | None:
    """The sequence of the first message of ``stream`` on ``subjects`` stored at or after
    ``since`` (UTC), None when there is none: one wrapped get by start time (``start_time``
    with ``next_by_subj``, nats-server 2.11+). Raises as ``read_subjects``."""
    request = {"start_time": since, "next_by_subj": subjects}
    stored = await get_wrapped(nc, stream, request, wait_s)
    return None if stored is None else stored.seq


async def last_of_subjects(
    nc: NatsClient,
    stream: str,
    subjects: str,
    *,
    wait_s: float = READ_RIDE_OUT_S,
    direct: bool = False,
) -> Raw | None:
    """The last message of ``stream`` on ``subjects`` (a subject or a wildcard), None when
    there is none: one get by last subject (a direct get when ``direct``, services only), which
    the server answers from its subject index. Raises as ``read_subjects``."""
    if not direct:
        stored = await get_wrapped(nc, stream, {"last_by_subj": subjects}, wait_s)
        return None if stored is None else _raw(stored)

    async def get(try_s: float) -> Raw | None:
        msg = await nc.request(f"{direct_get_subject(stream)}.{subjects}", b"", timeout=try_s)
        headers = msg.headers or {}
        return _direct_raw(msg, headers) if SEQUENCE in headers else None

    return await ride_out(get, f"reading {stream}", ride_out_s=wait_s)


async def last_seq_on(
    nc: NatsClient,
    stream: str,
    subjects: str,
    *,
    wait_s: float = READ_RIDE_OUT_S,
    direct: bool = False,
) -> int:
    """The sequence of the last message of ``stream`` on ``subjects`` (a subject or a
    wildcard), 0 when there is none (``last_of_subjects``)."""
    last = await last_of_subjects(nc, stream, subjects, wait_s=wait_s, direct=direct)
    return 0 if last is None else last.seq


def parse_headers(block: bytes) -> dict[str, str]:
    """The headers of a stored message's header block (``NATS/1.0\\r\\nName: value...``), the
    last value of a repeated name winning, as nats-py does."""
    out: dict[str, str] = {}
    for line in block.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out[name.decode(errors="replace").strip()] = value.decode(errors="replace").strip()
    return out


def parse_time(stamp: str) -> datetime:
    """A JetStream RFC 3339 timestamp with nanoseconds, to microseconds."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    micros = (frac + "000000")[:6]
    return datetime.fromisoformat(f"{head}.{micros}+00:00")
