"""The KPI views under a fleet's history (``make bench --only kpis``): ``agents`` agents in teams of
100, each with ``days`` days of history (two versions: the second put in force halfway), then, in
the same run, the p99 of a plain indexed lookup of one row (``fleet.agents`` by its key, the
baseline) and of the KPI views as the CLI, the review and the metrics read them.

The history is built fast, straight into the tables the projections own, by the projections'
own folds: each agent-day's rollup rows (``kpi_daily``, ``kpi_latency_daily``) are folded by
``projections/kpis.py`` (``add``, ``add_latency``) from a day of runs, spends and tool calls
drawn from a few patterns, then stamped onto every agent and day on the server
(``kpis_history``, tests/bench/bench.sql) with the agents, their versions, one reviewed
deliverable per agent-day, each agent-day's utilization and each agent's current hour; the
running totals are then summed from them as migration 0040 does
(``fleetward.kpi_cumulative_fill``). Publishing
the ~10^7 events that history stands for would take hours on 2 shared cores; the views read only
these rows, so they answer the same."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fleetward.projections import kpis
from fleetward.projections.base import Row
from fleetward.schemas.events import Event, RunFinished, RunStarted, SpendRecorded, ToolCalled
from fleetward.services.db import q
from fleetward.services.runtime.connect import Runtime
from tests.bench.kit import percentile
from tests.bench.sql import bench_q

TEAM_SIZE = 100
PATTERNS = 16  # distinct agent-days, folded once each
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _day_events(rng: random.Random) -> list[Event]:
    """One agent-day: 6 to 20 runs of 0.2 to 60 s (about 9 latency buckets), their spends and
    tool calls."""
    out: list[Event] = []
    for i in range(rng.randint(6, 20)):
        ok = rng.random() > 0.1
        out += [
            RunStarted(id=f"s{i}", actor="a", at=T0, agent="a", run=f"r{i}"),
            SpendRecorded(id=f"c{i}", actor="a", at=T0, agent="a", model="m", tokens_in=900,
                          tokens_out=200, cost_usd=round(rng.uniform(0.001, 0.05), 4),
                          run=f"r{i}"),
            ToolCalled(id=f"t{i}", actor="a", at=T0, agent="a", tool="web.search",
                       duration_ms=rng.uniform(5, 900), ok=rng.random() > 0.05, cost_usd=0.001),
            RunFinished(id=f"f{i}", actor="a", at=T0, agent="a", run=f"r{i}",
                        outcome="succeeded" if ok else "failed",
                        latency_ms=10 ** rng.uniform(2.3, 4.8)),
        ]  # fmt: skip
    return out


def _fold(events: list[Event]) -> tuple[Row, dict[Decimal, int]]:
    """The day row and latency buckets of ``events``, by the spend projection's KPI fold."""
    key = ("a", T0.date(), "t", "v")
    row: Row | None = None
    buckets: dict[Decimal, int] = {}
    for e in events:
        cost = Decimal(str(getattr(e, "cost_usd", 0)))
        row = kpis.add(row, key, e, cost)  # type: ignore[arg-type]
        if isinstance(e, RunFinished):
            le = kpis.bucket(e.latency_ms)
            buckets[le] = kpis.add_latency({"runs": buckets.get(le, 0)}, (*key, le))["runs"]
    assert row is not None
    return row, buckets


@dataclass(frozen=True)
class History:
    agents: int
    days: int
    rows: int  # rows written in all


def _agent(i: int) -> tuple[str, str]:
    return f"agent-{i:06d}", f"team-{i // TEAM_SIZE:04d}"


async def build(rt: Runtime, agents: int, days: int, seed: int) -> History:
    """Write the history of ``agents`` agents over the last ``days`` UTC days: ``PATTERNS``
    agent-days folded here, COPYed into a scratch table, then stamped onto every agent and day
    by ``kpis_history`` (tests/bench/bench.sql) on the server."""
    rng = random.Random(seed)
    daily_cols = list(kpis.KPI_DAILY.columns)
    daily, latency = [], []
    for p in range(PATTERNS):
        row, buckets = _fold(_day_events(rng))
        daily.append((p, *(row[c] for c in daily_cols[4:])))
        latency += [(p, le, n) for le, n in buckets.items()]
    async with rt.pool.acquire() as conn:
        await conn.execute(bench_q("kpis_patterns"))
        await conn.copy_records_to_table("bench_kpi_patterns", records=daily)
        await conn.copy_records_to_table("bench_kpi_buckets", records=latency)
        written = await conn.fetchval(bench_q("kpis_history"), agents, days, PATTERNS, TEAM_SIZE)
        await conn.execute("ANALYZE")
    return History(agents, days, written)


