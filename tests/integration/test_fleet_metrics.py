"""The fleet gauges (FleetMetrics, services/metrics/fleet.py) and the connection counters, against
real servers: the gauges equal what the views hold, team budgets come from the stream, and a
Postgres or NATS outage is counted and survived."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import asyncpg
from prometheus_client import CollectorRegistry, generate_latest

from fleetward.projections import BY_NAME
from fleetward.schemas import Event, subject_of
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
from fleetward.services.jetstream.publish import encode, publish, publish_many
from fleetward.services.metrics.budgets import TeamBudget
from fleetward.services.metrics.fleet import FleetMetrics
from fleetward.services.projector.runner import ProjectionRunner
from fleetward.services.runtime.connect import Runtime, connect_nats
from fleetward.services.serve import watch_lag
from tests.helpers import HARNESS, envelope, project_all, wait_for
from tests.integration.test_watchdog import free_port, nats_on

SVC, USER = "svc:watchdog", "user:ops"


def register(agent: str, team: str) -> AgentRegistered:
    return AgentRegistered(**envelope(agent), agent=agent, name=agent, owner="o", team=team)


def spend(agent: str, cost: float) -> SpendRecorded:
    return SpendRecorded(**envelope(agent), agent=agent, model="m", cost_usd=cost)


def budget(budget_id: str, scope: str, scope_id: str, window: str, limit: float) -> BudgetSet:
    return BudgetSet(**envelope(USER), budget=budget_id, scope=scope, scope_id=scope_id,
                     window=window, limit_usd=limit)  # fmt: skip


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
    await publish_many(rt.js, fleet_events())
    await project_all(rt)
    fleet = FleetMetrics()
    assert exposition(fleet) == ""  # nothing read yet: nothing served, rather than zeros
    for b in [
        budget("b1", "team", "docs", "day", 3.0),
        budget("b2", "team", "docs", "day", 1.0),  # the tighter of the two counts
        budget("b3", "team", "docs", "month", 10.0),
        budget("b4", "team", "ops", "lifetime", 2.0),
        budget("b5", "team", "ghost", "day", 1.0),  # a team with no agents spends nothing
        budget("b6", "agent", "a1", "day", 0.1),  # agent ids are no labels: not exposed
    ]:
        fleet.on_budget(subject_of(b), encode(b), 1, 0)
    fleet.on_budget("fw.budget.b7.user:ops", b"{not json", 1, 0)  # ignored

    snap = await fleet.refresh(rt.pool)

    assert snap.agents == {"active": 2, "paused": 1, "offline": 1, "retired": 1}
    assert snap.tasks == {("inbox", "high"): 2, ("inbox", "urgent"): 1}
    assert snap.escalations == {"critical": 1, "warning": 1}
    assert snap.spend_today == {"docs": 0.75, "ops": 1.0}
    assert snap.budgets == [
        TeamBudget("docs", "day", 1.0, 0.75),
        TeamBudget("docs", "month", 10.0, 0.75),
        TeamBudget("ghost", "day", 1.0, 0.0),
        TeamBudget("ops", "lifetime", 2.0, 1.0),
    ]
    text = exposition(fleet)
    for line in [
        'fleetward_agents{status="active"} 2.0',
        'fleetward_agents{status="offline"} 1.0',
        'fleetward_tasks{priority="high",status="inbox"} 2.0',
        'fleetward_tasks{priority="low",status="done"} 0.0',  # every status and priority
        'fleetward_escalations_open{tier="critical"} 1.0',
        'fleetward_escalations_open{tier="info"} 0.0',
        'fleetward_spend_usd_today{team="docs"} 0.75',
        'fleetward_budget_used_ratio{team="docs",window="day"} 0.75',
        'fleetward_budget_used_ratio{team="ops",window="lifetime"} 0.5',
        'fleetward_budget_limit_usd{team="docs",window="month"} 10.0',
        'fleetward_budget_spend_usd{team="ghost",window="day"} 0.0',
    ]:
        assert line in text.splitlines(), f"{line!r} not in\n{text}"
    assert len(re.findall(r"^fleetward_tasks\{", text, re.M)) == 7 * 4
    labels = set(re.findall(r'="([^"]*)"', text))
    ids = {"a1", "a2", "a3", "a4", "a5", "t1", "t2", "t3", "e1", "e2", "e3"}
    assert not labels & ids, labels & ids
    assert not any(label.startswith("b") and label[1:].isdigit() for label in labels)


def sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    assert value is not None, (name, labels)
    return value


async def test_a_budget_set_refreshes_the_gauges_at_once(rt: Runtime) -> None:
    await publish_many(rt.js, [register("a1", "docs")])
    await project_all(rt)
    fleet = FleetMetrics()
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(fleet.run, rt, stop, 3600.0)  # no tick during the test

        async def read() -> bool:
            return fleet.snapshot is not None

        await wait_for(read, 10, "the first reading")
        first = fleet.snapshot
        assert first is not None and first.budgets == []
        await publish(rt.js, budget("b1", "team", "docs", "month", 8.0))

        async def shown() -> bool:
            snap = fleet.snapshot
            return snap is not None and snap.budgets == [TeamBudget("docs", "month", 8.0, 0.0)]

        await wait_for(shown, 10, "the budget in the gauges without waiting for the next tick")
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
        # a team budget reaches the gauges from the stream (fw.budget.<id>)
        await publish(rt.js, budget("b1", "team", "docs", "day", 4.0))

        async def budget_shown() -> bool:
            snap = fleet.snapshot
            return snap is not None and snap.budgets == [TeamBudget("docs", "day", 4.0, 0.0)]

        await wait_for(budget_shown, 10, "the budget in the gauges")

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


def bad_rows() -> float:
    labels = {"view": "fleet.spend_daily"}
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
    fleet = FleetMetrics()
    before = bad_rows()
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(fleet.run, rt, stop, 0.05)
        readings: list[float] = []

        async def refreshed_thrice() -> bool:  # with both budgets read from the stream
            snap = fleet.snapshot
            if snap is not None and len(fleet.budgets) == 2 and snap.at not in readings:
                readings.append(snap.at)
            return len(readings) >= 3

        await wait_for(refreshed_thrice, 10, "three readings")
        stop.set()
    snap = fleet.snapshot
    assert snap is not None
    assert snap.agents == {"active": 2}
    assert snap.spend_today == {"ops": 1.5}  # docs skipped, not shown as 0 or inf
    assert snap.budgets == [TeamBudget("ops", "day", 3.0, 1.5)]  # docs' spent is unknown
    assert bad_rows() >= before + 3  # counted at every reading
    text = exposition(fleet)
    assert 'fleetward_spend_usd_today{team="ops"} 1.5' in text.splitlines()
    assert 'team="docs"' not in text
