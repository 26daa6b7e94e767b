"""Publishing events: one subject per event, ``Nats-Msg-Id`` = event id, retried on transient
errors. A retry of a stored event is deduplicated by the stream, so publishing is idempotent.

Compare-and-set (``expect``) is over the event's whole boundary: the publish is stored only if
the last sequence over the boundary's v2 subjects (``fw.task.<task>.>``: every actor's) is the
one expected, so an event of any actor on the boundary in between makes the server refuse it
(10071). The boundary's v1 subject is history no credential may publish on: outside the check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import msgspec
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError

from fleetward.schemas import Event, subject_of
from fleetward.schemas.headers import (
    EXPECTED_LAST_SUBJECT_SEQ,
    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
    MSG_ID,
    PUBLISH_NOT_YET,
)
from fleetward.schemas.subjects import boundary_wildcard, key_of

_encoder = msgspec.json.Encoder()

# No answer, or nobody to answer: nats-py's JetStream publish turns the server's 503 (no
# responders: the stream has no leader while a cluster elects one) into NoStreamResponseError.
TRANSIENT = (
    NatsTimeout,
    NoRespondersError,
    NoStreamResponseError,
    asyncio.TimeoutError,
    ConnectionError,
)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def expect_last(event: Event, seq: int, over: str | None = None) -> dict[str, str]:
    """The headers that store ``event`` only on top of ``seq``, the last sequence over its
    boundary's v2 subjects, or over the subject pattern ``over`` when given (0: none there)."""
    return {
        EXPECTED_LAST_SUBJECT_SEQ: str(seq),
        EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: over
        or boundary_wildcard(event.SUBJECT_KIND, key_of(event)),
    }


# How long a publish keeps trying through transient errors. A cluster electing a stream's new
# leader (its old one died) has nobody to answer for some seconds: nats-server's election takes
# 4 to 9 s after the old leader is missed. The id dedupes every retry.
RIDE_OUT_S = 30.0


async def publish(
    js: JetStreamContext,
    event: Event,
    *,
    attempts: int = 5,
    ride_out_s: float = RIDE_OUT_S,
    expect: int | None = None,
    over: str | None = None,
) -> PubAck:
    """Publish one event and wait for the stream's acknowledgement; with ``expect``,
    compare-and-set over its boundary, or over the subjects ``over`` when given (``APIError``
    10071 when they moved past it). Transient errors (no answer, nobody to answer, the
    connection gone) are retried with the same id: at least ``attempts`` tries, and on for up
    to ``ride_out_s`` seconds from the first (a leader election). A retry of an event that was
    stored comes back as a duplicate, or, with ``expect`` on one server, as 10071: the server
    checks the expected sequence before the id there, and the id first on a cluster. A
    compare-and-set lost on a cluster may come back as 10164 (``WRONG_LAST_SEQUENCES``)."""
    data = encode(event)
    hdrs = {MSG_ID: event.id}
    if expect is not None:
        hdrs |= expect_last(event, expect, over)
    delay = 0.05
    give_up = time.monotonic() + ride_out_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return await js.publish(subject_of(event), data, headers=hdrs)
        except (*TRANSIENT, APIError) as exc:
            if isinstance(exc, APIError) and not not_yet(exc):
                raise
            if attempt >= attempts and time.monotonic() + delay > give_up:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


def not_yet(exc: APIError) -> bool:
    """The server could not judge the publish yet (``PUBLISH_NOT_YET``), or its JetStream was
    unavailable (503: a replicated stream between leaders): the same publish, retried, will be."""
    return exc.err_code in PUBLISH_NOT_YET or exc.code == 503


async def publish_many(js: JetStreamContext, events: Iterable[Event], *, window: int = 256) -> int:
    """Publish many events with up to ``window`` acknowledgements in flight. Returns the count."""
    pending: set[asyncio.Task[PubAck]] = set()
    count = 0
    for event in events:
        pending.add(asyncio.ensure_future(publish(js, event)))
        count += 1
        if len(pending) >= window:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
    if pending:
        for task in (await asyncio.wait(pending))[0]:
            task.result()
    return count
