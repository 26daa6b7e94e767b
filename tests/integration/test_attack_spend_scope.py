"""Attacks on the guard's pauses (issue 14, promise 3: a hard limit pauses every agent in
scope within a second; a raise or a new window resumes exactly the agents the guard paused)
by ordering: a budget-admin moves an exhausted budget to another scope. Real nats-server,
Postgres and guard."""

from __future__ import annotations

import anyio

from fleetward.schemas.events import AgentPaused, AgentResumed
from fleetward.services.guard.service import Guard
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import project_all
from tests.integration.test_guard import (
    budget,
    by_guard,
    guarding,
    paused_agents,
    register,
    settled,
    spend,
)


async def test_an_exhausted_budget_moved_to_another_exhausted_team_pauses_it_and_frees_the_old(
    rt: Runtime,
) -> None:
    """`cap` limits team `x` ($1 a day); x1 spends $2: x1 is paused. The budget-admin then points
    `cap` at team `y` (same id, same $1 limit), which has spent $2 today. fleet.budgets says
    `cap` (team y) is exhausted; y1 should be paused and x1 (no budget covers it any more)
    resumed. The guard does neither: its `budget.exhausted` of the day is 'in force', so the
    new scope is never judged."""
    await publish_many(rt.js, [
        register("x1", "x"), register("y1", "y"), budget("cap", "team", "x", 1.0),
        spend("y1", 2.0),
    ])  # fmt: skip
    with anyio.fail_after(60):
        await project_all(rt)
    guard = Guard(rt, name="guard_1")
    async with guarding(guard):
        await publish_many(rt.js, [spend("x1", 2.0)])
        await anyio.sleep(1.0)
        await settled(guard)
        assert await paused_agents(rt) == {"x1": 1}

        await publish_many(rt.js, [budget("cap", "team", "y", 1.0)])  # moved to team y
        await anyio.sleep(1.5)  # "within a second"
        await settled(guard)
        with anyio.fail_after(60):
            await project_all(rt)
        async with rt.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT scope_id, spent_usd, state FROM fleet.budgets WHERE budget_id = 'cap'"
            )
            status = {
                r["agent_id"]: (r["status"], r["paused_by"])
                for r in await conn.fetch("SELECT agent_id, status, paused_by FROM fleet.agents")
            }
        assert (row["scope_id"], row["state"]) == ("y", "exhausted")
        resumed = [e.agent for e in await by_guard(rt, AgentResumed)]
        paused = await paused_agents(rt)
        detail = f"fleet.agents: {status}; guard pauses {paused}; guard resumes {resumed}"
        assert "y1" in paused, detail  # y1 (team y, $2 of $1 spent) was never paused
        assert resumed == ["x1"], detail  # x1 stays paused by a budget no longer its own
    assert [e for e in await by_guard(rt, AgentPaused)]
