"""KPI gauges per team, pure: a row of ``fleet.kpi_teams`` (docs/views.md) as the fleet gauges
show it, and the gauge families of a reading (issue 16, part 5).

Labels are ``team`` and ``window`` (``7d``, ``30d``: the view's ``days``) only: never an agent
id or a version (an agent's or a version's KPIs are read from the views, or with ``fleetward
kpis``). Every team of the registry gets the counts (runs, cost, tasks done; 0 without
activity), so a team's series never has a gap; a ratio (success, approval, rework, tool errors,
utilization), an average, a percentile or a cost per run or task is served only where the view
has it (its denominator is not zero): no sample rather than a made-up 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from fleetward.services.metrics.budgets import Row, gauge_value


@dataclass(frozen=True, slots=True)
class KpiGauge:
    """One family: its name, help, the ``fleet.kpi_teams`` column it shows and what the column
    is divided by for the gauge's unit (1000: ms into seconds)."""

    name: str
    help: str
    column: str
    divisor: float = 1.0


KPI_GAUGES: Final = (
    KpiGauge("fleetward_kpi_runs", "Runs finished in the window, per team (fleet.kpi_teams).",
             "runs"),
    KpiGauge("fleetward_kpi_success_ratio",
             "Share of the team's finished runs that succeeded in the window.", "success_rate"),
    KpiGauge("fleetward_kpi_latency_avg_seconds",
             "Mean run latency of the team in the window (run.finished latency_ms).",
             "avg_latency_ms", 1000.0),
    KpiGauge("fleetward_kpi_latency_p95_seconds",
             "95th percentile run latency of the team in the window (the upper edge of its "
             "latency bucket: at most 8/7 of the exact value).", "p95_latency_ms", 1000.0),
    KpiGauge("fleetward_kpi_cost_usd", "Model and tool cost of the team in the window (USD).",
             "cost_usd"),
    KpiGauge("fleetward_kpi_cost_per_run_usd", "The team's cost per finished run in the window.",
             "cost_per_run_usd"),
    KpiGauge("fleetward_kpi_tasks_done",
             "Deliverables of the team approved in the window (tasks done).", "tasks_done"),
    KpiGauge("fleetward_kpi_cost_per_task_usd",
             "The team's cost per completed (approved) task in the window.", "cost_per_task_usd"),
    KpiGauge("fleetward_kpi_approval_ratio",
             "Share of the team's deliverables reviewed in the window that were approved.",
             "approval_rate"),
    KpiGauge("fleetward_kpi_rework_ratio",
             "Share of the team's deliverables reviewed in the window that were sent back.",
             "rework_rate"),
    KpiGauge("fleetward_kpi_tool_error_ratio",
             "Share of the team's tool calls in the window that failed.", "tool_error_rate"),
    KpiGauge("fleetward_kpi_utilization_ratio",
             "Busy share of the heartbeat time of the team's agents in the window.",
             "utilization"),
)  # fmt: skip
COUNTS: Final = frozenset({"runs", "cost_usd", "tasks_done"})  # 0 for a team without activity


@dataclass(frozen=True, slots=True)
class KpiReading:
    """One team and window of ``fleet.kpi_teams``: each gauge's value (None: no sample)."""

    team: str
    days: int
    values: tuple[float | None, ...]  # in the order of KPI_GAUGES

    @classmethod
    def of(cls, row: Row) -> KpiReading:
        """From a row of ``metrics_kpi_teams``. ``ValueError`` when a value is no finite
        float."""
        values = []
        for gauge in KPI_GAUGES:
            raw = row[gauge.column]
            if raw is None and gauge.column in COUNTS:
                raw = 0
            values.append(None if raw is None else gauge_value(raw) / gauge.divisor)
        return cls(team=row["team"], days=row["days"], values=tuple(values))


def kpi_families(readings: Iterable[KpiReading]) -> Iterator[Metric]:
    """The KPI gauge families of ``readings``, labelled team and window."""
    found = [GaugeMetricFamily(g.name, g.help, labels=["team", "window"]) for g in KPI_GAUGES]
    for reading in sorted(readings, key=lambda r: (r.team, r.days)):
        for family, value in zip(found, reading.values, strict=True):
            if value is not None:
                family.add_metric([reading.team, f"{reading.days}d"], value)
    yield from found
