"""The HTTPS ingress (``/api/v1/ingress``) on a real nats-server and Postgres, with every
projection, the watchdog and the API running (``api_harness``): an agent that speaks only HTTP
registers, heartbeats, claims (and loses races with 409), reports, submits, reads its inbox and
shows in the read API like any agent; tokens and bodies that are not right are refused (4xx)."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest

from fleetward.services.api import token
from fleetward.services.api.acting import AgentPool
from fleetward.services.api.app import make_app
from fleetward.services.api.ingress import ingress_routes
from fleetward.services.api.live import Live
from fleetward.services.api.write import People
from fleetward.services.auth.server import push_account
from fleetward.services.auth.store import AuthStore
from fleetward.services.client import AgentClient, ClaimLost, FleetClient
from fleetward.services.metrics.health import HealthChecks
from fleetward.services.runtime.connect import Runtime
from tests.helpers import creds, wait_for
from tests.integration.api_harness import Api, running_api

INGRESS = "/api/v1/ingress"


def agent_token(rt: Runtime, agent: str) -> str:
    """``agent``'s ingress token, its credentials issued as ``fleetward api token --agent``."""
    creds(rt, agent)
    return token.issue_agent(token.load_key(rt.settings.auth_dir, create=True), agent, time.time())


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


async def read(http: httpx.AsyncClient, api: Api, path: str, **params: str) -> Any:
    answer = await http.get(f"{api.base}/api/v1/{path}", params=params, headers=bearer(api.token))
    assert answer.status_code == 200, answer.text
    return answer.json()


async def race_for(
    task: str, http: httpx.AsyncClient, agents: dict[str, dict[str, str]]
) -> tuple[Any, dict[str, str], dict[str, str]]:
    """Two HTTP agents claim ``task`` at once: one takes it, the other gets 409 with the reason.
    The winning claim, the winner's and the loser's headers."""
    answers: dict[str, httpx.Response] = {}

    async def claim(agent: str) -> None:
        path = f"{INGRESS}/tasks/{task}/claim"
        answers[agent] = await http.post(path, headers=agents[agent], json={})

    async with anyio.create_task_group() as tg:
        for agent in agents:
            tg.start_soon(claim, agent)
    assert sorted(a.status_code for a in answers.values()) == [200, 409], answers
    winner = next(agent for agent, a in answers.items() if a.status_code == 200)
    loser = next(agent for agent in agents if agent != winner)
    won = answers[winner].json()
    assert won["task"] == task and won["epoch"] == 1
    assert answers[loser].json()["error"].startswith(f"{task}: "), answers[loser].text
    return won, agents[winner], agents[loser]


async def nats_agent_first(
    rt: Runtime, http: httpx.AsyncClient, task: str, who: dict[str, str]
) -> None:
    """A NATS agent claims ``task`` first: the HTTP agent ``who`` gets 409; and the NATS agent
    cannot take t-1, which an HTTP agent holds."""
    nats_agent = await AgentClient.connect(rt.nats_url, creds(rt, "n-1"))
    try:
        await nats_agent.register(name="n", owner="o", team="t")
        await nats_agent.claim(task)
        late = await http.post(f"{INGRESS}/tasks/{task}/claim", headers=who, json={})
        assert late.status_code == 409, late.text
        assert "held by n-1" in late.json()["error"], late.text
        with pytest.raises(ClaimLost, match=r"t-1: .*held by h-"):
            await nats_agent.claim("t-1")
    finally:
        await nats_agent.close()


