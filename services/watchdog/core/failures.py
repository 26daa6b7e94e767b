"""Failures of judging one agent, task or event, kept apart so the rest is judged (DESIGN 3.6).
Pure: the core notes them here and goes on; the service drains them, logs them and counts them
(``fleetward_watchdog_failures_total{stage}``).

Values are clamped where they enter the core (limits.py), so a failure here is a bug or an input
nobody foresaw; either way it costs one agent, task or event, never the watchdog. Where the
failure happened is its ``stage``:

- ``load``: a projection row read at start (the row is skipped);
- ``heartbeat``, ``event``: one message read from a stream (it is skipped);
- ``liveness``: judging an agent's silence (the agent is quarantined: not judged again until it
  registers again or the watchdog restarts; see liveness.py);
- ``overdue``, ``stall``: judging a held task (judged again when the task changes);
- ``review``, ``dependency``: judging a task waiting for its review, or on a cancelled
  dependency (judged again when the task changes);
- ``lease``: a lapsed lease (judged again when the task changes);
- ``reconcile``: an open escalation checked once caught up (left open);
- ``tick``: a whole judging round (the service's last resort; the next round tries again).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

STAGES: Final = (
    "load", "heartbeat", "event", "liveness", "overdue", "stall", "review", "dependency", "lease",
    "reconcile", "tick", "kpi_drift",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Failure:
    """One failure: the ``stage`` (one of ``STAGES``), the ``key`` being judged (an agent,
    task or escalation id, a stream sequence; may be empty) and the exception."""

    stage: str
    key: str
    error: Exception

    def __str__(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


class Failures:
    """The failures noted since the service last drained them, oldest first."""

    def __init__(self) -> None:
        self._pending: list[Failure] = []
        self.total = 0

    def note(self, stage: str, key: str, error: Exception) -> None:
        """Record that judging ``key`` at ``stage`` raised ``error``."""
        assert stage in STAGES, stage
        self._pending.append(Failure(stage, key, error))
        self.total += 1

    @contextlib.contextmanager
    def isolated(self, stage: str, key: str) -> Iterator[None]:
        """Run the block; an ``Exception`` it raises is noted and swallowed (the block's work is
        left undone, the caller goes on)."""
        try:
            yield
        except Exception as exc:
            self.note(stage, key, exc)

    def drain(self) -> list[Failure]:
        """The failures noted since the last drain; the list is emptied."""
        out, self._pending = self._pending, []
        return out

    def __bool__(self) -> bool:
        return bool(self._pending)
