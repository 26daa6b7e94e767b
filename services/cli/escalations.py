"""``fleetward escalations``: the open escalations (oldest critical first), and an operator's
answer to one: ``ack`` (I am on it) or ``resolve``."""

from __future__ import annotations

import argparse

from fleetward.services.cli import views
from fleetward.services.cli.args import add_json, add_limit, ident
from fleetward.services.cli.command import PERSON, Command, console, read
from fleetward.services.client.respond import respond
from fleetward.services.config import Settings
from fleetward.services.runtime.connect import open_runtime


def _arguments(esc: argparse.ArgumentParser) -> None:
    esc.add_argument("--all", action="store_true", help="resolved ones too")
    add_limit(esc, 50)
    add_json(esc)
    esub = esc.add_subparsers(dest="action", metavar="ACTION", help="none: list them")
    ack = esub.add_parser("ack", help="acknowledge an escalation: you are on it")
    ack.add_argument("escalation_id", type=ident("escalation id"), help="the escalation's id")
    ack.add_argument("--note", default="", help="what you are doing about it, for the others")
    res = esub.add_parser("resolve", help="resolve an escalation")
    res.add_argument("escalation_id", type=ident("escalation id"), help="the escalation's id")
    res.add_argument("--resolution", default="", help="how it was resolved")


async def _escalations(settings: Settings, args: argparse.Namespace) -> None:
    if args.action is None:
        await read(
            settings,
            lambda c: views.show_escalations(c, console, args.all, args.limit, args.json),
        )
        return
    resolve = args.action == "resolve"
    async with open_runtime(settings, identity=PERSON, prepare=False, pool_size=2) as rt:
        text = args.resolution if resolve else args.note
        await respond(rt.nc, args.escalation_id, who=rt.actor, resolve=resolve, text=text)
    console.print(f"{'resolved' if resolve else 'acknowledged'} {args.escalation_id}")


ESCALATIONS = Command(
    "escalations",
    "open escalations (oldest critical first); ack or resolve one",
    _arguments,
    _escalations,
)
