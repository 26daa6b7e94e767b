"""The running totals under the KPI views (migration 0040, ``fleetward.kpi_cumulative``), against
real Postgres: rows of the rollups they sum written, rewritten and deleted in a random order of
days (a window spanning midnight writes its rows in any order; a rebuild empties and refills
them), agents registered before and after their time was written, moved between teams and
removed. After it, the totals the triggers kept equal the totals summed again from the rows, and
``fleet.kpi_agents`` and ``fleet.kpi_teams`` equal the sums of the rows in each window computed
here, independently, in Python."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from fleetward.projections.kpis import EDGES_MS
from fleetward.services.db import Conn
from fleetward.services.runtime.connect import Runtime

ZERO = (*[0] * 13, [])  # a row of kpi_cumulative that sums nothing, without its key
AGENTS = ("a0", "a1", "a2", "a3", "a4")
TEAMS = ("t0", "t1", "t2")
VERSIONS = ("1", "2")


async def totals(conn: Conn, *, summed_again: bool = False) -> list[tuple[Any, ...]]:
    """``fleetward.kpi_cumulative`` as the triggers kept it, or summed again from the rollups
    (``kpi_cumulative_fill``, rolled back after), as the function of the day it stands for: the
    counts of ``runs_le`` up to its last change, and a day's row left out when it says the same
    as the day before (before any row: nothing)."""
    tx = conn.transaction()
    await tx.start()
    if summed_again:
        await conn.execute("SELECT fleetward.kpi_cumulative_fill()")
    rows = await conn.fetch("SELECT * FROM fleetward.kpi_cumulative ORDER BY kind, scope, day")
    await tx.rollback()
    out: list[tuple[Any, ...]] = []
    last: dict[tuple[str, str], tuple[Any, ...]] = {}
    for r in rows:
        le = list(r["runs_le"])  # past its end a count is its last one's
        while le and le[-1] == (le[-2] if len(le) > 1 else 0):
            le.pop()
        sums = (*(v for k, v in r.items() if k not in ("kind", "scope", "day", "runs_le")), le)
        if sums != last.get((r["kind"], r["scope"]), ZERO):
            out.append((r["kind"], r["scope"], r["day"], sums))
        last[(r["kind"], r["scope"])] = sums
    return out


def p95(buckets: dict[Decimal, int]) -> Decimal | None:
    """Nearest rank over latency buckets: the upper edge of the bucket holding it."""
    total = sum(buckets.values())
    if not total:
        return None
    cum = 0
    for le in sorted(buckets):
        cum += buckets[le]
        if cum >= math.ceil(0.95 * total):
            return le
    raise AssertionError("unreachable")


@dataclass
class Rows:
    """The rows written to the rollups (and agents' teams), as this test keeps them in Python."""

    rng: random.Random
    days: list[date]
    team_of: dict[str, str] = field(default_factory=dict)  # registered agents: team now
    runs: dict[tuple[Any, ...], tuple[int, int, Decimal]] = field(default_factory=dict)
    latency: dict[tuple[Any, ...], int] = field(default_factory=dict)  # kpi_latency_daily
    reviews: dict[str, tuple[str, str, date, str] | None] = field(default_factory=dict)
    time_of: dict[tuple[str, date], tuple[Decimal, Decimal]] = field(default_factory=dict)
    hour_of: dict[str, tuple[date, int, int]] = field(default_factory=dict)  # current hour: us

    async def write_one(self, conn: Conn) -> None:
        """Write, rewrite or delete one random row of a rollup, or register, move or remove
        an agent; keep the same here."""
        rng = self.rng
        agent, day, team = rng.choice(AGENTS), rng.choice(self.days), rng.choice(TEAMS)
        what = rng.random()
        if what < 0.2:
            key = (agent, day, team, rng.choice(VERSIONS))
            if key in self.runs and rng.random() < 0.3:
                await conn.execute("DELETE FROM fleetward.kpi_daily WHERE (agent_id, day,"
                                   " team, version) = ($1, $2, $3, $4)", *key)  # fmt: skip
                del self.runs[key]
                return
            # several days of the agent in one statement, in a random order
            days = [day, *rng.sample(self.days, rng.randint(0, 3))]
            days = list(dict.fromkeys(days))
            values = []
            for d in days:
                n = rng.randint(0, 5)
                ok, cost = rng.randint(0, n), Decimal(rng.randint(0, 10**6)) / 10**6
                self.runs[(key[0], d, *key[2:])] = (n, ok, cost)
                values.append((d, n, ok, cost))
            await conn.execute(
                "INSERT INTO fleetward.kpi_daily SELECT $1, d, $2, $3, n, n, ok, n - ok, n * 100,"
                " c, 0.001, 1, 0, 5 FROM unnest($4::date[], $5::bigint[], $6::bigint[],"
                " $7::numeric[]) AS u(d, n, ok, c)"
                " ON CONFLICT (agent_id, day, team, version) DO UPDATE"
                " SET runs_started = EXCLUDED.runs_started,"
                " runs = EXCLUDED.runs, runs_succeeded = EXCLUDED.runs_succeeded,"
                " runs_failed = EXCLUDED.runs_failed, latency_ms = EXCLUDED.latency_ms,"
                " model_cost_usd = EXCLUDED.model_cost_usd",
                agent, key[2], key[3], *map(list, zip(*values, strict=True)))  # fmt: skip
        elif what < 0.4:  # several buckets and days in one statement
            keys = {(agent, rng.choice(self.days), team, rng.choice(VERSIONS),
                     rng.choice(EDGES_MS[40:80])) for _ in range(rng.randint(1, 4))}  # fmt: skip
            for key in keys:
                self.latency[key] = rng.randint(1, 9)
            await conn.execute(
                "INSERT INTO fleetward.kpi_latency_daily SELECT * FROM unnest($1::text[],"
                " $2::date[], $3::text[], $4::text[], $5::numeric[], $6::bigint[])"
                " ON CONFLICT (agent_id, day, team, version, le_ms)"
                " DO UPDATE SET runs = EXCLUDED.runs",
                *map(list, zip(*((*k, self.latency[k]) for k in keys), strict=True)))  # fmt: skip
        elif what < 0.6:
            task = f"task-{rng.randrange(30)}"
            review = (agent, team, day, rng.choice(("approve", "reject")))
            if rng.random() < 0.2:
                review = None  # a review voided, or not reviewed yet
            self.reviews[task] = review
            at = datetime.combine(day, time(13), UTC) if review else None
            await conn.execute(
                "INSERT INTO fleetward.deliverables (task_id, version, agent, epoch, kind,"
                " sha256, content, submitted_at, seq, agent_version, team, verdict,"
                " reviewed_by, reviewed_at) VALUES ($1, 1, $2, 1, 'markdown', $3, '', now(),"
                " 1, '1', $4, $5, 'user:t', $6) ON CONFLICT (task_id, version) DO UPDATE"
                " SET agent = EXCLUDED.agent, team = EXCLUDED.team,"
                " verdict = EXCLUDED.verdict, reviewed_at = EXCLUDED.reviewed_at",
                task, agent, "0" * 64, team, review and review[3], at)  # fmt: skip
        elif what < 0.75:  # an agent's current hour (fleetward.utilization), of a day
            busy_us, idle_us = rng.randint(0, 1_800_000_000), rng.randint(0, 1_800_000_000)
            self.hour_of[agent] = (day, busy_us, idle_us)
            await conn.execute(
                "INSERT INTO fleetward.utilization (agent_id, state, message, first_seen,"
                " last_seen, busy_us, idle_us, heartbeats, last_seq, hour, hour_busy_us,"
                " hour_idle_us, hour_heartbeats) VALUES ($1, 'busy', '', now(), now(), 0, 0, 1,"
                " 1, $2, $3, $4, 1) ON CONFLICT (agent_id) DO UPDATE SET hour = EXCLUDED.hour,"
                " hour_busy_us = EXCLUDED.hour_busy_us, hour_idle_us = EXCLUDED.hour_idle_us",
                agent, datetime.combine(day, time(rng.randrange(24)), UTC),
                busy_us, idle_us)  # fmt: skip
        elif what < 0.85:
            busy = Decimal(rng.randint(0, 3_600_000)) / 1000
            self.time_of[(agent, day)] = (busy, Decimal(3600) - busy)
            await conn.execute(
                "INSERT INTO fleetward.utilization_daily VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (agent_id, day) DO UPDATE SET busy_s = EXCLUDED.busy_s,"
                " idle_s = EXCLUDED.idle_s", agent, day, *self.time_of[(agent, day)])  # fmt: skip
        elif agent not in self.team_of:  # registered after some of its time was written
            self.team_of[agent] = team
            await conn.execute(
                "INSERT INTO fleetward.agents (agent_id, name, owner, team, purpose,"
                " risk_class, version, status, status_reason, heartbeat_interval_s, roles,"
                " max_concurrent_tasks, registered_at, updated_at, last_seq) VALUES ($1, $1,"
                " 'o', $2, '', 'medium', '1', 'active', '', 60, '{worker}', 1, now(), now(),"
                " 1)", agent, team)  # fmt: skip
        elif what < 0.97:  # moved to another team (or the same: nothing moves)
            self.team_of[agent] = team
            await conn.execute("UPDATE fleetward.agents SET team = $2, last_seq = last_seq"
                               " + 1 WHERE agent_id = $1", agent, team)  # fmt: skip
        else:
            del self.team_of[agent]
            await conn.execute("DELETE FROM fleetward.agents WHERE agent_id = $1", agent)

    def expect(self, who: str, scope: int, by: int, since: date) -> tuple[Any, ...]:
        """What the views say of ``who`` since ``since``: its rows' sums (``who`` at ``scope``
        in the rollups' keys, at ``by`` in a review) and its agents' time (an agent's own; a
        team's agents now)."""
        agents = {who} if scope == 0 else {a for a, t in self.team_of.items() if t == who}
        r = [v for k, v in self.runs.items() if k[scope] == who and k[1] >= since]
        n = sum(x[0] for x in r)
        b: dict[Decimal, int] = defaultdict(int)
        for k, c in self.latency.items():
            if k[scope] == who and k[1] >= since:
                b[k[4]] += c
        rv = [x for x in self.reviews.values() if x and x[by] == who and x[2] >= since]
        t = [v for (a, d), v in self.time_of.items() if a in agents and d >= since]
        t += [(ms(b), ms(i)) for a, (d, b, i) in self.hour_of.items() if a in agents and d >= since]
        zero = Decimal(0)
        return (n, sum(x[1] for x in r) / n if n else None, p95(b),
                sum((x[2] for x in r), zero) + Decimal("0.001") * len(r),
                sum(x[3] == "approve" for x in rv), len(rv),
                sum((x[0] for x in t), zero), sum((x[1] for x in t), zero))  # fmt: skip


async def test_running_totals_equal_the_rows_written_in_any_order(rt: Runtime) -> None:
    async with rt.pool.acquire() as conn:
        today: date = await conn.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")
        # the buckets' edges in SQL are the fold's (projections/kpis.py)
        assert await conn.fetchval("SELECT fleetward.kpi_edges()") == list(EDGES_MS)
        # both windows and days before them, in a random order
        rows = Rows(random.Random(16), [today - timedelta(days=k) for k in range(40)])
        for _ in range(400):
            await rows.write_one(conn)

        kept = await totals(conn)
        assert kept == await totals(conn, summed_again=True)
        assert {k for k, *_ in kept} == {
            f"{s}_{x}" for s in ("agent", "team") for x in ("runs", "latency", "reviews", "time")
        }

        cols = "runs, success_rate, p95_latency_ms, cost_usd, tasks_done, reviewed, busy_s, idle_s"
        for days in (7, 30):
            since = today - timedelta(days=days - 1)
            got = await conn.fetch(f"SELECT agent_id, {cols} FROM fleet.kpi_agents"
                                   " WHERE days = $1 ORDER BY agent_id", days)  # fmt: skip
            assert [(r[0], *approx(r[1:])) for r in got] == [
                (a, *approx(rows.expect(a, 0, 0, since))) for a in sorted(rows.team_of)
            ]
            got = await conn.fetch(f"SELECT team, agents, {cols} FROM fleet.kpi_teams"
                                   " WHERE days = $1 ORDER BY team", days)  # fmt: skip
            listed = sorted(
                {k[2] for k in rows.runs if k[1] >= since}
                | {x[1] for x in rows.reviews.values() if x and x[2] >= since}
            )
            assert [(r[0], r[1], *approx(r[2:])) for r in got] == [
                (t, sum(x == t for x in rows.team_of.values()),
                 *approx(rows.expect(t, 2, 1, since))) for t in listed]  # fmt: skip


def ms(us: int) -> Decimal:
    """Microseconds as seconds rounded to the ms, as fleet.utilization_hourly shows them."""
    return (Decimal(us) / 10**6).quantize(Decimal("0.001"), ROUND_HALF_UP)


def approx(values: Any) -> tuple[Any, ...]:
    """Floats to 12 places (ratios); exact sums as they are."""
    return tuple(round(v, 12) if isinstance(v, float) else v for v in values)
