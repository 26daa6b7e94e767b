"""The stored messages of a stream in stream order, from one sequence to another, as the audit
chain needs them: sequence, time of record (``chain.stamp``), subject and bytes.

Three ways, by who reads (schemas/grants.py):
- services, for long ranges: a pull consumer of their own (what the projector reads with);
- services: batch direct gets (ADR-31), ``BATCH`` messages a request, the next request sent as
  soon as a batch's first message is in (the stream has no holes past its first sequence:
  FW_EVENTS denies deletes), so the server is never idle while the client works;
- people: message gets (``$JS.API.STREAM.MSG.GET``, one message each, answered in JSON),
  ``IN_FLIGHT`` at a time: their credentials allow no direct get (docs/identity.md).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import anyio
import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from fleetward.schemas.headers import (
    END_OF_BATCH,
    NO_MESSAGES,
    SEQUENCE,
    STATUS,
    SUBJECT,
    TIME_STAMP,
    direct_get_subject,
)
from fleetward.services.audit.chain import parse_stamp, stamp
from fleetward.services.client.direct import get_wrapped
from fleetward.services.errors import FleetwardError
from fleetward.services.jetstream.consumer import PullConsumer, recreate_consumer
from fleetward.services.jetstream.protocol import parse_ack_reply

BATCH = 1000  # messages a direct get request
IN_FLIGHT = 256  # message gets at a time
How = Literal["consumer", "direct", "wrapped"]


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored message: ``time`` in the chain's form (``chain.stamp``)."""

    seq: int
    time: str
    subject: str
    data: bytes


async def stored(
    nc: NatsClient, stream: str, first: int, last: int, *, how: How, wait_s: float = 10.0
) -> AsyncIterator[Stored]:
    """The messages of ``stream`` stored at ``first`` .. ``last`` (inclusive), in order; a
    sequence the stream no longer holds (retention) is passed over. ``how``: ``consumer`` (a
    pull consumer of its own, deleted after; the fastest: a delivery carries its metadata in
    its reply subject), ``direct`` (batch direct gets) or ``wrapped`` (message gets, people).
    Raises ``TimeoutError`` when the server stops answering for ``wait_s`` seconds,
    ``FleetwardError`` when it refuses a read."""
    if first > last:
        return
    reader = {"consumer": _consumer, "direct": _direct, "wrapped": _wrapped}[how]
    async for message in reader(nc, stream, first, last, wait_s):
        yield message


async def _consumer(
    nc: NatsClient, stream: str, first: int, last: int, wait_s: float
) -> AsyncIterator[Stored]:
    name = f"audit_{uuid.uuid4().hex[:16]}"
    js = nc.jetstream(timeout=wait_s)
    await recreate_consumer(js, stream, name, (), first - 1)
    consumer = PullConsumer(nc, stream, name, batch=BATCH)
    await consumer.start()
    try:
        seq = first - 1
        while seq < last:
            batch = await consumer.next_batch(BATCH, wait=wait_s)
            if not batch:
                raise TimeoutError(f"{stream}: no message after seq {seq} for {wait_s} s")
            await consumer.ack(batch[-1])
            for d in batch:
                seq = d.seq
                if seq > last:
                    return
                ns = parse_ack_reply(d.reply)[2]
                yield Stored(seq, stamp(ns), d.subject, d.data)
    finally:
        await consumer.stop()
        with contextlib.suppress(Exception):  # gone already, or NATS away: the server's
            await js.delete_consumer(stream, name)  # inactive threshold removes it


async def _direct(
    nc: NatsClient, stream: str, first: int, last: int, wait_s: float
) -> AsyncIterator[Stored]:
    arrived: deque[Msg] = deque()
    more = asyncio.Event()

    async def on_reply(msg: Msg) -> None:
        arrived.append(msg)
        more.set()

    inbox = nc.new_inbox()
    replies = await nc.subscribe(inbox, cb=on_reply, pending_msgs_limit=4 * BATCH)
    subject = direct_get_subject(stream)

    async def ask(start: int) -> None:
        body = {"batch": BATCH, "seq": start, "up_to_seq": last}
        await nc.publish(subject, msgspec.json.encode(body), inbox)

    try:
        await ask(first)
        asked, seq = first, first - 1
        while seq < last:
            if not arrived:
                more.clear()
                with anyio.fail_after(wait_s):
                    await more.wait()
                continue
            msg = arrived.popleft()
            headers = msg.headers or {}
            if SEQUENCE not in headers:
                if headers.get(STATUS) == NO_MESSAGES and asked <= seq + 1:
                    return  # nothing more
                if headers.get(STATUS) not in (END_OF_BATCH, NO_MESSAGES):
                    raise FleetwardError(f"{stream}: the server refused a read ({headers})")
                continue  # the end of a batch
            seq = int(headers[SEQUENCE])
            if seq >= asked and asked + BATCH <= last:  # the next batch, while this one comes
                asked += BATCH
                await ask(asked)
            yield Stored(seq, stamp(parse_stamp(headers[TIME_STAMP])), headers[SUBJECT], msg.data)
    finally:
        await replies.unsubscribe()


async def _wrapped(
    nc: NatsClient, stream: str, first: int, last: int, wait_s: float
) -> AsyncIterator[Stored]:
    for start in range(first, last + 1, IN_FLIGHT):
        got: dict[int, Stored] = {}

        async def one(seq: int, got: dict[int, Stored] = got) -> None:
            message = await get_wrapped(nc, stream, {"seq": seq}, wait_s)
            if message is not None:
                data = base64.b64decode(message.data) if message.data else b""
                got[seq] = Stored(seq, stamp(parse_stamp(message.time)), message.subject, data)

        async with anyio.create_task_group() as tg:
            for seq in range(start, min(start + IN_FLIGHT, last + 1)):
                tg.start_soon(one, seq)
        for seq in sorted(got):
            yield got[seq]
