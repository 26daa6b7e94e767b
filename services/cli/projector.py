"""``fleetward projector`` (the projector service) and ``fleetward projections rebuild`` (one
projection rebuilt from the stream, with a progress bar), and ``fleetward projections
[list]``: each projection's checkpoint."""

from __future__ import annotations

import argparse

from fleetward import projections
from fleetward.services.cli import views
from fleetward.services.cli.args import add_json
from fleetward.services.cli.command import Command, console, read
from fleetward.services.config import Settings, parse_partition
from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.connect import open_runtime


def _projector_arguments(proj: argparse.ArgumentParser) -> None:
    proj.add_argument("--only", nargs="*", choices=sorted(projections.BY_NAME), default=None,
                      metavar="NAME", help="run only these projections (default: all): "
                      + ", ".join(sorted(projections.BY_NAME)))  # fmt: skip
    proj.add_argument(
        "--partition",
        metavar="I/N",
        default=None,
        help="run utilization's heartbeat partition I of N alone (N: FW_HEARTBEATS' partitions, "
        "FLEETWARD_HEARTBEAT_PARTITIONS); the other projections run in a projector without it",
    )


async def _projector(settings: Settings, args: argparse.Namespace) -> None:
    from fleetward.services.jetstream.streams import heartbeat_partitions  # noqa: PLC0415
    from fleetward.services.projector.partitions import expand  # noqa: PLC0415
    from fleetward.services.serve import run_services  # noqa: PLC0415  # only services need it

    only = None if args.partition is None else parse_partition(args.partition, "--partition")
    if only is not None and args.only is not None:
        raise FleetwardError("--partition runs one heartbeat partition alone: drop --only")
    chosen = tuple(projections.BY_NAME[n] for n in (args.only or projections.BY_NAME))
    async with open_runtime(settings) as rt:
        if only is not None:
            chosen = expand(chosen, await heartbeat_partitions(rt.js), only)

        async def ready(port: int) -> None:
            names = ", ".join(p.name for p in chosen)
            console.print(f"projector running ({names}); metrics on :{port}/metrics")

        await run_services(rt, chosen, on_ready=ready)


def _projections_arguments(projs: argparse.ArgumentParser) -> None:
    """``projections`` with no action lists their checkpoints, like ``projections list``."""
    add_json(projs)
    psub = projs.add_subparsers(dest="action", metavar="ACTION", help="none: list them")
    listed = psub.add_parser("list", help="each projection's stream and checkpoint")
    add_json(listed, nested=True)
    rebuild = psub.add_parser("rebuild", help="rebuild one projection from the stream")
    rebuild.add_argument(
        "name", choices=sorted(projections.BY_NAME), metavar="NAME",
        help="the projection: " + ", ".join(sorted(projections.BY_NAME)),
    )  # fmt: skip


async def _projections(settings: Settings, args: argparse.Namespace) -> None:
    if args.action == "rebuild":
        await _rebuild(settings, args)
        return
    await read(settings, lambda c: views.show_projections(c, console, args.json))


async def _rebuild(settings: Settings, args: argparse.Namespace) -> None:
    from rich.progress import (  # noqa: PLC0415  # only a rebuild needs these
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from fleetward.services.projector.rebuild import rebuild, stream_last_seq  # noqa: PLC0415
    from fleetward.services.runtime import collector  # noqa: PLC0415

    collector.settle()  # a rebuild folds as a runner does (services/runtime/collector.py)
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


PROJECTOR = Command(
    "projector",
    "run the projector service (all or some projections)",
    _projector_arguments,
    _projector,
)
PROJECTIONS = Command(
    "projections",
    "each projection's checkpoint; rebuild one",
    _projections_arguments,
    _projections,
)
