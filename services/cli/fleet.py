"""``fleetward status`` and ``agent ID``: what the fleet is doing, read from the public views
(``fleetward agents`` is in ``agents``)."""

from __future__ import annotations

import argparse

from fleetward.services.cli import views
from fleetward.services.cli.args import add_json, ident
from fleetward.services.cli.command import Command, console, read
from fleetward.services.config import Settings
from fleetward.services.errors import FleetwardError


def _status_arguments(status: argparse.ArgumentParser) -> None:
    add_json(status, "{summary, projections, processes}")


async def _status(settings: Settings, args: argparse.Namespace) -> None:
    await read(settings, lambda c: views.show_status(c, console, args.json))


def _agent_arguments(agent: argparse.ArgumentParser) -> None:
    agent.add_argument("agent_id", type=ident("agent id"), help="the agent's id")
    add_json(agent, "{agent_id, name, team, status, ...}: the agent's row")


async def _agent(settings: Settings, args: argparse.Namespace) -> None:
    if not await read(settings, lambda c: views.show_agent(c, console, args.agent_id, args.json)):
        raise FleetwardError(f"no agent {args.agent_id!r} in the registry")


STATUS = Command(
    "status",
    "fleet summary, projection checkpoints and projector processes",
    _status_arguments,
    _status,
)
AGENT = Command(
    "agent", "what one agent is doing, what it cost, when last seen", _agent_arguments, _agent
)
