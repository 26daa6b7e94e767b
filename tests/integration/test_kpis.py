"""KPIs (issue 16, parts 1 and 2), against the real projector, nats-server and Postgres: from a
known history, the views per agent, team and agent version hold the hand-computed values
(runs, success rate, average and 95th percentile latency, cost per run and per completed task,
approval and rework rates, tool error rate), each deliverable names the version that produced
it, and a rebuild gives the same."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anyio

from fleetward.projections import BY_NAME
from fleetward.schemas.events import (
    AgentRegistered,
    AgentVersionChanged,
    Deliverable,
    Event,
    RunFinished,
    RunOutcome,
    SpendRecorded,
    TaskClaimed,
    TaskCreated,
    TaskReviewed,
    TaskSubmitted,
    ToolCalled,
)
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.projector.rebuild import rebuild
from fleetward.services.runtime.connect import Runtime
from tests.helpers import TEST_ADMINS, envelope, project_all, snapshot
from tests.integration.test_kpi_totals import totals

REVIEWER = f"user:{TEST_ADMINS[0]}"
KPIS = ("runs", "success_rate", "avg_latency_ms", "p95_latency_ms", "cost_usd",
        "cost_per_run_usd", "tasks_done", "cost_per_task_usd", "reviewed", "approval_rate",
        "rework_rate", "tool_calls", "tool_error_rate")  # fmt: skip


def finished(agent: str, run: str, latency_ms: float, outcome: RunOutcome = "succeeded") -> Event:
    return RunFinished(**envelope(agent), agent=agent, run=run, outcome=outcome,
                       latency_ms=latency_ms)  # fmt: skip


def submitted(agent: str, task: str) -> Event:
    return TaskSubmitted(**envelope(agent), task=task, agent=agent, epoch=1,
                         deliverable=Deliverable(kind="link", sha256="0" * 64))  # fmt: skip


def review(agent: str, task: str, verdict: Any) -> Event:
    return TaskReviewed(**envelope(REVIEWER), task=task, agent=agent, verdict=verdict)


def history() -> list[Event]:
    """a1 (team docs) runs twice under version 1 (100 ms ok, 300 ms failed), then 20 times
    under version 2 (100, 200, ... 2000 ms; the last failed), spends 0.5 USD on a model and
    0.1 USD on two tool calls (one an error), and has task t1 rejected once, then approved. a2
    (team ops) runs once (50 ms)."""
    v2 = AgentVersionChanged(**envelope("a1"), agent="a1", version="2", prompt="p2",
                             model="m-large", tools=("search", "shell"))  # fmt: skip
    return [
        AgentRegistered(**envelope("a1"), agent="a1", name="a1", owner="o", team="docs"),
        AgentRegistered(**envelope("a2"), agent="a2", name="a2", owner="o", team="ops"),
        finished("a1", "r1", 100.0),
        finished("a1", "r2", 300.0, "failed"),
        v2,
        *(finished("a1", f"s{k}", 100.0 * k, "failed" if k == 20 else "succeeded")
          for k in range(1, 21)),
        SpendRecorded(**envelope("a1"), agent="a1", model="m-large", cost_usd=0.5, task="t1"),
        ToolCalled(**envelope("a1"), agent="a1", tool="search", duration_ms=40.0, ok=True,
                   cost_usd=0.1, run="s1"),
        ToolCalled(**envelope("a1"), agent="a1", tool="shell", duration_ms=2.5, ok=False,
                   run="s1"),
        TaskCreated(**envelope(REVIEWER), task="t1", project="p", title="t1"),
        TaskClaimed(**envelope("a1"), task="t1", agent="a1", epoch=1),
        submitted("a1", "t1"),
        review("a1", "t1", "reject"),
        submitted("a1", "t1"),
        review("a1", "t1", "approve"),
        finished("a2", "r1", 50.0),
    ]  # fmt: skip


async def views(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    cols = ", ".join(KPIS)
    async with rt.pool.acquire() as conn:
        return {
            "agents": [tuple(r.values()) for r in await conn.fetch(
                f"SELECT agent_id, team, version, days, {cols}, busy_s, utilization"
                " FROM fleet.kpi_agents ORDER BY agent_id, days")],
            "teams": [tuple(r.values()) for r in await conn.fetch(
                f"SELECT team, days, agents, {cols} FROM fleet.kpi_teams ORDER BY team, days")],
            "versions": [tuple(r.values()) for r in await conn.fetch(
                f"SELECT agent_id, version, prompt, model, tools, current, days, {cols}"
                " FROM fleet.kpi_versions ORDER BY agent_id, version, days")],
            "deliverables": [tuple(r.values()) for r in await conn.fetch(
                "SELECT task_id, version, agent_id, agent_version, prompt, model, tools, team,"
                " verdict, reviewed_by FROM fleet.deliverable_versions ORDER BY 1, 2")],
            "runs": [tuple(r.values()) for r in await conn.fetch(
                "SELECT run_id, latency_ms, tool_ms FROM fleet.spend_runs"
                " WHERE agent_id = 'a1' AND run_id IN ('r2', 's1') ORDER BY run_id")],
        }  # fmt: skip


def d(text: str) -> Decimal:
    return Decimal(text)


def rounded(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Ratios of numeric sums to 9 places (numeric division ends where Postgres chooses)."""
    return [tuple(round(v, 9) if isinstance(v, Decimal | float) else v for v in r) for r in rows]


