"""KPI rollups: per agent, UTC day (stream time), team and version, what the KPI views divide
(part of the projection ``spend``, which folds them beside its spend rows; docs/views.md,
``fleet.kpi_agents``). Pure.

- ``kpi_daily``: runs started and finished (succeeded, failed), the exact sum of their latency
  (ms), model and tool cost (USD, exact), tool calls, their errors and the sum of their
  duration (ms). A row is keyed by the agent's team and version when the event was stored
  (the spend projection's ``spend_agents``), so what an agent did under one version stays with
  that version, live and after a rebuild.
- ``kpi_latency_daily``: finished runs counted per latency bucket, for the 95th percentile. A
  bucket is named by its upper edge ``le_ms``; the edges are the R20 preferred numbers (1.00,
  1.12, 1.25, ... 9.00) times 10^0 .. 10^9 ms, then 10^10 ms (above the contract's longest
  latency): each edge is at most 8/7 of the one before, so a percentile read from the buckets
  is the upper edge of the bucket holding the exact value: >= it and < 8/7 of it (1 ms for
  latencies under 1 ms).
- The agent's rows are named in ``spend_agents.kpi_keys`` ('team/version': a team is an
  ``Ident``, so the first '/' splits them), so a batch loads every row it may add to before it
  is folded, whatever registrations or version changes come earlier in it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Final

from fleetward.projections.base import Key, Row, Table
from fleetward.projections.money import add_exact, money
from fleetward.schemas.events import RunFinished, RunStarted, SpendRecorded, ToolCalled

Activity = SpendRecorded | ToolCalled | RunStarted | RunFinished

KPI_DAILY = Table(
    name="fleetward.kpi_daily",
    key=("agent_id", "day", "team", "version"),
    key_types=("text", "date", "text", "text"),
    columns=(
        "agent_id",
        "day",
        "team",
        "version",
        "runs_started",
        "runs",
        "runs_succeeded",
        "runs_failed",
        "latency_ms",
        "model_cost_usd",
        "tool_cost_usd",
        "tool_calls",
        "tool_errors",
        "tool_ms",
    ),
)

KPI_LATENCY_DAILY = Table(
    name="fleetward.kpi_latency_daily",
    key=("agent_id", "day", "team", "version", "le_ms"),
    key_types=("text", "date", "text", "text", "numeric"),
    columns=("agent_id", "day", "team", "version", "le_ms", "runs"),
)

TABLES = (KPI_DAILY, KPI_LATENCY_DAILY)

_R20: Final = ("1.00", "1.12", "1.25", "1.40", "1.60", "1.80", "2.00", "2.24", "2.50", "2.80",
               "3.15", "3.55", "4.00", "4.50", "5.00", "5.60", "6.30", "7.10", "8.00",
               "9.00")  # fmt: skip
EDGES_MS: Final[tuple[Decimal, ...]] = (
    *(Decimal(m).scaleb(n).normalize() for n in range(10) for m in _R20),
    Decimal("1E+10"),
)


def bucket(latency_ms: float) -> Decimal:
    """The upper edge (ms) of the bucket holding ``latency_ms``: the smallest edge >= it."""
    return EDGES_MS[bisect_left(EDGES_MS, money(latency_ms))]


def kpi_key(team: str, version: str) -> str:
    """The entry of ``spend_agents.kpi_keys`` naming an agent's rows under a team and version."""
    return f"{team}/{version}"


def keys(
    agent: str, day: date, kpi_keys: list[str], event: Activity
) -> Iterator[tuple[Table, Key]]:
    """The rollup rows ``event`` of ``agent`` on ``day`` may add to: those under every team and
    version the agent has rows under (``kpi_keys``)."""
    for entry in kpi_keys:
        team, version = entry.split("/", 1)
        yield KPI_DAILY, (agent, day, team, version)
        if isinstance(event, RunFinished):
            yield KPI_LATENCY_DAILY, (agent, day, team, version, bucket(event.latency_ms))


def add(day_row: Row | None, key: Key, event: Activity, cost: Decimal) -> Row:
    """``day_row`` (None: a new one, keyed ``key``) with ``event`` added; ``cost`` is its
    ``cost_usd`` as ``money`` (0 for a run's start or end)."""
    row = dict(day_row) if day_row else _empty(key)
    match event:
        case RunStarted():
            row["runs_started"] += 1
        case RunFinished():
            row["runs"] += 1
            row["runs_succeeded"] += event.outcome == "succeeded"
            row["runs_failed"] += event.outcome == "failed"
            row["latency_ms"] = add_exact(row["latency_ms"], money(event.latency_ms))
        case SpendRecorded():
            row["model_cost_usd"] = add_exact(row["model_cost_usd"], cost)
        case ToolCalled():
            row["tool_cost_usd"] = add_exact(row["tool_cost_usd"], cost)
            row["tool_calls"] += 1
            row["tool_errors"] += not event.ok
            row["tool_ms"] = add_exact(row["tool_ms"], money(event.duration_ms))
    return row


def add_latency(old: Row | None, key: Key) -> Row:
    """The latency bucket row keyed ``key`` with one more finished run."""
    agent, day, team, version, le_ms = key
    runs = old["runs"] if old else 0
    return {"agent_id": agent, "day": day, "team": team, "version": version, "le_ms": le_ms,
            "runs": runs + 1}  # fmt: skip


def _empty(key: Key) -> Row:
    agent, day, team, version = key
    zero = Decimal(0)
    return {"agent_id": agent, "day": day, "team": team, "version": version,
            "runs_started": 0, "runs": 0, "runs_succeeded": 0, "runs_failed": 0,
            "latency_ms": zero, "model_cost_usd": zero, "tool_cost_usd": zero,
            "tool_calls": 0, "tool_errors": 0, "tool_ms": zero}  # fmt: skip
