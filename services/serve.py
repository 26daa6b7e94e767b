"""Running services in one process: projection runners, the watchdog, the guard, the auditor,
the HTTP API and dashboard, the simulator, the metrics endpoint and, with any projection, the
fleet gauges' refresher and the lag watch (once per process); graceful shutdown on SIGTERM /
SIGINT (finish the batch in hand, commit, ack, exit)."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from nats.errors import Error as NatsError

from fleetward.projections import Projection
from fleetward.projections.utilization import Utilization
from fleetward.schemas import REASONS
from fleetward.schemas.grants import API_SERVICE
from fleetward.services import metrics, simulate
from fleetward.services.api.server import serve_api
from fleetward.services.api.tasks import serve_task_api
from fleetward.services.audit.chain import SEALER
from fleetward.services.audit.sealer import Auditor
from fleetward.services.errors import FleetwardError
from fleetward.services.guard.core import GUARD
from fleetward.services.guard.service import Guard
from fleetward.services.jetstream.streams import heartbeat_partitions
from fleetward.services.metrics.fleet import FLEET, FLEET_REFRESH_S
from fleetward.services.metrics.health import HealthChecks
from fleetward.services.metrics.http import serve_http
from fleetward.services.projector.consumers import by_stream, durable_name
from fleetward.services.projector.health import RunnerHealth
from fleetward.services.projector.lease import Lease
from fleetward.services.projector.outbox import Outbox
from fleetward.services.projector.partitions import expand
from fleetward.services.projector.runner import ProjectionRunner
from fleetward.services.projector.window import PROJECTION_ERROR
from fleetward.services.runtime import collector
from fleetward.services.runtime.connect import Runtime, acting_as
from fleetward.services.trace import TRACE
from fleetward.services.watchdog.service import Watchdog

log = logging.getLogger("fleetward")

LAG_WATCH_S = 5.0  # how often the lag gauges are measured from the stream


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
    guard: bool = False,
    auditor: bool = False,
    api: bool = False,
    on_ready: Callable[[int], Coroutine[Any, Any, None]] | None = None,
    on_api: Callable[[int], None] | None = None,
    stop: anyio.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT. ``on_ready`` gets the metrics port once everything runs; with
    ``api``, the HTTP API and dashboard (services/api/server.py) run too, and ``on_api`` gets
    their port before that. The watchdog and the task API act with credentials of their own
    (``acting_as``), signing in again until they can when NATS is away at the start
    (``/healthz`` says so meanwhile); so does the guard (``svc:guard``). Setting ``stop`` stops
    it as SIGTERM does. ``utilization`` runs as one runner per heartbeat partition when
    FW_HEARTBEATS is partitioned (services/projector/partitions.py)."""
    stop = stop or anyio.Event()
    runners: list[ProjectionRunner] = []  # once FW_HEARTBEATS' partitions are read (_project)
    reading = ["reading FW_HEARTBEATS' partitions from NATS"]
    dogs: list[Watchdog] = []  # the watchdog, once signed in as svc:watchdog
    guards: list[Guard] = []  # the guard, once signed in as svc:guard
    auditors: list[Auditor] = []  # the auditor, once signed in as svc:audit
    outbox = Outbox(rt) if projections else None
    health = _health(rt, runners if projections else None, reading, outbox)
    why: dict[str, str] = {}  # a part's last reason it could not sign in (as_service)
    _register_parts(health, why, (
        ("watchdog", watchdog, dogs), ("guard", guard, guards), ("auditor", auditor, auditors),
    ))  # fmt: skip

    async def sealing(audit_rt: Runtime) -> None:
        auditors.append(Auditor(audit_rt, rt.settings.audit_seal_s))
        await auditors[0].run(stop.is_set)

    async def guarding(guard_rt: Runtime) -> None:
        guards.append(Guard(guard_rt))
        await guards[0].run(stop.is_set)

    async def watch(dog_rt: Runtime) -> None:
        dogs.append(Watchdog(dog_rt))
        await dogs[0].run(stop.is_set)

    async with anyio.create_task_group() as services:
        _start_process_tasks(services, stop)
        port = await services.start(
            serve_http, rt.settings.metrics_host, rt.settings.metrics_port, health
        )
        if api:
            _api_ready(await services.start(serve_api, rt, health, stop), on_api)
        if any(p.name == "tasks" for p in projections):
            # fw.api.*: answers from the projections, signed in as svc:api
            _start_task_api(services, rt, health, why, stop)
        async with anyio.create_task_group() as workers:
            if projections:  # once per process, however many projections it runs
                workers.start_soon(
                    lambda: _project(
                        rt, projections, runners=runners, tg=workers, stop=stop, reading=reading
                    )
                )
                workers.start_soon(FLEET.run, rt, stop, FLEET_REFRESH_S, rt.settings.kpi_gauges_s)
                workers.start_soon(watch_lag, rt, runners, stop)
            if outbox is not None:
                workers.start_soon(outbox.run, stop.is_set)
            if watchdog:
                workers.start_soon(
                    as_service, rt, "svc:watchdog", watch, stop, _note(why, "watchdog")
                )
            if guard:
                workers.start_soon(as_service, rt, GUARD, guarding, stop, _note(why, "guard"))
            if auditor:
                workers.start_soon(as_service, rt, SEALER, sealing, stop, _note(why, "auditor"))
            if simulate_agents:
                workers.start_soon(_simulate, rt, simulate_agents, stop)
            if on_ready is not None:
                workers.start_soon(_until_stopped, on_ready, port, stop)
        services.cancel_scope.cancel()