async def test_an_http_agent_takes_part_like_a_nats_agent(rt: Runtime, ops: FleetClient) -> None:
    for task in ("t-1", "t-2", "t-3"):
        await ops.create_task(task, project="p", title=f"task {task}")
    async with running_api(rt) as api, httpx.AsyncClient(base_url=api.base, timeout=30) as http:
        h1, h2 = bearer(agent_token(rt, "h-1")), bearer(agent_token(rt, "h-2"))
        for who in (h1, h2):
            registered = await http.post(f"{INGRESS}/register", headers=who, json={
                "name": "HTTP agent", "owner": "ana@example.com", "team": "web",
                "heartbeat_interval_s": 30, "max_concurrent_tasks": 2,
            })  # fmt: skip
            assert registered.status_code == 200, registered.text
            assert registered.json()["type"] == "agent.registered"
        beat = await http.post(f"{INGRESS}/heartbeat", headers=h1, json={"message": "hello"})
        assert beat.status_code == 200, beat.text
        assert beat.json()["subject"] == "fw.hb.h-1"

        won, winner, loser = await race_for("t-1", http, {"h-1": h1, "h-2": h2})
        winner_id = "h-1" if winner is h1 else "h-2"
        await nats_agent_first(rt, http, "t-2", loser)
        # the winner asks again (its answer lost): the claim it won, not a second one
        again = await http.post(f"{INGRESS}/tasks/t-1/claim", headers=winner, json={})
        assert (again.status_code, again.json()) == (200, won), again.text

        held = {"epoch": won["epoch"], "claim_id": won["claim_id"]}
        progressed = await http.post(f"{INGRESS}/tasks/t-1/progress", headers=winner,
                                     json={**held, "note": "half way", "percent": 50})  # fmt: skip
        assert progressed.status_code == 200, progressed.text
        # the loser cannot report on the winner's task, whatever epoch it names
        stolen = await http.post(f"{INGRESS}/tasks/t-1/progress", headers=loser, json=held)
        assert stolen.status_code == 409, stolen.text
        submitted = await http.post(f"{INGRESS}/tasks/t-1/submit", headers=winner,
                                    json={**held, "content": "# done"})  # fmt: skip
        assert submitted.status_code == 200, submitted.text
        assert submitted.json()["subject"] == f"fw.task.t-1.{winner_id}"

        # the read API shows the HTTP agents and the submitted task, as for any agent
        async def shown() -> bool:
            agents = await read(http, api, "agents", team="web")
            tasks = await read(http, api, "tasks", status="review")
            return {a["agent_id"] for a in agents["items"]} == {"h-1", "h-2"} and [
                (t["task_id"], t["assignee"]) for t in tasks["items"]
            ] == [("t-1", winner_id)]

        await wait_for(shown, 30, "the HTTP agents and their task in the read API")

        async def seen() -> bool:  # h-1's heartbeat, as the agents table shows it
            return (await read(http, api, "agents/h-1"))["last_seen"] is not None

        await wait_for(seen, 30, "h-1's heartbeat in the read API")

        # a review's verdict reaches the HTTP agent's inbox
        await ops.review("t-1", "reject", "more detail")

        async def feedback() -> list[Any]:
            box = await http.get(f"{INGRESS}/inbox", headers=winner, params={"wait": "1"})
            assert box.status_code == 200, box.text
            return [c for c in box.json()["commands"] if c["command"] == "review_feedback"]

        got = await wait_for(feedback, 30, "the review's feedback in the HTTP agent's inbox")
        assert got[0]["task"] == "t-1" and got[0]["reason"] == "more detail"


