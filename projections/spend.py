"""Spend: per agent, day (UTC, by the stream's time of record) and team: model and tool cost,
tokens, runs and tool calls, under the team the agent belonged to when it spent; and the same
spend attributed per model and day, per task and day, and per run (attribution.py).

- An agent re-registered into another team starts a new row for the rest of the day; what it
  spent before stays with the old team (in every view, live and after a rebuild). Before its
  first registration an agent spends under ``unassigned``.
- ``spend_agents`` keeps each agent's current team and every team it has a day row under
  (``teams``), so the rows an event may add to are known before the batch is folded
  (``touches_more``), however the events are batched.
- Spend and tool calls of an agent that is paused or retired are still recorded (the truth is
  kept) and flagged: ``paused_cost_usd`` and ``paused_events`` count what it reported while its
  status (the agents' state machine, projections/lifecycle.py) was not active. An agent's
  lifecycle event that machine refuses is refused here too (``Rejected``), as by every reader.
- Money is added as ``Decimal`` from the shortest decimal form of each reported figure, so sums
  are exact and a rebuild equals the live projection to the last digit (money.py). Token sums
  are ``numeric`` too: the contract bounds one spend's tokens, nothing bounds a day's.
- Budgets count their spend from these rows (fleet.budgets): no second copy of the money.
- The KPI rollups per agent, day, team and version (kpis.py) are folded here too, from the
  same events, under the team and version (``agent.registered``, ``agent.version_changed``)
  in force when each was stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import ClassVar

from fleetward.projections import attribution, kpis, lifecycle
from fleetward.projections.base import Key, Meta, Projection, Row, Rows, Table
from fleetward.projections.money import add_exact, money
from fleetward.schemas.events import (
    AgentRegistered,
    AgentVersionChanged,
    Event,
    RunFinished,
    RunStarted,
    SpendRecorded,
    ToolCalled,
)
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import wildcard

SPEND_AGENTS = Table(
    name="fleetward.spend_agents",
    key=("agent_id",),
    key_types=("text",),
    columns=("agent_id", "team", "teams", "status", "paused_by", "version", "kpi_keys"),
)

SPEND_DAILY = Table(
    name="fleetward.spend_daily",
    key=("agent_id", "day", "team"),
    key_types=("text", "date", "text"),
    columns=(
        "agent_id",
        "day",
        "team",
        "model_cost_usd",
        "tool_cost_usd",
        "tokens_in",
        "tokens_out",
        "runs",
        "runs_failed",
        "tool_calls",
        "tool_errors",
        "spend_events",
        "paused_cost_usd",
        "paused_events",
    ),
)

_ACTIVITY = (SpendRecorded, ToolCalled, RunStarted, RunFinished)
_STATUS = lifecycle.WITH_VERSION
_READS_AGENT = (*_STATUS, *_ACTIVITY)
_COSTED = (SpendRecorded, ToolCalled)
_ZERO = Decimal(0)
HELD_BACK = frozenset({"paused", "retired"})  # statuses whose spend is flagged
UNASSIGNED = "unassigned"


def _member(agent: str) -> Row:
    """An agent the spend projection had not heard of yet."""
    return {
        "agent_id": agent,
        "team": UNASSIGNED,
        "teams": [],
        "status": "active",
        "paused_by": None,
        "version": "",
        "kpi_keys": [],
    }


def _empty_day(agent: str, meta: Meta, team: str) -> Row:
    return {
        "agent_id": agent,
        "day": meta.time.date(),
        "team": team,
        "model_cost_usd": Decimal(0),
        "tool_cost_usd": Decimal(0),
        "tokens_in": 0,
        "tokens_out": 0,
        "runs": 0,
        "runs_failed": 0,
        "tool_calls": 0,
        "tool_errors": 0,
        "spend_events": 0,
        "paused_cost_usd": Decimal(0),
        "paused_events": 0,
    }


class Spend(Projection):
    name: ClassVar[str] = "spend"
    stream: ClassVar[str] = EVENTS_STREAM
    subjects: ClassVar[tuple[str, ...]] = (wildcard("agent"),)
    tables: ClassVar[tuple[Table, ...]] = (
        SPEND_AGENTS,
        SPEND_DAILY,
        *attribution.TABLES,
        *kpis.TABLES,
    )

    def touches(self, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        if isinstance(event, _READS_AGENT):
            yield SPEND_AGENTS, (event.agent,)
        if isinstance(event, _ACTIVITY):
            yield from attribution.keys(event, meta)

    def touches_more(self, rows: Rows, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        """The agent's day rows under every team it has spent under, and its KPI rows under
        every team and version: registrations earlier in the batch may move it back to any of
        them (a team or version it never had rows under has none)."""
        if not isinstance(event, _ACTIVITY):
            return ()
        member = rows.get(SPEND_AGENTS, (event.agent,))
        if member is None:
            return ()
        agent, day = event.agent, meta.time.date()
        return [
            *((SPEND_DAILY, (agent, day, team)) for team in member["teams"]),
            *kpis.keys(agent, day, member["kpi_keys"], event),
        ]

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        if isinstance(event, _STATUS):
            member = rows.get(SPEND_AGENTS, (event.agent,))
            now, _ = lifecycle.step(lifecycle.Life.of(member), event)
            row = dict(member) if member else _member(event.agent)
            if isinstance(event, AgentRegistered):
                row["team"] = event.team
            if isinstance(event, AgentRegistered | AgentVersionChanged):
                row["version"] = event.version
            row.update(status=now.status, paused_by=now.paused_by)
            rows.put(SPEND_AGENTS, row)
            return
        if not isinstance(event, _ACTIVITY):
            return
        # each figure made exact once, and added to the agent's day and the attribution rows
        cost = money(event.cost_usd) if isinstance(event, _COSTED) else _ZERO
        attribution.attribute(rows, event, meta, cost)
        member = rows.get(SPEND_AGENTS, (event.agent,))
        member = member or _member(event.agent)
        team, status = member["team"], member["status"]
        version, today = member["version"], meta.time.date()
        kpi_key = kpis.kpi_key(team, version)
        if team not in member["teams"] or kpi_key not in member["kpi_keys"]:
            teams = sorted({*member["teams"], team})
            kpi_keys = sorted({*member["kpi_keys"], kpi_key})
            rows.put(SPEND_AGENTS, {**member, "teams": teams, "kpi_keys": kpi_keys})
        _add_kpis(rows, event, (event.agent, today, team, version), cost)
        old = rows.get(SPEND_DAILY, (event.agent, meta.time.date(), team))
        day = dict(old) if old else _empty_day(event.agent, meta, team)
        attribution.add_sums(day, event, cost)
        match event:
            case RunStarted():
                day["runs"] += 1
            case RunFinished():
                day["runs_failed"] += 1 if event.outcome == "failed" else 0
        if status in HELD_BACK:
            day["paused_events"] += 1
            if cost:
                day["paused_cost_usd"] = add_exact(day["paused_cost_usd"], cost)
        rows.put(SPEND_DAILY, day)


def _add_kpis(rows: Rows, event: attribution.Activity, key: Key, cost: Decimal) -> None:
    """Add ``event`` to the agent's KPI rollups keyed ``key`` (agent, day, team, version)."""
    rows.put(kpis.KPI_DAILY, kpis.add(rows.get(kpis.KPI_DAILY, key), key, event, cost))
    if isinstance(event, RunFinished):
        latency = (*key, kpis.bucket(event.latency_ms))
        old = rows.get(kpis.KPI_LATENCY_DAILY, latency)
        rows.put(kpis.KPI_LATENCY_DAILY, kpis.add_latency(old, latency))
