"""Publishing events: one subject per event, ``Nats-Msg-Id`` = event id, retried on transient
errors. A retry of a stored event is deduplicated by the stream, so publishing is idempotent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import msgspec
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import PubAck

from fleetward.schemas import Event, subject_of
from fleetward.schemas.headers import MSG_ID

_encoder = msgspec.json.Encoder()

TRANSIENT = (NatsTimeout, NoRespondersError, asyncio.TimeoutError, ConnectionError)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


async def publish(
    js: JetStreamContext, event: Event, *, attempts: int = 5, headers: dict[str, str] | None = None
) -> PubAck:
    """Publish one event and wait for the stream's acknowledgement."""
    data = encode(event)
    hdrs = {MSG_ID: event.id, **(headers or {})}
    delay = 0.05
    for attempt in range(attempts):
        try:
            return await js.publish(subject_of(event), data, headers=hdrs)
        except TRANSIENT:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


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
