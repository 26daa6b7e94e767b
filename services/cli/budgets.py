"""``fleetward budgets``: every budget with its spend in the current window and its state (read
from ``fleet.budgets``), one budget in full (``show``), and ``set`` (published through the
client, which refuses at once, in one line, a scope or window that does not exist, a person
without the role budget-admin, and a setting that would change nothing)."""

from __future__ import annotations

import argparse
from decimal import Decimal

from rich.text import Text

from fleetward.schemas.bounds import MAX_LIMIT_TOKENS
from fleetward.services.cli.args import add_json, ident, share, usd, whole
from fleetward.services.cli.command import PERSON, Command, console, read
from fleetward.services.cli.output import Column, Listing, Row, page_of, show, show_one, shown
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

BUDGET_ID = ident("budget id")


def _arguments(budgets: argparse.ArgumentParser) -> None:
    """``budgets`` with no action lists them, like ``budgets list``."""
    add_json(budgets)
    actions = budgets.add_subparsers(dest="action", metavar="ACTION", help="none: list them")
    listed = actions.add_parser(
        "list", help="every budget: its spend in the current window, its state"
    )
    add_json(listed, nested=True)
    show = actions.add_parser("show", help="one budget in full")
    show.add_argument("budget_id", type=BUDGET_ID, help="the budget's id")
    add_json(show, "{budget_id, scope, ...}: the budget's row of fleet.budgets", nested=True)
    set_ = actions.add_parser(
        "set", help="set a budget (or change it): needs the role budget-admin"
    )
    set_.add_argument("budget_id", type=BUDGET_ID, help="the budget's id (new, or one to change)")
    set_.add_argument("--scope", required=True, metavar="|".join(BUDGET_SCOPES),
                      help="what it limits: one agent, a team, a project or the org")  # fmt: skip
    set_.add_argument("--scope-id", required=True, type=ident("scope id"),
                      help="the agent, team, project or org")  # fmt: skip
    set_.add_argument("--window", required=True, metavar="|".join(BUDGET_WINDOWS),
                      help="the UTC day, the UTC month, or ever")  # fmt: skip
    set_.add_argument(
        "--limit-usd", required=True, type=usd(), metavar="USD",
        help="the most it may spend in a window, in US dollars (e.g. 25.00)",
    )  # fmt: skip
    set_.add_argument("--limit-tokens", type=whole(0, MAX_LIMIT_TOKENS), default=None,
                      metavar="N",
                      help="a limit on tokens in and out together (default: none)")  # fmt: skip
    set_.add_argument("--warn-at", type=share, default=0.8, metavar="SHARE",
                      help="the share of a limit that warns (default: 0.8)")  # fmt: skip


async def _budgets(settings: Settings, args: argparse.Namespace) -> None:
    if args.action == "show":
        if not await read(settings, lambda c: show_budget(c, args.budget_id, args.json)):
            raise FleetwardError(f"no budget {args.budget_id!r} (set it: fleetward budgets set)")
        return
    if args.action != "set":
        await read(settings, lambda c: show_budgets(c, args.json))
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


def _tokens(r: Row) -> str:
    """``spent / limit`` tokens, or the tokens spent alone without a token limit."""
    if r["limit_tokens"] is None:
        return f"{r['spent_tokens']} (no limit)"
    return f"{r['spent_tokens']} / {r['limit_tokens']}"


def _usd(amount: Decimal) -> str:
    return f"${amount:.4f}"


BUDGETS_LISTING = Listing(
    "budgets (spent in the current window)",
    (Column("budget_id", whole=True), Column("scope"), Column("scope_id", whole=True),
     Column("budget_window"), Column("limit_usd", lambda r: _usd(r["limit_usd"])),
     Column("spent_usd", lambda r: _usd(r["spent_usd"])),
     Column("reserved_usd", lambda r: _usd(r["reserved_usd"])),
     Column("remaining_usd", lambda r: _usd(r["remaining_usd"])), Column("state"),
     Column("spent_tokens", _tokens)),
    empty="no budgets (fleetward budgets set BUDGET --scope ... to set one)",
)  # fmt: skip


async def show_budgets(conn: Conn, as_json: bool) -> None:
    """Every budget (``fleet.budgets``), those nearest their limit first."""
    show(console, BUDGETS_LISTING, page_of(await conn.fetch(q("budgets_list"))), as_json)


async def show_budget(conn: Conn, budget: str, as_json: bool) -> bool:
    """Print one budget (its ``fleet.budgets`` row); False when there is none."""
    r = await conn.fetchrow(q("budget_detail"), budget)
    if r is None:
        return False
    since = f"since {r['window_start']}" if r["window_start"] else "ever"
    lines: list[str | Text] = [
        shown(
            (r["budget_id"], "bold"), f": {r['scope']} {r['scope_id']}, per {r['budget_window']}"
        ),
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
    show_one(console, r, lines, as_json)
    return True


BUDGETS = Command(
    "budgets",
    "budgets with their spend in the current window and their state; show one; set one",
    _arguments,
    _budgets,
)
