"""The benchmark's own SQL (baseline tables, probes, generated histories): tests/bench/bench.sql,
beside it, not shipped in the wheel."""

from __future__ import annotations

from pathlib import Path

from fleetward.services.db import named_queries

BENCH_SQL = named_queries((Path(__file__).parent / "bench.sql").read_text())


def bench_q(name: str) -> str:
    """A named query of tests/bench/bench.sql."""
    return BENCH_SQL[name]
