"""``fleetward budgets``: every budget with its spend in the current window and its state (read
from ``fleet.budgets``), one budget in full (``show``), and ``set`` (published through the
client, which refuses at once, in one line, a scope or window that does not exist, a person
without the role budget-admin, and a setting that would change nothing)."""

from __future__ import annotations

import argparse
from decimal import Decimal

import asyncpg
from rich.table import Table

from fleetward.services.cli.command import PERSON, Command, console, read
from fleetward.services.client import FleetClient
from fleetward.services.client.intents import (
    BUDGET_SCOPES,
    BUDGET_WINDOWS,
    IntentRefused,
    budget_problem,
)
from fleetward.services.config import Settings
from fleetward.services.db import Conn, q
from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.connect import open_runtime


def _arguments(budgets: argparse.ArgumentParser) -> None:
    """``budgets`` with no action lists them, like ``budgets list``."""
    actions = budgets.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", help="every budget: its spend in the current window, its state")
    show = actions.add_parser("show", help="one budget in full")
    show.add_argument("budget_id")
    set_ = actions.add_parser(
        "set", help="set a budget (or change it): needs the role budget-admin"
    )
    set_.add_argument("budget_id")
    set_.add_argument("--scope", required=True, metavar="|".join(BUDGET_SCOPES))
    set_.add_argument("--scope-id", required=True, help="the agent, team, project or org")
    set_.add_argument("--window", required=True, metavar="|".join(BUDGET_WINDOWS),
                      help="the UTC day, the UTC month, or ever")  # fmt: skip
    set_.add_argument("--limit-usd", required=True, type=float, metavar="USD")
    set_.add_argument("--limit-tokens", type=int, default=None, metavar="N",
                      help="a limit on tokens in and out together (default: none)")  # fmt: skip
    set_.add_argument("--warn-at", type=float, default=0.8, metavar="SHARE",
                      help="the share of a limit that warns (default: 0.8)")  # fmt: skip


async def _budgets(settings: Settings, args: argparse.Namespace) -> None:
    if args.action == "show":
        if not await read(settings, lambda c: show_budget(c, args.budget_id)):
            raise FleetwardError(f"no budget {args.budget_id!r} (set it: fleetward budgets set)")
        return
    if args.action != "set":
        await read(settings, show_budgets)
        return
    problem = budget_problem(args.scope, args.window)
    if problem is not None:  # before any connection
        raise IntentRefused(problem)
    async with open_runtime(settings, identity=PERSON, prepare=True, pool_size=2) as rt:
        event = await FleetClient(rt.nc, rt.actor).set_budget(
            args.budget_id,
            scope=args.scope,
            scope_id=args.scope_id,
            window=args.window,
            limit_usd=args.limit_usd,
            limit_tokens=args.limit_tokens,
            warn_at=args.warn_at,
        )
    tokens = f" and {event.limit_tokens} tokens" if event.limit_tokens is not None else ""
    console.print(
        f"set budget {event.budget}: {event.scope} {event.scope_id}, ${event.limit_usd:g}"
        f"{tokens} per {event.window} (warns at {event.warn_at:.0%})"
    )


def _tokens(r: asyncpg.Record) -> str:
    """``spent / limit`` tokens, or the tokens spent alone without a token limit."""
    if r["limit_tokens"] is None:
        return f"{r['spent_tokens']} (no limit)"
    return f"{r['spent_tokens']} / {r['limit_tokens']}"


def _usd(amount: Decimal) -> str:
    return f"${amount:.4f}"


async def show_budgets(conn: Conn) -> None:
    rows = await conn.fetch(q("budgets_list"))
    columns = ("budget", "scope", "scope id", "window", "limit", "spent", "reserved",
               "remaining", "state", "tokens")  # fmt: skip
    table = Table(*columns, title="budgets (spent in the current window)")
    for i in (0, 2):
        table.columns[i].overflow = "fold"
    for r in rows:
        table.add_row(
            r["budget_id"], r["scope"], r["scope_id"], r["budget_window"], _usd(r["limit_usd"]),
            _usd(r["spent_usd"]), _usd(r["reserved_usd"]), _usd(r["remaining_usd"]),
            r["state"], _tokens(r),
        )  # fmt: skip
    console.print(table)
    if not rows:
        console.print("no budgets (fleetward budgets set BUDGET --scope ... to set one)")


async def show_budget(conn: Conn, budget: str) -> bool:
    """Print one budget; False when there is none."""
    r = await conn.fetchrow(q("budget_detail"), budget)
    if r is None:
        return False
    since = f"since {r['window_start']}" if r["window_start"] else "ever"
    lines = [
        f"[bold]{r['budget_id']}[/bold]: {r['scope']} {r['scope_id']}, per {r['budget_window']}",
        f"state      {r['state']} (warns at {r['warn_at']:.0%} of a limit)",
        f"limit      {_usd(r['limit_usd'])}",
        f"spent      {_usd(r['spent_usd'])} ({since}, UTC days)",
        f"reserved   {_usd(r['reserved_usd'])}",
        f"remaining  {_usd(r['remaining_usd'])}",
        f"tokens     {_tokens(r)}"
        + (f", {r['remaining_tokens']} remaining" if r["limit_tokens"] is not None else ""),
        f"set by     {r['set_by']} at {r['set_at']:%Y-%m-%d %H:%M:%S} UTC "
        f"(first set {r['created_at']:%Y-%m-%d %H:%M:%S} UTC)",
    ]
    for line in lines:
        console.print(line)
    return True


BUDGETS = Command(
    "budgets",
    "budgets with their spend in the current window and their state; show one; set one",
    _arguments,
    _budgets,
)