async def test_kpis_from_a_known_history_equal_the_hand_computed_values_and_a_rebuild(
    rt: Runtime,
) -> None:
    await publish_many(rt.js, history())
    with anyio.fail_after(60):
        await project_all(rt)
    got = await views(rt)

    # a1 in all: 22 runs, 20 succeeded; latencies 100 100 200 300 300 400 ... 2000: the
    # nearest-rank p95 (the 21st of 22) is 1900 ms, in the bucket (1800, 2000]: 2000 reported
    a1 = (22, 20 / 22, Decimal(21400) / 22, d("2000"), d("0.6"), d("0.6") / 22, 1, d("0.6"), 2,
          0.5, 0.5, 2, 0.5)  # fmt: skip
    # version 2: 20 runs, 19 succeeded; p95 is the 19th of 100 ... 2000: 1900, reported 2000
    v2 = (20, 0.95, d("1050"), d("2000"), d("0.6"), d("0.03"), 1, d("0.6"), 2, 0.5, 0.5, 2, 0.5)
    # version 1: the p95 of 100 and 300 is 300, in the bucket (280, 315]: 315 reported
    v1 = (2, 0.5, d("200"), d("315"), 0, 0, 0, None, 0, None, None, 0, None)
    a2 = (1, 1.0, d("50"), d("50"), 0, 0, 0, None, 0, None, None, 0, None)
    assert rounded(got["agents"]) == rounded([
        ("a1", "docs", "2", 7, *a1, 0, None), ("a1", "docs", "2", 30, *a1, 0, None),
        ("a2", "ops", "1", 7, *a2, 0, None), ("a2", "ops", "1", 30, *a2, 0, None),
    ])  # fmt: skip
    assert rounded(got["teams"]) == rounded([
        ("docs", 7, 1, *a1), ("docs", 30, 1, *a1), ("ops", 7, 1, *a2), ("ops", 30, 1, *a2),
    ])  # fmt: skip
    tools = ["search", "shell"]
    assert rounded(got["versions"]) == rounded([
        ("a1", "1", "", "", [], False, 7, *v1), ("a1", "1", "", "", [], False, 30, *v1),
        ("a1", "2", "p2", "m-large", tools, True, 7, *v2),
        ("a1", "2", "p2", "m-large", tools, True, 30, *v2),
        ("a2", "1", "", "", [], True, 7, *a2), ("a2", "1", "", "", [], True, 30, *a2),
    ])  # fmt: skip
    # which version produced this output: one query
    assert got["deliverables"] == [
        ("t1", 1, "a1", "2", "p2", "m-large", tools, "docs", "reject", REVIEWER),
        ("t1", 2, "a1", "2", "p2", "m-large", tools, "docs", "approve", REVIEWER),
    ]
    assert got["runs"] == [("r2", d("300.0"), 0), ("s1", d("100.0"), d("42.5"))]

    projections = (BY_NAME["agents"], BY_NAME["tasks"], BY_NAME["spend"])
    live = await snapshot(rt, projections)
    for projection in projections:
        await rebuild(rt, projection)
    assert await snapshot(rt, projections) == live
    assert await views(rt) == got
    async with rt.pool.acquire() as conn:  # the triggers' totals equal their sources', rebuilt
        kept = await totals(conn)
        assert kept == await totals(conn, summed_again=True)
    assert {kind for kind, *_ in kept} >= {
        "agent_runs",
        "team_runs",
        "agent_latency",
        "team_latency",
        "agent_reviews",
        "team_reviews",
    }
