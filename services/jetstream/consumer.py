"""A durable JetStream pull consumer, read the fast way.

The pull requests are a ``Puller``'s (services/jetstream/puller.py): one plain subscription
takes every reply, and the stream sequence, time and pending count are read from the reply
subject, so no per-message metadata objects are built. The consumer acks with AckAll: one ack
on the last message of a committed batch acknowledges the whole batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from fleetward.projections.base import Meta
from fleetward.schemas.headers import consumer_create_subject
from fleetward.schemas.streams import COMMANDS_STREAM, inbox_durable
from fleetward.schemas.subjects import boundary_wildcard
from fleetward.services.jetstream.protocol import Status, parse_ack_reply
from fleetward.services.jetstream.puller import Puller

log = logging.getLogger("fleetward.consume")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CHECK_EVERY_S = 1.0  # after a 503, ask whether the consumer exists at most this often
CHECK_TIMEOUT_S = 2.0  # how long that question may take (JetStream away: no answer)


@dataclass(slots=True)
class Delivery(Meta):
    """A message as delivered: its ``Meta`` (stream sequence, time of record, subject) and the
    rest. Being a ``Meta`` itself saves building one per event. Treat as read-only."""

    data: bytes
    reply: str
    pending: int  # messages left for this consumer after this one
    # the consumer's sequence: its deliveries (redeliveries too) up to this one, from 1 when it
    # was created; one missing means a delivery went elsewhere (another puller, a lost reply)
    cseq: int = 0


def to_delivery(msg: Msg) -> Delivery:
    """The ``Delivery`` of a stream message (raises ``ValueError`` or ``IndexError`` when its
    reply subject is not an ack subject)."""
    seq, cseq, ns, pending = parse_ack_reply(msg.reply)
    when = EPOCH + timedelta(microseconds=ns // 1000)
    return Delivery(seq, when, msg.subject, msg.data, msg.reply, pending, cseq)


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


async def create_inbox(
    nc: NatsClient,
    agent: str,
    config: ConsumerConfig,
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 (the NATS request takes it)
) -> ConsumerInfo:
    """Create ``agent``'s command inbox, the durable ``inbox_<agent>`` on FW_COMMANDS reading
    ``fw.cmd.<agent>.>`` (every sender's commands to it), as ``config`` says otherwise; or, when
    it exists, update it to ``config`` (what the server allows to change: its filter, say).

    Always by a request to the explicit-filter form
    ``$JS.API.CONSUMER.CREATE.FW_COMMANDS.inbox_<agent>.fw.cmd.<agent>.>``: the server refuses
    a body whose filter differs from the subject's, so a NATS permission on that subject lets
    an agent create its own inbox and nothing else (nats-py's ``add_consumer`` asks
    ``$JS.API.CONSUMER.DURABLE.CREATE...``, whose body may filter anything)."""
    durable, wanted = inbox_durable(agent), boundary_wildcard("cmd", agent)
    body = config.evolve(durable_name=durable, filter_subject=wanted, filter_subjects=None)
    request = {"stream_name": COMMANDS_STREAM, "config": body.as_dict()}
    try:
        msg = await nc.request(
            consumer_create_subject(COMMANDS_STREAM, durable, wanted),
            msgspec.json.encode(request),
            timeout=timeout,
        )
    except NoRespondersError:
        raise ServiceUnavailableError from None
    reply = msgspec.json.decode(msg.data)
    if "error" in reply:
        raise APIError.from_error(reply["error"])
    info: ConsumerInfo = ConsumerInfo.from_response(reply)
    return info


class PullConsumer:
    """Keeps one pull request of ``batch`` messages open and buffers what arrives.

    Statuses (services/jetstream/protocol.py): a request that ends (404, 408, a 409) is made
    again at once while the buffer has room; ``409 Consumer Deleted`` sets ``gone`` and no
    request is made any more. A 503 means JetStream is away or the consumer is missing (the
    server answers so a request made after the consumer was deleted: no 409 then): the next
    ``next_batch()`` asks the server which (``CONSUMER.INFO``, at most once per
    ``CHECK_EVERY_S``); "not found" sets ``gone`` too, anything else (no answer, JetStream
    away) leaves it to the next request, made at the next ``next_batch()``, never in a loop
    with the server. ``unavailable_since`` is the ``time.monotonic()`` of the first of a run of
    503s (None since a message or any other status), for health reports.

    An owner seeing ``gone`` re-creates the consumer: the projector's runner raises ``Resync``
    at its next step and re-positions (services/projector/runner.py)."""

    def __init__(
        self, nc: NatsClient, stream: str, durable: str, batch: int = 1000, expires: float = 5.0
    ) -> None:
        self.nc, self.stream, self.durable = nc, stream, durable
        self.batch, self.expires = batch, expires
        self._buffer: deque[Delivery] = deque()
        self._arrived = asyncio.Event()
        self._interrupted = False  # ``interrupt()`` was called: a waiting next_batch() returns
        self.gone = False  # the server says the consumer no longer exists
        self.unavailable_since: float | None = None  # the first of the latest 503s in a row
        self._checked_at = -CHECK_EVERY_S  # time.monotonic() of the last CONSUMER.INFO
        self._js = nc.jetstream(timeout=CHECK_TIMEOUT_S)
        self._pulls = Puller(
            nc, stream, durable, self, batch=batch, expires=expires, queue_limit=4 * batch + 100
        )

    async def start(self) -> None:
        """Subscribe to the replies; the first ``next_batch()`` makes the first request."""
        await self._pulls.open()

    async def ask(self) -> None:
        """Open a pull request now if none is open (and the buffer has room), so messages
        arrive in the buffer before the next ``next_batch()``."""
        self._pulls.forget_lost()
        await self._pulls.refill()

    async def stop(self) -> None:
        """Unsubscribe; what is buffered stays unread (and unacknowledged)."""
        await self._pulls.close()

    # ---- the Puller's Reader (services/jetstream/puller.py) ----------------------------------

    def on_message(self, msg: Msg) -> None:
        """Buffer ``msg`` as a ``Delivery`` and wake a waiting ``next_batch()``."""
        self._buffer.append(to_delivery(msg))
        self.unavailable_since = None
        self._arrived.set()

    def on_status(self, status: Status) -> bool:
        """Ask again at once after 404, 408 and 409s (while ``wants_more()``); set ``gone`` on
        409 Consumer Deleted; after a 503 wait for the next read (no loop with the server),
        which first asks whether the consumer still exists."""
        if status is Status.UNAVAILABLE:
            if self.unavailable_since is None:
                self.unavailable_since = time.monotonic()
            return False  # nor wake a reader: it asks again at its next call
        self.unavailable_since = None
        if status is Status.CONSUMER_GONE:
            self.gone = True
        self._arrived.set()  # a waiting reader goes on waiting (or sees ``gone``)
        return True

    def interrupt(self) -> None:
        """Make a ``next_batch()`` waiting for its first delivery return now (with what is
        buffered: nothing), e.g. because its caller has something else to do first."""
        self._interrupted = True
        self._arrived.set()

    def wants_more(self) -> bool:
        """Ask for more while the buffer has room for a batch and the consumer exists."""
        return len(self._buffer) < self.batch and not self.gone

    async def next_batch(
        self, max_items: int, wait: float = 1.0, linger: float = 0.05
    ) -> list[Delivery]:
        """Up to ``max_items`` deliveries in stream order; empty after ``wait`` with none.

        While the server says more messages are pending (catching up), wait up to ``linger``
        for a full batch; when nothing is pending (live), return what is there at once. After a
        503, first ask whether the consumer still exists (see the class docstring). Once it is
        ``gone``, what is buffered is still returned, then nothing (after ``wait``, so that a
        caller reading in a loop does not spin). ``interrupt()`` ends the wait for a first
        delivery at once."""
        self._interrupted = False
        self._pulls.forget_lost()  # a request lost in a reconnect: ask again
        if self.unavailable_since is not None and not self._buffer:
            await self._check_exists()
        until = time.monotonic() + wait
        while not self._buffer:  # status messages (a request expired) wake us too: go on waiting
            left = until - time.monotonic()
            if left <= 0 or self._interrupted:
                return []
            self._arrived.clear()
            await self._pulls.refill()
            pause = self._pulls.retry_in()  # refused at once lately: ask again after it
            try:
                await asyncio.wait_for(self._arrived.wait(), min(left, pause) if pause else left)
            except TimeoutError:
                if pause and pause < left:
                    continue
                return []
        deadline = time.monotonic() + linger
        while (
            len(self._buffer) < max_items
            and self._buffer[-1].pending > 0
            and (left := deadline - time.monotonic()) > 0
        ):
            self._arrived.clear()
            await self._pulls.refill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        n = min(max_items, len(self._buffer))
        out = [self._buffer.popleft() for _ in range(n)]
        await self._pulls.refill()
        return out

    async def _check_exists(self) -> None:
        """Set ``gone`` if the server says there is no such consumer (or stream); any other
        answer, or none within ``CHECK_TIMEOUT_S``, changes nothing."""
        now = time.monotonic()
        if self.gone or now - self._checked_at < CHECK_EVERY_S:
            return
        self._checked_at = now
        try:
            await self._js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            log.warning("%s: consumer %s no longer exists (503, then not found)",
                        self.stream, self.durable)  # fmt: skip
            self.gone = True
        except Exception:  # JetStream away, no answer: a 503 like any other; ask again later
            return

    async def ack(self, delivery: Delivery) -> None:
        """Acknowledge ``delivery`` and, with AckAll, everything before it."""
        await self.nc.publish(delivery.reply, b"+ACK")
