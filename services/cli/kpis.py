"""``fleetward kpis``: what each agent, team or agent version achieved over the last 7 or 30 UTC
days (``fleet.kpi_agents``, ``kpi_teams``, ``kpi_versions``; docs/views.md), as a table or, with
``--json``, as one JSON document for scripts. A level, window or team that does not exist is one
line and exit 2."""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from typing import Any

import asyncpg
from rich.table import Table

from fleetward.services.cli.command import Command, console, read
from fleetward.services.config import Settings
from fleetward.services.db import Conn, q
from fleetward.services.errors import FleetwardError

LEVELS = ("agent", "team", "version")
WINDOWS = (7, 30)
_QUERY = {"agent": "kpis_agents", "team": "kpis_teams", "version": "kpis_versions"}
_NO_LIMIT = 2**62


def _arguments(kpis: argparse.ArgumentParser) -> None:
    kpis.add_argument("--team", metavar="T", help="only this team (its agents now, or itself)")
    kpis.add_argument("--by", default="agent", metavar="|".join(LEVELS),
                      help="one row per agent (default), team or agent version")  # fmt: skip
    kpis.add_argument("--window", default="7", metavar="|".join(map(str, WINDOWS)),
                      help="the last 7 (default) or 30 UTC days, today included")  # fmt: skip
    kpis.add_argument("--limit", type=int, default=100, metavar="N",
                      help="at most N rows (default 100; 0: all)")  # fmt: skip
    kpis.add_argument("--json", action="store_true",
                      help="print one JSON document: {by, window_days, team, rows}")  # fmt: skip


def problem(by: str, window: str, limit: int) -> str | None:
    """Why ``fleetward kpis`` refuses these arguments, or None."""
    if by not in LEVELS:
        return f"no KPI level {by!r}: it is one of {', '.join(LEVELS)}"
    if window not in {str(w) for w in WINDOWS}:
        return f"no KPI window {window!r}: it is 7 or 30 (days)"
    if limit < 0:
        return f"--limit {limit}: it is 0 (all) or more"
    return None


async def _kpis(settings: Settings, args: argparse.Namespace) -> None:
    why = problem(args.by, args.window, args.limit)
    if why is not None:  # before any connection
        raise FleetwardError(why)
    days, limit = int(args.window), args.limit or _NO_LIMIT

    rows: list[asyncpg.Record] = []

    async def load(conn: Conn) -> None:
        if args.team is not None and not await conn.fetchval(q("kpis_team_known"), args.team):
            raise FleetwardError(
                f"no team {args.team!r}: no agent is in it and it has no KPIs in the last 30 days"
            )
        rows.extend(await conn.fetch(q(_QUERY[args.by]), days, args.team, limit))

    await read(settings, load)
    if args.json:
        doc = {"by": args.by, "window_days": days, "team": args.team,
               "rows": [{k: _plain(v) for k, v in r.items()} for r in rows]}  # fmt: skip
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    _table(args.by, days, args.team, rows)
    if len(rows) == args.limit:
        console.print(f"the first {args.limit} rows (--limit N for more, 0 for all)")


def _plain(value: Any) -> Any:
    """A value as JSON has it: numeric sums and ratios as numbers (integers when whole)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _usd(value: Decimal | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def _ms(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _head(by: str, r: asyncpg.Record) -> tuple[str, ...]:
    """The cells that name a row."""
    if by == "agent":
        return r["agent_id"], r["team"], r["version"]
    if by == "team":
        return r["team"], str(r["agents"])
    return r["agent_id"], r["version"], "yes" if r["current"] else "", r["model"] or "-"


def _table(by: str, days: int, team: str | None, rows: list[asyncpg.Record]) -> None:
    names = {"agent": ("agent", "team", "version"), "team": ("team", "agents"),
             "version": ("agent", "version", "current", "model")}[by]  # fmt: skip
    kpis = ("runs", "success", "avg ms", "p95 ms", "cost", "$/run", "done", "$/task",
            "approved", "rework", "tool err", "util")  # fmt: skip
    scope = f"team {team}" if team else "all teams"
    table = Table(*names, *kpis, title=f"KPIs per {by}, last {days} days ({scope})")
    table.columns[0].overflow = "fold"
    for r in rows:
        head = _head(by, r)
        table.add_row(
            *head, str(r["runs"]), _rate(r["success_rate"]), _ms(r["avg_latency_ms"]),
            _ms(r["p95_latency_ms"]), _usd(r["cost_usd"]), _usd(r["cost_per_run_usd"]),
            str(r["tasks_done"]), _usd(r["cost_per_task_usd"]), _rate(r["approval_rate"]),
            _rate(r["rework_rate"]), _rate(r["tool_error_rate"]), _rate(r["utilization"]),
        )  # fmt: skip
    console.print(table)
    if not rows:
        console.print(f"no KPIs per {by} in the last {days} days")


KPIS = Command(
    "kpis",
    "KPIs per agent, team or agent version over the last 7 or 30 days (--json for scripts)",
    _arguments,
    _kpis,
)
