"""The task API (``fw.api.*``) on a real nats-server and Postgres: answers from the projections,
a reply with ``error`` to every malformed request, and one-line ``ApiError``s in the client
when nothing answers or the answer is an error."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import msgspec
import pytest
from jsonschema import Draft202012Validator
from nats.errors import NoRespondersError

from fleetward.schemas import contract
from fleetward.schemas.api import AGENTS_GET, TASKS_CLAIMABLE, AgentReply, AgentRequest, Endpoint
from fleetward.services.api.tasks import QUEUE_GROUP, responder, serve_task_api
from fleetward.services.client import AgentClient, FleetClient
from fleetward.services.errors import ApiError
from fleetward.services.runtime.connect import Runtime
from tests.helpers import creds, project_all, wait_for

SCHEMAS = contract.render()


def _reply_errors(endpoint: Endpoint[Any, Any], data: bytes) -> list[str]:
    """What the reply's JSON Schema (as published) says about ``data``."""
    schema = json.loads(SCHEMAS[f"jsonschema/api/{endpoint.name}.reply.json"])
    return [e.message for e in Draft202012Validator(schema).iter_errors(json.loads(data))]


@asynccontextmanager
async def serving(rt: Runtime) -> AsyncIterator[FleetClient]:
    """The task API, started, and an operator client to ask it. (Not a fixture: a task group
    must be left by the task that entered it.)"""
    # the client outside the task group: cancelling the group must not cut the client's close
    async with (
        await FleetClient.connect(rt.nats_url, creds(rt, "user:ops")) as ops,
        anyio.create_task_group() as tg,
    ):
        await tg.start(serve_task_api, rt)
        await wait_for(partial(answers, ops), what="the task API to answer")  # under load too
        yield ops
        tg.cancel_scope.cancel()


async def answers(ops: FleetClient) -> bool:
    """Whether the task API answers ``ops`` yet."""
    with contextlib.suppress(NoRespondersError):
        await ops.nc.request(AGENTS_GET.subject, b'{"agent": "-"}', timeout=5)
        return True
    return False


async def test_agent_profile_comes_from_the_registry(rt: Runtime) -> None:
    agent = await AgentClient.connect(rt.nats_url, creds(rt, "agent-7"))
    try:
        await agent.register(name="Docs writer", owner="ana@example.com", team="docs",
                             roles=["writer"], heartbeat_interval_s=30)  # fmt: skip
    finally:
        await agent.close()
    await project_all(rt)
    async with serving(rt) as api:
        profile = await api.agent_profile("agent-7")
        unknown = await api.agent_profile("agent-404")
        reply = await api.nc.request(AGENTS_GET.subject, b'{"agent":"agent-7"}', timeout=5)
    assert profile == {
        "agent_id": "agent-7",
        "name": "Docs writer",
        "owner": "ana@example.com",
        "team": "docs",
        "status": "active",
        "status_reason": "",
        "roles": ["writer"],
        "max_concurrent_tasks": 1,
        "heartbeat_interval_s": 30.0,
        "version": "1",
        "risk_class": "medium",
        "purpose": "",
        "paused_by": None,  # not paused
        "registered_by": None,  # only the agent registered itself: it sets its own roles
    }
    assert unknown is None
    assert _reply_errors(AGENTS_GET, reply.data) == []


@pytest.mark.parametrize(
    ("endpoint", "request_bytes", "error"),
    [
        (AGENTS_GET, b"not json", "bad request: JSON is malformed"),
        (AGENTS_GET, b'{"agent": 7}', "bad request: Expected `str`, got `int` - at `$.agent`"),
        (AGENTS_GET, b'{"agent": "a b"}', "bad request: Expected `str` matching regex"),
        (TASKS_CLAIMABLE, b"[]", "bad request: Expected `object`, got `array`"),
        (TASKS_CLAIMABLE, b'{"agent": "a", "limit": 500}', "bad request: Expected `int` <= 200"),
    ],
    ids=["not-json", "wrong-type", "not-an-id", "not-an-object", "limit-too-large"],
)
async def test_a_malformed_request_gets_an_error_reply(
    rt: Runtime, endpoint: Endpoint[Any, Any], request_bytes: bytes, error: str
) -> None:
    async with serving(rt) as api:
        reply = await api.nc.request(endpoint.subject, request_bytes, timeout=5)
    answer = json.loads(reply.data)
    assert answer["error"].startswith(error), answer
    assert {k: v for k, v in answer.items() if k != "error"} == json.loads(
        msgspec.json.encode(endpoint.empty)
    )
    assert _reply_errors(endpoint, reply.data) == []


async def test_the_client_raises_the_error_of_a_reply(rt: Runtime) -> None:
    async with serving(rt) as api:
        with pytest.raises(ApiError, match=r"^fw\.api\.agents\.get: bad request: Expected `str`"):
            await api.agent_profile("agent 7")
        with pytest.raises(ApiError, match=r"^fw\.api\.tasks\.claimable: bad request: .*<= 200"):
            await api.claimable("agent-7", [], limit=500)
        assert await api.claimable("agent-7", ["writer"]) == []


async def test_an_unreadable_projection_is_an_error_reply(rt: Runtime) -> None:
    async def broken(request: AgentRequest) -> AgentReply:
        raise ConnectionError("Postgres is away")

    sub = await rt.nc.subscribe(
        AGENTS_GET.subject, queue=QUEUE_GROUP, cb=responder(AGENTS_GET, broken)
    )
    try:
        async with await FleetClient.connect(rt.nats_url, creds(rt, "user:ops")) as ops:
            with pytest.raises(ApiError) as raised:
                await ops.agent_profile("agent-7")
        assert str(raised.value) == "fw.api.agents.get: the agent registry is unavailable"
    finally:
        await sub.unsubscribe()


async def test_no_task_api_is_a_one_line_error(rt: Runtime) -> None:
    async with await FleetClient.connect(rt.nats_url, creds(rt, "user:ops")) as ops:
        with anyio.fail_after(2):  # no responders: told at once, not after the timeout
            with pytest.raises(ApiError, match=r"^nothing serves fw\.api\.agents\.get: start"):
                await ops.agent_profile("agent-7")
        silent = await rt.nc.subscribe(AGENTS_GET.subject)  # listens, never answers
        try:
            await rt.nc.flush()
            # ops's request must meet the listener on another connection: on a loaded CI
            # machine the server once still said "no responders" right after the flush
            problem = ""
            for _ in range(20):
                with pytest.raises(ApiError) as caught:
                    await ops.ask(AGENTS_GET, AgentRequest(agent="agent-7"), timeout=0.2)
                problem = str(caught.value)
                if not problem.startswith("nothing serves"):
                    break
                await anyio.sleep(0.05)
            assert re.match(r"^no answer on fw\.api\.agents\.get within 0\.2 s", problem), problem
        finally:
            await silent.unsubscribe()
