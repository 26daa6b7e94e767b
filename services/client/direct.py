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
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime

import msgspec
from nats.aio.client import Client as NatsClient

from fleetward.schemas.headers import (
    NO_MESSAGE_FOUND,
    SEQUENCE,
    STATUS,
    SUBJECT,
    TIME_STAMP,
    direct_get_subject,
    msg_get_subject,
)
from fleetward.services.errors import FleetwardError

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
    wait_s: float = 5.0,
    direct: bool = False,
) -> AsyncGenerator[Raw, None]:
    """The messages of ``stream`` on ``subjects`` (a subject or a wildcard) stored after
    sequence ``after``, in order, as the server has them now; by batch direct gets when
    ``direct`` (services only), else by wrapped gets (see the module's docstring). Raises
    ``nats.errors.TimeoutError`` when the server stops answering for ``wait_s`` seconds, and
    ``FleetwardError`` when it answers a wrapped get with an error."""
    if not direct:
        async for raw in _read_wrapped(nc, stream, subjects, after, wait_s):
            yield raw
        return
    inbox = nc.new_inbox()
    replies = await nc.subscribe(inbox, pending_msgs_limit=100_000)
    last = after
    try:
        while True:  # one request per BATCH messages
            request = {"batch": BATCH, "seq": last + 1, "next_by_subj": subjects}
            await nc.publish(direct_get_subject(stream), msgspec.json.encode(request), inbox)
            got = 0
            while True:
                msg = await replies.next_msg(timeout=wait_s)
                headers = msg.headers or {}
                if not msg.data and STATUS in headers:
                    break
                got += 1
                last = int(headers[SEQUENCE])
                when = parse_time(headers[TIME_STAMP])
                yield Raw(last, when, headers[SUBJECT], msg.data, headers)
            if got < BATCH:
                return
    finally:
        await replies.unsubscribe()


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
    nc: NatsClient, stream: str, request: dict[str, object], wait_s: float
) -> Stored | None:
    """One ``$JS.API.STREAM.MSG.GET`` (``request``: ``{"seq": n}``, ``{"last_by_subj": s}``,
    ...): the message, None when there is none. Raises ``nats.errors.TimeoutError`` after
    ``wait_s`` seconds without an answer, ``FleetwardError`` when the server refuses."""
    msg = await nc.request(msg_get_subject(stream), msgspec.json.encode(request), timeout=wait_s)
    answer = msgspec.json.decode(msg.data, type=_Answer)
    if answer.error is not None:
        if answer.error.err_code == NO_MESSAGE_FOUND:
            return None
        raise FleetwardError(f"{stream}: the server refused a read: {answer.error.description}")
    return answer.message


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


async def last_of_subjects(
    nc: NatsClient, stream: str, subjects: str, *, wait_s: float = 5.0, direct: bool = False
) -> Raw | None:
    """The last message of ``stream`` on ``subjects`` (a subject or a wildcard), None when
    there is none: one get by last subject (a direct get when ``direct``, services only), which
    the server answers from its subject index. Raises as ``read_subjects``."""
    if not direct:
        stored = await get_wrapped(nc, stream, {"last_by_subj": subjects}, wait_s)
        return None if stored is None else _raw(stored)
    msg = await nc.request(f"{direct_get_subject(stream)}.{subjects}", b"", timeout=wait_s)
    headers = msg.headers or {}
    if SEQUENCE not in headers:
        return None
    seq, when = int(headers[SEQUENCE]), parse_time(headers[TIME_STAMP])
    return Raw(seq, when, headers[SUBJECT], msg.data, headers)


async def last_seq_on(
    nc: NatsClient, stream: str, subjects: str, *, wait_s: float = 5.0, direct: bool = False
) -> int:
    """The sequence of the last message of ``stream`` on ``subjects`` (a subject or a
    wildcard), 0 when there is none (``last_of_subjects``)."""
    if not direct:
        last = await last_of_subjects(nc, stream, subjects, wait_s=wait_s)
        return 0 if last is None else last.seq
    msg = await nc.request(f"{direct_get_subject(stream)}.{subjects}", b"", timeout=wait_s)
    headers = msg.headers or {}
    return int(headers[SEQUENCE]) if SEQUENCE in headers else 0


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
