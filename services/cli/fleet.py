"""``fleetward status`` and ``agent ID``: what the fleet is doing, read from the public views
(``fleetward agents`` is in ``agents``)."""

from __future__ import annotations

import argparse

from fleetward.services.cli import views
from fleetward.services.cli.command import Command, console, no_arguments, read
from fleetward.services.config import Settings
from fleetward.services.errors import FleetwardError


async def _status(settings: Settings, args: argparse.Namespace) -> None:
    await read(settings, lambda c: views.show_status(c, console))


def _agent_arguments(agent: argparse.ArgumentParser) -> None:
    agent.add_argument("agent_id")


async def _agent(settings: Settings, args: argparse.Namespace) -> None:
    if not await read(settings, lambda c: views.show_agent(c, console, args.agent_id)):
        raise FleetwardError(f"no agent {args.agent_id!r} in the registry")


STATUS = Command("status", "fleet summary and projection checkpoints", no_arguments, _status)
AGENT = Command(
    "agent", "what one agent is doing, what it cost, when last seen", _agent_arguments, _agent
)
