"""Test signals: background work announces each step it finishes, so a test can wait for it.

A long-running loop (a projection runner, the watchdog) emits a named ``Signal`` where a test
wants to know that something happened: a window committed, a judging round done. A test then
waits for a condition on the component's own state with ``Signals.wait_for``, which checks it
at once and again after every emit of the component's signals, instead of sleeping or polling;
``Signal.recording`` collects every value emitted while it is open.

Production-safe: with nobody waiting or recording, an emit stores its value and counts it: no
allocation, no wake-up, nothing kept. Emit only from the event loop's own thread (the wake-up
is an ``anyio.Event``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class Signals:
    """The signals of one component (subclasses declare them as ``Signal`` attributes);
    ``wait_for`` wakes on an emit of any of them."""

    def __init__(self) -> None:
        self._emitted: anyio.Event | None = None  # made by the first waiter: emits need no loop

    def _wake(self) -> None:
        emitted, self._emitted = self._emitted, None
        if emitted is not None:
            emitted.set()

    async def wait_for(
        self,
        check: Callable[[], object],
        timeout: float = 30.0,  # noqa: ASYNC109  # a deadline against a hang, not a measurement
        what: str = "a condition",
    ) -> None:
        """Return once ``check()`` is truthy: checked now and after every emit. ``check`` reads
        the component's state and must not await. Raises ``TimeoutError`` naming ``what`` after
        ``timeout`` seconds."""
        try:
            with anyio.fail_after(timeout):
                while not check():
                    if self._emitted is None:
                        self._emitted = anyio.Event()
                    await self._emitted.wait()
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}") from None


class Signal(Generic[T]):
    """One named notice of ``owner``: ``count`` emits so far, the ``last`` value (None before
    the first)."""

    __slots__ = ("_owner", "_recordings", "count", "last", "name")

    def __init__(self, owner: Signals, name: str) -> None:
        self._owner, self.name = owner, name
        self.count = 0
        self.last: T | None = None
        self._recordings: list[list[T]] = []

    def emit(self, value: T) -> None:
        """Announce ``value``: record it, and wake whoever waits on the owner's signals."""
        self.count += 1
        self.last = value
        for recording in self._recordings:
            recording.append(value)
        self._owner._wake()

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[T]]:
        """A list that receives every value emitted until the block ends, in order."""
        values: list[T] = []
        self._recordings.append(values)
        try:
            yield values
        finally:
            self._recordings.remove(values)

    def __repr__(self) -> str:
        return f"Signal({self.name!r}, count={self.count}, last={self.last!r})"
