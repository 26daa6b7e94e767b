"""``fleetward agents``: the registry with liveness and spend (read from the public views), and
an agent's lifecycle: ``pause``, ``resume``, ``retire``, ``register`` (set its profile, its
roles and task limit, or bring a retired agent back), and the lifecycle review's ``rollback``
(a version it ran before in force again) and ``promote`` (a tag every team sees), published
through the client, which refuses what would not take effect."""

from __future__ import annotations

import argparse

from fleetward.schemas.bounds import INT4_MAX, MAX_PERIOD_S, MIN_PERIOD_S
from fleetward.schemas.grants import identity_kind
from fleetward.services.cli import people, views
from fleetward.services.cli.args import add_json, add_limit, ident, seconds, whole
from fleetward.services.cli.command import PERSON, Command, console, read
from fleetward.services.client import FleetClient
from fleetward.services.config import Settings
from fleetward.services.db import q
from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.connect import open_runtime

# action -> (help, what the CLI says when done)
ACTIONS = {
    "pause": ("pause an agent: it may claim nothing until resumed", "paused"),
    "resume": ("resume a paused agent", "resumed"),
    "retire": ("retire an agent for good (an operator brings it back: `register`)", "retired"),
}


AGENT_ID = ident("agent id")


def _arguments(agents: argparse.ArgumentParser) -> None:
    """``agents`` with no action lists the registry; the actions change one agent."""
    add_limit(agents, 50)
    add_json(agents)
    actions = agents.add_subparsers(
        dest="action", metavar="ACTION", help="what to do (none: list the registry)"
    )
    for action, (text, _) in ACTIONS.items():
        one = actions.add_parser(action, help=text)
        one.add_argument("agent_id", type=AGENT_ID, help="the agent's id")
        one.add_argument("--reason", default="", help="why, for the record and the agent")
    register = actions.add_parser(
        "register",
        help="register an agent as you: its roles and task limit are then yours to set (its "
        "own registrations cannot change them); a retired agent comes back; what you leave "
        "out keeps the registry's value",
    )
    register.add_argument("agent_id", type=AGENT_ID, help="the agent's id")
    for flag, text in (("name", "its name, for people"), ("owner", "who answers for it"),
                       ("team", "the team it works in"), ("purpose", "what it is for"),
                       ("version", "the version it runs")):  # fmt: skip
        register.add_argument(f"--{flag}", help=text)
    register.add_argument(
        "--risk-class", choices=("low", "medium", "high", "critical"),
        help="how much harm it could do: low, medium, high or critical",
    )  # fmt: skip
    register.add_argument(
        "--role", action="append", dest="roles", metavar="ROLE",
        help="a role it holds (repeat for several; --role '' for none)",
    )  # fmt: skip
    register.add_argument("--max-tasks", type=whole(1, INT4_MAX), dest="max_concurrent_tasks",
                          metavar="N", help="how many tasks it may hold at once")  # fmt: skip
    register.add_argument("--heartbeat-interval", type=seconds(MIN_PERIOD_S, MAX_PERIOD_S),
                          dest="heartbeat_interval_s", metavar="SECONDS",
                          help="how often it promises to heartbeat")  # fmt: skip
    rollback = actions.add_parser(
        "rollback", help="put a version the agent ran before in force again, as it was"
    )
    rollback.add_argument("agent_id", type=AGENT_ID, help="the agent's id")
    rollback.add_argument(
        "--to", required=True, metavar="VERSION", dest="to",
        help="the version it ran before (fleetward kpis --by version)",
    )  # fmt: skip
    rollback.add_argument("--reason", default="", help="why, for the record")
    promote = actions.add_parser(
        "promote", help="tag the agent, at the version it runs, as promoted: every team sees it"
    )
    promote.add_argument("agent_id", type=AGENT_ID, help="the agent's id")
    promote.add_argument("--reason", default="", help="why, for the record")
    promote.add_argument("--withdraw", action="store_true", help="take the tag away")
    creds = actions.add_parser("credentials", help="issue an agent credentials (a .creds file)")
    creds.add_argument("agent_id", help="the agent's id")
    creds.add_argument("--out", help="also write the credentials file here")
    creds.add_argument(
        "--expires", type=people.seconds, default=0, metavar="SECONDS", help=people.EXPIRES_HELP
    )
    gone = actions.add_parser(
        "revoke", help="revoke an agent's credentials: its connections close at once"
    )
    gone.add_argument("agent_id", help="the agent's id")


