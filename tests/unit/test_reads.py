"""Reads that ride out an election (services/jetstream/reads.py), without a server: which
failures are asked again, what a read that never gets an answer raises, and the nats-py
internal that ``answering_within`` relies on. The election itself: test_cluster_reads.py."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError

from fleetward.services.errors import FleetwardError
from fleetward.services.jetstream.publish import TRANSIENT
from fleetward.services.jetstream.reads import (
    READS,
    StreamUnavailable,
    answering_within,
    ride_out,
    transient,
)


@pytest.mark.parametrize(
    "exc",
    [
        NatsTimeout(),  # an API request nobody answered (no stream leader)
        NoRespondersError(),  # a direct get nobody serves
        ServiceUnavailableError(),  # nats-py's JetStream context's word for no responders
        APIError(code=503, err_code=10008, description="JetStream system temporarily unavailable"),
        ConnectionError(),  # the connection moving to another node
    ],
)
def test_no_answer_and_503s_are_asked_again(exc: Exception) -> None:
    assert transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        NotFoundError(code=404, err_code=10014),  # an answer: no such consumer
        BadRequestError(code=400),
        APIError(code=500),
        FleetwardError("FW_EVENTS: the server refused a read"),
        StreamUnavailable("an inner read rode out already"),
        ValueError("a bug"),
    ],
)
def test_answers_and_bugs_are_not_asked_again(exc: Exception) -> None:
    assert not transient(exc)


async def test_a_read_is_asked_again_until_it_is_answered() -> None:
    failures: list[Exception] = [NatsTimeout(), NoRespondersError(), ServiceUnavailableError()]
    waits: list[float] = []

    async def read(try_s: float) -> str:
        waits.append(try_s)
        if failures:
            raise failures.pop(0)
        return "answer"

    with READS.retried.recording() as retried:
        assert await ride_out(read, "reading X") == "answer"
    assert len(waits) == 4 and all(0 < w <= 2.0 for w in waits)
    assert [what for what, _ in retried] == ["reading X"] * 3


async def test_an_answer_that_is_an_error_is_raised_at_once() -> None:
    tries = 0

    async def read(try_s: float) -> None:
        nonlocal tries
        tries += 1
        raise NotFoundError(code=404, err_code=10014, description="consumer not found")

    with pytest.raises(NotFoundError):
        await ride_out(read, "reading X")
    assert tries == 1


@pytest.mark.parametrize(
    ("failure", "cause"),
    [
        (NatsTimeout(), "TimeoutError: nats: timeout"),
        # a 503 status's description can hold the headers after it (seen on a direct get)
        (ServiceUnavailableError(code=503, description="\nNats-Subject: x"), "code=503"),
    ],
)
async def test_a_read_never_answered_fails_in_one_line_and_is_still_a_timeout(
    failure: Exception, cause: str
) -> None:
    async def read(try_s: float) -> None:
        raise failure

    with pytest.raises(StreamUnavailable) as caught:
        await ride_out(read, "reading FW_EVENTS", ride_out_s=0.2)
    message = str(caught.value)
    assert message.startswith("reading FW_EVENTS: NATS could not answer within 0.2 s (")
    assert cause in message and "\n" not in message
    # the CLI prints a FleetwardError as one line; callers that caught the timeout still do
    assert isinstance(caught.value, FleetwardError)
    assert isinstance(caught.value, NatsTimeout | asyncio.TimeoutError)
    assert isinstance(caught.value, TRANSIENT)
    assert caught.value.__cause__ is failure


def test_nats_py_still_keeps_the_api_requests_wait_in_the_context() -> None:
    """``answering_within`` sets ``JetStreamContext._timeout`` on a copy (nats-py 2.16.0)."""
    js = JetStreamContext(Client(), timeout=10)
    quick = answering_within(js, 0.5)
    assert (js._timeout, quick._timeout) == (10, 0.5)
    assert quick._nc is js._nc and quick._prefix == js._prefix
    for method in (JetStreamContext.stream_info, JetStreamContext.get_msg):
        assert "_timeout" in method.__code__.co_names, method.__name__
    assert "get_msg" in JetStreamContext.get_last_msg.__code__.co_names
