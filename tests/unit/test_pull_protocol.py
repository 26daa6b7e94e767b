"""The pull protocol without a server: reply subjects, and the statuses nats-server sends to a
pull request (as nats-py reads their wire bytes). The replies are real ``nats.aio.msg.Msg``
objects."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from fleetward.services.jetstream.protocol import Status, classify, parse_ack_reply, status_of

NC = Client()  # never connected: builds messages and parses headers only
NS = 1_700_000_000_123_456_789


def ack(seq: int, cseq: int, pending: int = 0) -> str:
    """A v1 ack subject, as nats-server v2.15 writes it by default (ADR-15)."""
    return f"$JS.ACK.S.c.1.{seq}.{cseq}.{NS}.{pending}"


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
        ("NATS/1.0 409 Batch Completed\r\nNats-Pending-Messages: 3", Status.ENDED),
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
