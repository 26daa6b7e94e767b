"""What the services that follow streams and publish plans share (the watchdog's escalations,
the guard's budget verdicts): loading their state until they can, readers and a publisher run
side by side, plans of one key run one at a time and in order (plans of different keys at
once), and a step that meets a transient NATS failure tried again until it gives up.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

import anyio
from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fleetward.services.jetstream.publish import TRANSIENT

T = TypeVar("T")


class Keyed(Protocol):
    """A plan: ``key`` says what it is about (an escalation, a budget)."""

    @property
    def key(self) -> str: ...


P = TypeVar("P", bound=Keyed)


class KeyedRunner:
    """Runs ``job(plan)`` for each plan as it comes: one at a time per ``plan.key``, in the
    order they came, and at most ``window`` at once over all keys (None: no bound).
    ``in_flight`` counts plans taken and not finished."""

    def __init__(self, window: int | None = None) -> None:
        self.in_flight = 0
        self._slots = anyio.Semaphore(window) if window else None
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}

    async def run(self, plans: ObjectReceiveStream[P], job: Callable[[P], Awaitable[None]]) -> None:
        """Run plans until the stream closes; then finish those in hand."""
        async with anyio.create_task_group() as tg, plans:
            async for plan in plans:
                self.in_flight += 1
                tg.start_soon(self._one, plan, job)

    async def _one(self, plan: P, job: Callable[[P], Awaitable[None]]) -> None:
        key = plan.key
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = anyio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                if self._slots is None:
                    await job(plan)
                else:
                    async with self._slots:
                        await job(plan)
        finally:
            self.in_flight -= 1
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


async def retrying(
    call: Callable[[], Awaitable[T]], what: str, log: logging.Logger, give_up_s: float
) -> T:
    """``call()``, tried again after a transient NATS failure (``publish.TRANSIENT``, an
    ``OSError``) with backoff from 0.2 s up to 5 s; the failure is raised once ``give_up_s``
    seconds have passed. ``what`` names it in the log."""
    started, delay = time.monotonic(), 0.2
    while True:
        try:
            return await call()
        except (*TRANSIENT, OSError) as exc:
            if time.monotonic() - started > give_up_s:
                raise
            log.warning("publishing %s: %s; retrying", what, exc)
            await anyio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def publishing(
    publish: Callable[[MemoryObjectReceiveStream[P]], Awaitable[None]],
    plans: tuple[MemoryObjectSendStream[P], MemoryObjectReceiveStream[P]],
    readers: Sequence[Callable[[], Coroutine[Any, Any, None]]],
    shutdown_s: float,
) -> None:
    """Run ``readers`` (which send plans on ``plans[0]``) beside ``publish`` (which takes them
    from ``plans[1]``) until the readers return; then close the sending side and give the plans
    in hand up to ``shutdown_s`` seconds to be published."""
    send, receive = plans
    published = anyio.Event()

    async def publisher() -> None:
        await publish(receive)
        published.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(publisher)
        try:
            async with anyio.create_task_group() as group:
                for reader in readers:
                    group.start_soon(reader)
        finally:
            send.close()  # the publisher finishes the plans in hand, then returns
        with anyio.move_on_after(shutdown_s):
            await published.wait()
        tg.cancel_scope.cancel()


async def load_retrying(
    load: Callable[[], Awaitable[None]],
    stopping: Callable[[], bool],
    *,
    name: str,
    log: logging.Logger,
    failed: Callable[[str], None],
) -> bool:
    """``load()`` until it succeeds (True) or ``stopping()`` (False), with backoff from 0.2 s up
    to 5 s; each failure (Postgres or NATS away) is told to ``failed`` as one line, for the
    service's health endpoint."""
    delay = 0.2
    while not stopping():
        try:
            await load()
            return True
        except Exception as exc:
            failed(f"{type(exc).__name__}: {exc}")
            log.warning("%s: cannot read the projections (%s); retrying", name, exc)
            await anyio.sleep(delay)
            delay = min(delay * 2, 5.0)
    return False


class PlanPublisher:
    """What a service's plan publisher shares: plans run one key at a time (``KeyedRunner``),
    a plan whose publishing fails is logged, counted in ``outcomes["failed"]`` and on
    ``failed_metric`` and dropped, and ``finished(plan, result)`` is told how each ended
    (``result``: what ``execute`` returned, None when it failed)."""

    def __init__(
        self, *, log: logging.Logger, failed_metric: Callable[[], None], window: int | None
    ) -> None:
        self.outcomes: Counter[str] = Counter()  # this publisher's step outcomes
        self._log, self._failed_metric = log, failed_metric
        self._runner = KeyedRunner(window)

    @property
    def in_flight(self) -> int:
        """Plans taken and not finished."""
        return self._runner.in_flight

    async def run(self, plans: ObjectReceiveStream[Any]) -> None:
        """Publish plans as they come, until the stream closes; then finish those in hand."""
        await self._runner.run(plans, self._one)

    async def _one(self, plan: Any) -> None:
        result = None
        try:
            result = await self.execute(plan)
        except Exception:
            self._log.exception("publishing the plan for %s failed; dropped", plan.key)
            self.outcomes["failed"] += 1
            self._failed_metric()
        finally:
            self.finished(plan, result)

    async def execute(self, plan: Any) -> Any:
        """Publish ``plan``; what ``finished`` is told."""
        raise NotImplementedError

    def finished(self, plan: Any, result: Any) -> None:
        """Told how each plan ended. Nothing by default."""
