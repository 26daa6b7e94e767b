"""One reader's pull requests on one consumer: the inbox, the credit, the asking again.

nats-py's ``fetch()`` builds a request and a subscription per call; a ``Puller`` instead keeps
one plain subscription on an inbox of its own for every reply, and at most one pull request of
``batch`` messages open, published straight to ``pull_subject(stream, consumer)``. Its
*credit* counts the messages that request may still bring; when a message uses up the last of
it, or a status ends the request (services/jetstream/protocol.py), the request is over and the
owner is asked whether to open the next one. A request that has neither brought its messages
nor ended ``LOST_AFTER`` seconds past its expiry was lost on the way (a reconnect):
``forget_lost()`` lets the next ``refill()`` ask again.

Its owner, a ``Reader`` (services/jetstream/consumer.py, services/jetstream/follower.py),
decides what a message and a status mean to it; the Puller calls it on the subscription's task:

- ``on_message(msg)``: a stream message (its ack subject read with ``parse_ack_reply``);
- ``on_status(status) -> bool``: the request ended (never called for heartbeats); True asks
  again at once (if ``wants_more()``), False leaves it to the owner's next ``refill()``;
- ``wants_more() -> bool``: whether to ask for another batch now.

They are plain methods, not coroutines: a message costs no object beyond those nats-py and the
owner build.
"""

from __future__ import annotations

import time
from typing import Protocol

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from fleetward.schemas.headers import pull_subject
from fleetward.services.jetstream.protocol import Status, classify

LOST_AFTER = 2.0  # seconds past its expiry after which an open request is taken as lost
# Bytes one pull request may bring at most (``max_bytes``, nats-server 2.8+): without it, a
# batch of large messages (a burst of ~1 MB server answers that anyone can have a stream
# store: docs/identity.md) arrives at once and the server cuts the connection as a slow
# consumer. Far above the largest message a stream stores (``StreamSpec.max_msg_size``, 1 MiB,
# and its headers): a message larger than a request's max_bytes would never be delivered.
PULL_MAX_BYTES = 8 * 1024 * 1024
# After a request that a status (a 409) ended before it brought anything, the next one waits
# this long, doubled for each such request in a row, up to RETRY_MAX_S. A consumer whose own
# limits refuse every request at once (an agent may set its inbox's max_bytes, max_batch or
# max_expires below ours) would otherwise be asked thousands of times a second.
RETRY_MIN_S, RETRY_MAX_S = 0.01, 1.0


class Reader(Protocol):
    """What a ``Puller``'s owner does with the replies (see the module docstring)."""

    def on_message(self, msg: Msg) -> None:
        """Take a stream message; may raise only for a reply that is not one (a bug)."""

    def on_status(self, status: Status) -> bool:
        """React to the end of the open request; True: ask again at once."""

    def wants_more(self) -> bool:
        """Whether another request may be made now."""


class Puller:
    """Keeps at most one pull request of ``batch`` messages and ``PULL_MAX_BYTES`` bytes
    (expiring after ``expires`` seconds) open on ``stream``/``consumer`` and routes every reply
    to ``reader``.
    ``queue_limit`` bounds the messages nats-py holds for the subscription before it drops
    them as a slow consumer. ``open()`` before use, ``close()`` after."""

    def __init__(
        self,
        nc: NatsClient,
        stream: str,
        consumer: str,
        reader: Reader,
        *,
        batch: int,
        expires: float,
        queue_limit: int,
    ) -> None:
        self.nc = nc
        self.batch = batch
        self.credit = 0  # messages the open request may still bring; 0: no request open
        self.requested_at = 0.0  # time.monotonic() of the last request
        self._lost_after = expires + LOST_AFTER
        self._subject = pull_subject(stream, consumer)
        self._request = msgspec.json.encode(
            {"batch": batch, "expires": int(expires * 1e9), "max_bytes": PULL_MAX_BYTES}
        )
        self._reader = reader
        self._queue_limit = queue_limit
        self._inbox = ""
        self._sub: Subscription | None = None
        self._brought = False  # the open request brought a message
        self._used_up = False  # the last request's messages used up its batch (see receive)
        self._ended_empty = 0  # requests in a row that a status ended before they brought one
        self._not_before = 0.0  # time.monotonic() before which no request is made

    async def open(self) -> None:
        """Subscribe to a new inbox; no request is made yet (``refill()`` makes it)."""
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(
            self._inbox,
            cb=self.receive,
            pending_msgs_limit=self._queue_limit,
            pending_bytes_limit=256 * 1024 * 1024,
        )

    async def close(self) -> None:
        """Unsubscribe (raises what nats-py raises, e.g. with the connection closed); replies
        still on their way are dropped. The server ends the open request when it expires."""
        sub, self._sub = self._sub, None
        self.credit = 0
        if sub is not None:
            await sub.unsubscribe()

    async def refill(self) -> None:
        """Ask for ``batch`` messages if no request is open, the inbox is, and the reader
        ``wants_more()``."""
        if self.credit == 0 and self._sub is not None and self._reader.wants_more():
            if time.monotonic() < self._not_before:
                return  # (``retry_in``)
            self.requested()
            await self.nc.publish(self._subject, self._request, reply=self._inbox)

    def requested(self) -> None:
        """Count a request of ``batch`` messages as open from now (``refill`` makes it)."""
        self.credit, self._brought = self.batch, False
        self.requested_at = time.monotonic()

    def retry_in(self) -> float:
        """Seconds before ``refill()`` may make a request again (0: now): after requests that a
        status ended empty-handed, ``RETRY_MIN_S`` doubled for each in a row."""
        return max(0.0, self._not_before - time.monotonic())

    def forget_lost(self) -> None:
        """Take the open request as over if it is ``LOST_AFTER`` seconds past its expiry with
        no end in sight (lost in a reconnect), so that ``refill()`` asks again."""
        if self.credit and time.monotonic() - self.requested_at > self._lost_after:
            self.credit = 0

    async def receive(self, msg: Msg) -> None:
        """Take one reply to a request: the subscription's callback (tests feed it too)."""
        status = classify(msg)
        if status is None:
            if self.credit == self.batch:  # a new request's first: any end of the last came
                self._used_up = False
            self._brought, self._ended_empty, self._not_before = True, 0, 0.0
            self._reader.on_message(msg)
            self.credit -= 1
            if self.credit > 0:
                return
            self.credit, self._used_up = 0, True
        elif status is Status.HEARTBEAT:
            return
        elif status is Status.COMPLETED and self._used_up:
            self._used_up = False  # the end of the request its messages used up: over here
            return
        else:
            if status is Status.COMPLETED:
                status = Status.ENDED  # a request that ended before its batch was used up
            self.credit = 0
            if status is Status.ENDED and not self._brought:
                self._ended_empty += 1
                wait = min(RETRY_MIN_S * 2 ** (self._ended_empty - 1), RETRY_MAX_S)
                self._not_before = time.monotonic() + wait
            elif status is not Status.ENDED:
                self._ended_empty, self._not_before = 0, 0.0
            if not self._reader.on_status(status):
                return
        await self.refill()
