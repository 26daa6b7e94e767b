"""Prometheus metrics of the pipeline, the connections and the watchdog, in one registry
(``REGISTRY``); call sites write ``metrics.EVENTS.labels(...).inc()``.

Label values are bounded: projection names, event type names, reasons, statuses, priorities,
tiers, teams (few), budget ids (set by people, and capped: ``budgets``). Never an id of an
agent, a task or an event.

Beside the metric objects: ``http`` serves /metrics and /healthz; ``health`` keeps the named
health checks /healthz reports; ``budgets`` holds the pure budget rules; ``fleet`` the fleet
gauges, read from the public views and registered in ``REGISTRY`` when it is imported
(``serve`` runs their refresher).

Invariants:
- This module imports no other service: the runtime, the projector and the watchdog import it.
  ``fleet`` imports the runtime, never the other way round.
"""

from __future__ import annotations

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
ACTIVE = Gauge(
    "fleetward_projection_active",
    "1 while this process writes the projection (holds its lease), 0 while it stands by.",
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
    """Count ``exc`` for ``component`` if it is a Postgres error (``is_postgres_error``)."""
    if is_postgres_error(exc):
        POSTGRES_ERRORS.labels(component).inc()


FLEET_BAD_ROWS = Counter(
    "fleetward_fleet_metrics_bad_rows",
    "Rows of the views that the fleet gauges skipped at a reading because a value does not fit "
    "a gauge (e.g. a team's spend past the largest float); the other gauges still refresh. "
    "view: the view read (fleet.spend_daily: a team's spend today; fleet.budgets: a budget).",
    ["view"],
    registry=REGISTRY,
)
for _view in ("fleet.spend_daily", "fleet.budgets"):  # present at 0, so increase() sees the first
    FLEET_BAD_ROWS.labels(_view)

for _component in ("projector", "fleet_metrics"):  # present at 0, so increase() sees the first
    POSTGRES_ERRORS.labels(_component)


# ---- the watchdog -----------------------------------------------------------------------------

WATCHDOG_AGENTS_TRACKED = Gauge(
    "fleetward_watchdog_agents_tracked",
    "Agents this watchdog replica keeps a clock for (its partition).",
    registry=REGISTRY,
)
WATCHDOG_AGENTS = Gauge(
    "fleetward_watchdog_agents",
    "Tracked agents by liveness state: alive, warning, critical, dismissed (a person resolved "
    "the escalation; judged again from the next heartbeat), offline, paused, retired, "
    "quarantined (judging it failed: not judged until it registers again; see "
    "fleetward_watchdog_failures_total).",
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
WATCHDOG_FAILURES = Counter(
    "fleetward_watchdog_failures",
    "Agents, tasks, events or rows the watchdog could not judge, skipped while it judged the "
    "rest (a bug, or an input nobody foresaw; the log has each one), by stage: load (a "
    "projection row at start), heartbeat, event (a message read), liveness (an agent, then "
    "quarantined), overdue, stall, lease (a task), reconcile (an open escalation), tick (a "
    "whole judging round).",
    ["stage"],
    registry=REGISTRY,
)

# ---- the guard (services/guard) ---------------------------------------------------------------

GUARD_BUDGETS = Gauge(
    "fleetward_guard_budgets",
    "Budgets this guard replica follows (every budget set), by state it has stored: "
    "exhausted (a budget.exhausted in force) or not.",
    ["exhausted"],
    registry=REGISTRY,
)
GUARD_EXHAUSTED = Counter(
    "fleetward_guard_exhausted",
    "budget.exhausted events this replica stored (another replica's are not counted).",
    registry=REGISTRY,
)
GUARD_PAUSED = Counter(
    "fleetward_guard_agents_paused",
    "agent.paused events this replica stored for an exhausted budget.",
    registry=REGISTRY,
)
GUARD_PAUSE_LAG = Histogram(
    "fleetward_guard_pause_lag_seconds",
    "From the stream time of the event that exhausted a budget to each pause it calls for "
    "being stored, by the guard host's clock (DESIGN 3.9: within a second).",
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
GUARD_PUBLISHED = Counter(
    "fleetward_guard_publish_outcomes",
    "Steps of the guard's plans by outcome: stored, duplicate (another replica or an earlier "
    "run did it), moved (the budget changed under it: judged again), failed.",
    ["outcome"],
    registry=REGISTRY,
)
GUARD_FAILURES = Counter(
    "fleetward_guard_failures",
    "Messages or rows the guard could not fold, skipped while it folded the rest (the log has "
    "each one).",
    registry=REGISTRY,
)

OUTBOX_PUBLISHED = Counter(
    "fleetward_outbox_published",
    "Events the projector's outbox published (verdicts on task subjects, inbox commands), by "
    "outcome: stored, duplicate (published before, e.g. by another projector process), or "
    "found (stored before a restart, past the duplicate window: not published again).",
    ["outcome"],
    registry=REGISTRY,
)
OUTBOX_WAITING = Gauge(
    "fleetward_outbox_waiting",
    "Events in the outbox not yet published.",
    registry=REGISTRY,
)

# ---- the auditor (services/audit) ---------------------------------------------------------------

AUDIT_CHAIN_SEQ = Gauge(
    "fleetward_audit_chain_seq",
    "The last FW_EVENTS sequence the auditor has chained.",
    registry=REGISTRY,
)
AUDIT_SEALS = Counter(
    "fleetward_audit_seals",
    "audit.sealed published by this auditor replica, by outcome: stored, duplicate (a retry or "
    "another replica's, same id), lost (another replica sealed the period first).",
    ["outcome"],
    registry=REGISTRY,
)
AUDIT_LAST_SEAL = Gauge(
    "fleetward_audit_last_seal_timestamp_seconds",
    "When this replica last stored a seal (its clock).",
    registry=REGISTRY,
)
AUDIT_FAILURES = Counter(
    "fleetward_audit_failures",
    "Auditor rounds that failed (NATS away, ...) and were tried again.",
    registry=REGISTRY,
)
