"""Spend you can attribute (issue 14, part 2), against the real projector, nats-server and
Postgres: the views per model and day, per task, per project and day, and per run hold exactly
the hand-computed decimal sums, live (one event per batch) and after a rebuild."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anyio

from fleetward.projections import BY_NAME
from fleetward.schemas.events import (
    AgentRegistered,
    Event,
    RunFinished,
    RunStarted,
    SpendRecorded,
    TaskCreated,
    ToolCalled,
)
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.projector.rebuild import rebuild
from fleetward.services.projector.runner import ProjectionRunner
from fleetward.services.runtime.connect import Runtime
from tests.helpers import envelope, project_all, run_to_end, snapshot

USER = "user:ops"
THIRD = "0.3333333333333333"  # repr(1 / 3): what an agent reporting 1/3 USD sends


def register(agent: str, team: str) -> AgentRegistered:
    return AgentRegistered(**envelope(agent), agent=agent, name=agent, owner="o", team=team)


def task(task_id: str, project: str) -> TaskCreated:
    return TaskCreated(**envelope(USER), task=task_id, project=project, title=task_id)


def spend(agent: str, cost: float, model: str = "m1", **fields: Any) -> SpendRecorded:
    return SpendRecorded(**envelope(agent), agent=agent, model=model, cost_usd=cost, **fields)


def tool(agent: str, cost: float, ok: bool = True, **fields: Any) -> ToolCalled:
    return ToolCalled(**envelope(agent), agent=agent, tool="search", duration_ms=1.0, ok=ok,
                      cost_usd=cost, **fields)  # fmt: skip


def started(agent: str, run: str, task_id: str | None = None) -> RunStarted:
    return RunStarted(**envelope(agent), agent=agent, run=run, task=task_id)


def finished(agent: str, run: str) -> RunFinished:
    return RunFinished(**envelope(agent), agent=agent, run=run, outcome="succeeded",
                       latency_ms=12.0)  # fmt: skip


def fleet() -> list[Event]:
    """Two agents on three tasks of two projects, in runs, plus spend on an unknown task and
    spend on no task at all."""
    return [
        register("a1", "docs"), register("a2", "ops"),
        task("t1", "alpha"), task("t2", "alpha"), task("t3", "beta"),
        started("a1", "r1", "t1"),
        spend("a1", 0.1, tokens_in=100, tokens_out=20, run="r1", task="t1"),
        tool("a1", 0.003, run="r1", task="t1"),
        spend("a1", 0.2, model="m2", tokens_in=5, run="r1", task="t1"),
        finished("a1", "r1"),
        started("a2", "r1", "t3"),  # the same run id, another agent's: another run
        spend("a2", 1 / 3, tokens_out=3, run="r1", task="t3"),
        tool("a2", 0.002, ok=False, run="r1", task="t3"),
        spend("a1", 0.05, task="t2"),  # no run
        spend("a2", 0.7, run="r2", task="ghost"),  # a task the board does not know
        spend("a1", 0.01),  # neither task nor run
    ]  # fmt: skip


async def views(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    today = datetime.now(UTC).date()
    async with rt.pool.acquire() as conn:
        return {
            "models": [tuple(r.values()) for r in await conn.fetch(
                "SELECT model, day = $1, cost_usd, tokens_in, tokens_out, spend_events"
                " FROM fleet.spend_model_daily ORDER BY model", today)],
            "tasks": [tuple(r.values()) for r in await conn.fetch(
                "SELECT task_id, project, cost_usd, model_cost_usd, tool_cost_usd, tokens_in,"
                " tokens_out, runs, tool_calls, tool_errors, spend_events, last_day = $1"
                " FROM fleet.spend_tasks ORDER BY task_id", today)],
            "projects": [tuple(r.values()) for r in await conn.fetch(
                "SELECT project, day = $1, cost_usd, tool_cost_usd, tasks"
                " FROM fleet.spend_project_daily ORDER BY project NULLS LAST", today)],
            "runs": [tuple(r.values()) for r in await conn.fetch(
                "SELECT agent_id, run_id, task_id, started_at IS NOT NULL, outcome, cost_usd,"
                " tokens_in, tokens_out, tool_calls, tool_errors, spend_events"
                " FROM fleet.spend_runs ORDER BY agent_id, run_id")],
        }  # fmt: skip


def d(text: str) -> Decimal:
    return Decimal(text)


async def test_spend_per_model_task_project_and_run_is_exact_live_and_rebuilt(
    rt: Runtime,
) -> None:
    await publish_many(rt.js, fleet())
    spend_projection = BY_NAME["spend"]
    with anyio.fail_after(60):
        await project_all(rt, tuple(p for p in BY_NAME.values() if p is not spend_projection))
        await run_to_end(ProjectionRunner(rt, spend_projection, batch_size=1))  # as at the head

    got = await views(rt)
    assert got["models"] == [
        ("m1", True, d("0.1") + d(THIRD) + d("0.05") + d("0.7") + d("0.01"), 100, 23, 5),
        ("m2", True, d("0.2"), 5, 0, 1),
    ]
    assert got["tasks"] == [
        ("ghost", None, d("0.7"), d("0.7"), 0, 0, 0, 0, 0, 0, 1, True),
        ("t1", "alpha", d("0.303"), d("0.3"), d("0.003"), 105, 20, 1, 1, 0, 2, True),
        ("t2", "alpha", d("0.05"), d("0.05"), 0, 0, 0, 0, 0, 0, 1, True),
        ("t3", "beta", d(THIRD) + d("0.002"), d(THIRD), d("0.002"), 0, 3, 1, 1, 1, 1, True),
    ]
    assert got["projects"] == [
        ("alpha", True, d("0.353"), d("0.003"), 2),
        ("beta", True, d("0.3353333333333333"), d("0.002"), 1),
        (None, True, d("0.7"), 0, 1),
    ]
    assert got["runs"] == [
        ("a1", "r1", "t1", True, "succeeded", d("0.303"), 105, 20, 1, 0, 2),
        ("a2", "r1", "t3", True, None, d(THIRD) + d("0.002"), 0, 3, 1, 1, 1),
        ("a2", "r2", "ghost", False, None, d("0.7"), 0, 0, 0, 0, 1),
    ]
    async with rt.pool.acquire() as conn:  # every dollar is attributed to an agent as before
        total = await conn.fetchval("SELECT sum(cost_usd) FROM fleet.spend_daily")
    assert total == sum(map(d, ("0.1", "0.003", "0.2", THIRD, "0.002", "0.05", "0.7", "0.01")))

    live = await snapshot(rt, (spend_projection,))
    await rebuild(rt, spend_projection)
    assert await snapshot(rt, (spend_projection,)) == live
    assert await views(rt) == got