async def test_tokens_and_bodies_that_are_not_right_are_refused(rt: Runtime) -> None:
    async with running_api(rt) as api, httpx.AsyncClient(base_url=api.base, timeout=30) as http:
        a = bearer(agent_token(rt, "a-1"))
        agent_b = "b-1"
        creds(rt, agent_b)

        async def post(path: str, who: dict[str, str], body: Any = None, **kw: Any) -> Any:
            return await http.post(f"{INGRESS}/{path}", headers=who, json=body, **kw)

        # no token, a viewer's token: refused; an agent's token on a read route: refused
        assert (await post("heartbeat", {}, {})).status_code == 401
        assert (await post("heartbeat", bearer("fwv1.x.y"), {})).status_code == 401
        viewer = await post("heartbeat", bearer(api.token), {})
        assert viewer.status_code == 403 and "agent's token" in viewer.json()["error"]
        reading = await http.get(f"{api.base}/api/v1/agents", headers=a)
        assert reading.status_code == 403, reading.text

        # agent a cannot publish as agent b, nor about b, nor on b's subjects
        as_b = await post("events", a, {"type": "agent.heartbeat", "actor": agent_b,
                                        "agent": agent_b})  # fmt: skip
        assert as_b.status_code == 403 and "publishes as a-1" in as_b.json()["error"]
        about_b = await post("events", a, {"type": "agent.heartbeat", "agent": agent_b})
        assert about_b.status_code == 403, about_b.text
        assert about_b.json()["error"].startswith("actor_forbidden"), about_b.text
        pause_b = await post("events", a, {"type": "agent.paused", "agent": agent_b})
        assert pause_b.status_code == 403, pause_b.text
        command = await post("events", a, {"type": "command.issued", "agent": "a-1",
                                           "command": "resume"})  # fmt: skip
        assert command.status_code == 403, command.text

        # bad bodies: 400 with the reason
        not_json = await post("heartbeat", a, content=b"{not json")
        assert not_json.status_code == 400 and not_json.json()["error"].startswith("bad body")
        unknown = await post("heartbeat", a, {"agent": agent_b})
        assert unknown.status_code == 400 and "unknown field `agent`" in unknown.json()["error"]
        bounds = await post("tasks/t-9/claim", a, {"lease_s": -1})
        assert bounds.status_code == 400, bounds.text
        wrong = await post("events", a, {"type": "no.such", "agent": "a-1"})
        assert wrong.status_code == 400 and wrong.json()["error"].startswith("unknown_type")
        claimed = await post("events", a, {"type": "task.claimed", "task": "t", "agent": "a-1",
                                           "epoch": 1})  # fmt: skip
        assert claimed.status_code == 400 and "/tasks/TASK/claim" in claimed.json()["error"]
        inbox = await http.get(f"{INGRESS}/inbox", headers=a, params={"wait": "99"})
        assert inbox.status_code == 400, inbox.text

        # an event of its own goes through the events route, once per id (a retry is a copy)
        mine = {"type": "tool.called", "id": "0190c2d0-0000-7000-8000-000000000001",
                "agent": "a-1", "tool": "web.search", "duration_ms": 12, "ok": True}  # fmt: skip
        first, again = await post("events", a, mine), await post("events", a, mine)
        assert first.status_code == 200 and again.status_code == 200, again.text
        assert (first.json()["subject"], again.json()["duplicate"]) == ("fw.agent.a-1.a-1", True)

        # a claim of an unknown task is the SDK's refusal
        unknown_task = await post("tasks/t-404/claim", a, {})
        assert unknown_task.status_code == 409 and "no such task" in unknown_task.json()["error"]

        # revoked credentials: the ingress acts no more for the agent, connected or not
        store = AuthStore(rt.settings.auth_dir)
        gone, cut = bearer(agent_token(rt, "c-1")), bearer(agent_token(rt, "c-2"))
        assert (await post("heartbeat", cut, {})).status_code == 200  # c-2's connection is open
        store.revoke("c-1")
        store.revoke("c-2")
        await push_account(rt.nats_url, store)  # as fleetward agents revoke: cut off at once
        await refused_once_revoked(post, gone, cut)


async def refused_once_revoked(post: Any, gone: dict[str, str], cut: dict[str, str]) -> None:
    """The ingress refuses, as revoked, the agents c-1 (``gone``: never connected here) and
    c-2 (``cut``: its connection was open) once their credentials are revoked."""
    for name, who in (("c-1", gone), ("c-2", cut)):
        seen: list[str] = []

        async def refused(who: dict[str, str] = who, seen: list[str] = seen) -> bool:
            answer = await post("heartbeat", who, {})
            seen.append(f"{answer.status_code} {answer.text}")
            # 401: the token predates the revocation (app.Gate); 403: its credentials are
            # (acting.py); 503: cut off, not seen yet
            assert answer.status_code in (401, 403, 503), answer.text
            return answer.status_code in (401, 403) and "revoked" in answer.json()["error"]

        try:  # (30 s: a loaded machine took over 10 s once; the answers say what it saw)
            await wait_for(refused, 30, f"the revoked agent {name} refused")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its answers: {seen[:3]} ... {seen[-3:]}") from None


