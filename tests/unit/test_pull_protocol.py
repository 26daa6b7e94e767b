"""The pull protocol without a server: reply subjects, the statuses nats-server sends to a pull
request (as nats-py reads their wire bytes), and how the Puller, the durable consumer and the
ordered follower react to each. The replies are real ``nats.aio.msg.Msg`` objects; the Pullers
here are never opened, so they make no request (``refill()`` needs an open inbox)."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError

from fleetward.services.jetstream.consumer import PullConsumer
from fleetward.services.jetstream.follower import StreamFollower
from fleetward.services.jetstream.protocol import Status, classify, parse_ack_reply, status_of
from fleetward.services.jetstream.puller import LOST_AFTER, RETRY_MAX_S, RETRY_MIN_S, Puller

NC = Client()  # never connected: builds messages and parses headers only
NS = 1_700_000_000_123_456_789


def ack(seq: int, cseq: int, pending: int = 0) -> str:
    """A v1 ack subject, as nats-server v2.15 writes it by default (ADR-15)."""
    return f"$JS.ACK.S.c.1.{seq}.{cseq}.{NS}.{pending}"


def message(seq: int, cseq: int, pending: int = 0, subject: str = "fw.hb.a1") -> Msg:
    return Msg(NC, subject=subject, reply=ack(seq, cseq, pending), data=b"{}")


async def status(wire: str) -> Msg:
    """A status reply from the header block nats-server sends, read by nats-py."""
    headers = await NC._process_headers(wire.encode() + b"\r\n\r\n")
    return Msg(NC, subject="_INBOX.x", reply="", data=b"", headers=headers)


HEARTBEAT = "NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 5\r\nNats-Last-Stream: 9"
NO_MESSAGES = "NATS/1.0 404 No Messages"
TIMEOUT = "NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 10\r\nNats-Pending-Bytes: 0"
DELETED = "NATS/1.0 409 Consumer Deleted"
LEADER = "NATS/1.0 409 Leadership Change"
UNAVAILABLE = "NATS/1.0 503"


# ---- reply subjects ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        f"$JS.ACK.FW_EVENTS.fw_x.1.42.7.{NS}.3",  # v1: 9 tokens
        f"$JS.ACK._.ACCHASH.FW_EVENTS.fw_x.2.42.7.{NS}.3.rnd",  # v2: 12 tokens
        f"$JS.ACK.hub.ACCHASH.FW_EVENTS.fw_x.2.42.7.{NS}.3",  # v2 without the random token
    ],
)
def test_an_ack_subject_gives_stream_and_consumer_sequence_time_and_pending(reply: str) -> None:
    assert parse_ack_reply(reply) == (42, 7, NS, 3)


def test_a_reply_that_is_no_ack_subject_raises() -> None:
    with pytest.raises((ValueError, IndexError)):
        parse_ack_reply("_INBOX.abc")


# ---- statuses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "meaning"),
    [
        (HEARTBEAT, Status.HEARTBEAT),
        (NO_MESSAGES, Status.DONE),
        (TIMEOUT, Status.DONE),
        ("NATS/1.0 408 Interest Expired", Status.DONE),
        (DELETED, Status.CONSUMER_GONE),
        ("NATS/1.0 409 Consumer is push based", Status.CONSUMER_GONE),
        (LEADER, Status.ENDED),
        ("NATS/1.0 409 Exceeded MaxWaiting", Status.ENDED),
        ("NATS/1.0 409 Exceeded MaxRequestBatch of 10", Status.ENDED),
        ("NATS/1.0 409 Message Size Exceeds MaxBytes", Status.ENDED),
        ("NATS/1.0 409 Batch Completed\r\nNats-Pending-Messages: 3", Status.COMPLETED),
        ("NATS/1.0 409 Server Shutdown", Status.ENDED),
        (UNAVAILABLE, Status.UNAVAILABLE),
        ("NATS/1.0 503\r\nNats-Subject: $JS.API.CONSUMER.MSG.NEXT.S.c", Status.UNAVAILABLE),
        ("NATS/1.0 400 Bad Request", Status.ENDED),  # unknown to us: the request is over
    ],
)
async def test_each_status_nats_server_sends_has_its_meaning(wire: str, meaning: Status) -> None:
    assert classify(await status(wire)) is meaning


def test_a_stream_message_is_no_status_even_with_headers_and_no_data() -> None:
    msg = Msg(NC, subject="fw.hb.a1", reply=ack(1, 1), data=b"", headers={"Status": "404"})
    assert classify(msg) is None


def test_a_reply_without_status_or_headers_ends_the_request() -> None:
    assert status_of(None) is Status.ENDED
    assert classify(Msg(NC, subject="_INBOX.x")) is Status.ENDED


# ---- the Puller's bookkeeping ----------------------------------------------------------------


class Recorder:
    """A Reader that keeps what it was told."""

    def __init__(self, ask_again: bool = True) -> None:
        self.messages: list[Msg] = []
        self.statuses: list[Status] = []
        self.ask_again = ask_again

    def on_message(self, msg: Msg) -> None:
        self.messages.append(msg)

    def on_status(self, status: Status) -> bool:
        self.statuses.append(status)
        return self.ask_again

    def wants_more(self) -> bool:
        return True


def puller(reader: Recorder | PullConsumer | StreamFollower, batch: int = 3) -> Puller:
    return Puller(NC, "S", "c", reader, batch=batch, expires=1.0, queue_limit=100)


async def test_messages_use_up_the_credit_and_statuses_end_the_request() -> None:
    reader = Recorder()
    pulls = puller(reader)
    pulls.credit = 3
    await pulls.receive(message(1, 1, pending=5))
    await pulls.receive(await status(HEARTBEAT))  # alive: changes nothing
    assert (pulls.credit, len(reader.messages), reader.statuses) == (2, 1, [])
    await pulls.receive(await status(TIMEOUT))
    assert (pulls.credit, reader.statuses) == (0, [Status.DONE])


async def test_the_credit_never_goes_below_zero() -> None:
    pulls = puller(Recorder())
    await pulls.receive(message(1, 1))  # from a request taken as lost
    assert pulls.credit == 0


def test_a_request_past_its_expiry_and_the_margin_is_taken_as_lost() -> None:
    pulls = puller(Recorder())
    pulls.credit, pulls.requested_at = 3, time.monotonic() - (1.0 + LOST_AFTER - 0.5)
    pulls.forget_lost()
    assert pulls.credit == 3  # not yet
    pulls.requested_at = time.monotonic() - (1.0 + LOST_AFTER + 0.5)
    pulls.forget_lost()
    assert pulls.credit == 0


async def test_requests_ended_empty_handed_in_a_row_are_asked_again_later_and_later() -> None:
    """An inbox whose own limits refuse every request at once (an agent set max_bytes,
    max_batch or max_expires below ours): the next request waits RETRY_MIN_S, doubled each
    time, up to RETRY_MAX_S; a message brought, or a request that ends normally, resets it."""
    pulls = puller(Recorder())
    refused = "NATS/1.0 409 Exceeded MaxRequestMaxBytes of 1024"
    waits = []
    for _ in range(9):
        pulls.requested()
        await pulls.receive(await status(refused))
        waits.append(pulls.retry_in())
    assert waits[0] == pytest.approx(RETRY_MIN_S, abs=0.005)
    assert all(b > a for a, b in itertools.pairwise(waits[:7]))
    assert waits[-1] == pytest.approx(RETRY_MAX_S, abs=0.005)
    pulls.requested()
    await pulls.receive(message(1, 1, pending=5))  # a request that brings something
    await pulls.receive(await status(refused))  # and is ended: no wait
    assert pulls.retry_in() == 0
    pulls.requested()
    await pulls.receive(await status(refused))
    assert pulls.retry_in() == pytest.approx(RETRY_MIN_S, abs=0.005)  # counted from one again
    pulls.requested()
    await pulls.receive(await status(TIMEOUT))  # ends as usual: the count starts over
    pulls.requested()
    await pulls.receive(await status(refused))
    assert pulls.retry_in() == pytest.approx(RETRY_MIN_S, abs=0.005)


async def test_batch_completed_after_the_messages_that_used_up_a_request_changes_nothing() -> None:
    """A request with max_bytes gets ``409 Batch Completed`` after its last message. Its
    messages used up the credit, so it was over here already and the next request is open:
    that one is not taken as ended, and no wait follows."""
    reader = Recorder()
    pulls = puller(reader, batch=2)
    completed = await status("NATS/1.0 409 Batch Completed")
    pulls.requested()
    await pulls.receive(message(1, 1))
    await pulls.receive(message(2, 2))
    assert pulls.credit == 0
    pulls.requested()  # the next request (refill)
    await pulls.receive(completed)  # the end of the last one
    assert (pulls.credit, reader.statuses, pulls.retry_in()) == (2, [], 0)
    await pulls.receive(message(3, 3))
    await pulls.receive(completed)  # a request ended before its batch: over
    assert (pulls.credit, reader.statuses, pulls.retry_in()) == (0, [Status.ENDED], 0)


# ---- the durable consumer --------------------------------------------------------------------


def consumer() -> PullConsumer:
    return PullConsumer(NC, "S", "c", batch=10, expires=1.0)


async def test_the_consumer_buffers_messages_as_deliveries() -> None:
    c = consumer()
    await puller(c).receive(message(42, 7, pending=0, subject="fw.agent.a1"))
    [d] = await c.next_batch(10, wait=0.1)
    assert (d.seq, d.subject, d.data, d.pending) == (42, "fw.agent.a1", b"{}", 0)
    assert d.time == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)  # NS, to the µs
    assert d.reply == ack(42, 7)


async def test_the_consumer_is_gone_when_the_server_deleted_it() -> None:
    c = consumer()
    await puller(c).receive(await status(DELETED))
    assert c.gone
    assert not c.wants_more()  # no request is made any more


@pytest.mark.parametrize("wire", [NO_MESSAGES, TIMEOUT, LEADER, "NATS/1.0 409 Exceeded MaxWaiting"])
async def test_the_consumer_asks_again_at_once_when_a_request_ends(wire: str) -> None:
    c = consumer()
    s = classify(await status(wire))
    assert s is not None
    assert c.on_status(s) and c.wants_more() and not c.gone


async def test_the_consumer_asks_again_after_a_503_only_at_its_next_read() -> None:
    """503: nobody serves the pull subject (JetStream away, or the consumer missing). Asking
    again from the callback would loop with the server as fast as it answers."""
    c = consumer()
    assert c.on_status(Status.UNAVAILABLE) is False
    assert not c.gone and c.wants_more()


class ConsumerInfo:
    """Stands in for the JetStream API behind ``CONSUMER.INFO``: answers with ``answer``."""

    def __init__(self, answer: Exception | None) -> None:
        self.answer, self.asked = answer, 0

    async def consumer_info(self, stream: str, consumer: str) -> None:
        self.asked += 1
        if self.answer is not None:
            raise self.answer


@pytest.mark.parametrize(
    ("answer", "gone"),
    [
        (NotFoundError(code=404, err_code=10014, description="consumer not found"), True),
        (NotFoundError(code=404, err_code=10059, description="stream not found"), True),
        (NatsTimeout(), False),  # JetStream away
        (NoRespondersError(), False),
        (None, False),  # the consumer is there: the 503 was JetStream away for a moment
    ],
)
async def test_after_a_503_the_next_read_asks_whether_the_consumer_still_exists(
    answer: Exception | None, gone: bool
) -> None:
    """A request made after the consumer was deleted is answered 503, never 409: whether it is
    gone is asked of the server (at most once a second), so that the owner can re-create it."""
    c = consumer()
    c._js = info = ConsumerInfo(answer)  # type: ignore[assignment]
    assert c.unavailable_since is None
    c.on_status(Status.UNAVAILABLE)
    since = c.unavailable_since
    assert since is not None
    assert await c.next_batch(10, wait=0.05) == []
    assert (info.asked, c.gone, c.wants_more()) == (1, gone, not gone)
    c.on_status(Status.UNAVAILABLE)
    assert c.unavailable_since == since  # still the first of the run
    await c.next_batch(10, wait=0.01)
    assert info.asked == 1  # not again within CHECK_EVERY_S
    await puller(c).receive(message(1, 1))
    assert c.unavailable_since is None


async def test_the_consumer_stops_asking_while_its_buffer_is_full() -> None:
    c = PullConsumer(NC, "S", "c", batch=2, expires=1.0)
    pulls = puller(c)
    await pulls.receive(message(1, 1, pending=1))
    assert c.wants_more()
    await pulls.receive(message(2, 2))
    assert not c.wants_more()
    assert [d.seq for d in await c.next_batch(2, wait=0.1)] == [1, 2]
    assert c.wants_more()


# ---- the ordered follower --------------------------------------------------------------------


def follower() -> tuple[StreamFollower, list[tuple[str, int, int]]]:
    seen: list[tuple[str, int, int]] = []

    def handle(subject: str, data: bytes, seq: int, ns: int) -> None:
        seen.append((subject, seq, ns))

    return StreamFollower(NC, NC.jetstream(), "S", ("fw.hb.>",), handle, start_seq=1), seen


async def test_the_follower_hands_over_messages_in_order_until_caught_up() -> None:
    f, seen = follower()
    pulls = puller(f)
    await pulls.receive(message(10, 1, pending=1))
    assert not f.caught_up
    await pulls.receive(message(12, 2, pending=0))
    assert seen == [("fw.hb.a1", 10, NS), ("fw.hb.a1", 12, NS)]
    assert (f.last_seq, f.delivered, f.caught_up, f.restarts) == (12, 2, True, 0)


async def test_the_follower_restarts_after_the_last_message_on_a_consumer_sequence_gap() -> None:
    f, seen = follower()
    pulls = puller(f)
    await pulls.receive(message(10, 1, pending=5))
    await pulls.receive(message(14, 3, pending=3))  # consumer sequence 2 went missing
    await pulls.receive(message(15, 4, pending=2))  # nothing more is handed over
    assert [seq for _, seq, _ in seen] == [10]
    assert (f.restarts, f.last_seq, f.wants_more()) == (1, 10, False)


@pytest.mark.parametrize("wire", [DELETED, UNAVAILABLE])
async def test_the_follower_restarts_when_its_consumer_is_gone_or_jetstream_is_away(
    wire: str,
) -> None:
    f, _ = follower()
    await puller(f).receive(await status(wire))
    assert (f.restarts, f.wants_more(), f.caught_up) == (1, False, False)


async def test_the_follower_is_caught_up_when_a_request_ends_with_nothing_more() -> None:
    f, _ = follower()
    for wire in (NO_MESSAGES, TIMEOUT):
        s = classify(await status(wire))
        assert s is not None
        f.caught_up = False
        assert f.on_status(s) is True  # ask again at once
        assert f.caught_up and f.restarts == 0


async def test_the_follower_leaves_other_ends_to_its_supervision_loop() -> None:
    f, _ = follower()
    pulls = puller(f)
    pulls.credit = 3
    await pulls.receive(await status(LEADER))
    await pulls.receive(await status(HEARTBEAT))
    assert (pulls.credit, f.restarts, f.caught_up, f.wants_more()) == (0, 0, False, True)
