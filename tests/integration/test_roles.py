"""People's roles (issue #13 items 4-5, DESIGN 3.7) with authentication on: roles are granted
by events, a person's event is judged by the roles in force at its position in the stream, and
every reader (the board, the watchdog, the clients) judges alike, on a rebuild too."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleetward.projections.tasks import TaskBoard
from fleetward.schemas.events import BudgetSet, RoleGranted, TaskAssigned, TaskCreated
from fleetward.schemas.roles import ROLE_AUTHORITY
from fleetward.services.client import FleetClient, IntentRefused
from fleetward.services.client.taskstate import read_task
from fleetward.services.projector.rebuild import rebuild
from fleetward.services.runtime.connect import Runtime
from tests.helpers import agent, creds, envelope, person, project_all, task_api

ROOT = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "fleetward.services.cli")


async def person_client(rt: Runtime, name: str, *roles: str) -> FleetClient:
    """``user:<name>`` on its own connection, granted ``roles`` by the signing keys' holder."""
    if roles:
        async with await FleetClient.connect(rt.nats_url, creds(rt, ROLE_AUTHORITY)) as authority:
            await authority.ensure_roles(name, list(roles), "test")
    return await FleetClient.connect(rt.nats_url, creds(rt, f"user:{name}"))


async def dead_letters(rt: Runtime, reason: str) -> list[tuple[str, str]]:
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT projection, detail FROM fleet.dead_letters WHERE reason = $1 ORDER BY seq",
            reason,
        )
    return [(r["projection"], r["detail"]) for r in rows]


async def test_a_viewer_cannot_assign_review_pause_or_set_a_budget(rt: Runtime) -> None:
    """Holds: the client refuses a viewer at once (one line naming the role); what a viewer
    publishes anyway (its credentials may publish on its own subjects) is dead-lettered
    role_missing and changes nothing, for the board and for a client reading the task."""
    ops = await person_client(rt, "opsy", "operator")
    vic = await person_client(rt, "vic", "viewer")
    worker = await agent(rt, "worker-1")
    await project_all(rt)
    try:
        await ops.create_task("t-v", project="p", title="t")
        await ops.create_task("t-r", project="p", title="t")
        await worker.submit(await worker.claim("t-r"), content="done")
        async with task_api(rt):
            for attempt in (
                vic.create_task("t-w", project="p", title="t"),
                vic.assign("t-v", "worker-1"),
                vic.pause_agent("worker-1", "no"),
                vic.review("t-r", "approve"),
            ):
                with pytest.raises(IntentRefused, match="does not hold the role"):
                    await attempt
        # published anyway, past the client: refused by every reader
        await vic.send(TaskAssigned(**envelope("user:vic"), task="t-v", agent="worker-1"))
        await vic.send(BudgetSet(**envelope("user:vic"), budget="b-1", scope="team",
                                 scope_id="t", window="day", limit_usd=1))  # fmt: skip
        await project_all(rt)
        refused = await dead_letters(rt, "role_missing")
        assert {p for p, _ in refused} >= {"tasks", "budgets"}, refused
        assert all("'user:vic' does not hold the role" in d for _, d in refused)
        async with rt.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT status, assignee FROM fleet.tasks WHERE task_id='t-v'"
            )
        assert (row["status"], row["assignee"]) == ("inbox", None)
        state = await read_task(rt.nc, rt.js, "t-v")
        assert state.row is not None and state.row["status"] == "inbox"
    finally:
        for c in (ops, vic, worker):
            await c.close()


async def test_an_operator_can_pause_but_not_grant_roles(rt: Runtime) -> None:
    """Holds: an operator pauses an agent; granting a role is refused at once, and a grant it
    publishes anyway is dead-lettered and grants nothing (it still cannot set a budget)."""
    opal = await person_client(rt, "opal", "operator")
    worker = await agent(rt, "worker-2")
    await project_all(rt)
    try:
        async with task_api(rt):
            await opal.pause_agent("worker-2", "a break")
        with pytest.raises(IntentRefused, match="'admin'"):
            await opal.grant_role("opal", "budget-admin")
        await opal.send(RoleGranted(**envelope("user:opal"), person="opal", role="admin"))
        await project_all(rt)
        async with rt.pool.acquire() as conn:
            status = await conn.fetchval(
                "SELECT status FROM fleet.agents WHERE agent_id='worker-2'"
            )
        assert status == "paused"
        assert any("role.granted" in d for _, d in await dead_letters(rt, "role_missing"))
        with pytest.raises(IntentRefused, match="does not hold the role 'admin'"):
            await opal.grant_role("someone", "viewer")  # the forged grant gave it nothing
    finally:
        await opal.close()
        await worker.close()


async def test_a_role_granted_later_does_not_make_an_earlier_event_valid_on_rebuild(
    rt: Runtime,
) -> None:
    """Holds: a task created by a person without the role is refused; granting the role after
    it does not bring the task back, live or on a rebuild of the board; a task created after the
    grant is applied."""
    late = await person_client(rt, "late")
    try:
        await late.send(TaskCreated(**envelope("user:late"), task="too-early", project="p",
                                    title="t"))  # fmt: skip
        async with await FleetClient.connect(rt.nats_url, creds(rt, ROLE_AUTHORITY)) as authority:
            await authority.grant_role("late", "operator")
        await late.create_task("in-time", project="p", title="t")
        await project_all(rt)

        async def tasks() -> list[str]:
            async with rt.pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT task_id AS task FROM fleet.tasks "
                    "WHERE task_id IN ('too-early', 'in-time')"
                )
            return sorted(r["task"] for r in rows)

        assert await tasks() == ["in-time"]
        assert (await read_task(rt.nc, rt.js, "too-early")).row is None
        await rebuild(rt, TaskBoard())
        assert await tasks() == ["in-time"]
    finally:
        await late.close()


async def test_roles_from_the_cli(rt: Runtime, env: dict[str, str]) -> None:
    """Holds: an admin grants and takes roles with ``fleetward people grant|take``; ``people
    roles`` shows them; a viewer's ``tasks create`` exits 2 with one line naming the role."""
    admin = person(env, "boss")
    async with await FleetClient.connect(rt.nats_url, creds(rt, ROLE_AUTHORITY)) as authority:
        await authority.grant_role("boss", "admin")

    async def cli(who: Path, *args: str) -> Any:
        with anyio.fail_after(60):
            return await anyio.run_process(
                [*CLI, "--creds", str(who), *args], cwd=ROOT, env=env, check=False
            )

    done = await cli(admin, "people", "grant", "vera", "viewer")
    assert done.returncode == 0, done.stderr.decode()
    done = await cli(admin, "people", "roles", "vera")
    assert re.search(r"user:vera\s+│\s+viewer\s", done.stdout.decode()), done.stdout.decode()
    done = await cli(admin, "people", "roles", "vera", "--json")
    assert json.loads(done.stdout)["rows"] == [{"person": "vera", "roles": ["viewer"]}]
    done = await cli(person(env, "vera"), "tasks", "create", "v-1", "--project", "p",
                     "--title", "t")  # fmt: skip
    err = done.stderr.decode()
    assert done.returncode == 2 and err.count("\n") == 1, err
    assert "does not hold the role 'operator'" in err
    done = await cli(admin, "people", "take", "vera", "viewer")
    assert done.returncode == 0, done.stderr.decode()
    done = await cli(admin, "people", "roles", "vera", "--json")
    assert json.loads(done.stdout)["rows"] == [{"person": "vera", "roles": []}]
