"""A timeline of one projector process, for finding where a slow event's time went (off by
default; tests/bench/run.py ``freshness`` turns it on).

With ``FLEETWARD_TRACE=FILE`` a projector process appends one JSON object per line to FILE:
``{"t": unix time (s), "ev": name, ...}``. What it marks:

- a traced event's path (``FLEETWARD_TRACE_SUBJECT``, e.g. ``fw.hb.probe``): ``arrived`` (nats-py
  handed it to the consumer's buffer; with its stream sequence, stored time and ``message``),
  ``taken`` (the runner's batch held it), ``folded``, ``commit`` (its transaction started,
  fenced, wrote and committed: ``began``, ``fenced``, ``wrote``, ``t``), ``acked``;
- every garbage collection that paused the process ``GC_MIN_S`` or more (``gc``: generation,
  seconds, objects collected);
- every stall of the event loop of ``STALL_MIN_S`` or more (``stall``: how late a 10 ms sleep
  woke), whatever held the loop;
- each reading of the fleet gauges (``fleet_metrics``: began, seconds).

Nothing is marked, and nothing costs, when ``FLEETWARD_TRACE`` is unset: ``TRACE`` is None.
"""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path
from typing import Any, Final

import anyio

GC_MIN_S: Final = 0.002  # garbage collections at least this long are marked
STALL_MIN_S: Final = 0.015  # event-loop stalls at least this long are marked
TICK_S: Final = 0.010  # the stall watch's sleep


class Trace:
    """Appends marks to ``path`` (line-buffered JSON). ``subject``: the subject whose deliveries
    are followed through the runner (empty: none)."""

    def __init__(self, path: Path, subject: str = "") -> None:
        self.subject = subject
        self._out = path.open("a", buffering=1)
        self._gc_started = 0.0

    def mark(self, ev: str, **fields: Any) -> None:
        """Append one mark, stamped now (unix time)."""
        self._out.write(json.dumps({"t": time.time(), "ev": ev, **fields}) + "\n")

    def close(self) -> None:
        """Close the file (a process's own trace stays open until it exits)."""
        self._out.close()

    def watch_gc(self) -> None:
        """Mark every garbage collection at least ``GC_MIN_S`` long (gc.callbacks)."""
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        spent = time.perf_counter() - self._gc_started
        if spent >= GC_MIN_S:
            self.mark("gc", gen=info["generation"], s=round(spent, 6),
                      collected=info["collected"])  # fmt: skip

    async def watch_stalls(self) -> None:
        """Mark each time a ``TICK_S`` sleep wakes ``STALL_MIN_S`` or more late (the loop was
        held: a fold, a decode, a garbage collection). Runs until cancelled."""
        while True:
            began = time.perf_counter()
            await anyio.sleep(TICK_S)
            late = time.perf_counter() - began - TICK_S
            if late >= STALL_MIN_S:
                self.mark("stall", s=round(late, 6))


def from_env(env: dict[str, str] | None = None) -> Trace | None:
    """The process's trace as ``FLEETWARD_TRACE`` (a file) and ``FLEETWARD_TRACE_SUBJECT`` say;
    None when the first is unset or empty."""
    env = dict(os.environ if env is None else env)
    path = env.get("FLEETWARD_TRACE", "")
    if not path:
        return None
    return Trace(Path(path), env.get("FLEETWARD_TRACE_SUBJECT", ""))


TRACE: Final = from_env()
