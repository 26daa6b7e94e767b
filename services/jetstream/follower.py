"""Following a stream in order, for state that is rebuilt at every start (the watchdog's).

An ephemeral pull consumer with no acknowledgements (AckPolicy NONE, memory storage), read
through a ``Puller`` (services/jetstream/puller.py) as services/jetstream/consumer.py reads its
durable: every message is handed to a callback as (subject, data, stream sequence, stream time
in ns), read from the reply subject without building metadata objects.

It is an ordered consumer: a gap in the consumer sequence, a deleted consumer, an unavailable
JetStream (a 503) or a reconnect make the reader re-create its consumer right after the last
stream sequence it handed over (a request lost on the way is only made again); or, for a stream
where only each subject's last message matters (heartbeats), from each subject's last message
again. ``restarts`` counts the re-creations, so the owner can tell that it may have missed
messages while they lasted.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import anyio
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from fleetward.schemas.streams import follower_prefix
from fleetward.services.jetstream.protocol import Status, parse_ack_reply
from fleetward.services.jetstream.puller import Puller

log = logging.getLogger("fleetward.follow")

Handler = Callable[[str, bytes, int, int], None]  # subject, data, stream seq, stream time (ns)


class StreamFollower:
    """Hands every message of ``subjects`` in ``stream`` to ``handler`` in stream order, from
    ``start_seq`` on (None: each subject's last message, then new ones), re-creating its
    ephemeral consumer whenever the order may be broken. ``run()`` drives it."""

    def __init__(
        self,
        nc: NatsClient,
        js: JetStreamContext,
        stream: str,
        subjects: tuple[str, ...],
        handler: Handler,
        *,
        start_seq: int | None = None,  # None: each subject's last message, then new ones
        batch: int = 2000,
        expires: float = 2.0,
        name: str = follower_prefix("follow"),
    ) -> None:
        self.nc, self.js, self.stream, self.subjects = nc, js, stream, subjects
        self.handler = handler
        self.per_subject = start_seq is None
        self.last_seq = max(0, (start_seq or 1) - 1)  # last stream sequence handed over
        self.batch, self.expires = batch, expires
        self.prefix = name
        self.caught_up = False  # nothing was pending at some point since the last (re)start
        self.restarts = 0
        self.delivered = 0
        self.failures = 0  # handler errors
        self._consumer = ""
        self._cseq = 0
        self._broken = False  # re-create the consumer
        self._pulls: Puller | None = None  # the current consumer's requests

    def reset(self) -> None:
        """Re-create the consumer at the next chance."""
        self._restart("asked to")

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Follow until ``stopping()``; the supervision loop behind the callbacks."""
        delay = 0.1
        reconnects = self.nc.stats["reconnects"]
        try:
            while not stopping():
                if self.nc.stats["reconnects"] != reconnects:  # the consumer may be gone
                    reconnects = self.nc.stats["reconnects"]
                    self._restart("reconnected to NATS")
                if self._broken or self._pulls is None:
                    try:
                        await self._open()
                        delay = 0.1
                    except Exception as exc:  # NATS away or JetStream unavailable: retry
                        log.warning("%s: cannot create a consumer (%s); retrying", self.stream, exc)
                        await anyio.sleep(delay)
                        delay = min(delay * 2, 2.0)
                        continue
                else:  # no request open (one ended with a 409), or it was lost (a reconnect)
                    self._pulls.forget_lost()
                    await self._pulls.refill()
                await anyio.sleep(0.05)
        finally:
            await self._close()

    async def _open(self) -> None:
        await self._close()
        self._broken, self._cseq = False, 0
        start: dict[str, Any]
        if self.per_subject:
            start = {"deliver_policy": DeliverPolicy.LAST_PER_SUBJECT}
        else:
            start = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE,
                     "opt_start_seq": self.last_seq + 1}  # fmt: skip
        self._consumer = f"{self.prefix}_{self.nc.new_inbox().rsplit('.', 1)[-1]}"
        info = await self.js.add_consumer(
            self.stream,
            ConsumerConfig(
                name=self._consumer,
                ack_policy=AckPolicy.NONE,
                filter_subjects=list(self.subjects),
                inactive_threshold=30.0,  # the server cleans up after a reader that died
                mem_storage=True,
                num_replicas=1,
                max_waiting=8,
                **start,
            ),
        )
        pulls = Puller(
            self.nc,
            self.stream,
            self._consumer,
            self,
            batch=self.batch,
            expires=self.expires,
            queue_limit=2 * self.batch + 100,
        )
        await pulls.open()
        self._pulls = pulls
        if not info.num_pending:
            self.caught_up = True
        await pulls.refill()

    async def _close(self) -> None:
        pulls, self._pulls = self._pulls, None
        if pulls is not None:
            with contextlib.suppress(Exception):
                await pulls.close()
        if self._consumer:
            name, self._consumer = self._consumer, ""
            with contextlib.suppress(Exception):  # gone already, or NATS away: it expires
                await self.js.delete_consumer(self.stream, name)

    def _restart(self, why: str) -> None:
        if not self._broken:
            log.info("%s: %s; re-creating the consumer", self.stream, why)
            self.restarts += 1
            self.caught_up = False
            self._broken = True

    # ---- the Puller's Reader (services/jetstream/puller.py) ----------------------------------

    def wants_more(self) -> bool:
        """Ask again unless the consumer is to be re-created."""
        return not self._broken

    def on_status(self, status: Status) -> bool:
        """404/408: caught up, ask again at once; 409 Consumer Deleted and 503: re-create the
        consumer; other ends: ``run()`` asks again within its next tick."""
        if self._broken:
            return False
        if status is Status.DONE:  # the request ended with nothing more right now
            self.caught_up = True
            return True
        if status is Status.CONSUMER_GONE:
            self._restart("the consumer was deleted")
        elif status is Status.UNAVAILABLE:
            self._restart("JetStream did not answer")
        return False  # any other end: the supervision loop asks again shortly

    def on_message(self, msg: Msg) -> None:
        """Hand ``msg`` to the handler if its consumer sequence follows the last one; after a
        gap hand nothing more over and re-create the consumer. Handler errors are counted in
        ``failures`` and logged, never raised."""
        if self._broken:
            return
        seq, cseq, ns, pending = parse_ack_reply(msg.reply)
        if cseq != self._cseq + 1:
            self._restart(f"consumer sequence {cseq} after {self._cseq}")
            return
        self._cseq = cseq
        self.last_seq = seq
        self.delivered += 1
        try:
            self.handler(msg.subject, msg.data, seq, ns)
        except Exception:  # one bad message must not stop the reader
            self.failures += 1
            log.exception("%s: handling stream sequence %d failed", self.stream, seq)
        if not pending:
            self.caught_up = True
