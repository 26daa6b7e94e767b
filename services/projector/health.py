"""Whether a projection runner is doing its work, and if not, why (DESIGN 1: a /healthz that
tells the truth). Pure: the runner reports what happens, ``problems`` judges.

A runner is unhealthy when:
- it holds events it has not committed for more than ``stall_after`` seconds (Postgres away or
  refusing, a commit that hangs): measured from the first event taken since the last commit, so
  a runner with nothing to do is never stalled;
- it has re-positioned ``resync_limit`` times in a row without a commit in between (a loop: the
  same failure again and again), whatever the time;
- it is not positioned (reading its checkpoints, creating its consumer): starting, or unable
  to (Postgres or NATS away).
A commit, or finding nothing left to do, makes it healthy again. A standby (another process
holds the lease of its projections: lease.py) is healthy, and says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from fleetward.services.config import DEFAULT_STALL_S

RESYNC_LIMIT = 3  # default: this many re-positionings in a row without a commit is a loop


@dataclass(slots=True)
class RunnerHealth:
    """What the health check of one runner reads. Times are seconds of ``clock`` (monotonic)."""

    stall_after: float = DEFAULT_STALL_S
    resync_limit: int = RESYNC_LIMIT
    clock: Callable[[], float] = time.monotonic
    waiting_since: float | None = None  # when the first event not yet committed was taken
    resyncs: int = 0  # re-positionings since the last commit (or idle moment)
    is_positioned: bool = False
    last_error: str = ""
    standby: str | None = None  # standing by: the processes that hold the lease

    def took(self) -> None:
        """The runner took a batch of events to fold."""
        if self.waiting_since is None:
            self.waiting_since = self.clock()

    def committed(self, more: bool) -> None:
        """A commit succeeded; ``more``: events are still held (the next window, folded
        meanwhile), whose wait starts now."""
        self.waiting_since = self.clock() if more else None
        self.resyncs = 0
        self.last_error = ""

    def idle(self) -> None:
        """The runner found nothing to do and holds nothing."""
        self.waiting_since = None
        self.resyncs = 0
        self.last_error = ""

    def failed(self, exc: BaseException, *, resync: bool) -> None:
        """Something failed; ``resync``: the runner re-positions because of it."""
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if resync:
            self.resyncs += 1

    def positioning(self) -> None:
        """The runner starts to position (read checkpoints, create its consumer)."""
        self.is_positioned = False
        self.standby = None

    def standing_by(self, holders: str) -> None:
        """Another process holds the lease (``holders``): this runner waits, healthy."""
        self.standby = holders
        self.waiting_since = None
        self.resyncs = 0
        self.last_error = ""

    def positioned(self) -> None:
        self.is_positioned = True

    def problems(self, name: str) -> list[str]:
        """Why the runner of ``name`` (its projections) is not doing its work; [] when it is."""
        if self.standby is not None:
            return []
        now, found = self.clock(), []
        why = f" (last error: {self.last_error})" if self.last_error else ""
        if not self.is_positioned:
            found.append(f"projection {name}: not positioned{why or ' yet'}")
        if self.waiting_since is not None and now - self.waiting_since > self.stall_after:
            found.append(
                f"projection {name}: no commit for {now - self.waiting_since:.0f} s with events "
                f"waiting{why}"
            )
        if self.resyncs >= self.resync_limit:
            found.append(
                f"projection {name}: re-positioned {self.resyncs} times without a commit{why}"
            )
        return found