# (what, SQL, arguments(rng)); the SQL reads the public views as their readers do
def probes(agents: int) -> list[tuple[str, str, Any]]:
    def one_agent(rng: random.Random) -> tuple[Any, ...]:
        return (_agent(rng.randrange(agents))[0],)

    def one_team(rng: random.Random) -> tuple[Any, ...]:
        return (_agent(rng.randrange(agents))[1],)

    return [
        ("kpi_agents, one agent, 7 days",
         "SELECT * FROM fleet.kpi_agents WHERE agent_id = $1 AND days = 7", one_agent),
        ("kpi_agents, one agent, 30 days",
         "SELECT * FROM fleet.kpi_agents WHERE agent_id = $1 AND days = 30", one_agent),
        ("kpi_versions, one agent, 30 days",
         "SELECT * FROM fleet.kpi_versions WHERE agent_id = $1 AND days = 30", one_agent),
        ("kpi_teams, one team, 30 days",
         "SELECT * FROM fleet.kpi_teams WHERE team = $1 AND days = 30", one_team),
        ("fleetward kpis --team T (100 agents, 7 days)", q("kpis_agents"),
         lambda rng: (7, one_team(rng)[0], 100)),
        ("fleetward kpis (first 100 agents, 30 days)", q("kpis_agents"),
         lambda rng: (30, None, 100)),
        ("fleetward kpis --by team (all teams, 30 days)", q("kpis_teams"),
         lambda rng: (30, None, 1000)),
    ]  # fmt: skip


BASELINE = ("fleet.agents, one row by its key", "SELECT * FROM fleet.agents WHERE agent_id = $1")


async def measure(
    rt: Runtime, sql: str, args: Any, seed: int, *, n: int = 200, budget_s: float = 30.0
) -> list[float]:
    """Seconds of up to ``n`` executions (fewer when ``budget_s`` runs out, 5 at least), after
    3 warm-ups."""
    rng, took = random.Random(seed), list[float]()
    async with rt.pool.acquire() as conn:
        stmt = await conn.prepare(sql)
        for _ in range(3):
            await stmt.fetch(*args(rng))
        deadline = time.perf_counter() + budget_s
        while len(took) < n and (len(took) < 5 or time.perf_counter() < deadline):
            values = args(rng)
            t = time.perf_counter()
            await stmt.fetch(*values)
            took.append(time.perf_counter() - t)
    return took


async def kept(rt: Runtime, agents: int, days: int) -> History | None:
    """The history already in the database (``--kpi-home``), if it is one of ``agents`` agents
    over the last ``days`` UTC days ending today (rows: 0, not counted again); else None."""
    async with rt.pool.acquire() as conn:
        found = await conn.fetchrow(bench_q("kpis_kept"))
    if found and found["agents"] == agents and found["days"] == days and found["ends_today"]:
        return History(agents, days, 0)
    return None


async def run_kpis_bench(
    rt: Runtime, agents: int, days: int, seed: int, *, reuse: bool = False
) -> tuple[History, float, list[tuple[str, float, int]]]:
    """The history (``reuse``: the one kept in the database, when it fits; else any there is
    emptied and a new one built), the baseline's p99 (s) and each probe's (what, p99 s,
    executions)."""
    history = await kept(rt, agents, days) if reuse else None
    if history is None:
        async with rt.pool.acquire() as conn:
            await conn.execute(bench_q("kpis_empty"))
        history = await build(rt, agents, days, seed)

    def one_agent(rng: random.Random) -> tuple[Any, ...]:
        return (_agent(rng.randrange(agents))[0],)

    base = percentile(await measure(rt, BASELINE[1], one_agent, seed), 0.99)
    out = []
    for what, sql, args in probes(agents):
        took = await measure(rt, sql, args, seed)
        out.append((what, percentile(took, 0.99), len(took)))
    return history, base, out
