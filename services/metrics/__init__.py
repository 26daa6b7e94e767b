"""Prometheus metrics of the pipeline, the connections, the watchdog and the fleet, and a small
HTTP server for /metrics and /healthz.

Label values are bounded: projection names, event type names, reasons, statuses, priorities,
tiers, teams (few). Never an id of an agent, a task or an event.

The fleet gauges (agents, tasks, escalations, spend, budgets) are read from the public views by
``FleetMetrics.run``, once per projector process, every ``FLEET_REFRESH_S``; a scrape serves the
last reading and never waits on Postgres.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Final, get_args

import anyio
import asyncpg
from anyio.abc import SocketStream
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from fleetward.schemas import Rejected, admit
from fleetward.schemas.events import BudgetSet, Priority, Tier
from fleetward.schemas.streams import EVENTS_STREAM, follower_prefix
from fleetward.schemas.subjects import wildcard
from fleetward.services.db import q
from fleetward.services.jetstream.follower import StreamFollower

if TYPE_CHECKING:
    from fleetward.services.runtime.connect import Runtime

log = logging.getLogger("fleetward.metrics")

REGISTRY = CollectorRegistry()

EVENTS = Counter(
    "fleetward_events_processed",
    "Events applied to a projection, by event type.",
    ["projection", "type"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "fleetward_dead_letters",
    "Events a projection refused and recorded as dead letters.",
    ["projection", "reason"],
    registry=REGISTRY,
)
SKIPPED = Counter(
    "fleetward_events_skipped",
    "Deliveries at or below the checkpoint, or duplicate ids in a batch "
    "(redeliveries): acknowledged, not applied.",
    ["projection"],
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "fleetward_batch_size",
    "Events per commit: one batch near the head of the stream, a window of many while far behind.",
    ["projection"],
    registry=REGISTRY,
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 20_000, 50_000, 100_000),
)
BATCH_SECONDS = Histogram(
    "fleetward_batch_seconds",
    "Time to write and commit one batch or window.",
    ["projection"],
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CHECKPOINT = Gauge(
    "fleetward_projection_checkpoint",
    "Last stream sequence applied.",
    ["projection"],
    registry=REGISTRY,
)
LAG_EVENTS = Gauge(
    "fleetward_projection_lag_events",
    "Events in the stream not yet applied by the projection.",
    ["projection"],
    registry=REGISTRY,
)
LAG_SECONDS = Gauge(
    "fleetward_projection_lag_seconds",
    "Age (by the stream's clock) of the last event applied, when more are pending; else 0.",
    ["projection"],
    registry=REGISTRY,
)
RESYNCS = Counter(
    "fleetward_projection_resyncs",
    "Times a projection re-positioned its consumer "
    "(another writer moved the checkpoint, or an error).",
    ["projection"],
    registry=REGISTRY,
)


# ---- connections ------------------------------------------------------------------------------

NATS_RECONNECTS = Counter(
    "fleetward_nats_reconnects",
    "Times a NATS connection of this process got its server back after losing it "
    "(nats-py reconnected_cb).",
    registry=REGISTRY,
)
POSTGRES_ERRORS = Counter(
    "fleetward_postgres_errors",
    "Postgres errors a service met and retried after: a refused or lost connection, a server "
    "shutting down, a failed statement. The retry takes a pool connection, which the pool "
    "re-opens if it was lost, so with Postgres away this counts the failed reconnect attempts. "
    "component: projector (a batch failed or the consumer could not be positioned), "
    "fleet_metrics (the fleet gauges could not be read; they keep their last values).",
    ["component"],
    registry=REGISTRY,
)


def is_postgres_error(exc: BaseException) -> bool:
    """An error of the Postgres driver, or an OS error (refused, reset) raised inside it."""
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, OSError):
        tb = exc.__traceback__
        while tb is not None:
            if str(tb.tb_frame.f_globals.get("__name__", "")).startswith("asyncpg"):
                return True
            tb = tb.tb_next
    return False


def count_postgres_error(component: str, exc: BaseException) -> None:
    if is_postgres_error(exc):
        POSTGRES_ERRORS.labels(component).inc()


for _component in ("projector", "fleet_metrics"):  # present at 0, so increase() sees the first
    POSTGRES_ERRORS.labels(_component)


def render() -> bytes:
    return generate_latest(REGISTRY)


async def serve_http(
    host: str, port: int, health: Callable[[], bool], *, task_status: anyio.abc.TaskStatus[int]
) -> None:
    """Serve GET /metrics and GET /healthz until cancelled; reports the bound port."""

    async def handle(stream: SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(5):
                    request = await stream.receive(4096)
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError):
                return
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b"/"
            if path == b"/metrics":
                status, ctype, body = b"200 OK", CONTENT_TYPE_LATEST.encode(), render()
            elif path == b"/healthz":
                ok = health()
                status = b"200 OK" if ok else b"503 Service Unavailable"
                ctype, body = b"application/json", b'{"ok":%s}' % (b"true" if ok else b"false")
            else:
                status, ctype, body = b"404 Not Found", b"text/plain", b"not found\n"
            head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
                status,
                ctype,
                len(body),
            )
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(head + b"Connection: close\r\n\r\n" + body)

    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    bound = listener.extra(anyio.abc.SocketAttribute.local_port)
    task_status.started(bound)
    await listener.serve(handle)


# ---- the watchdog -----------------------------------------------------------------------------

WATCHDOG_AGENTS_TRACKED = Gauge(
    "fleetward_watchdog_agents_tracked",
    "Agents this watchdog replica keeps a clock for (its partition).",
    registry=REGISTRY,
)
WATCHDOG_AGENTS = Gauge(
    "fleetward_watchdog_agents",
    "Tracked agents by liveness state: alive, warning, critical, dismissed (a person resolved "
    "the escalation; judged again from the next heartbeat), offline, paused, retired.",
    ["state"],
    registry=REGISTRY,
)
WATCHDOG_GRACE = Gauge(
    "fleetward_watchdog_in_grace",
    "1 while the watchdog judges no one (after its start, a reconnect or a NATS outage).",
    registry=REGISTRY,
)
ESCALATIONS_RAISED = Counter(
    "fleetward_escalations_raised",
    "Escalations (and tier raises) this replica stored; another replica's are not counted.",
    ["tier", "reason"],
    registry=REGISTRY,
)
DETECTION_DELAY = Histogram(
    "fleetward_watchdog_detection_delay_seconds",
    "From the moment a condition fell due (a deadline; a triggering event) to the escalation "
    "being stored, by the watchdog host's clock.",
    ["reason"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
WATCHDOG_PUBLISHED = Counter(
    "fleetward_watchdog_publish_outcomes",
    "Steps of the watchdog's plans by outcome: stored, duplicate (another replica or an earlier "
    "run did it), closed (the escalation was resolved meanwhile), failed.",
    ["outcome"],
    registry=REGISTRY,
)
WATCHDOG_REJECTED = Counter(
    "fleetward_watchdog_rejected",
    "Events the watchdog could not use (see fleet.dead_letters for the projector's view).",
    ["stream"],
    registry=REGISTRY,
)


# ---- the fleet: read from the public views (schema fleet) by the projector process -----------

FLEET_REFRESH_S: Final = 10.0
FLEET_READ_TIMEOUT_S: Final = 20.0  # a Postgres that stopped answering counts as an error
# every known value gets a sample (0 when none), so rules and dashboards never see a gap
AGENT_STATUSES: Final = ("active", "paused", "offline", "retired")
TASK_STATUSES: Final = (
    "inbox", "assigned", "in_progress", "blocked", "review", "done", "cancelled"
)  # fmt: skip
PRIORITIES: Final[tuple[str, ...]] = get_args(Priority)
TIERS: Final[tuple[str, ...]] = get_args(Tier)


@dataclass(frozen=True, slots=True)
class TeamBudget:
    """The tightest team budget of one window, and the team's spend in that window so far."""

    team: str
    window: str
    limit_usd: float
    spent_usd: float

    @property
    def used(self) -> float:
        if self.limit_usd > 0:
            return self.spent_usd / self.limit_usd
        return float("inf") if self.spent_usd > 0 else 0.0


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    agents: dict[str, int]  # status -> agents
    tasks: dict[tuple[str, str], int]  # (status, priority) -> tasks
    escalations: dict[str, int]  # tier -> open escalations
    spend_today: dict[str, float]  # team -> USD today (UTC day)
    budgets: list[TeamBudget]
    at: float  # when it was read (unix time)


