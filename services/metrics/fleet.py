"""The fleet gauges (agents, tasks, escalations, spend, budgets, KPIs per team), read from the
public views (schema fleet) by ``FleetMetrics.run``, once per projector process, every
``FLEET_REFRESH_S``; the KPI gauges every ``KPI_REFRESH_S`` only (their windows are 7 and 30
days, and ``fleet.kpi_teams`` is the costliest read: for 100,000 agents 4.6-6.7 s of Postgres
CPU before the KPI running totals, 0.25-0.4 s after, docs/benchmarks.md). A scrape serves the
last reading and never waits on Postgres. ``FLEET`` is registered in ``metrics.REGISTRY`` when this
module is imported.

The budget gauges are ``fleet.budgets`` as read: every budget of every scope, with what its
scope spent in its current window (labels and their bounds: metrics/budgets.py). The KPI
gauges are ``fleet.kpi_teams`` as read, labelled team and window only (metrics/kpis.py).

One bad row never stops the gauges: sums are read exactly (numeric) and turned into floats row
by row; a row that does not fit (a team's spend past the largest float) is skipped, logged and
counted in ``fleetward_fleet_metrics_bad_rows_total{view}``, and every other gauge refreshes.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Final, get_args

import anyio
import asyncpg
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from fleetward.schemas.events import BudgetScope, Priority, Tier
from fleetward.services.db import q
from fleetward.services.metrics import (
    FLEET_BAD_ROWS,
    POSTGRES_ERRORS,
    REGISTRY,
    is_postgres_error,
)
from fleetward.services.metrics.budgets import BudgetReading, gauge_value, with_series
from fleetward.services.metrics.kpis import KPI_GAUGES, KpiReading, kpi_families
from fleetward.services.trace import TRACE

if TYPE_CHECKING:  # annotations only: the runtime counts reconnects with metrics, not the reverse
    from fleetward.services.runtime.connect import Runtime

log = logging.getLogger("fleetward.metrics")

FLEET_REFRESH_S: Final = 10.0
KPI_REFRESH_S: Final = 300.0  # the KPI gauges (fleet.kpi_teams): every 5 minutes
FLEET_READ_TIMEOUT_S: Final = 20.0  # a Postgres that stopped answering counts as an error
# every known value gets a sample (0 when none), so rules and dashboards never see a gap
AGENT_STATUSES: Final = ("active", "paused", "offline", "retired")
TASK_STATUSES: Final = (
    "inbox", "assigned", "in_progress", "blocked", "review", "done", "cancelled"
)  # fmt: skip
PRIORITIES: Final[tuple[str, ...]] = get_args(Priority)
TIERS: Final[tuple[str, ...]] = get_args(Tier)
BUDGET_SCOPES: Final[tuple[str, ...]] = get_args(BudgetScope)
BUDGET_STATES: Final = ("ok", "warning", "exhausted")  # fleet.budgets.state
APPROVAL_AGES: Final = (
    ("lt_5m", "open_5m"),
    ("5m_1h", "open_1h"),
    ("1h_1d", "open_1d"),
    ("gt_1d", "open_older"),
)  # (label, column of metrics_approvals)
VIOLATION_KINDS: Final = ("denied", "unapproved", "over_cap")


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """One reading of the views: what the fleet gauges serve until the next."""

    agents: dict[str, int]  # status -> agents
    tasks: dict[tuple[str, str], int]  # (status, priority) -> tasks
    escalations: dict[str, int]  # tier -> open escalations
    spend_today: dict[str, float]  # team -> USD today (UTC day)
    budgets: list[BudgetReading]  # those with series of their own (budgets.with_series)
    budget_states: dict[tuple[str, str], int]  # (scope, state) -> every budget
    at: float  # when it was read (unix time)
    approvals: dict[str, int] = field(default_factory=dict)  # metrics_approvals' columns
    violations: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, tier) -> n
    kpis: list[KpiReading] = field(default_factory=list)  # per team and window


class FleetMetrics(Collector):
    """The fleet gauges, served from the last snapshot ``refresh`` read."""

    def __init__(self) -> None:
        self.snapshot: FleetSnapshot | None = None
        self._bad: set[str] = set()  # rows skipped at the last reading (each logged once)

    async def refresh(self, pool: asyncpg.Pool, *, kpis: bool = True) -> FleetSnapshot:
        """Read the views (one snapshot) and keep the result for the next scrapes; without
        ``kpis``, the KPI gauges keep the last reading's values (none before the first)."""
        today = datetime.now(UTC).date()
        with anyio.fail_after(FLEET_READ_TIMEOUT_S):
            async with (
                pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                agents = await conn.fetch(q("metrics_agents"))
                tasks = await conn.fetch(q("metrics_tasks"))
                escalations = await conn.fetch(q("metrics_escalations"))
                spend = await conn.fetch(q("metrics_team_spend"), today)
                budgets = await conn.fetch(q("metrics_budgets"))
                approvals = await conn.fetchrow(q("metrics_approvals"))
                violations = await conn.fetch(q("metrics_violations"))
                kpi_rows = await conn.fetch(q("metrics_kpi_teams")) if kpis else None
        bad: set[str] = set()
        readings = []
        for r in budgets:
            sums = (r["limit_usd"], r["spent_usd"], r["spent_tokens"])
            if self._fits("fleet.budgets", f"budget {r['budget_id']!r}", bad, *sums):
                readings.append(BudgetReading.of(r))
        snap = FleetSnapshot(
            agents={r["status"]: r["n"] for r in agents},
            tasks={(r["status"], r["priority"]): r["n"] for r in tasks},
            escalations={r["tier"]: r["n"] for r in escalations},
            spend_today={
                r["team"]: gauge_value(r["today"])
                for r in spend
                if self._fits("fleet.spend_daily", f"team {r['team']!r}", bad, r["today"])
            },
            budgets=with_series(readings),
            budget_states=dict(Counter((r["scope"], r["state"]) for r in budgets)),
            at=time.time(),
            approvals=dict(approvals) if approvals is not None else {},
            violations={(r["kind"], r["tier"]): r["n"] for r in violations},
            kpis=self._kpis(kpi_rows, bad),
        )
        self._bad = bad
        self.snapshot = snap
        return snap

    def _kpis(self, rows: list[asyncpg.Record] | None, bad: set[str]) -> list[KpiReading]:
        """The KPI readings of ``rows``; None (not read this time): the last snapshot's, its
        skipped rows still counted as skipped."""
        if rows is None:
            bad.update(what for what in self._bad if what.endswith(" days)"))  # see _kpi
            return [] if self.snapshot is None else self.snapshot.kpis
        return [kpi for r in rows if (kpi := self._kpi(r, bad)) is not None]

    def _kpi(self, row: asyncpg.Record, bad: set[str]) -> KpiReading | None:
        """A team's KPI reading; None (counted, logged once) when a value fits no gauge."""
        what = f"team {row['team']!r} ({row['days']} days)"
        sums = [row[g.column] for g in KPI_GAUGES if isinstance(row[g.column], Decimal)]
        if not self._fits("fleet.kpi_teams", what, bad, *sums):
            return None
        return KpiReading.of(row)

    def _fits(self, view: str, what: str, bad: set[str], *sums: Decimal | None) -> bool:
        """Whether a row's sums fit gauges (``gauge_value``); a row that does not is counted in
        fleetward_fleet_metrics_bad_rows_total{view}, and logged once until it fits again."""
        try:
            for amount in sums:
                gauge_value(amount)
        except ValueError as exc:
            bad.add(what)
            FLEET_BAD_ROWS.labels(view).inc()
            if what not in self._bad:
                log.warning("fleet metrics: %s skipped (%s); the rest refresh", what, exc)
            return False
        return True

    async def run(
        self,
        rt: Runtime,
        stop: anyio.Event,
        interval: float = FLEET_REFRESH_S,
        kpi_interval: float = KPI_REFRESH_S,
    ) -> None:
        """Refresh every ``interval`` (s), the KPI gauges at the first reading and then every
        ``kpi_interval``, until ``stop`` is set. Postgres away is logged and counted
        (fleetward_postgres_errors_total{component="fleet_metrics"}), never fatal."""
        self.snapshot = None
        failing = False
        kpis_due = time.monotonic()  # when the KPI gauges are read next
        while not stop.is_set():
            try:
                began = time.time()
                kpis = time.monotonic() >= kpis_due
                await self.refresh(rt.pool, kpis=kpis)
                if kpis:
                    kpis_due = time.monotonic() + kpi_interval
                if TRACE is not None:
                    TRACE.mark("fleet_metrics", began=began, kpis=kpis)
                if failing:
                    log.info("fleet metrics: reading the views again")
                failing = False
            except Exception as exc:  # Postgres away or slow: keep the last values
                if isinstance(exc, TimeoutError) or is_postgres_error(exc):
                    POSTGRES_ERRORS.labels("fleet_metrics").inc()
                if not failing:
                    log.warning("fleet metrics: cannot read the views (%s); retrying", exc)
                failing = True
            with anyio.move_on_after(interval):
                await stop.wait()

    def collect(self) -> Iterator[Metric]:
        """The gauges of the last snapshot; none before the first reading."""
        snap = self.snapshot
        if snap is None:
            return
        agents = GaugeMetricFamily(
            "fleetward_agents",
            "Agents in the registry (fleet.agents) by status: active, paused, offline, retired.",
            labels=["status"],
        )
        for status in sorted({*AGENT_STATUSES, *snap.agents}):
            agents.add_metric([status], snap.agents.get(status, 0))
        tasks = GaugeMetricFamily(
            "fleetward_tasks", "Tasks on the board (fleet.tasks) by status and priority.",
            labels=["status", "priority"],
        )  # fmt: skip
        for key in sorted({*((s, p) for s in TASK_STATUSES for p in PRIORITIES), *snap.tasks}):
            tasks.add_metric(list(key), snap.tasks.get(key, 0))
        escalations = GaugeMetricFamily(
            "fleetward_escalations_open",
            "Open (not resolved) escalations (fleet.escalations_open) by tier.",
            labels=["tier"],
        )
        for tier in sorted({*TIERS, *snap.escalations}):
            escalations.add_metric([tier], snap.escalations.get(tier, 0))
        spend = GaugeMetricFamily(
            "fleetward_spend_usd_today",
            "Spend today (UTC day, fleet.spend_daily) by team; every team in the registry.",
            labels=["team"],
        )
        for team, amount in sorted(snap.spend_today.items()):
            spend.add_metric([team], amount)
        yield from (agents, tasks, escalations, spend, *self._budget_families(snap))
        yield from self._oversight_families(snap)
        yield from kpi_families(snap.kpis)
        yield GaugeMetricFamily(
            "fleetward_fleet_metrics_updated_timestamp_seconds",
            "Unix time of the last reading of the fleet gauges (they keep their values while "
            "Postgres is away).",
            value=snap.at,
        )

    @staticmethod
    def _oversight_families(snap: FleetSnapshot) -> Iterator[Metric]:
        """Approvals and policy violations (fleet.approvals, fleet.policy_violations): bounded
        labels only (age buckets, decisions, violation kinds and tiers)."""
        a = snap.approvals
        open_ = GaugeMetricFamily(
            "fleetward_approvals_open",
            "Open approval requests (fleet.approvals) by age: under 5m, 5m-1h, 1h-1d, over 1d.",
            labels=["age"],
        )
        for label, column in APPROVAL_AGES:
            open_.add_metric([label], a.get(column, 0))
        yield open_
        yield GaugeMetricFamily(
            "fleetward_approvals_overdue",
            "Open approval requests past their deadline (fleet.approvals.overdue).",
            value=a.get("overdue", 0),
        )
        decisions = GaugeMetricFamily(
            "fleetward_approval_decisions",
            "Approval requests decided, ever (fleet.approvals): granted, denied, expired.",
            labels=["decision"],
        )
        for decision in ("granted", "denied", "expired"):
            decisions.add_metric([decision], a.get(decision, 0))
        yield decisions
        violations = GaugeMetricFamily(
            "fleetward_policy_violations",
            "Tool calls that broke a policy, ever (fleet.policy_violations), by kind and tier.",
            labels=["kind", "tier"],
        )
        for kind in VIOLATION_KINDS:
            for tier in ("warning", "critical"):
                violations.add_metric([kind, tier], snap.violations.get((kind, tier), 0))
        yield violations

    @staticmethod
    def _budget_families(snap: FleetSnapshot) -> Iterator[Metric]:
        states = GaugeMetricFamily(
            "fleetward_budgets",
            "Budgets (fleet.budgets) by scope and state: ok, warning (spent at least warn_at of "
            "a limit), exhausted (spent at least a limit).",
            labels=["scope", "state"],
        )
        for scope in sorted({*BUDGET_SCOPES, *(s for s, _ in snap.budget_states)}):
            for state in BUDGET_STATES:
                states.add_metric([scope, state], snap.budget_states.get((scope, state), 0))
        yield states
        labels = ["budget", "scope", "window"]
        usd = [GaugeMetricFamily(n, h, labels=labels) for n, h in (
            ("fleetward_budget_limit_usd", "A budget's limit in USD (fleet.budgets.limit_usd)."),
            ("fleetward_budget_spent_usd",
             "What a budget's scope spent in its current window (UTC), in USD."),
            ("fleetward_budget_used_ratio",
             "Spent over limit, the greater of USD and tokens (a token limit counts when set)."),
        )]  # fmt: skip
        tokens = [GaugeMetricFamily(n, h, labels=labels) for n, h in (
            ("fleetward_budget_limit_tokens", "A budget's token limit, for budgets with one."),
            ("fleetward_budget_spent_tokens",
             "Tokens in and out of a budget's scope in its current window, for budgets with a "
             "token limit."),
        )]  # fmt: skip
        for b in snap.budgets:
            key = [b.budget, b.scope, b.window]
            for family, value in zip(usd, (b.limit_usd, b.spent_usd, b.used), strict=True):
                family.add_metric(key, value)
            if b.limit_tokens is not None:
                tokens[0].add_metric(key, b.limit_tokens)
                tokens[1].add_metric(key, b.spent_tokens)
        yield from (*usd, *tokens)


FLEET = FleetMetrics()  # the one the projector process refreshes and /metrics serves
REGISTRY.register(FLEET)
