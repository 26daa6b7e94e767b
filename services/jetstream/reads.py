"""Reads that ride out a stream's leader election.

When the leader of a replicated stream dies, nobody answers for the stream until the cluster
elects another. Measured on the three-node cluster of the tests (tests/cluster.py, nats-server
2.15.1), a read sent right after a SIGKILL of FW_EVENTS' leader met:

- an API request about the stream (a message get ``$JS.API.STREAM.MSG.GET``, stream info, a
  ``get_last_msg`` that is not direct): no answer at all, ``nats.errors.TimeoutError``, for
  3.9 to 5.6 s; when the dead node also led the cluster's meta group, every API request
  (consumer info, account info) too, for about 5.5 s;
- a direct get (``$JS.API.DIRECT.GET``, which any replica answers): ``NoRespondersError`` (a
  503 status on a batch's inbox) for about 1.5 s;
- a server may also answer 503 ("JetStream system temporarily unavailable", seen with two nodes
  of three down: nats-py's ``ServiceUnavailableError``, which is also what its JetStream context
  makes of no responders).

tests/integration/test_cluster_reads.py issues each kind of read right after the kill.

A read changes nothing, so ``ride_out`` asks again. Each try waits at most ``READ_TRY_S`` for
its answer: a request sent while there is no leader is dropped, never answered late, so waiting
longer on it only delays the try that the new leader answers. Tries follow each other with
backoff (50 ms doubling to 500 ms) until ``READ_RIDE_OUT_S`` seconds have passed since the
first; then ``StreamUnavailable``, which the CLI prints as one line. Any other answer (not found,
a refusal) is the answer, at once.

Writes are never retried here. A publish rides out an election in publish.py under its event id
(the stream stores one copy), and a compare-and-set whose outcome is unknown is settled by
reading the boundary (services/client/claims.py), never by publishing blindly again.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import anyio
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import StreamInfo
from nats.js.errors import APIError, ServiceUnavailableError

from fleetward.services.errors import FleetwardError
from fleetward.services.jetstream.publish import TRANSIENT
from fleetward.services.signals import Signal, Signals

log = logging.getLogger("fleetward.reads")

T = TypeVar("T")

# How long a read keeps asking, seconds from its first try: about twice the longest election
# measured above (5.6 s). A read that meets no leader for this long fails.
READ_RIDE_OUT_S: Final = 10.0
READ_TRY_S: Final = 2.0  # one try's wait for its answer (a healthy server answers in ms)
FIRST_DELAY_S: Final = 0.05
MAX_DELAY_S: Final = 0.5


class StreamUnavailable(FleetwardError, NatsTimeout):
    """A read found nobody to answer it for ``READ_RIDE_OUT_S`` seconds (no leader for the
    stream, or no NATS server at all). A ``FleetwardError`` (one line in the CLI) and a
    ``nats.errors.TimeoutError``, as the read's last try raised before (callers that catch
    that, or ``publish.TRANSIENT``, still do)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # nats' TimeoutError would say only "nats: timeout"
        return self.message


class ReadSignals(Signals):
    """What ``ride_out`` announces (services/signals.py), for tests."""

    def __init__(self) -> None:
        super().__init__()
        # a try met no leader and the read asks again: what was read, and what the try raised
        self.retried: Signal[tuple[str, str]] = Signal(self, "retried")


READS = ReadSignals()


def transient(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a read, means nobody could answer it now (a stream or cluster
    without a leader, a connection moving to another server): the same read may succeed later."""
    if isinstance(exc, StreamUnavailable):  # an inner read has ridden out already
        return False
    if isinstance(exc, APIError):  # a refusal is an answer, unless it is a 503
        return isinstance(exc, ServiceUnavailableError) or exc.code == 503
    return isinstance(exc, TRANSIENT)


async def ride_out(
    read: Callable[[float], Awaitable[T]], what: str, *, ride_out_s: float = READ_RIDE_OUT_S
) -> T:
    """``read(timeout)``, one try that waits at most ``timeout`` seconds for its answer, made
    again after a ``transient`` failure, with backoff, for up to ``ride_out_s`` seconds from the
    first try (plus that of the try under way). Returns the first answer; raises any other error
    at once, and ``StreamUnavailable`` (naming ``what``, e.g. "reading FW_EVENTS") when every try
    failed so."""
    started = time.monotonic()
    give_up = started + ride_out_s
    delay, tries = FIRST_DELAY_S, 0
    while True:
        tries += 1
        try:
            return await read(min(READ_TRY_S, ride_out_s))
        except Exception as exc:
            if not transient(exc):
                raise
            now = time.monotonic()
            cause = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
            if now + delay > give_up:
                raise StreamUnavailable(
                    f"{what}: NATS could not answer within {ride_out_s:g} s ({cause}); are most "
                    "of the cluster's nodes running?"
                ) from exc
            if tries == 1:
                log.info("%s: no answer (%s); asking again for up to %g s", what, cause, ride_out_s)
            READS.retried.emit((what, cause))
            await anyio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)


def answering_within(js: JetStreamContext, timeout: float) -> JetStreamContext:
    """``js`` whose requests wait at most ``timeout`` seconds for their answer. nats-py keeps
    that wait in the context (``JetStreamContext._timeout``, read by ``stream_info`` and
    ``get_msg``; tests/unit/test_reads.py checks it still does), so a try gets a copy."""
    quick = copy.copy(js)
    quick._timeout = timeout
    return quick


async def stream_info(js: JetStreamContext, stream: str) -> StreamInfo:
    """``js.stream_info(stream)``, riding out an election (``ride_out``)."""
    return await ride_out(
        lambda t: answering_within(js, t).stream_info(stream), f"reading {stream}'s state"
    )
