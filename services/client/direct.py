"""Reading a stream's messages on some subjects with batch direct gets (ADR-31, nats-server
2.11+): the server streams up to ``BATCH`` messages to an inbox and ends with a status (204: end
of batch; 404: nothing more)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime

import msgspec
from nats.aio.client import Client as NatsClient

from fleetward.schemas.headers import SEQUENCE, STATUS, SUBJECT, TIME_STAMP, direct_get_subject

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
    nc: NatsClient, stream: str, subjects: str, *, after: int = 0, wait_s: float = 5.0
) -> AsyncGenerator[Raw, None]:
    """The messages of ``stream`` on ``subjects`` (a subject or a wildcard) stored after
    sequence ``after``, in order, as the server has them now. Raises ``nats.errors.TimeoutError``
    when the server stops answering for ``wait_s`` seconds."""
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


async def last_seq_on(nc: NatsClient, stream: str, subjects: str, *, wait_s: float = 5.0) -> int:
    """The sequence of the last message of ``stream`` on ``subjects`` (a subject or a
    wildcard), 0 when there is none: one direct get by last subject, which the server answers
    from its subject index."""
    msg = await nc.request(f"{direct_get_subject(stream)}.{subjects}", b"", timeout=wait_s)
    headers = msg.headers or {}
    return int(headers[SEQUENCE]) if SEQUENCE in headers else 0


def parse_time(stamp: str) -> datetime:
    """A JetStream RFC 3339 timestamp with nanoseconds, to microseconds."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    micros = (frac + "000000")[:6]
    return datetime.fromisoformat(f"{head}.{micros}+00:00")
