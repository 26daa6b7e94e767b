"""``fleetward kpis``: what each agent, team or agent version achieved over the last 7 or 30 UTC
days (``fleet.kpi_agents``, ``kpi_teams``, ``kpi_versions``; docs/views.md), as a table or, with
``--json``, as one JSON document for scripts (``output.py``: money as decimal strings). A level,
window or team that does not exist is one line and exit 2."""

from __future__ import annotations

import argparse
from decimal import Decimal

from fleetward.services.cli.args import add_json, add_limit, ident
from fleetward.services.cli.command import Command, console, read
from fleetward.services.cli.output import Column, Listing, Page, fetch_page, show
from fleetward.services.config import Settings
from fleetward.services.db import Conn, q
from fleetward.services.errors import FleetwardError

LEVELS = ("agent", "team", "version")
WINDOWS = (7, 30)
_QUERY = {"agent": "kpis_agents", "team": "kpis_teams", "version": "kpis_versions"}
_NO_LIMIT = 2**62


def _arguments(kpis: argparse.ArgumentParser) -> None:
    kpis.add_argument("--team", metavar="T", type=ident("team"),
                      help="only this team (its agents now, or itself)")  # fmt: skip
    kpis.add_argument("--by", default="agent", choices=LEVELS, metavar="|".join(LEVELS),
                      help="one row per agent (default), team or agent version")  # fmt: skip
    kpis.add_argument("--window", default="7", choices=[str(w) for w in WINDOWS],
                      metavar="|".join(map(str, WINDOWS)),
                      help="the last 7 (default) or 30 UTC days, today included")  # fmt: skip
    add_limit(kpis, 100, zero_all=True)
    add_json(kpis, "{by, window_days, team, rows, total, truncated}")


async def _kpis(settings: Settings, args: argparse.Namespace) -> None:
    days, limit = int(args.window), args.limit or _NO_LIMIT

    async def load(conn: Conn) -> Page:
        if args.team is not None and not await conn.fetchval(q("kpis_team_known"), args.team):
            raise FleetwardError(
                f"no team {args.team!r}: no agent is in it and it has no KPIs in the last 30 days"
            )
        return await fetch_page(conn, _QUERY[args.by], days, args.team, limit=limit)

    page = await read(settings, load)
    meta = {"by": args.by, "window_days": days, "team": args.team}
    show(console, _listing(args.by, days, args.team), page, args.json, meta)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _usd(value: Decimal | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def _ms(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _listing(by: str, days: int, team: str | None) -> Listing:
    """The KPI table per ``by``: the columns that name a row, then the KPIs."""
    names = {
        "agent": (Column("agent_id", whole=True), Column("team"), Column("version")),
        "team": (Column("team", whole=True), Column("agents")),
        "version": (Column("agent_id", whole=True), Column("version"),
                    Column("current", lambda r: "yes" if r["current"] else ""), Column("model")),
    }[by]  # fmt: skip
    kpis = (
        Column("runs"), Column("success_rate", lambda r: _rate(r["success_rate"])),
        Column("avg_latency_ms", lambda r: _ms(r["avg_latency_ms"])),
        Column("p95_latency_ms", lambda r: _ms(r["p95_latency_ms"])),
        Column("cost_usd", lambda r: _usd(r["cost_usd"])),
        Column("cost_per_run_usd", lambda r: _usd(r["cost_per_run_usd"])),
        Column("tasks_done"), Column("cost_per_task_usd", lambda r: _usd(r["cost_per_task_usd"])),
        Column("approval_rate", lambda r: _rate(r["approval_rate"])),
        Column("rework_rate", lambda r: _rate(r["rework_rate"])),
        Column("tool_error_rate", lambda r: _rate(r["tool_error_rate"])),
        Column("utilization", lambda r: _rate(r["utilization"])),
    )  # fmt: skip
    scope = f"team {team}" if team else "all teams"
    return Listing(f"KPIs per {by}, last {days} days ({scope})", names + kpis,
                   empty=f"no KPIs per {by} in the last {days} days")  # fmt: skip


KPIS = Command(
    "kpis",
    "KPIs per agent, team or agent version over the last 7 or 30 days (--json for scripts)",
    _arguments,
    _kpis,
)