def window_start(window: str, today: date) -> date:
    """The first UTC day a budget window counts (the spend projection keeps UTC days)."""
    if window == "day":
        return today
    if window == "month":
        return today.replace(day=1)
    return date.min


def team_budgets(budgets: dict[str, BudgetSet]) -> dict[tuple[str, str], float]:
    """(team, window) -> the tightest limit among the team budgets set on that window."""
    out: dict[tuple[str, str], float] = {}
    for b in budgets.values():
        if b.scope == "team":
            key = (b.scope_id, b.window)
            out[key] = min(out.get(key, b.limit_usd), b.limit_usd)
    return out


class FleetMetrics(Collector):
    """The fleet gauges, served from the last snapshot ``refresh`` read. Budgets are not
    projected yet: ``run`` follows each fw.budget.<id> subject's last ``budget.set`` from the
    stream (team budgets only; agent ids are not labels, org budgets are not exposed)."""

    def __init__(self) -> None:
        self.snapshot: FleetSnapshot | None = None
        self.budgets: dict[str, BudgetSet] = {}  # budget id -> its last budget.set
        self._changed = anyio.Event()  # a budget arrived: refresh now, not at the next tick

    def on_budget(self, subject: str, data: bytes, _seq: int, _ns: int) -> None:
        try:
            event = admit(subject, data)
        except Rejected:
            return  # the projector's dead letters record it
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
        by_window = {r["team"]: {"day": r["today"], "month": r["month"], "lifetime": r["since"]}
                     for r in spend}  # fmt: skip
        snap = FleetSnapshot(
            agents={r["status"]: r["n"] for r in agents},
            tasks={(r["status"], r["priority"]): r["n"] for r in tasks},
            escalations={r["tier"]: r["n"] for r in escalations},
            spend_today={team: float(w["day"]) for team, w in by_window.items()},
            budgets=[
                TeamBudget(team, window, limit, float(by_window.get(team, {}).get(window, 0)))
                for (team, window), limit in sorted(limits.items())
            ],
            at=time.time(),
        )
        self.snapshot = snap
        return snap

    async def run(self, rt: Runtime, stop: anyio.Event, interval: float = FLEET_REFRESH_S) -> None:
        """Refresh every ``interval`` until ``stop`` is set. Postgres away is logged and counted
        (fleetward_postgres_errors_total{component="fleet_metrics"}), never fatal."""
        self.snapshot, self.budgets, self._changed = None, {}, anyio.Event()
        budgets = StreamFollower(
            rt.nc,
            rt.js,
            EVENTS_STREAM,
            (wildcard("budget"),),
            self.on_budget,
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
        for team, usd in sorted(snap.spend_today.items()):
            spend.add_metric([team], usd)
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


FLEET = FleetMetrics()
REGISTRY.register(FLEET)