def _agent_id(value: str) -> str:
    """``value`` if it is an agent id; else ``FleetwardError`` saying where a person's or a
    service's credentials come from (so a script cannot hand out a service's by mistake)."""
    try:
        kind = identity_kind(value)
    except ValueError as exc:
        raise FleetwardError(str(exc)) from None
    if kind != "agent":
        raise FleetwardError(
            f"{value!r} is not an agent id: people's credentials come from 'fleetward people "
            "add NAME' (revoked by 'people revoke'), services' from 'fleetward auth service NAME'"
        )
    return value


async def _agents(settings: Settings, args: argparse.Namespace) -> None:
    if args.action is None:
        await read(settings, lambda c: views.show_agents(c, console, args.limit, args.json))
        return
    if args.action == "credentials":
        people.issue(settings, _agent_id(args.agent_id), args.out, args.expires)
        return
    if args.action == "revoke":
        await people.revoke(settings, _agent_id(args.agent_id))
        return
    if args.action == "register":
        await _register(settings, args)
        return
    if args.action in ("rollback", "promote"):
        await _review_action(settings, args)
        return
    async with open_runtime(settings, identity=PERSON, prepare=True, pool_size=2) as rt:
        client = FleetClient(rt.nc, rt.actor)
        change = {
            "pause": client.pause_agent,
            "resume": client.resume_agent,
            "retire": client.retire_agent,
        }[args.action]
        await change(args.agent_id, args.reason)
    console.print(f"{ACTIONS[args.action][1]} {args.agent_id}")


async def _review_action(settings: Settings, args: argparse.Namespace) -> None:
    """``rollback`` or ``promote``: what the registry's views say of the agent decides (the
    version as it ran; the version its tag names), the client judges and publishes."""
    async with open_runtime(settings, identity=PERSON, prepare=True, pool_size=2) as rt:
        client = FleetClient(rt.nc, rt.actor)
        async with rt.pool.acquire() as conn:
            if args.action == "rollback":
                ran = await conn.fetchrow(q("review_version_ran"), args.agent_id, args.to)
            else:
                promoted = await conn.fetchval(q("review_promoted"), args.agent_id)
        if args.action == "rollback":
            await client.rollback_agent(
                args.agent_id, args.to, dict(ran) if ran else None, args.reason
            )
            console.print(f"rolled back {args.agent_id} to version {args.to}")
        else:
            await client.promote_agent(
                args.agent_id, args.reason, promoted=promoted, withdraw=args.withdraw
            )
            done = "withdrew the promotion of" if args.withdraw else "promoted"
            console.print(f"{done} {args.agent_id}")


async def _register(settings: Settings, args: argparse.Namespace) -> None:
    roles = None if args.roles is None else [r for r in args.roles if r]
    async with open_runtime(settings, identity=PERSON, prepare=True, pool_size=2) as rt:
        await FleetClient(rt.nc, rt.actor).register_agent(
            args.agent_id, name=args.name, owner=args.owner, team=args.team,
            purpose=args.purpose, version=args.version, risk_class=args.risk_class,
            roles=roles, max_concurrent_tasks=args.max_concurrent_tasks,
            heartbeat_interval_s=args.heartbeat_interval_s,
        )  # fmt: skip
    console.print(f"registered {args.agent_id}")


AGENTS = Command(
    "agents",
    "the agent registry with liveness and spend; pause, resume, retire or register an agent; "
    "roll it back to an earlier version or promote it; issue or revoke its credentials",
    _arguments,
    _agents,
)