def _health(
    rt: Runtime,
    runners: list[ProjectionRunner] | None,
    reading: list[str],
    outbox: Outbox | None,
) -> HealthChecks:
    """GET /healthz, /readyz: NATS, the projector's runners (``None``: none run here; empty:
    not started yet, ``reading[0]`` says why) and the outbox; each part's verdict and reason."""
    health = HealthChecks()
    health.register("nats", lambda: _connected(rt))
    if runners is not None:
        health.register("projector", lambda: _committing(runners) if runners else (
            False, reading[0]))  # fmt: skip
    if outbox is not None:
        health.register("outbox", outbox.health)
    return health


async def _project(
    rt: Runtime,
    projections: tuple[Projection, ...],
    *,
    runners: list[ProjectionRunner],
    tg: anyio.abc.TaskGroup,
    stop: anyio.Event,
    reading: list[str],
) -> None:
    """Start a runner per group of ``projections`` in ``tg`` (added to ``runners``) once the
    partitions of FW_HEARTBEATS can be read, trying again every few seconds while NATS is away
    (``reading[0]`` says why meanwhile, for /healthz). ``StreamConflict`` is raised: a stream
    Fleetward did not make is no reason to wait."""
    delay = 0.5
    while not stop.is_set():
        try:
            expanded, built = await _runners(rt, projections)
        except (NatsError, OSError, TimeoutError) as exc:
            reading[0] = f"cannot read FW_HEARTBEATS' partitions from NATS yet ({exc!r})"
            log.warning("the projector %s; trying again", reading[0])
            with anyio.move_on_after(delay):
                await stop.wait()
            delay = min(delay * 2, 5.0)
            continue
        _series_at_zero(expanded)
        runners.extend(built)
        for runner in built:
            tg.start_soon(runner.run, stop.is_set)
        return


async def _runners(
    rt: Runtime, projections: tuple[Projection, ...]
) -> tuple[tuple[Projection, ...], list[ProjectionRunner]]:
    """The projections to run (``utilization`` as one per heartbeat partition when FW_HEARTBEATS
    is partitioned) and a runner for each group of them, each with its lease."""
    if any(type(p) is Utilization for p in projections):
        projections = expand(projections, await heartbeat_partitions(rt.js))
    runners = [
        ProjectionRunner(
            rt,
            *group,
            batch_size=rt.settings.batch_size,
            health=RunnerHealth(stall_after=rt.settings.stall_s),
            # one writer per projection: a second process stands by (services/projector/lease.py)
            lease=Lease(rt.database_url, durable_name(*group), (p.name for p in group)),
        )
        for group in by_stream(projections)
    ]
    return projections, runners


def _start_process_tasks(tg: anyio.abc.TaskGroup, stop: anyio.Event) -> None:
    """Start what runs once per process in ``tg``: stopping on SIGTERM/SIGINT, and with
    ``FLEETWARD_TRACE`` a timeline of the process (services/trace.py; off by default)."""
    tg.start_soon(_stop_on_signal, stop)
    collector.settle()  # services/runtime/collector.py
    if TRACE is not None:
        TRACE.watch_gc()
        tg.start_soon(TRACE.watch_stalls)


def _series_at_zero(projections: tuple[Projection, ...]) -> None:
    """Series present at 0 from the start, so that increase() sees the first."""
    for p in projections:
        metrics.RESYNCS.labels(p.name)
        metrics.ACTIVE.labels(p.name).set(0)
        for reason in (*REASONS, PROJECTION_ERROR):
            metrics.DEAD_LETTERS.labels(p.name, reason)


async def as_service(
    rt: Runtime,
    identity: str,
    run: Callable[[Runtime], Coroutine[Any, Any, None]],
    stop: anyio.Event,
    failed: Callable[[str], None] | None = None,
) -> None:
    """``run`` with a NATS connection of ``identity``'s own (``acting_as``), signing in again
    every few seconds while NATS refuses or cannot be reached, until ``stop``; ``failed`` gets
    each reason it could not (one line)."""
    delay = 0.5
    while not stop.is_set():
        async with contextlib.AsyncExitStack() as stack:
            try:
                own = await stack.enter_async_context(acting_as(rt, identity))
            except FleetwardError as exc:
                log.warning("%s cannot sign in to NATS (%s); trying again", identity, exc)
                if failed is not None:
                    failed(str(exc))
                with anyio.move_on_after(delay):
                    await stop.wait()
                delay = min(delay * 2, 5.0)
                continue
            await run(own)
            return


