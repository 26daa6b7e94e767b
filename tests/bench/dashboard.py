"""The dashboard's overview under a large fleet (``make bench --only dashboard``): ``agents``
agents in the views (``dashboard_fleet``, tests/bench/bench.sql: written straight into the
projections' tables, as the KPI benchmark does, since only the rows matter to the reads), the
API running in this process (``services/api/server.py``: uvicorn, the live poller beside it),
then, in the same run, the p99 of:

- the baseline: a plain indexed lookup of one row (``fleet.agents`` by its key, asyncpg);
- the HTTP floor: ``GET /api/v1/whoami`` (a token checked, no read);
- each read the overview page makes when it opens (services/api/static/dashboard.js
  ``loadAll``): ``/overview`` and ``/escalations?limit=500``, both at once, as the page's data;
- the agents page's read, ``/agents?limit=500`` (the dearest today first: every agent's spend
  today summed and sorted).

Requests go one at a time over one kept-alive connection (httpx), with a viewer's token."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any

import anyio
import httpx

from fleetward.services.api import token
from fleetward.services.api.server import serve_api
from fleetward.services.metrics.health import HealthChecks
from fleetward.services.runtime.connect import Runtime
from tests.bench.kit import percentile
from tests.bench.kpis import BASELINE, measure
from tests.bench.sql import bench_q

PAGE = 500  # rows the dashboard reads of a list (its LIST)
READS = (
    ("GET /api/v1/overview", "/api/v1/overview"),
    ("GET /api/v1/escalations?limit=500", f"/api/v1/escalations?limit={PAGE}"),
    ("GET /api/v1/agents?limit=500", f"/api/v1/agents?limit={PAGE}"),
)
FLOOR = ("GET /api/v1/whoami (the HTTP floor)", "/api/v1/whoami")


async def fill(rt: Runtime, agents: int) -> int:
    """The fleet's rows (``dashboard_fleet``), then VACUUM ANALYZE (so that autovacuum does not
    start on them while the reads are measured); the rows written."""
    async with rt.pool.acquire() as conn:
        written: int = await conn.fetchval(bench_q("dashboard_fleet"), agents)
        await conn.execute("VACUUM ANALYZE")
    return written


async def timed(
    call: Callable[[], Awaitable[Any]], *, n: int = 200, budget_s: float = 30.0
) -> list[float]:
    """Seconds of up to ``n`` calls (fewer when ``budget_s`` runs out, 5 at least), after 3
    warm-ups."""
    for _ in range(3):
        await call()
    took: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(took) < n and (len(took) < 5 or time.perf_counter() < deadline):
        t = time.perf_counter()
        await call()
        took.append(time.perf_counter() - t)
    return took


async def run_dashboard_bench(
    rt: Runtime, agents: int, seed: int
) -> tuple[int, float, list[tuple[str, float, float, int]]]:
    """The rows written, the baseline's p99 (s) and each probe's (what, p99 s, p50 s,
    requests)."""
    written = await fill(rt, agents)

    def one_agent(rng: random.Random) -> tuple[Any, ...]:
        return (f"agent-{rng.randrange(agents):06d}",)

    base = percentile(await measure(rt, BASELINE[1], one_agent, seed), 0.99)
    served = replace(rt, settings=replace(rt.settings, api_port=0))
    stop = anyio.Event()
    out: list[tuple[str, float, float, int]] = []
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_api, served, HealthChecks(), stop)
        key = token.load_key(rt.settings.auth_dir, create=True)
        auth = {"authorization": f"Bearer {token.issue(key, 'user:bench', time.time())}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=auth) as client:

            async def get(path: str) -> None:
                answer = await client.get(path)
                if answer.status_code != 200:
                    raise SystemExit(f"{path}: {answer.status_code} {answer.text}")

            async def page() -> None:
                async with anyio.create_task_group() as both:
                    both.start_soon(get, READS[0][1])
                    both.start_soon(get, READS[1][1])

            for what, path in (FLOOR, *READS):
                took = await timed(partial(get, path))
                out.append((what, percentile(took, 0.99), percentile(took, 0.5), len(took)))
            took = await timed(page)
            out.append(("the overview page's data (2 reads at once)", percentile(took, 0.99),
                        percentile(took, 0.5), len(took)))  # fmt: skip
        stop.set()
    return written, base, out
