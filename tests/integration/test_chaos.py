"""The projector killed with SIGKILL at random points while it ingests tens of thousands of
events, restarted each time, ends identical, row for row, to a clean rebuild."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from nats.js.errors import NotFoundError

from fleetward.projections import ALL
from fleetward.schemas import Event
from fleetward.services.db import q
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.projector.consumers import runner_durable
from fleetward.services.projector.rebuild import rebuild
from fleetward.services.runtime.connect import Runtime
from fleetward.services.simulate import Fleet
from tests.helpers import now, snapshot, wait_for

ROOT = Path(__file__).resolve().parents[2]
MIN_EVENTS = 30_000
KILLS = 8


def make_events(seed: int) -> list[Event]:
    fleet = Fleet(200, seed=seed)
    events = fleet.start(now())
    while len(events) < MIN_EVENTS:
        events += fleet.tick(now())
    return events


def start_projector(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fleetward.services.cli", "projector"],
            cwd=ROOT,
            env=env | {"FLEETWARD_BATCH_SIZE": "250", "FLEETWARD_METRICS_PORT": "0"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def all_caught_up(rt: Runtime) -> bool:
    """Every consumer has applied all it was given, and the outbox has published every event
    the folds emitted (review feedback, refusals: the commands projection applies them), and
    the consumers are still clear after that."""
    if not await _consumers_clear(rt):
        return False
    async with rt.pool.acquire() as conn:
        if (await conn.fetchrow(q("outbox_backlog")))["waiting"]:
            return False
    return await _consumers_clear(rt)


async def _consumers_clear(rt: Runtime) -> bool:
    for projection in ALL:
        try:
            info = await rt.js.consumer_info(projection.stream, runner_durable(projection, ALL))
        except NotFoundError:  # being re-created by a starting projector
            return False
        if info.num_pending or info.num_ack_pending:
            return False
    return True


@pytest.mark.slow
async def test_sigkill_at_random_points_then_restart_equals_clean_rebuild(
    rt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    rng = random.Random(20261121)
    events = make_events(seed=3)
    log = tmp_path / "projector.log"
    kills = 0
    published = anyio.Event()

    async def publish_all() -> None:
        for i in range(0, len(events), 2_000):
            await publish_many(rt.js, events[i : i + 2_000])
        published.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(publish_all)
        while kills < KILLS or not published.is_set():
            proc = start_projector(env, log)
            # chaos timing, not a wait for work: kill at a random moment of its life
            await anyio.sleep(rng.uniform(0.4, 2.5))
            proc.kill()
            proc.wait()
            kills += 1

    started_before = log.read_text().count("projector running")
    proc = start_projector(env, log)

    async def ready() -> bool:
        return log.read_text().count("projector running") > started_before

    try:
        await wait_for(ready, timeout=60, what="the last projector to start")
        await wait_for(lambda: all_caught_up(rt), timeout=120, what="the projector to catch up")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()[-3000:]

    after_chaos = await snapshot(rt)
    for projection in ALL:
        await rebuild(rt, projection)
    clean = await snapshot(rt)
    assert kills >= KILLS
    assert sum(len(rows) for rows in clean.values()) > 1_000, "the fleet should have filled tables"
    assert clean["dead_letters"] == []
    for table, rows in clean.items():
        assert after_chaos[table] == rows, f"{table} differs from a clean rebuild"
