"""Following a stream in order, for state that is rebuilt at every start (the watchdog's).

An ephemeral pull consumer with no acknowledgements (AckPolicy NONE, memory storage): pull
requests are published straight to ``$JS.API.CONSUMER.MSG.NEXT`` (as
services/jetstream/consumer.py does) and every message is handed to a callback as (subject,
data, stream sequence, stream time in ns), read from the
reply subject without building metadata objects.

It is an ordered consumer: a gap in the consumer sequence, a deleted consumer, a lost request or
an unavailable JetStream make the reader re-create its consumer right after the last stream
sequence it handed over; or, for a stream where only each subject's last message matters
(heartbeats), from each subject's last message again. ``restarts`` counts the re-creations, so
the owner can tell that it may have missed messages while they lasted.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

log = logging.getLogger("fleetward.follow")

Handler = Callable[[str, bytes, int, int], None]  # subject, data, stream seq, stream time (ns)


class StreamFollower:
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
        name: str = "fw_follow",
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
        self._credit = 0
        self._requested_at = 0.0
        self._broken = False  # re-create the consumer
        self._sub: Subscription | None = None
        self._request = msgspec.json.encode({"batch": batch, "expires": int(expires * 1e9)})
        self._pull = ""
        self._inbox = ""

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
                if self._broken or self._sub is None:
                    try:
                        await self._open()
                        delay = 0.1
                    except Exception as exc:  # NATS away or JetStream unavailable: retry
                        log.warning("%s: cannot create a consumer (%s); retrying", self.stream, exc)
                        await anyio.sleep(delay)
                        delay = min(delay * 2, 2.0)
                        continue
                elif not self._credit or time.monotonic() - self._requested_at > self.expires + 1.5:
                    await self._ask()  # no request open, or it was lost (a reconnect)
                await anyio.sleep(0.05)
        finally:
            await self._close()

    async def _open(self) -> None:
        await self._close()
        self._broken, self._cseq, self._credit = False, 0, 0
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
        self._pull = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self._consumer}"
        inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(
            inbox,
            cb=self._on_msg,
            pending_msgs_limit=2 * self.batch + 100,
            pending_bytes_limit=256 * 1024 * 1024,
        )
        self._inbox = inbox
        if not info.num_pending:
            self.caught_up = True
        await self._ask()

    async def _close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._consumer:
            name, self._consumer = self._consumer, ""
            with contextlib.suppress(Exception):  # gone already, or NATS away: it expires
                await self.js.delete_consumer(self.stream, name)

    async def _ask(self) -> None:
        if self._sub is None or self._broken:
            return
        self._credit = self.batch
        self._requested_at = time.monotonic()
        await self.nc.publish(self._pull, self._request, reply=self._inbox)

    def _restart(self, why: str) -> None:
        if not self._broken:
            log.info("%s: %s; re-creating the consumer", self.stream, why)
            self.restarts += 1
            self.caught_up = False
            self._broken = True

    async def _on_msg(self, msg: Msg) -> None:
        if self._broken:
            return
        reply = msg.reply
        if not reply:  # a status: the request is over, or a problem
            status = (msg.headers or {}).get("Status", "")
            if status == "100":
                return
            self._credit = 0
            if status in ("404", "408"):  # the request ended with nothing more right now
                self.caught_up = True
                await self._ask()
            elif status == "409" and "Deleted" in (msg.headers or {}).get("Description", ""):
                self._restart("the consumer was deleted")
            elif status == "503":
                self._restart("JetStream did not answer")
            return  # any other status: the supervision loop asks again shortly
        t = reply.split(".")
        off = 2 if len(t) == 9 else 4  # v2 reply subjects carry a domain and an account hash
        cseq = int(t[off + 4])
        if cseq != self._cseq + 1:
            self._restart(f"consumer sequence {cseq} after {self._cseq}")
            return
        self._cseq = cseq
        seq = int(t[off + 3])
        self.last_seq = seq
        self.delivered += 1
        try:
            self.handler(msg.subject, msg.data, seq, int(t[off + 5]))
        except Exception:  # one bad message must not stop the reader
            self.failures += 1
            log.exception("%s: handling stream sequence %d failed", self.stream, seq)
        if t[off + 6] == "0":
            self.caught_up = True
        self._credit -= 1
        if self._credit <= 0:
            await self._ask()
