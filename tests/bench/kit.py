"""Measuring helpers shared by the benchmarks (tests/bench/): percentiles and a sampler of
the CPU time and peak memory of processes."""

from __future__ import annotations

import anyio
import psutil


def percentile(values: list[float], p: float) -> float:
    """The ``p`` quantile (0..1) of ``values``, nan when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


class ProcessWatch:
    """CPU seconds and peak RSS of each of some processes; ``sample`` runs until ``stop``."""

    def __init__(self, *pids: int) -> None:
        self.procs = [psutil.Process(pid) for pid in pids]
        self.peak_rss = [0 for _ in pids]

    async def sample(self, stop: anyio.Event, every: float = 0.1) -> None:
        while not stop.is_set():
            try:
                for i, proc in enumerate(self.procs):
                    self.peak_rss[i] = max(self.peak_rss[i], proc.memory_info().rss)
            except psutil.Error:
                return
            await anyio.sleep(every)

    def cpu(self) -> list[float]:
        return [float(t.user + t.system) for t in (p.cpu_times() for p in self.procs)]
