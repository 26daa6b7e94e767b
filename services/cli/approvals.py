"""``fleetward approvals`` (the open requests, oldest first, from ``fleet.approvals``),
``fleetward approve ID`` / ``deny ID --reason`` (published through the client, which refuses
at once, in one line, a person without the role approver, an unknown or decided request, and
one's own), and ``fleetward policies set|show`` (the tool policies of ``fleet.policies``; set
needs the role policy-admin)."""

from __future__ import annotations

import argparse

from fleetward.schemas.bounds import MAX_COST_USD
from fleetward.services.cli import views
from fleetward.services.cli.args import add_json, add_limit, ident, usd
from fleetward.services.cli.command import PERSON, Command, console, read
from fleetward.services.cli.output import Column, Listing, Row, fetch_page, page_of, show
from fleetward.services.client import FleetClient, IntentRefused
from fleetward.services.config import Settings
from fleetward.services.db import Conn, q
from fleetward.services.runtime.connect import open_runtime

APPROVAL_ID = ident("approval id")


def _list_arguments(p: argparse.ArgumentParser) -> None:
    add_limit(p, 100)
    add_json(p)


def _due(r: Row) -> str:
    return f"{r['deadline_at']:%Y-%m-%d %H:%M:%S}" + (" OVERDUE" if r["overdue"] else "")


APPROVALS_LISTING = Listing(
    "open approval requests (oldest first)",
    (Column("approval_id", whole=True), Column("agent_id", whole=True),
     Column("kind", lambda r: f"{r['kind']} {r['name']}"), Column("risk"),
     Column("requested_at", lambda r: views.age(r["requested_at"])),
     Column("deadline_at", _due), Column("summary", lambda r: str(r["summary"])[:80])),
    empty="no open approval requests",
)  # fmt: skip


async def show_approvals(conn: Conn, limit: int, as_json: bool) -> None:
    """The open requests of ``fleet.approvals``, the oldest first, at most ``limit``."""
    page = await fetch_page(conn, "approvals_open", limit=limit)
    show(console, APPROVALS_LISTING, page, as_json)


async def _approvals(settings: Settings, args: argparse.Namespace) -> None:
    await read(settings, lambda c: show_approvals(c, args.limit, args.json))


def _decision_arguments(grant: bool) -> object:
    def arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("approval_id", type=APPROVAL_ID, help="the request's id")
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
    add_json(policies)
    actions = policies.add_subparsers(dest="action", metavar="ACTION", help="none: show them")
    show_ = actions.add_parser("show", help="the tool policies (of one scope)")
    show_.add_argument("--scope", choices=("agent", "team", "risk"), help="only this kind of scope")
    show_.add_argument("--scope-id", help="only the policy of this agent, team or risk class")
    add_json(show_, nested=True)
    set_ = actions.add_parser("set", help="set one scope's tool policy: needs policy-admin")
    set_.add_argument("--scope", required=True, metavar="agent|team|risk",
                      help="what it governs: one agent, a team, or a risk class")  # fmt: skip
    set_.add_argument("--scope-id", required=True, help="the agent, team, or risk class")
    set_.add_argument("--allow", nargs="*", default=[], metavar="TOOL", help="tools allowed")
    set_.add_argument("--deny", nargs="*", default=[], metavar="TOOL", help="tools denied")
    set_.add_argument("--approve", nargs="*", default=[], metavar="TOOL",
                      help="tools that need a person's approval")  # fmt: skip
    set_.add_argument("--default", default="allow", metavar="allow|deny|approve",
                      help="for the tools not listed (default: allow)")  # fmt: skip
    set_.add_argument("--max-cost-usd", type=usd(MAX_COST_USD), default=None, metavar="USD",
                      help="cost cap per call (default: none)")  # fmt: skip
    set_.add_argument("--reason", default="", help="why, for the record")


def _tools(r: Row, key: str) -> str:
    return ", ".join(r[key]) or "-"


POLICIES_LISTING = Listing(
    "tool policies (most specific scope first)",
    (Column("policy_id", whole=True), Column("scope", lambda r: f"{r['scope']} {r['scope_id']}"),
     Column("version"), Column("allow", lambda r: _tools(r, "allow")),
     Column("deny", lambda r: _tools(r, "deny")), Column("approve", lambda r: _tools(r, "approve")),
     Column("default_verdict"),
     Column("max_cost_usd", lambda r: "-" if r["max_cost_usd"] is None
            else f"${r['max_cost_usd']:g}"),
     Column("set_by", lambda r: f"{r['set_by']} {views.age(r['set_at'])}")),
    empty="no tool policies (every tool is allowed): fleetward policies set ...",
)  # fmt: skip


async def show_policies(conn: Conn, scope: str | None, scope_id: str | None, as_json: bool) -> None:
    """The tool policies of ``fleet.policies`` (of one ``scope`` / ``scope_id``; None: all)."""
    rows = await conn.fetch(q("policies_list"), scope, scope_id)
    show(console, POLICIES_LISTING, page_of(rows), as_json)


async def _policies(settings: Settings, args: argparse.Namespace) -> None:
    if args.action != "set":
        scope, scope_id = getattr(args, "scope", None), getattr(args, "scope_id", None)
        await read(settings, lambda c: show_policies(c, scope, scope_id, args.json))
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
