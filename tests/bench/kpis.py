"""The KPI views under a fleet's history (``make bench --only kpis``): ``agents`` agents in teams of
100, each with ``days`` days of history (two versions: the second put in force halfway), then, in
the same run, the p99 of a plain indexed lookup of one row (``fleet.agents`` by its key, the
baseline) and of the KPI views as the CLI, the review and the metrics read them.

The history is built fast, straight into the tables the projections own, by the projections'
own folds: each agent-day's rollup rows (``kpi_daily``, ``kpi_latency_daily``) are folded by
``projections/kpis.py`` (``add``, ``add_latency``) from a day of runs, spends and tool calls
drawn from a few patterns, and COPYed in with the agents, their versions, one reviewed
deliverable per agent-day and 24 utilization hours per agent-day (``utilization_hourly``).
Publishing the ~10^8 events that history stands for would take hours on 2 cores; the views read
only these rows, so they answer the same."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from fleetward.projections import kpis
from fleetward.projections.base import Row
from fleetward.schemas.events import Event, RunFinished, RunStarted, SpendRecorded, ToolCalled
from fleetward.services.db import q
from fleetward.services.runtime.connect import Runtime
from tests.bench.kit import percentile

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


Batch = tuple[str, list[str], list[tuple[Any, ...]]]


def _tables(agents: int, days: int, today: date, seed: int) -> Iterator[Batch]:
    """(table, columns, rows) to COPY, one batch per agent."""
    rng = random.Random(seed)
    patterns = [_fold(_day_events(rng)) for _ in range(PATTERNS)]
    now = datetime.combine(today, datetime.min.time(), UTC)
    first = now - timedelta(days=days - 1)
    half = first + timedelta(days=days // 2)
    daily_cols = list(kpis.KPI_DAILY.columns)
    for i in range(agents):
        agent, team = _agent(i)
        yield "fleetward.agents", [
            "agent_id", "name", "owner", "team", "purpose", "risk_class", "version", "status",
            "status_reason", "heartbeat_interval_s", "roles", "max_concurrent_tasks",
            "registered_at", "updated_at", "last_seq",
        ], [(agent, agent, "bench", team, "", "medium", "2", "active", "", 60.0, ["worker"], 1,
             first, half, i)]  # fmt: skip
        yield "fleetward.agent_versions", [
            "agent_id", "version", "prompt", "model", "tools", "notes", "set_by", "first_at",
            "changed_at",
        ], [(agent, "1", "p1", "m", [], "", agent, first, first),
            (agent, "2", "p2", "m", [], "", agent, half, half)]  # fmt: skip
        daily, latency, delivered, hours = [], [], [], []
        for d in range(days):
            day = (first + timedelta(days=d)).date()
            version = "1" if d < days // 2 else "2"
            row, buckets = patterns[(i * 7 + d) % PATTERNS]
            stamped = {**row, "agent_id": agent, "day": day, "team": team, "version": version}
            daily.append(tuple(stamped[c] for c in daily_cols))
            latency += [(agent, day, team, version, le, n) for le, n in buckets.items()]
            at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12)
            verdict = "reject" if (i + d) % 5 == 0 else "approve"
            delivered.append((f"task-{i}-{d}", 1, agent, 1, "markdown", "0" * 64, "", at,
                              i * days + d, version, team, verdict, "user:bench",
                              at + timedelta(hours=1)))  # fmt: skip
            start = datetime.combine(day, datetime.min.time(), UTC)
            hours += [(agent, start + timedelta(hours=h), 1_800_000_000, 1_800_000_000, 60)
                      for h in range(24)]  # fmt: skip
        yield "fleetward.kpi_daily", daily_cols, daily
        yield "fleetward.kpi_latency_daily", list(kpis.KPI_LATENCY_DAILY.columns), latency
        yield (
            "fleetward.deliverables",
            [
                "task_id",
                "version",
                "agent",
                "epoch",
                "kind",
                "sha256",
                "content",
                "submitted_at",
                "seq",
                "agent_version",
                "team",
                "verdict",
                "reviewed_by",
                "reviewed_at",
            ],
            delivered,
        )
        yield "fleetward.utilization_hourly", [
            "agent_id", "hour", "busy_us", "idle_us", "heartbeats"
        ], hours  # fmt: skip


async def build(rt: Runtime, agents: int, days: int, seed: int) -> History:
    """Write the history of ``agents`` agents over the last ``days`` UTC days."""
    async with rt.pool.acquire() as conn:
        today = await conn.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")
        pending: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
        written = 0
        for table, columns, rows in _tables(agents, days, today, seed):
            pending.setdefault(table, (columns, []))[1].extend(rows)
            if len(pending[table][1]) >= 50_000:
                written += await _copy(conn, table, *pending.pop(table))
        for table, (columns, rows) in pending.items():
            written += await _copy(conn, table, columns, rows)
        await conn.execute("ANALYZE")
    return History(agents, days, written)


async def _copy(conn: Any, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> int:
    schema, name = table.split(".")
    await conn.copy_records_to_table(name, schema_name=schema, columns=columns, records=rows)
    return len(rows)


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


async def run_kpis_bench(
    rt: Runtime, agents: int, days: int, seed: int
) -> tuple[History, float, list[tuple[str, float, int]]]:
    """The history, the baseline's p99 (s) and each probe's (what, p99 s, executions)."""
    history = await build(rt, agents, days, seed)

    def one_agent(rng: random.Random) -> tuple[Any, ...]:
        return (_agent(rng.randrange(agents))[0],)

    base = percentile(await measure(rt, BASELINE[1], one_agent, seed), 0.99)
    out = []
    for what, sql, args in probes(agents):
        took = await measure(rt, sql, args, seed)
        out.append((what, percentile(took, 0.99), len(took)))
    return history, base, out
