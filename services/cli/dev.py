"""``fleetward dev`` (everything locally, what ``make run`` runs) and ``fleetward simulate`` (a
realistic demo fleet driven against NATS)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import anyio

from fleetward import projections
from fleetward.services.auth.store import AuthStore
from fleetward.services.cli import views
from fleetward.services.cli.api import api_token
from fleetward.services.cli.args import seconds, whole
from fleetward.services.cli.command import PERSON, Command, console
from fleetward.services.cli.output import shown
from fleetward.services.cli.people import ensure_roles
from fleetward.services.config import Settings, default_home
from fleetward.services.runtime.connect import open_runtime

DEV_GRACE_S = 5.0  # the watchdog's grace under `fleetward dev` (see _dev)
MAX_SIMULATED = 100_000  # simulated agents at most: the fleet size Fleetward is built for


def _dev_arguments(dev: argparse.ArgumentParser) -> None:
    dev.add_argument("--simulate", type=whole(0, MAX_SIMULATED), default=0, metavar="N",
                     help="simulate N agents (default 0: none)")  # fmt: skip
    dev.add_argument("--every", type=seconds(0.1, 3600.0), default=3.0, metavar="SECONDS",
                     help="seconds between status lines (default 3)")  # fmt: skip


async def _dev(settings: Settings, args: argparse.Namespace) -> None:
    if "FLEETWARD_WATCHDOG_GRACE_S" not in os.environ:
        # dev starts its own servers, and the simulated agents heartbeat every 1-2 s: a short
        # grace lets silent ones show up within seconds instead of after a minute
        settings = replace(settings, watchdog=replace(settings.watchdog, grace_s=DEV_GRACE_S))
    from fleetward.services.serve import run_services  # noqa: PLC0415  # only dev needs it

    async with open_runtime(settings, embed=True) as rt:
        # the person at this machine is the fleet's first admin (the keys are here anyway)
        await ensure_roles(rt, PERSON.removeprefix("user:"), ["admin"], "make run: the first admin")

        api_ports: list[int] = []

        async def ready(port: int) -> None:
            home = settings.home
            console.print(shown(("Fleetward is running.", "bold"), " Ctrl-C stops it."))
            console.print(
                f"  NATS      {rt.nats_url}"
                + ("" if settings.nats_url else f"  (embedded; data in {home / 'nats'})")
            )
            console.print(
                f"  Postgres  {rt.database_url}"
                + ("" if settings.database_url else f"  (embedded; data in {home / 'pg'})")
            )
            console.print(
                shown(
                    "            public read views: schema ", ("fleet", "bold"), " (docs/views.md)"
                )
            )
            console.print(
                f"  Metrics   http://{settings.metrics_host}:{port}/metrics  (health: /healthz)"
            )
            for api in api_ports:
                token = api_token(settings, PERSON, role="operator")
                console.print(
                    f"  Dashboard {settings.api_base(api)}/login#token={token}\n"
                    f"            HTTP API {settings.api_base(api)}/api/v1/... (its routes: "
                    f"{settings.api_base(api)}/openapi.json; the token above as "
                    "'Authorization: Bearer')"
                )
            if args.simulate:
                console.print(f"  Simulator {args.simulate} agents (sim-000 ...)")
            admin = AuthStore(settings.auth_dir).ensure(PERSON)
            console.print(
                f"  Sign-in   NATS needs credentials; yours ({PERSON}): {admin}\n"
                f"            keys that issue more: {settings.auth_dir} "
                "(fleetward people add NAME, fleetward agents credentials ID)"
            )
            chosen = os.environ.get("FLEETWARD_HOME")
            prefix = f"FLEETWARD_HOME={home} " if chosen else ""
            console.print(
                f"  Data      {home} (FLEETWARD_HOME"
                + (")" if chosen else f" unset: the default, {default_home()})")
            )
            console.print(
                f"  In another terminal, from any folder: {prefix}{_fleetward()} status | agents "
                "| tasks | agent sim-001 | escalations"
            )
            while True:
                await anyio.sleep(args.every)
                async with rt.pool.acquire() as conn:
                    line = await views.fleet_status(conn)
                console.print(shown((_clock(), "dim"), f" {line}"))

        await run_services(
            rt,
            projections.ALL,
            simulate_agents=args.simulate,
            watchdog=True,
            guard=True,
            auditor=True,
            api=True,
            on_ready=ready,
            on_api=api_ports.append,
        )


def _fleetward() -> str:
    """How to run this ``fleetward`` from any folder: the script beside this Python (the
    virtualenv's), else its name."""
    script = Path(sys.executable).with_name("fleetward")
    return str(script) if script.exists() else "fleetward"


def _clock() -> str:
    from datetime import datetime  # noqa: PLC0415

    return datetime.now().strftime("%H:%M:%S")


def _simulate_arguments(sim: argparse.ArgumentParser) -> None:
    sim.add_argument("--agents", type=whole(1, MAX_SIMULATED), default=25, metavar="N",
                     help="how many agents (default 25)")  # fmt: skip
    sim.add_argument("--seed", type=whole(0, 2**32 - 1), default=7, metavar="N",
                     help="the random seed: the same seed, the same fleet (default 7)")  # fmt: skip
    sim.add_argument("--ticks", type=whole(1, 10**9), default=None, metavar="N",
                     help="stop after this many ticks (default: run until Ctrl-C)")  # fmt: skip
    sim.add_argument("--tick-seconds", type=seconds(0.01, 3600.0), default=1.0,
                     metavar="SECONDS", help="seconds between ticks (default 1)")  # fmt: skip


async def _simulate(settings: Settings, args: argparse.Namespace) -> None:
    from fleetward.services import simulate  # noqa: PLC0415  # only simulate needs it

    async with open_runtime(settings) as rt:
        console.print(f"simulating {args.agents} agents (seed {args.seed}); Ctrl-C stops")
        sent = await simulate.run(
            rt, args.agents, seed=args.seed, ticks=args.ticks, tick_seconds=args.tick_seconds
        )
        console.print(f"published {sent} events")


DEV = Command(
    "dev",
    "run everything locally: embedded NATS and Postgres, "
    "the projector, metrics, optionally a simulated fleet",
    _dev_arguments,
    _dev,
)
SIMULATE = Command(
    "simulate", "drive a realistic demo fleet against NATS", _simulate_arguments, _simulate
)
