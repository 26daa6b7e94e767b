"""``fleetward watchdog``: the watchdog service (heartbeats and activity -> escalations)."""

from __future__ import annotations

import argparse

from fleetward.services.cli.command import Command, console, no_arguments
from fleetward.services.config import Settings
from fleetward.services.runtime.connect import open_runtime


async def _watchdog(settings: Settings, args: argparse.Namespace) -> None:
    from fleetward.services.serve import run_services  # noqa: PLC0415  # only services need it

    async with open_runtime(settings, identity="svc:watchdog") as rt:
        w = settings.watchdog

        async def ready(port: int) -> None:
            part, parts = w.partition
            console.print(
                f"watchdog running (partition {part}/{parts}, grace {w.grace_s:g}s); "
                f"metrics on :{port}/metrics"
            )

        await run_services(rt, (), watchdog=True, on_ready=ready)


WATCHDOG = Command(
    "watchdog",
    "run the watchdog service: heartbeats and activity -> escalations",
    no_arguments,
    _watchdog,
)
