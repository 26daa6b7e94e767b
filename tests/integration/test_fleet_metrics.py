"""The fleet gauges (FleetMetrics, services/metrics/fleet.py) and the connection counters, against
real servers: the gauges equal what the views hold, budgets of every scope included (from
fleet.budgets), and a Postgres or NATS outage is counted and survived."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import asyncpg
from prometheus_client import CollectorRegistry, generate_latest

from fleetward.projections import BY_NAME
from fleetward.schemas import Event
from fleetward.schemas.events import (
    AgentOffline,
    AgentPaused,
    AgentRegistered,
    AgentRetired,
    BudgetSet,
    EscalationRaised,
    EscalationResolved,
    SpendRecorded,
    TaskCreated,
)
from fleetward.services import metrics
from fleetward.services.auth.store import AuthStore
from fleetward.services.jetstream.publish import publish, publish_many
from fleetward.services.metrics.budgets import BudgetReading
from fleetward.services.metrics.fleet import FleetMetrics, FleetSnapshot
from fleetward.services.projector.runner import ProjectionRunner
from fleetward.services.runtime.connect import Runtime, connect_nats
from fleetward.services.serve import watch_lag
from tests.helpers import HARNESS, envelope, project_all, wait_for
from tests.integration.test_kpis import history
from tests.integration.test_watchdog import free_port, nats_on

SVC, USER = "svc:watchdog", "user:ops"


def register(agent: str, team: str) -> AgentRegistered:
    return AgentRegistered(**envelope(agent), agent=agent, name=agent, owner="o", team=team)


def spend(agent: str, cost: float) -> SpendRecorded:
    return SpendRecorded(**envelope(agent), agent=agent, model="m", cost_usd=cost)


def budget(budget_id: str, scope: str, scope_id: str, window: str, limit: float, *,
           limit_tokens: int | None = None) -> BudgetSet:  # fmt: skip
    return BudgetSet(**envelope(USER), budget=budget_id, scope=scope, scope_id=scope_id,
                     window=window, limit_usd=limit, limit_tokens=limit_tokens)  # fmt: skip


def team_day(budget_id: str, limit: float, spent: float) -> BudgetReading:
    """A team budget of a day whose spend is under its warning share."""
    return BudgetReading(budget_id, "team", "day", limit, spent, None, 0.0, "ok")


def fleet_events() -> list[Event]:
    """docs: a1 active, a2 paused; ops: a3 offline, a4 retired, a5 active."""
    return [
        register("a1", "docs"), register("a2", "docs"),
        register("a3", "ops"), register("a4", "ops"), register("a5", "ops"),
        AgentPaused(**envelope(USER), agent="a2"),
        AgentOffline(**envelope(SVC), agent="a3", escalation="e1"),
        AgentRetired(**envelope("a4"), agent="a4"),
        TaskCreated(**envelope(USER), task="t1", project="p", title="one", priority="high"),
        TaskCreated(**envelope(USER), task="t2", project="p", title="two", priority="high"),
        TaskCreated(**envelope(USER), task="t3", project="p", title="three", priority="urgent"),
        EscalationRaised(**envelope(SVC), escalation="e1", tier="critical", reason="silent",
                         agent="a3"),
        EscalationRaised(**envelope(SVC), escalation="e2", tier="warning", reason="stalled",
                         task="t1"),
        EscalationRaised(**envelope(SVC), escalation="e3", tier="critical", reason="silent",
                         agent="a5"),
        EscalationResolved(**envelope(SVC), escalation="e3"),
        spend("a1", 0.25), spend("a2", 0.5), spend("a3", 1.0),
    ]  # fmt: skip


def exposition(fleet: FleetMetrics) -> str:
    registry = CollectorRegistry()
    registry.register(fleet)
    return generate_latest(registry).decode()


async def test_the_fleet_gauges_are_what_the_views_hold(rt: Runtime) -> None:
    await publish_many(rt.js, [*fleet_events(), *(
        budget("b1", "team", "docs", "day", 1.0),
        budget("b3", "team", "docs", "month", 10.0),
        budget("b4", "team", "ops", "lifetime", 2.0),
        budget("b5", "team", "ghost", "day", 1.0),  # a team with no agents spends nothing
        budget("b6", "agent", "a1", "day", 0.1),  # its scope id is no label: its budget id is
        budget("b7", "org", "acme", "month", 100.0, limit_tokens=1000),
        budget("b8", "project", "proj-x", "day", 5.0),
    )])  # fmt: skip
    fleet = FleetMetrics()
    assert exposition(fleet) == ""  # nothing read yet: nothing served, rather than zeros
    await project_all(rt)

    snap = await fleet.refresh(rt.pool)

    assert snap.agents == {"active": 2, "paused": 1, "offline": 1, "retired": 1}
    assert snap.tasks == {("inbox", "high"): 2, ("inbox", "urgent"): 1}
    assert snap.escalations == {"critical": 1, "warning": 1}
    assert snap.spend_today == {"docs": 0.75, "ops": 1.0}
    assert snap.budgets == [
        team_day("b1", 1.0, 0.75),
        BudgetReading("b3", "team", "month", 10.0, 0.75, None, 0.0, "ok"),
        BudgetReading("b4", "team", "lifetime", 2.0, 1.0, None, 0.0, "ok"),
        team_day("b5", 1.0, 0.0),
        BudgetReading("b6", "agent", "day", 0.1, 0.25, None, 0.0, "exhausted"),
        BudgetReading("b7", "org", "month", 100.0, 1.75, 1000, 0.0, "ok"),
        BudgetReading("b8", "project", "day", 5.0, 0.0, None, 0.0, "ok"),
    ]
    assert snap.budget_states == {("team", "ok"): 4, ("agent", "exhausted"): 1,
                                  ("org", "ok"): 1, ("project", "ok"): 1}  # fmt: skip
    text = exposition(fleet)
    for line in [
        'fleetward_agents{status="active"} 2.0',
        'fleetward_agents{status="offline"} 1.0',
        'fleetward_tasks{priority="high",status="inbox"} 2.0',
        'fleetward_tasks{priority="low",status="done"} 0.0',  # every status and priority
        'fleetward_escalations_open{tier="critical"} 1.0',
        'fleetward_escalations_open{tier="info"} 0.0',
        'fleetward_spend_usd_today{team="docs"} 0.75',
        'fleetward_budget_used_ratio{budget="b1",scope="team",window="day"} 0.75',
        'fleetward_budget_used_ratio{budget="b4",scope="team",window="lifetime"} 0.5',
        'fleetward_budget_used_ratio{budget="b6",scope="agent",window="day"} 2.5',
        'fleetward_budget_limit_usd{budget="b3",scope="team",window="month"} 10.0',
        'fleetward_budget_spent_usd{budget="b5",scope="team",window="day"} 0.0',
        'fleetward_budget_spent_usd{budget="b7",scope="org",window="month"} 1.75',
        'fleetward_budget_limit_tokens{budget="b7",scope="org",window="month"} 1000.0',
        'fleetward_budget_spent_tokens{budget="b7",scope="org",window="month"} 0.0',
        'fleetward_budgets{scope="team",state="ok"} 4.0',
        'fleetward_budgets{scope="agent",state="exhausted"} 1.0',
        'fleetward_budgets{scope="project",state="warning"} 0.0',  # every scope and state
    ]:
        assert line in text.splitlines(), f"{line!r} not in\n{text}"
    assert len(re.findall(r"^fleetward_tasks\{", text, re.M)) == 7 * 4
    assert len(re.findall(r"^fleetward_budgets\{", text, re.M)) == 4 * 3
    assert len(re.findall(r"^fleetward_budget_limit_tokens\{", text, re.M)) == 1
    labels = set(re.findall(r'="([^"]*)"', text))
    ids = {"a1", "a2", "a3", "a4", "a5", "t1", "t2", "t3", "e1", "e2", "e3", "acme", "proj-x"}
    assert not labels & ids, labels & ids


async def test_the_kpi_gauges_are_the_teams_kpis_labelled_team_and_window_only(
    rt: Runtime,
) -> None:
    """The known history of test_kpis.py (docs: a1, 22 runs; ops: a2, one run) and a team with
    no activity (idle: a3): the gauges hold fleet.kpi_teams' values in both windows, counts 0
    for the idle team, no sample where a ratio has no denominator, and no agent id or version
    in any label."""
    await publish_many(rt.js, [*history(), register("a3", "idle")])
    await project_all(rt)
    fleet = FleetMetrics()
    await fleet.refresh(rt.pool)
    text = exposition(fleet)
    lines = text.splitlines()
    for window in ("7d", "30d"):
        for line in [
            f'fleetward_kpi_runs{{team="docs",window="{window}"}} 22.0',
            f'fleetward_kpi_runs{{team="idle",window="{window}"}} 0.0',
            f'fleetward_kpi_success_ratio{{team="ops",window="{window}"}} 1.0',
            f'fleetward_kpi_latency_avg_seconds{{team="ops",window="{window}"}} 0.05',
            # the 21st of 22 latencies is 1900 ms, in the bucket (1800, 2000]
            f'fleetward_kpi_latency_p95_seconds{{team="docs",window="{window}"}} 2.0',
            f'fleetward_kpi_cost_usd{{team="docs",window="{window}"}} 0.6',
            f'fleetward_kpi_cost_usd{{team="idle",window="{window}"}} 0.0',
            f'fleetward_kpi_tasks_done{{team="docs",window="{window}"}} 1.0',
            f'fleetward_kpi_cost_per_task_usd{{team="docs",window="{window}"}} 0.6',
            f'fleetward_kpi_approval_ratio{{team="docs",window="{window}"}} 0.5',
            f'fleetward_kpi_rework_ratio{{team="docs",window="{window}"}} 0.5',
            f'fleetward_kpi_tool_error_ratio{{team="docs",window="{window}"}} 0.5',
        ]:
            assert line in lines, f"{line!r} not in\n{text}"
    success = re.findall(r"^fleetward_kpi_success_ratio\{(.*)\} (.*)$", text, re.M)
    assert [labels for labels, _ in success] == [
        'team="docs",window="7d"', 'team="docs",window="30d"',
        'team="ops",window="7d"', 'team="ops",window="30d"',
    ]  # fmt: skip  # by team, then window
    assert abs(float(success[0][1]) - 20 / 22) < 1e-12
    assert not re.search(r'^fleetward_kpi_cost_per_task_usd\{team="(ops|idle)"', text, re.M)
    kpi_labels = set(re.findall(r"^fleetward_kpi_\w+\{(.*)\}", text, re.M))
    assert {re.sub(r'="[^"]*"', "", labels) for labels in kpi_labels} == {"team,window"}


async def test_the_kpi_gauges_are_read_at_the_first_reading_then_only_every_kpi_interval(
    rt: Runtime,
) -> None:
    """``run`` reads the other gauges at every reading, the KPI gauges (fleet.kpi_teams, which
    costs Postgres seconds for a large fleet) only at the first and then every
    ``kpi_interval``: a team registered after the first reading shows in the agents' count at
    once, in the KPI gauges only once they are read again."""
    await publish_many(rt.js, [*history(), register("a3", "idle")])
    await project_all(rt)
    fleet = FleetMetrics()
    stop = anyio.Event()

    async def read() -> FleetSnapshot | None:
        return fleet.snapshot

    async with anyio.create_task_group() as tg:
        tg.start_soon(fleet.run, rt, stop, 0.05, 3600.0)
        first = await wait_for(read, what="the first reading")
        assert first is not None
        assert "idle" in {k.team for k in first.kpis}
        await publish(rt.js, register("a4", "late"))
        await project_all(rt)

        async def counted() -> bool:
            snap = fleet.snapshot
            return snap is not None and sum(snap.agents.values()) > sum(first.agents.values())

        await wait_for(counted, what="a reading with the new agent")
        stop.set()
    assert fleet.snapshot is not None and fleet.snapshot.kpis == first.kpis
    again = await FleetMetrics().refresh(rt.pool)  # a reading of the KPI gauges sees the team
    assert "late" in {k.team for k in again.kpis}


def sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    assert value is not None, (name, labels)
    return value


async def test_the_budget_gauges_follow_the_view(rt: Runtime) -> None:
    """A budget shows at the first reading after its projection committed it, and its spend
    with it: the gauges read fleet.budgets, not the stream."""
    await publish_many(rt.js, [register("a1", "docs")])
    await project_all(rt)
    fleet = FleetMetrics()
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(fleet.run, rt, stop, 0.05)

        def showing(*budgets: BudgetReading) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return fleet.snapshot is not None and fleet.snapshot.budgets == list(budgets)

            return check

        await wait_for(showing(), 10, "the first reading")
        await publish(rt.js, budget("b1", "team", "docs", "day", 8.0))
        await project_all(rt)
        await wait_for(showing(team_day("b1", 8.0, 0.0)), 10, "the budget in the gauges")
        await publish(rt.js, spend("a1", 7.0))
        await project_all(rt)
        warned = BudgetReading("b1", "team", "day", 8.0, 7.0, None, 0.0, "warning")  # 7 >= 6.4
        await wait_for(showing(warned), 10, "the budget's spend in the gauges")
        stop.set()


def errors(component: str) -> float:
    return sample("fleetward_postgres_errors_total", component=component)


@contextlib.asynccontextmanager
async def postgres_away(pg_server: str, database: str) -> AsyncIterator[None]:
    """The test database refuses new connections and its open ones are cut, until exit."""
    conn = await asyncpg.connect(pg_server)
    try:
        await conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database
        )
        yield
    finally:
        await conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await conn.close()


async def test_postgres_away_is_counted_and_survived(rt: Runtime, pg_server: str) -> None:
    await publish_many(rt.js, [register("a1", "docs"), register("a2", "ops")])
    async with rt.pool.acquire() as conn:
        database = await conn.fetchval("SELECT current_database()")
    fleet = FleetMetrics()
    runner = ProjectionRunner(rt, BY_NAME["agents"])
    stop = anyio.Event()

    async def agents_active(n: int) -> bool:
        return fleet.snapshot is not None and fleet.snapshot.agents.get("active") == n

    async with anyio.create_task_group() as tg:
        tg.start_soon(fleet.run, rt, stop, 0.1)
        tg.start_soon(runner.run, stop.is_set)
        tg.start_soon(watch_lag, rt, [runner], stop, 0.1)
        await wait_for(lambda: agents_active(2), 15, "the gauges to show 2 agents")
        before = errors("projector"), errors("fleet_metrics")
        async with postgres_away(pg_server, database):
            await publish(rt.js, register("a3", "ops"))

            async def counted() -> bool:
                return errors("projector") > before[0] and errors("fleet_metrics") > before[1]

            await wait_for(counted, 20, "the Postgres errors to be counted")
            assert await agents_active(2)  # the last reading is kept meanwhile

            async def lagging() -> bool:  # the stalled projection's lag shows, and grows
                return (
                    sample("fleetward_projection_lag_events", projection="agents") == 1
                    and sample("fleetward_projection_lag_seconds", projection="agents") > 0.5
                )

            await wait_for(lagging, 10, "the agents projection's lag to show")
        # both come back by themselves: the projector applies a3, the gauges show it
        await wait_for(lambda: agents_active(3), 30, "the gauges to show 3 agents again")

        async def caught_up() -> bool:
            return (
                sample("fleetward_projection_lag_events", projection="agents") == 0
                and sample("fleetward_projection_lag_seconds", projection="agents") == 0
            )

        await wait_for(caught_up, 10, "the lag to return to 0")
        stop.set()


async def test_a_nats_reconnect_is_counted(tmp_path: Path, auth: AuthStore) -> None:
    port, store = free_port(), tmp_path / "js"
    server = nats_on(port, store, auth)
    server.__enter__()
    try:
        nc = await connect_nats(f"nats://127.0.0.1:{port}", creds=auth.creds_path(HARNESS))
        try:
            before = metrics.NATS_RECONNECTS._value.get()
            server.__exit__(None, None, None)

            async def disconnected() -> bool:
                return not nc.is_connected

            await wait_for(disconnected, 10, "the client to notice")
            server = nats_on(port, store, auth)
            server.__enter__()

            async def reconnected() -> bool:
                return nc.is_connected and metrics.NATS_RECONNECTS._value.get() == before + 1

            await wait_for(reconnected, 15, "the client to reconnect and count it")
        finally:
            await nc.close()
    finally:
        server.__exit__(None, None, None)


def bad_rows(view: str = "fleet.spend_daily") -> float:
    labels = {"view": view}
    return metrics.REGISTRY.get_sample_value("fleetward_fleet_metrics_bad_rows_total", labels) or 0


async def test_a_team_spend_past_the_largest_float_is_skipped_and_the_gauges_still_move(
    rt: Runtime,
) -> None:
    """Two admitted spends of ``"cost_usd": 1e308`` for one team and day sum (exactly, as
    numeric) past the largest float: the reading failed on every refresh and no fleet gauge
    moved again. The row is written here as the spend projection writes it, so the test does
    not depend on what admission takes."""
    await publish_many(rt.js, [register("a1", "docs"), register("a2", "ops"), spend("a2", 1.5)])
    await project_all(rt)
    async with rt.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO fleetward.spend_daily (agent_id, day, team, model_cost_usd,"
            " tool_cost_usd, tokens_in, tokens_out, runs, runs_failed, tool_calls, tool_errors,"
            " spend_events) VALUES ('a1', (now() AT TIME ZONE 'UTC')::date, 'docs',"
            " 2e308, 0, 0, 0, 0, 0, 0, 0, 2)"
        )
    await publish_many(rt.js, [budget("b1", "team", "docs", "day", 5.0),
                               budget("b2", "team", "ops", "day", 3.0)])  # fmt: skip
    await project_all(rt)
    fleet = FleetMetrics()
    before = bad_rows(), bad_rows("fleet.budgets")
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(fleet.run, rt, stop, 0.05)
        readings: list[float] = []

        async def refreshed_thrice() -> bool:
            snap = fleet.snapshot
            if snap is not None and snap.at not in readings:
                readings.append(snap.at)
            return len(readings) >= 3

        await wait_for(refreshed_thrice, 10, "three readings")
        stop.set()
    snap = fleet.snapshot
    assert snap is not None
    assert snap.agents == {"active": 2}
    assert snap.spend_today == {"ops": 1.5}  # docs skipped, not shown as 0 or inf
    assert snap.budgets == [team_day("b2", 3.0, 1.5)]  # b1's spent does not fit: not shown
    assert snap.budget_states == {("team", "exhausted"): 1, ("team", "ok"): 1}  # yet counted
    assert bad_rows() >= before[0] + 3  # counted at every reading
    assert bad_rows("fleet.budgets") >= before[1] + 3
    text = exposition(fleet)
    assert 'fleetward_spend_usd_today{team="ops"} 1.5' in text.splitlines()
    assert 'fleetward_spend_usd_today{team="docs"}' not in text and 'budget="b1"' not in text
