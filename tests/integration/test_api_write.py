"""The HTTP API's write routes (issue 17) against a running Fleetward (real nats-server and
Postgres, ``api_harness``): each operator action changes the views; a viewer's token cannot
write; every refusal is the CLI's one line with its 4xx; the task API away is a 503."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any

import httpx
import pytest

from fleetward.schemas import http
from fleetward.services.api import token
from fleetward.services.api.app import make_app
from fleetward.services.api.live import Live
from fleetward.services.api.write import People
from fleetward.services.auth.store import AuthStore
from fleetward.services.client import AgentClient, FleetClient, IntentRefused
from fleetward.services.client.respond import respond
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.metrics.health import HealthChecks
from fleetward.services.runtime.connect import Runtime
from tests.helpers import creds, wait_for
from tests.integration.api_harness import Api, running_api, token_of
from tests.integration.test_watchdog import escalation, register

LONG = 3600.0  # the agents' heartbeat interval here: none of them goes offline during a test


def _client(api: Api, bearer: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=api.base, headers={"authorization": f"Bearer {bearer}"}, timeout=30
    )


async def _post(web: httpx.AsyncClient, path: str, body: Any = None) -> dict[str, Any]:
    """POST ``body`` (JSON) to ``path``; the answer, which must be 200."""
    answer = await web.post(path, json=body)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def _shows(web: httpx.AsyncClient, path: str, **fields: Any) -> None:
    """Wait until GET ``path`` answers with ``fields`` as given (the projector caught up)."""

    async def check() -> bool:
        answer = await web.get(path)
        row = answer.json() if answer.status_code == 200 else {}
        return all(row.get(k) == v for k, v in fields.items())

    await wait_for(check, what=f"{path} to show {fields}")


async def test_every_write_route_changes_the_views(rt: Runtime) -> None:
    await publish_many(rt.js, [register("w-1", LONG), register("w-2", LONG),
                               escalation("esc-w", "critical", "w-1")])  # fmt: skip
    creds(rt, "user:ops")  # an admin of the test stream (tests/helpers.py TEST_ADMINS)
    agent = await AgentClient.connect(rt.nats_url, creds(rt, "w-1"))
    async with running_api(rt) as api, _client(api, token_of(api, "user:ops")) as web, agent:
        first = {"task_id": "t-1", "project": "p", "title": "one", "priority": "high"}
        created = await _post(web, "/api/v1/tasks", first)
        assert (created["event"], created["actor"]) == ("task.created", "user:ops")
        for task in ("t-2", "t-3"):
            await _post(web, "/api/v1/tasks", {"task_id": task, "project": "p", "title": task})
        await _shows(
            web, "/api/v1/tasks/t-1", status="inbox", priority="high", created_by="user:ops"
        )

        assigned = await _post(web, "/api/v1/tasks/t-1/assign", {"agent_id": "w-1"})
        assert assigned["event"] == "task.assigned"
        await _shows(web, "/api/v1/tasks/t-1", status="assigned", assignee="w-1")
        await agent.submit(await agent.claim("t-1"), content="done")
        await _shows(web, "/api/v1/tasks/t-1", status="review")
        reviewed = await _post(web, "/api/v1/tasks/t-1/review", {"verdict": "approve"})
        assert reviewed["event"] == "task.reviewed"
        await _shows(web, "/api/v1/tasks/t-1", status="done")

        await agent.claim("t-2")
        await _shows(web, "/api/v1/tasks/t-2", status="in_progress", assignee="w-1")
        assert (await _post(web, "/api/v1/tasks/t-2/revoke", {"reason": "r"}))["event"] == (
            "task.revoked"
        )
        await _shows(web, "/api/v1/tasks/t-2", status="inbox", assignee=None)
        await _post(web, "/api/v1/tasks/t-2/reassign", {"agent_id": "w-2"})
        await _shows(web, "/api/v1/tasks/t-2", status="assigned", assignee="w-2")
        cancelled = await web.post("/api/v1/tasks/t-3/cancel")  # no body at all
        assert cancelled.json()["event"] == "task.cancelled", cancelled.text
        await _shows(web, "/api/v1/tasks/t-3", status="cancelled")

        for action, event, status in (("pause", "agent.paused", "paused"),
                                      ("resume", "agent.resumed", "active"),
                                      ("retire", "agent.retired", "retired")):  # fmt: skip
            done = await _post(web, f"/api/v1/agents/w-2/{action}", {"reason": "test"})
            assert done["event"] == event
            await _shows(web, "/api/v1/agents/w-2", status=status, status_reason="test")

        acked = await _post(web, "/api/v1/escalations/esc-w/ack", {"note": "on it"})
        assert (acked["event"], acked["actor"]) == ("escalation.acknowledged", "user:ops")
        await _shows(web, "/api/v1/escalations?state=all&agent_id=w-1", next_offset=None)
        page = (await web.get("/api/v1/escalations?state=all&agent_id=w-1")).json()
        assert [(e["escalation_id"], e["agent_id"]) for e in page["items"]] == [("esc-w", "w-1")]
        await _post(web, "/api/v1/escalations/esc-w/resolve", {"note": "restarted"})

        async def resolved() -> bool:
            page = (await web.get("/api/v1/escalations?state=resolved")).json()
            return [e["escalation_id"] for e in page["items"]] == ["esc-w"]

        await wait_for(resolved, what="esc-w resolved")


BODIES: dict[str, Any] = {  # a body each write route takes
    "create_task": {"task_id": "v-1", "project": "p", "title": "t"},
    "assign_task": {"agent_id": "w-1"},
    "reassign_task": {"agent_id": "w-1"},
    "review_task": {"verdict": "reject"},
}


VIEWER = (
    "user:viewer's token is a viewer's: writes need an operator's "
    "(fleetward api token --person user:viewer --role operator)"
)


def _path(route: http.WriteRoute) -> str:
    return (
        route.path.replace("{task_id}", "v-1")
        .replace("{agent_id}", "w-1")
        .replace("{escalation_id}", "esc-v")
    )


async def _line(call: Awaitable[object]) -> str:
    """The CLI's one line for a refused client call (what ``fleetward`` prints)."""
    with pytest.raises(IntentRefused) as refused:
        await call
    return str(refused.value)


