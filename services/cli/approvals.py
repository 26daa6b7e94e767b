"""``fleetward approvals`` (the open requests, oldest first, from ``fleet.approvals``),
``fleetward approve ID`` / ``deny ID --reason`` (published through the client, which refuses
at once, in one line, a person without the role approver, an unknown or decided request, and
one's own), and ``fleetward policies set|show`` (the tool policies of ``fleet.policies``; set
needs the role policy-admin)."""

from __future__ import annotations

import argparse

from rich.table import Table

from fleetward.services.cli import views
from fleetward.services.cli.command import PERSON, Command, console, read
from fleetward.services.client import FleetClient, IntentRefused
from fleetward.services.config import Settings
from fleetward.services.db import Conn, q
from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.connect import open_runtime

MAX_LISTED = 10_000  # open requests listed at most


def _list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=100, metavar="N",
                   help=f"the most requests listed, 1 to {MAX_LISTED:,}")  # fmt: skip


async def show_approvals(conn: Conn, limit: int) -> None:
    columns = ("approval", "agent", "asks for", "risk", "waiting", "deadline", "summary")
    table = Table(*columns, title="open approval requests (oldest first)")
    for i in (0, 1):
        table.columns[i].overflow = "fold"
    rows = await conn.fetch(q("approvals_open"), limit)
    for r in rows:
        due = f"{r['deadline_at']:%Y-%m-%d %H:%M:%S}" + (" OVERDUE" if r["overdue"] else "")
        table.add_row(r["approval_id"], r["agent"], f"{r['kind']} {r['name']}", r["risk"],
                      views.age(r["requested_at"]), due, r["summary"][:80])  # fmt: skip
    console.print(table)
    if not rows:
        console.print("no open approval requests")


async def _approvals(settings: Settings, args: argparse.Namespace) -> None:
    if not 1 <= args.limit <= MAX_LISTED:  # before any connection (a newcomer met a traceback)
        raise FleetwardError(f"--limit {args.limit}: it is 1 to {MAX_LISTED:,}")
    await read(settings, lambda c: show_approvals(c, args.limit))


def _decision_arguments(grant: bool) -> object:
    def arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("approval_id")
        p.add_argument("--reason", default="", required=not grant,
                       help="why (a denial needs one)")  # fmt: skip

    return arguments


async def _decide(settings: Settings, args: argparse.Namespace, grant: bool) -> None:
    async with open_runtime(settings, identity=PERSON, prepare=False, pool_size=2) as rt:
        event = await FleetClient(rt.nc, rt.actor).decide(
            args.approval_id, grant=grant, reason=args.reason
        )
    console.print(f"{'granted' if grant else 'denied'} {event.approval} of {event.agent}")


async def _approve(settings: Settings, args: argparse.Namespace) -> None:
    await _decide(settings, args, True)


async def _deny(settings: Settings, args: argparse.Namespace) -> None:
    await _decide(settings, args, False)


def _policy_arguments(policies: argparse.ArgumentParser) -> None:
    actions = policies.add_subparsers(dest="action", metavar="ACTION")
    show = actions.add_parser("show", help="the tool policies (of one scope)")
    show.add_argument("--scope", choices=("agent", "team", "risk"))
    show.add_argument("--scope-id")
    set_ = actions.add_parser("set", help="set one scope's tool policy: needs policy-admin")
    set_.add_argument("--scope", required=True, metavar="agent|team|risk")
    set_.add_argument("--scope-id", required=True, help="the agent, team, or risk class")
    set_.add_argument("--allow", nargs="*", default=[], metavar="TOOL")
    set_.add_argument("--deny", nargs="*", default=[], metavar="TOOL")
    set_.add_argument("--approve", nargs="*", default=[], metavar="TOOL",
                      help="tools that need a person's approval")  # fmt: skip
    set_.add_argument("--default", default="allow", metavar="allow|deny|approve",
                      help="for the tools not listed (default: allow)")  # fmt: skip
    set_.add_argument("--max-cost-usd", type=float, default=None, metavar="USD",
                      help="cost cap per call (default: none)")  # fmt: skip
    set_.add_argument("--reason", default="")


async def show_policies(conn: Conn, scope: str | None, scope_id: str | None) -> None:
    columns = ("policy", "scope", "version", "allow", "deny", "approve", "default", "cap", "set")
    table = Table(*columns, title="tool policies (most specific scope first)")
    table.columns[0].overflow = "fold"
    rows = await conn.fetch(q("policies_list"), scope, scope_id)
    for r in rows:
        cap = "-" if r["max_cost_usd"] is None else f"${r['max_cost_usd']:g}"
        table.add_row(
            r["policy_id"], f"{r['scope']} {r['scope_id']}", str(r["version"]),
            ", ".join(r["allow"]) or "-", ", ".join(r["deny"]) or "-",
            ", ".join(r["approve"]) or "-", r["default_verdict"], cap,
            f"{r['set_by']} {views.age(r['set_at'])}",
        )  # fmt: skip
    console.print(table)
    if not rows:
        console.print("no tool policies (every tool is allowed): fleetward policies set ...")


async def _policies(settings: Settings, args: argparse.Namespace) -> None:
    if args.action != "set":
        scope, scope_id = getattr(args, "scope", None), getattr(args, "scope_id", None)
        await read(settings, lambda c: show_policies(c, scope, scope_id))
        return
    if args.default not in ("allow", "deny", "approve"):
        raise IntentRefused(f"no verdict {args.default!r}: allow, deny or approve")
    async with open_runtime(settings, identity=PERSON, prepare=False, pool_size=2) as rt:
        event, version = await FleetClient(rt.nc, rt.actor).set_policy(
            args.scope, args.scope_id, allow=args.allow, deny=args.deny, approve=args.approve,
            default=args.default, max_cost_usd=args.max_cost_usd, reason=args.reason,
        )  # fmt: skip
    console.print(f"set policy {event.policy} of {event.scope} {event.scope_id}: version {version}")


APPROVALS = Command(
    "approvals", "open approval requests, oldest first", _list_arguments, _approvals
)
APPROVE = Command("approve", "grant an approval request: needs the role approver",
                  _decision_arguments(True), _approve)  # type: ignore[arg-type]  # fmt: skip
DENY = Command("deny", "deny an approval request (--reason): needs the role approver",
               _decision_arguments(False), _deny)  # type: ignore[arg-type]  # fmt: skip
POLICIES = Command(
    "policies", "tool policies: show them, or set one scope's", _policy_arguments, _policies
)