async def test_nats_away_is_503_and_a_large_body_413(rt: Runtime) -> None:
    """The ingress on an app whose NATS cannot be reached: one line and 503, never a 500."""
    key = token.load_key(rt.settings.auth_dir, create=True)
    # nothing listens on port 9
    pool = AgentPool("nats://127.0.0.1:9", rt.settings.auth_dir, sign_in_s=0.5)
    people = People("nats://127.0.0.1:9", rt.settings.auth_dir)
    app = make_app(rt.pool, key, Live(rt.pool), HealthChecks(), people, more=ingress_routes(pool))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        who = bearer(agent_token(rt, "a-1"))
        away = await http.post(f"{INGRESS}/heartbeat", headers=who, json={})
        assert away.status_code == 503, away.text
        assert away.json()["error"].startswith("cannot reach NATS"), away.text
        large = await http.post(f"{INGRESS}/events", headers=who, content=b" " * 600_000)
        assert large.status_code == 413, large.text
    await pool.aclose()


async def test_the_pool_keeps_at_most_its_size_closing_the_least_recently_used(
    rt: Runtime,
) -> None:
    pool = AgentPool(rt.nats_url, rt.settings.auth_dir, size=2)
    try:
        clients = {}
        for agent in ("p-1", "p-2", "p-1", "p-3"):  # p-2 is then the least recently used
            creds(rt, agent)
            async with pool.acting(agent) as acting:
                clients[agent] = acting.client
        assert len(pool) == 2
        assert clients["p-2"].nc.is_closed
        assert not clients["p-1"].nc.is_closed and not clients["p-3"].nc.is_closed
        async with pool.acting("p-2") as again:  # opened again at its next request
            assert again.client is not clients["p-2"] and again.client.nc.is_connected
    finally:
        await pool.aclose()
    assert clients["p-1"].nc.is_closed and clients["p-3"].nc.is_closed


async def test_a_claim_asked_again_through_another_ingress_answers_the_claim_it_won(
    rt: Runtime, ops: FleetClient
) -> None:
    """An ingress that did not take the claim (another process, or this one restarted) learns
    of it from a report that names only its epoch; the claim asked again there answers the
    claim the agent won, with its id and lease (it once answered ``claim_id: ""``)."""
    await ops.create_task("t-again", project="p", title="asked twice")
    key = token.load_key(rt.settings.auth_dir, create=True)
    who = bearer(agent_token(rt, "again-1"))
    body = {"name": "A", "owner": "o@example.com", "team": "web"}
    answers = []
    for _ in ("the ingress that claimed", "another ingress"):
        pool = AgentPool(rt.nats_url, rt.settings.auth_dir)
        app = make_app(rt.pool, key, Live(rt.pool), HealthChecks(), People(rt.nats_url,
                       rt.settings.auth_dir), more=ingress_routes(pool))  # fmt: skip
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://api"
            ) as http:
                assert (await http.post(f"{INGRESS}/register", headers=who, json=body)).is_success
                if answers:  # a report with its epoch alone, then the claim again
                    epoch = {"epoch": answers[0]["epoch"]}
                    report = await http.post(f"{INGRESS}/tasks/t-again/progress", headers=who,
                                             json=epoch)  # fmt: skip
                    assert report.status_code == 200, report.text
                claimed = await http.post(f"{INGRESS}/tasks/t-again/claim", headers=who, json={})
                assert claimed.status_code == 200, claimed.text
                answers.append(claimed.json())
        finally:
            await pool.aclose()
    first, again = answers
    assert first["claim_id"] and again == first, answers