async def test_refusals_are_the_clis_lines_with_their_4xx(rt: Runtime) -> None:
    await publish_many(rt.js, [register("w-1", LONG), escalation("esc-v", "warning", "w-1")])
    store = AuthStore(rt.settings.auth_dir)
    for person in ("user:ops", "user:carol", "user:dave"):  # carol and dave hold no role
        creds(rt, person)
    store.revoke("user:dave")
    async with (
        running_api(rt) as api,
        _client(api, token_of(api, "user:ops")) as ops_web,
        await FleetClient.connect(rt.nats_url, creds(rt, "user:ops")) as ops,
        await FleetClient.connect(rt.nats_url, creds(rt, "user:carol")) as carol,
    ):
        await _shows(ops_web, "/api/v1/agents/w-1", status="active")  # the registry has it

        async def escalation_shown() -> bool:
            page = (await ops_web.get("/api/v1/escalations?state=all")).json()
            return any(e["escalation_id"] == "esc-v" for e in page["items"])

        await wait_for(escalation_shown, what="esc-v in the views")
        # a viewer's token writes nothing, on any write route
        async with _client(api, api.token) as viewer:
            for route in http.WRITE_ROUTES:
                answer = await viewer.post(_path(route), json=BODIES.get(route.name, {}))
                assert (answer.status_code, answer.json()["error"]) == (403, VIEWER), route.name
        async with httpx.AsyncClient(base_url=api.base) as nobody:
            anonymous = await nobody.post("/api/v1/tasks/v-1/cancel")
        assert anonymous.status_code == 401 and "sign in" in anonymous.json()["error"]

        async def refused(web: httpx.AsyncClient, path: str, body: Any, status: int) -> str:
            answer = await web.post(path, json=body)
            assert answer.status_code == status, answer.text
            error: str = answer.json()["error"]
            assert "\n" not in error
            return error

        # the person's own roles judge: carol holds none
        async with _client(api, token_of(api, "user:carol")) as carol_web:
            line = await _line(carol.create_task("v-9", project="p", title="t"))
            assert line == "'user:carol' does not hold the role 'operator' for task.created"
            assert await refused(carol_web, "/api/v1/tasks", BODIES["create_task"] | {
                "task_id": "v-9"}, 403) == line  # fmt: skip
        async with _client(api, token_of(api, "user:dave")) as dave_web:
            assert await refused(dave_web, "/api/v1/tasks/v-1/cancel", {}, 403) == (
                "user:dave's NATS credentials were revoked: writes are published as the person "
                "(fleetward people add dave)"
            )
        async with _client(api, token_of(api, "user:erin")) as erin_web:
            assert "user:erin's NATS credentials are missing" in await refused(
                erin_web, "/api/v1/tasks/v-1/cancel", {}, 403
            )

        # unknown task, agent, escalation: 404 with the CLI's line
        for path, body, call in [
            ("/api/v1/tasks/nope/cancel", {}, ops.cancel("nope")),
            ("/api/v1/agents/ghost/pause", {}, ops.pause_agent("ghost")),
            ("/api/v1/tasks/v-0/assign", {"agent_id": "w-1"}, ops.assign("v-0", "w-1")),
        ]:
            assert await refused(ops_web, path, body, 404) == await _line(call)
        assert await refused(ops_web, "/api/v1/escalations/nope/ack", {}, 404) == await _line(
            respond(ops.nc, "nope", who="user:ops", resolve=False)
        )
        assert "no task 'a.b'" in await refused(ops_web, "/api/v1/tasks/a.b/cancel", {}, 404)

        # state conflicts: 409 with the CLI's line
        await _post(ops_web, "/api/v1/tasks", BODIES["create_task"])
        duplicate = await refused(ops_web, "/api/v1/tasks", BODIES["create_task"], 409)
        assert duplicate == await _line(ops.create_task("v-1", project="p", title="t"))
        assert duplicate == "task v-1 already exists (inbox): task ids are unique"
        await _post(ops_web, "/api/v1/tasks/v-1/cancel", {"reason": "no longer needed"})
        assert (
            await refused(ops_web, "/api/v1/tasks/v-1/cancel", {}, 409) == "task v-1 is cancelled"
        )
        assert await refused(ops_web, "/api/v1/agents/w-1/resume", {}, 409) == await _line(
            ops.resume_agent("w-1")
        )
        await _post(ops_web, "/api/v1/escalations/esc-v/resolve")
        assert await refused(ops_web, "/api/v1/escalations/esc-v/ack", {}, 409) == (
            "escalation 'esc-v' is already resolved"
        )

        # bodies: checked before anything is read
        for body, why in [
            ({"agent_id": "w-1", "extra": 1}, "bad body: Object contains unknown field `extra`"),
            ({"agent_id": "no spaces"}, "bad body: Expected `str` matching regex"),
            ({}, "bad body: Object missing required field `agent_id`"),
        ]:
            assert (await refused(ops_web, "/api/v1/tasks/v-1/assign", body, 400)).startswith(why)
        for content, headers, status in [
            (b"not json", {"content-type": "application/json"}, 400),
            (b'{"reason": "x"}', {"content-type": "text/plain"}, 415),
            (
                b'{"reason": "' + b"x" * http.MAX_BODY + b'"}',
                {"content-type": "application/json"},
                413,
            ),
        ]:
            answer = await ops_web.post(
                "/api/v1/tasks/v-1/cancel", content=content, headers=headers
            )
            assert answer.status_code == status and answer.json()["error"], answer.text
        missing = await ops_web.post("/api/v1/nowhere", json={})
        assert (missing.status_code, missing.json()) == (404, {"error": "Not Found"})


async def test_the_task_api_away_is_a_503(rt: Runtime) -> None:
    """No task API answers fw.api.agents.get (nothing but this app runs): pausing an agent
    cannot read the registry, and says so in a 503, never a 500."""
    key = token.load_key(rt.settings.auth_dir, create=True)
    creds(rt, "user:ops")
    people = People(rt.nats_url, rt.settings.auth_dir)
    app = make_app(rt.pool, key, Live(rt.pool), HealthChecks(), people)
    bearer = token.issue(key, "user:ops", time.time(), role="operator")
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api",
            headers={"authorization": f"Bearer {bearer}"},
        ) as web:  # fmt: skip
            answer = await web.post("/api/v1/agents/w-1/pause", json={})
    finally:
        await people.aclose()
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"].startswith("cannot write now: nothing serves fw.api.agents.get")
