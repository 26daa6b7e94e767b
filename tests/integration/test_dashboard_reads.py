"""The dashboard's reads that the first increment did not have, against real Postgres and NATS:
an agent's timeline (``GET /api/v1/agents/{agent_id}/events``, services/api/reads.py), the
overview the live poller keeps for ``GET /api/v1/overview`` (services/api/live.py), and the live
stream's ``ready``: the point from which a reading of the routes misses no change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import anyio
import httpx
import msgspec

from fleetward.schemas import http
from fleetward.schemas.events import (
    AgentPaused,
    EscalationRaised,
    EscalationResolved,
    RunFinished,
    RunStarted,
    TaskClaimed,
    TaskCreated,
)
from fleetward.services.api import reads
from fleetward.services.api.live import Live
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import envelope, now, project_all
from tests.integration.api_harness import running_api
from tests.integration.test_ingress import bearer
from tests.integration.test_watchdog import register


async def test_an_agents_timeline_gathers_its_events_from_the_views_latest_first(
    rt: Runtime,
) -> None:
    start = now()
    await publish_many(
        rt.js,
        [
            register("tl-1"),
            register("tl-other"),
            TaskCreated(**envelope("user:ops"), task="t-1", project="p", title="Write docs"),
            TaskClaimed(**envelope("tl-1"), task="t-1", agent="tl-1", epoch=1),
            RunStarted(**envelope("tl-1"), agent="tl-1", run="r-1", task="t-1"),
            RunFinished(
                **envelope("tl-1"),
                agent="tl-1",
                run="r-1",
                task="t-1",
                outcome="succeeded",
                latency_ms=12,
            ),
            EscalationRaised(
                **envelope("svc:watchdog"),
                escalation="e-1",
                tier="warning",
                reason="task_stalled",
                agent="tl-1",
                task="t-1",
                message="quiet",
            ),
            AgentPaused(**envelope("user:ops"), agent="tl-1", reason="look at it"),
            RunStarted(**envelope("tl-other"), agent="tl-other", run="r-9"),  # not tl-1's
        ],
    )
    await project_all(rt)
    async with rt.pool.acquire() as conn:
        page = await reads.agent_events(conn, "tl-1", http.AgentEventsQuery())
        two = await reads.agent_events(conn, "tl-1", http.AgentEventsQuery(limit=2))
        unknown = await reads.agent_events(conn, "tl-404", http.AgentEventsQuery())
    assert page is not None and two is not None
    kinds = [(e.kind, e.what, e.task_id) for e in page.items]
    assert set(kinds) == {
        ("version", "version 1", None),
        ("claimed", "Write docs", "t-1"),
        ("run_started", "run r-1", "t-1"),
        ("run_finished", "run r-1 succeeded", "t-1"),
        ("escalation", "task_stalled (warning)", "t-1"),
        ("command", "pause", None),  # the registry's command to the agent, from user:ops's pause
    }, kinds
    times = [e.at for e in page.items]
    assert times == sorted(times, reverse=True)
    assert all(start - timedelta(minutes=1) < t for t in times)
    assert two.items == page.items[:2]
    assert unknown is None


async def test_the_overview_is_read_each_round_while_asked_and_served_from_the_last_reading(
    rt: Runtime,
) -> None:
    live = Live(rt.pool)
    assert live.overview() is None  # nothing read yet: the route reads it (and asks for it)
    async with rt.pool.acquire() as conn:
        assert await live.round(conn) == []  # the first round is the baseline
    first = live.overview()
    assert first is not None and first.agents_by_status == {}
    await publish_many(rt.js, [register("ov-1")])
    await project_all(rt)
    assert live.overview() is first  # the last reading, until the poller reads again
    async with rt.pool.acquire() as conn:
        events = await live.round(conn)
    now = live.overview()
    assert now is not None and now.agents_by_status == {"active": 1}
    assert ("overview", msgspec.json.encode(now)) in events


async def _sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """(event name, data) of a server-sent event stream's lines; comments and retry skipped."""
    name, data = "", ""
    async for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif not line and name:
            yield name, data
            name, data = "", ""


async def test_the_live_stream_says_ready_once_subscribed_and_sends_every_change_after_it(
    rt: Runtime,
) -> None:
    """A page reads the routes on ``ready`` (services/api/static/dashboard.js ``follow``): an
    escalation raised and resolved after it reaches the stream in both states, in order. (The
    dashboard once read the routes before it subscribed, and kept showing an escalation whose
    resolution fell between the two.)"""
    async with running_api(rt) as api, httpx.AsyncClient(base_url=api.base, timeout=30) as web:
        with anyio.fail_after(60):
            async with web.stream("GET", http.EVENTS_PATH, headers=bearer(api.token)) as stream:
                assert stream.status_code == 200
                events = _sse(stream.aiter_lines())
                assert await anext(events) == ("ready", "{}")  # the first event, before any
                raised = EscalationRaised(
                    **envelope("svc:watchdog"), escalation="e-live", tier="warning",
                    reason="task_stalled", message="quiet",
                )  # fmt: skip
                await publish_many(rt.js, [raised])
                states: list[str] = []
                async for name, data in events:
                    row = msgspec.json.decode(data)
                    if name == "escalation" and row["escalation_id"] == "e-live":
                        states.append(row["state"])
                        if states == ["open"]:
                            await publish_many(
                                rt.js,
                                [
                                    EscalationResolved(
                                        **envelope("svc:watchdog"), escalation="e-live"
                                    )
                                ],
                            )
                        else:
                            break
    assert states == ["open", "resolved"]
