"""Durations read from events and rows, made safe for the watchdog's arithmetic: the one place
where they are clamped. Pure.

The contract admits any finite float above 0 for a heartbeat interval, a lease or an SLA
(``5e-324`` and ``1.7976931348623157e308`` included; schemas/ may tighten that, never loosen
it), and rows projected before a bound existed keep what was admitted then. The watchdog
multiplies these by miss counts, adds them to stream times, divides by them (misses of a silent
agent), and builds ``timedelta`` and ``datetime`` values from them (leases, ISO times in
evidence). At the extremes that overflows: ``silent / 5e-324`` is infinite and ``int()`` of it
raises ``OverflowError``; ``timedelta(seconds=1e15)`` and ``datetime + timedelta(seconds=1e10)``
raise too; and a deadline of ``inf`` or ``nan`` breaks the deadline heaps. So every duration
enters the core through ``period``:

- at least ``MIN_PERIOD_S`` (1 ms): an agent that promises a heartbeat more often is judged as
  if it promised one per millisecond, i.e. late almost at once, which is what it asked for;
- at most ``MAX_PERIOD_S`` (10 years): longer means "never" in practice, and a stream time plus
  ten years times any sane miss count stays inside ``datetime``'s range (year 9999);
- ``nan`` (JSON cannot carry it; only a row edited by hand can) counts as ``MAX_PERIOD_S``:
  an agent is left unjudged rather than escalated at once on a value nobody promised.

What is clamped is only how the watchdog judges; the projections keep the value as published.
"""

from __future__ import annotations

import math
from typing import Final

MIN_PERIOD_S: Final = 0.001
MAX_PERIOD_S: Final = 10 * 365 * 86_400.0


def period(seconds: float) -> float:
    """``seconds`` (a heartbeat interval, a lease, an SLA: seconds, any float) clamped to
    [``MIN_PERIOD_S``, ``MAX_PERIOD_S``]; ``nan`` gives ``MAX_PERIOD_S``. Never raises."""
    if math.isnan(seconds):
        return MAX_PERIOD_S
    return min(max(seconds, MIN_PERIOD_S), MAX_PERIOD_S)
