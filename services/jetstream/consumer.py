"""A durable JetStream pull consumer, read the fast way.

nats-py's ``fetch()`` builds a request and a subscription per call; here pull requests are
published straight to ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` and one plain
subscription takes every reply. The stream sequence, time and pending count are read from the
reply subject, so no per-message metadata objects are built. The consumer acks with AckAll: one
ack on the last message of a committed batch acknowledges the whole batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from fleetward.projections.base import Meta

STATUS = "Status"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class Delivery(Meta):
    """A message as delivered: its ``Meta`` (stream sequence, time of record, subject) and the
    rest. Being a ``Meta`` itself saves building one per event. Treat as read-only."""

    data: bytes
    reply: str
    pending: int  # messages left for this consumer after this one


def parse_reply(reply: str) -> tuple[int, int, int]:
    """(stream sequence, timestamp in ns, pending) from a JetStream ack subject (v1 or v2)."""
    t = reply.split(".")
    off = 2 if len(t) == 9 else 4  # v2 subjects carry a domain and an account hash
    return int(t[off + 3]), int(t[off + 5]), int(t[off + 6])


def to_delivery(msg: Msg) -> Delivery:
    seq, ns, pending = parse_reply(msg.reply)
    when = EPOCH + timedelta(microseconds=ns // 1000)
    return Delivery(seq, when, msg.subject, msg.data, msg.reply, pending)


async def recreate_consumer(
    js: JetStreamContext,
    stream: str,
    durable: str,
    subjects: tuple[str, ...],
    after_seq: int,
    *,
    max_ack_pending: int = 50_000,
) -> None:
    """(Re)create ``durable`` so it delivers every message after ``after_seq``."""
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(stream, durable)
    start = (
        {"deliver_policy": DeliverPolicy.ALL}
        if after_seq == 0
        else {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": after_seq + 1}
    )
    await js.add_consumer(
        stream,
        ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.ALL,
            ack_wait=60,
            max_ack_pending=max_ack_pending,
            max_waiting=16,
            # a durable nobody reads for a day (its projections now run in another grouping)
            # is removed by the server; a runner re-creates its own at every start anyway
            inactive_threshold=86_400.0,
            filter_subjects=list(subjects) or None,  # none: the whole stream
            **start,
        ),
    )


class PullConsumer:
    """Keeps one pull request of ``batch`` messages open and buffers what arrives."""

    def __init__(
        self, nc: NatsClient, stream: str, durable: str, batch: int = 1000, expires: float = 5.0
    ) -> None:
        self.nc, self.stream, self.durable = nc, stream, durable
        self.batch, self.expires = batch, expires
        self._buffer: deque[Delivery] = deque()
        self._arrived = asyncio.Event()
        self._outstanding = 0
        self._requested_at = 0.0
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._request = msgspec.json.encode({"batch": batch, "expires": int(expires * 1e9)})
        self._inbox = ""
        self.gone = False  # the server says the consumer no longer exists

    async def start(self) -> None:
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(
            self._inbox,
            cb=self._on_msg,
            pending_msgs_limit=4 * self.batch + 100,
            pending_bytes_limit=256 * 1024 * 1024,
        )

    async def stop(self) -> None:
        await self._sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        if headers and STATUS in headers and not msg.data:
            status = headers[STATUS]
            if status == "409" and "Deleted" in headers.get("Description", ""):
                self.gone = True
            if status != "100":  # 404/408/409: this request is over
                self._outstanding = 0
                await self._refill()
            self._arrived.set()
            return
        self._buffer.append(to_delivery(msg))
        self._outstanding -= 1
        if self._outstanding <= 0:
            self._outstanding = 0
            await self._refill()
        self._arrived.set()

    async def _refill(self) -> None:
        if self._outstanding == 0 and len(self._buffer) < self.batch and not self.gone:
            self._outstanding = self.batch
            self._requested_at = time.monotonic()
            await self.nc.publish(self._subject, self._request, reply=self._inbox)

    async def next_batch(
        self, max_items: int, wait: float = 1.0, linger: float = 0.05
    ) -> list[Delivery]:
        """Up to ``max_items`` deliveries in stream order; empty after ``wait`` with none.

        While the server says more messages are pending (catching up), wait up to ``linger``
        for a full batch; when nothing is pending (live), return what is there at once."""
        if self._outstanding and time.monotonic() - self._requested_at > self.expires + 2:
            self._outstanding = 0  # the request was lost (a reconnect): ask again
        until = time.monotonic() + wait
        while not self._buffer:  # status messages (a request expired) wake us too: go on waiting
            left = until - time.monotonic()
            if left <= 0:
                return []
            self._arrived.clear()
            await self._refill()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return []
        deadline = time.monotonic() + linger
        while (
            len(self._buffer) < max_items
            and self._buffer[-1].pending > 0
            and (left := deadline - time.monotonic()) > 0
        ):
            self._arrived.clear()
            await self._refill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        n = min(max_items, len(self._buffer))
        out = [self._buffer.popleft() for _ in range(n)]
        await self._refill()
        return out

    async def ack(self, delivery: Delivery) -> None:
        """Acknowledge ``delivery`` and, with AckAll, everything before it."""
        await self.nc.publish(delivery.reply, b"+ACK")
