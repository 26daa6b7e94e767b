"""``fleetward guard``: the guard service (spend against budgets -> pauses)."""

from __future__ import annotations

import argparse

from fleetward.services.cli.command import Command, console, no_arguments
from fleetward.services.config import Settings
from fleetward.services.runtime.connect import open_runtime


async def _guard(settings: Settings, args: argparse.Namespace) -> None:
    from fleetward.services.serve import run_services  # noqa: PLC0415  # only services need it

    async with open_runtime(settings, identity="svc:guard") as rt:

        async def ready(port: int) -> None:
            console.print(f"guard running; metrics on :{port}/metrics")

        await run_services(rt, (), guard=True, on_ready=ready)


GUARD = Command(
    "guard",
    "run the guard service: spend against budgets -> budget.exhausted and pauses",
    no_arguments,
    _guard,
)
