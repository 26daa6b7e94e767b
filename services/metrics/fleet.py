"""The fleet gauges (agents, tasks, escalations, spend, budgets), read from the public views
(schema fleet) by ``FleetMetrics.run``, once per projector process, every ``FLEET_REFRESH_S``; a
scrape serves the last reading and never waits on Postgres. ``FLEET`` is registered in
``metrics.REGISTRY`` when this module is imported.

One bad row never stops the gauges: sums are read exactly (numeric) and turned into floats row
by row; a row that does not fit (a team's spend past the largest float) is skipped, logged and
counted in ``fleetward_fleet_metrics_bad_rows_total{view}``, and every other gauge refreshes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, get_args

import anyio
import asyncpg
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from fleetward.schemas import Rejected, admit
from fleetward.schemas.events import BudgetSet, Priority, Tier
from fleetward.schemas.streams import EVENTS_STREAM, follower_prefix
from fleetward.schemas.subjects import wildcard
from fleetward.services.db import q
from fleetward.services.jetstream.follower import StreamFollower
from fleetward.services.metrics import (
    FLEET_BAD_ROWS,
    POSTGRES_ERRORS,
    REGISTRY,
    is_postgres_error,
)
from fleetward.services.metrics.budgets import TeamBudget, team_budgets, usd, window_start

if TYPE_CHECKING:  # annotations only: the runtime counts reconnects with metrics, not the reverse
    from fleetward.services.runtime.connect import Runtime

log = logging.getLogger("fleetward.metrics")

FLEET_REFRESH_S: Final = 10.0
FLEET_READ_TIMEOUT_S: Final = 20.0  # a Postgres that stopped answering counts as an error
# every known value gets a sample (0 when none), so rules and dashboards never see a gap
AGENT_STATUSES: Final = ("active", "paused", "offline", "retired")
TASK_STATUSES: Final = (
    "inbox", "assigned", "in_progress", "blocked", "review", "done", "cancelled"
)  # fmt: skip
PRIORITIES: Final[tuple[str, ...]] = get_args(Priority)
TIERS: Final[tuple[str, ...]] = get_args(Tier)
# budget window -> its column of metrics_team_spend
_WINDOW_COLUMNS: Final = (("day", "today"), ("month", "month"), ("lifetime", "since"))


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """One reading of the views: what the fleet gauges serve until the next."""

    agents: dict[str, int]  # status -> agents
    tasks: dict[tuple[str, str], int]  # (status, priority) -> tasks
    escalations: dict[str, int]  # tier -> open escalations
    spend_today: dict[str, float]  # team -> USD today (UTC day)
    budgets: list[TeamBudget]
    at: float  # when it was read (unix time)


class FleetMetrics(Collector):
    """The fleet gauges, served from the last snapshot ``refresh`` read. Budgets are not
    projected yet: ``run`` follows each budget subject's last ``budget.set`` from the stream
    (team budgets only; agent ids are not labels, org budgets are not exposed). A budget has a
    subject per actor (``fw.budget.<id>.<actor>``, and ``fw.budget.<id>`` of v1 history); their
    last messages come in stream order, so the last one kept for a budget is its latest."""

    def __init__(self) -> None:
        self.snapshot: FleetSnapshot | None = None
        self.budgets: dict[str, BudgetSet] = {}  # budget id -> its last budget.set
        self._budget_ids: set[str] = set()  # every budget event id seen (budget events are few)
        self._changed = anyio.Event()  # a budget arrived: refresh now, not at the next tick
        self._bad_teams: set[str] = set()  # skipped at the last reading (logged once)

    def on_budget(self, subject: str, data: bytes, _seq: int, _ns: int) -> None:
        """Keep a ``budget.set`` from the stream (a follower callback) and refresh soon."""
        try:
            event = admit(subject, data)
        except Rejected:
            return  # the projector's dead letters record it
        if event.id in self._budget_ids:  # a copy stored late: applied once, as the projection does
            return
        self._budget_ids.add(event.id)
        if isinstance(event, BudgetSet):
            self.budgets[event.budget] = event
            self._changed.set()

    async def refresh(self, pool: asyncpg.Pool) -> FleetSnapshot:
        """Read the views (one snapshot) and keep the result for the next scrapes."""
        today = datetime.now(UTC).date()
        limits = team_budgets(self.budgets)
        since = min((window_start(w, today) for _, w in limits), default=today)
        with anyio.fail_after(FLEET_READ_TIMEOUT_S):
            async with (
                pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                agents = await conn.fetch(q("metrics_agents"))
                tasks = await conn.fetch(q("metrics_tasks"))
                escalations = await conn.fetch(q("metrics_escalations"))
                month = today.replace(day=1)
                spend = await conn.fetch(q("metrics_team_spend"), since, today, month)
        by_window, bad = self._team_spend(spend)
        snap = FleetSnapshot(
            agents={r["status"]: r["n"] for r in agents},
            tasks={(r["status"], r["priority"]): r["n"] for r in tasks},
            escalations={r["tier"]: r["n"] for r in escalations},
            spend_today={team: w["day"] for team, w in by_window.items()},
            budgets=[  # a team whose spend could not be read shows no budget, rather than 0 spent
                TeamBudget(team, window, limit, by_window.get(team, {}).get(window, 0.0))
                for (team, window), limit in sorted(limits.items())
                if team not in bad
            ],
            at=time.time(),
        )
        self.snapshot = snap
        return snap

    def _team_spend(
        self, rows: list[asyncpg.Record]
    ) -> tuple[dict[str, dict[str, float]], set[str]]:
        """Each team's spend (USD) by budget window from metrics_team_spend rows, and the teams
        whose row was skipped: a sum that is no finite float (``usd``) is counted in
        fleetward_fleet_metrics_bad_rows_total and logged once until it reads well again."""
        by_window: dict[str, dict[str, float]] = {}
        bad: set[str] = set()
        for r in rows:
            team = r["team"]
            try:
                by_window[team] = {w: usd(r[c]) for w, c in _WINDOW_COLUMNS}
            except ValueError as exc:
                bad.add(team)
                FLEET_BAD_ROWS.labels("fleet.spend_daily").inc()
                if team not in self._bad_teams:
                    log.warning("fleet metrics: team %r skipped (%s); the rest refresh", team, exc)
        self._bad_teams = bad
        return by_window, bad

    async def run(self, rt: Runtime, stop: anyio.Event, interval: float = FLEET_REFRESH_S) -> None:
        """Refresh every ``interval`` until ``stop`` is set. Postgres away is logged and counted
        (fleetward_postgres_errors_total{component="fleet_metrics"}), never fatal."""
        self.snapshot, self.budgets, self._changed = None, {}, anyio.Event()
        self._budget_ids = set()
        budgets = StreamFollower(  # the whole history (budget events are few): a copy of an
            rt.nc,  # old budget.set stored late is known by its id, never taken as the last
            rt.js,
            EVENTS_STREAM,
            (wildcard("budget"),),
            self.on_budget,
            start_seq=1,
            name=follower_prefix("metrics_budgets"),
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(budgets.run, stop.is_set)
            failing = False
            while not stop.is_set():
                try:
                    await self.refresh(rt.pool)
                    if failing:
                        log.info("fleet metrics: reading the views again")
                    failing = False
                except Exception as exc:  # Postgres away or slow: keep the last values
                    if isinstance(exc, TimeoutError) or is_postgres_error(exc):
                        POSTGRES_ERRORS.labels("fleet_metrics").inc()
                    if not failing:
                        log.warning("fleet metrics: cannot read the views (%s); retrying", exc)
                    failing = True
                await self._pause(stop, interval)

    async def _pause(self, stop: anyio.Event, interval: float) -> None:
        """Wait ``interval``, or less if ``stop`` is set or a budget changes."""

        async def until(event: anyio.Event, scope: anyio.CancelScope) -> None:
            await event.wait()
            scope.cancel()

        with anyio.move_on_after(interval):
            async with anyio.create_task_group() as tg:
                tg.start_soon(until, stop, tg.cancel_scope)
                tg.start_soon(until, self._changed, tg.cancel_scope)
        if self._changed.is_set():
            self._changed = anyio.Event()

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
        yield GaugeMetricFamily(
            "fleetward_fleet_metrics_updated_timestamp_seconds",
            "Unix time of the last reading of the fleet gauges (they keep their values while "
            "Postgres is away).",
            value=snap.at,
        )

    @staticmethod
    def _budget_families(snap: FleetSnapshot) -> Iterator[Metric]:
        names = (
            ("fleetward_budget_limit_usd", "The tightest team budget per window (budget.set)."),
            ("fleetward_budget_spend_usd", "Team spend in the budget's current window (UTC)."),
            ("fleetward_budget_used_ratio", "Team spend in the window over the budget's limit."),
        )
        families = [GaugeMetricFamily(n, h, labels=["team", "window"]) for n, h in names]
        for b in snap.budgets:
            for family, value in zip(families, (b.limit_usd, b.spent_usd, b.used), strict=True):
                family.add_metric([b.team, b.window], value)
        yield from families


FLEET = FleetMetrics()  # the one the projector process refreshes and /metrics serves
REGISTRY.register(FLEET)
