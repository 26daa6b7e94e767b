"""Running services in one process: projection runners, the watchdog, the simulator and the
metrics endpoint, with graceful shutdown on SIGTERM / SIGINT (finish the batch in hand, commit,
ack, exit)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

from projections import Projection
from services import metrics, simulate
from services.projector import ProjectionRunner
from services.runtime import Runtime
from services.taskapi import serve_task_api
from services.watchdog import Watchdog

log = logging.getLogger("fleetward")


async def _stop_on_signal(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("%s: finishing the batches in hand, then exiting", signal.Signals(signum).name)
            stop.set()
            return


async def run_services(
    rt: Runtime,
    projections: tuple[Projection, ...],
    *,
    simulate_agents: int = 0,
    watchdog: bool = False,
    on_ready: Callable[[int], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT. ``on_ready`` gets the metrics port once everything runs."""
    stop = anyio.Event()
    runners = [ProjectionRunner(rt, p, batch_size=rt.settings.batch_size) for p in projections]
    dog = Watchdog(rt) if watchdog else None

    def healthy() -> bool:
        return (
            rt.nc.is_connected
            and all(r.consumer is not None for r in runners)
            and (dog is None or dog.healthy())
        )

    async with anyio.create_task_group() as services:
        services.start_soon(_stop_on_signal, stop)
        port = await services.start(
            metrics.serve_http, rt.settings.metrics_host, rt.settings.metrics_port, healthy
        )
        if any(p.name == "tasks" for p in projections):
            services.start_soon(serve_task_api, rt)  # answers from the task board
        async with anyio.create_task_group() as workers:
            for runner in runners:
                workers.start_soon(runner.run, stop.is_set)
            if dog is not None:
                workers.start_soon(dog.run, stop.is_set)
            if simulate_agents:
                workers.start_soon(_simulate, rt, simulate_agents, stop)
            if on_ready is not None:
                workers.start_soon(_until_stopped, on_ready, port, stop)
        services.cancel_scope.cancel()


async def _simulate(rt: Runtime, agents: int, stop: anyio.Event) -> None:
    await simulate.run(rt.js, agents, stopping=stop.is_set)


async def _until_stopped(
    on_ready: Callable[[int], Coroutine[Any, Any, None]], port: int, stop: anyio.Event
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(on_ready, port)
        await stop.wait()
        tg.cancel_scope.cancel()
