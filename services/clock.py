"""The clock a timed loop reads and paces itself by: this host's, or one a test moves by hand.

A loop that judges by time (the watchdog) takes a ``Clock`` instead of calling ``time.time()``
and ``anyio.sleep`` itself, so a test can put "now" exactly where it wants (a deadline, a
microsecond before it) and let the loop run one round per move.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio


class Clock(Protocol):
    """Wall-clock time in seconds since the epoch, and a way to wait for it to pass."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait for about ``seconds`` (a loop re-reads ``now()`` after it)."""
        ...


class SystemClock:
    """This host's clock: ``time.time()`` and ``anyio.sleep``."""

    def now(self) -> float:
        """``time.time()``."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """``anyio.sleep(seconds)``."""
        await anyio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock that moves only when told (``set``, ``advance``), for tests.

    ``sleep`` returns at the next move, however short or long: a loop paced by this clock runs
    one round per move and decides from ``now()`` what is due (wait for that round, e.g. on a
    test signal, before the next move). Use it from the event loop's thread."""

    def __init__(self, start: float) -> None:
        self._now = start
        self._moved: anyio.Event | None = None

    def now(self) -> float:
        """Where the clock was last put, in seconds since the epoch."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait for the next move (``seconds`` is not waited for: the test decides)."""
        if self._moved is None:
            self._moved = anyio.Event()
        await self._moved.wait()

    def set(self, when: float) -> None:
        """Move to ``when`` and wake the sleepers. Raises ``ValueError`` if ``when`` is before
        ``now()``: the loops it paces assume time never goes back."""
        if when < self._now:
            raise ValueError(f"a clock does not go back: {when} < {self._now}")
        self._now = when
        moved, self._moved = self._moved, None
        if moved is not None:
            moved.set()

    def advance(self, seconds: float) -> None:
        """Move ``seconds`` forward (see ``set``)."""
        self.set(self._now + seconds)