def _start_task_api(
    tg: anyio.abc.TaskGroup,
    rt: Runtime,
    health: HealthChecks,
    why: dict[str, str],
    stop: anyio.Event,
) -> None:
    """The task API (``fw.api.*``) in ``tg``, signed in as svc:api, with its health check."""
    answering: list[bool] = []

    async def answer(api_rt: Runtime) -> None:
        await serve_task_api(api_rt, task_status=_Started(answering))

    health.register("task_api", lambda: (True, "answering fw.api.*") if answering else (
        False, "not answering fw.api.*: " + why.get("task_api", _NOT_YET)))  # fmt: skip
    tg.start_soon(as_service, rt, API_SERVICE, answer, stop, _note(why, "task_api"))


class _Started:
    """A ``task_status`` that records, in ``flags``, that the task started."""

    def __init__(self, flags: list[bool]) -> None:
        self.flags = flags

    def started(self, value: object = None) -> None:
        self.flags.append(True)


_NOT_YET = "not signed in to NATS yet"


def _note(why: dict[str, str], part: str) -> Callable[[str], None]:
    """What ``as_service`` calls with each reason ``part`` could not sign in."""
    return lambda reason: why.__setitem__(part, f"cannot sign in to NATS: {reason}")


def _register_parts(
    health: HealthChecks, why: dict[str, str], parts: tuple[tuple[str, bool, list[Any]], ...]
) -> None:
    """The health check of each part wanted (name, wanted, the list it is in once signed in;
    ``why`` has the last reason a part could not sign in)."""
    for name, wanted, signed_in in parts:
        if wanted:
            health.register(name, _health_of(signed_in, why, name))


def _api_ready(port: int, on_api: Callable[[int], None] | None) -> None:
    log.info("the HTTP API and dashboard listen on port %d", port)
    if on_api is not None:
        on_api(port)


def _health_of(
    signed_in: list[Any], why: dict[str, str], name: str
) -> Callable[[], tuple[bool, str]]:
    """The health check of a service that runs once signed in (it is in ``signed_in`` then)."""
    return lambda: signed_in[0].health() if signed_in else (False, why.get(name, _NOT_YET))


def _connected(rt: Runtime) -> tuple[bool, str]:
    return (True, "connected") if rt.nc.is_connected else (False, "disconnected from NATS")


def _committing(runners: list[ProjectionRunner]) -> tuple[bool, str]:
    """Whether every runner is positioned and committing, or a standby (another process holds
    its lease: services/projector/health.py)."""
    problems = [p for r in runners for p in r.health.problems(r.name)]
    if problems:
        return False, "; ".join(problems)
    standbys = [f"standby for {r.name} (active: {r.health.standby})"
                for r in runners if r.health.standby is not None]  # fmt: skip
    if not standbys:
        return True, "committing"
    if len(standbys) == len(runners):
        return True, "; ".join(standbys)
    return True, "committing; " + "; ".join(standbys)


async def watch_lag(
    rt: Runtime, runners: list[ProjectionRunner], stop: anyio.Event, every: float = LAG_WATCH_S
) -> None:
    """Measure each projection's lag from the stream every ``every`` seconds, not only after a
    commit: a projection that stopped committing (Postgres away, a hang) shows its lag grow."""
    while not stop.is_set():
        with anyio.move_on_after(every):
            await stop.wait()
        for runner in runners:
            if runner.health.standby is not None:  # the active process measures its own
                continue
            with contextlib.suppress(Exception):  # NATS away, consumer re-created: next round
                await measure_lag(rt, runner)


async def measure_lag(rt: Runtime, runner: ProjectionRunner) -> None:
    """Events past the runner's checkpoint (its durable consumer's pending and unacknowledged),
    and the age of the event at the checkpoint while any are left."""
    info = await rt.js.consumer_info(runner.stream, runner.durable)
    behind = (info.num_pending or 0) + (info.num_ack_pending or 0)
    lag = 0.0
    if behind and runner.checkpoint:
        applied = await rt.js.get_msg(runner.stream, runner.checkpoint)
        if applied.time is not None:
            lag = max(time.time() - applied.time.timestamp(), 0.0)
    for p in runner.projections:
        metrics.LAG_EVENTS.labels(p.name).set(behind)
        metrics.LAG_SECONDS.labels(p.name).set(lag)


async def _simulate(rt: Runtime, agents: int, stop: anyio.Event) -> None:
    await simulate.run(rt, agents, stopping=stop.is_set)


async def _until_stopped(
    on_ready: Callable[[int], Coroutine[Any, Any, None]], port: int, stop: anyio.Event
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(on_ready, port)
        await stop.wait()
        tg.cancel_scope.cancel()
