"""Leases on a real nats-server and Postgres: a claimer killed with SIGKILL loses its task when
its lease lapses; another agent finishes it; a late event from the dead epoch is refused."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import anyio

from fleetward.schemas import subject_of
from fleetward.schemas.events import Deliverable, TaskSubmitted
from fleetward.services.client import AgentClient, FleetClient
from fleetward.services.client.taskstate import read_task
from fleetward.services.config import WatchdogSettings
from fleetward.services.jetstream.publish import encode
from fleetward.services.runtime.connect import Runtime
from fleetward.services.watchdog.service import Watchdog
from tests.helpers import creds, envelope, project_all, wait_for

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 1.0
# liveness judged on a long interval here, so the lapse of the lease is what frees the task
SLOW_LIVENESS = WatchdogSettings(
    interval_s=60.0, warn_misses=2, critical_misses=5, grace_s=0.2, stall_s=3600.0,
    default_sla_s=0, error_window_s=60.0, error_threshold=0.5, error_min_calls=10,
)  # fmt: skip

CLAIMER = textwrap.dedent(
    """
    import asyncio, sys
    from fleetward.services.client import AgentClient

    async def main(url: str) -> None:
        agent = await AgentClient.connect(url, sys.argv[3])
        await agent.register(name="doomed", owner="o", team="t", heartbeat_interval_s=60)
        claim = await agent.claim("lease-1", lease_s=float(sys.argv[2]))
        await agent.progress(claim, "started")
        print("claimed", claim.epoch, flush=True)
        while True:  # working, silently: no progress, no heartbeat naming the task
            await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1]))
    """
)


def spawn_claimer(url: str, creds_file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CLAIMER, url, str(LEASE_S), str(creds_file)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


async def test_a_killed_claimer_loses_its_task_and_another_finishes_it(rt: Runtime) -> None:
    ops = await FleetClient.connect(rt.nats_url, creds(rt, "user:ops"))
    await ops.create_task("lease-1", project="p", title="Survive a crash")
    proc = spawn_claimer(rt.nats_url, creds(rt, "doomed"))
    rescuer = await AgentClient.connect(rt.nats_url, creds(rt, "rescuer"))
    await rescuer.register(name="rescuer", owner="o", team="t")
    dog = Watchdog(rt, replace(SLOW_LIVENESS))
    stop = anyio.Event()
    try:
        assert proc.stdout is not None
        line = await anyio.to_thread.run_sync(proc.stdout.readline)
        assert line.strip() == "claimed 1", line
        async with anyio.create_task_group() as tg:
            tg.start_soon(dog.run, stop.is_set)
            proc.kill()  # SIGKILL, mid-task
            proc.wait()

            async def released() -> bool:
                row = (await read_task(rt.nc, rt.js, "lease-1")).row
                return row is not None and row["status"] == "inbox"

            await wait_for(released, 20, "the lapsed lease to free the task")
            claim = await rescuer.claim("lease-1")
            assert claim.epoch == 2
            await rescuer.submit(claim, content="done by the rescuer")
            late = TaskSubmitted(
                **envelope("doomed"), task="lease-1", agent="doomed", epoch=1,
                deliverable=Deliverable(kind="markdown", sha256="0" * 64, content="too late"),
            )  # fmt: skip
            await rt.js.publish(subject_of(late), encode(late))
            await ops.review("lease-1", "approve")
            stop.set()
        await project_all(rt)
        async with rt.pool.acquire() as conn:
            task = await conn.fetchrow("SELECT * FROM fleet.tasks WHERE task_id = 'lease-1'")
            versions = await conn.fetch(
                "SELECT agent_id, epoch, content FROM fleet.deliverables WHERE task_id = 'lease-1'"
            )
            refused = await conn.fetch(
                "SELECT type, reason FROM fleet.task_rejections WHERE task_id = 'lease-1'"
            )
            expired = await conn.fetchval(
                "SELECT count(*) FROM fleet.task_rejections WHERE type = 'task.lease_expired'"
            )
        assert task is not None
        assert (task["status"], task["assignee"], task["claim_epoch"]) == ("done", "rescuer", 2)
        assert [tuple(v) for v in versions] == [("rescuer", 2, "done by the rescuer")]
        assert [tuple(r) for r in refused] == [
            ("task.submitted", "epoch 1 of doomed is not the current claim")
        ]
        assert expired == 0  # exactly one expiry, and it fitted
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        await rescuer.close()
        await ops.close()


async def test_progress_in_time_keeps_the_lease(rt: Runtime) -> None:
    ops = await FleetClient.connect(rt.nats_url, creds(rt, "user:ops"))
    await ops.create_task("lease-2", project="p", title="Keep working")
    worker = await AgentClient.connect(rt.nats_url, creds(rt, "steady"))
    await worker.register(name="steady", owner="o", team="t")
    dog = Watchdog(rt, SLOW_LIVENESS)
    stop = anyio.Event()
    try:
        claim = await worker.claim("lease-2", lease_s=LEASE_S)
        async with anyio.create_task_group() as tg:
            tg.start_soon(dog.run, stop.is_set)
            for n in range(12):  # 3 s of work, reporting every quarter of a lease
                await worker.progress(claim, f"step {n}")
                await anyio.sleep(LEASE_S / 4)
            await worker.submit(claim, content="on time")
            stop.set()
        row = (await read_task(rt.nc, rt.js, "lease-2")).row
        assert row is not None and (row["status"], row["claim_epoch"]) == ("review", 1)
    finally:
        await worker.close()
        await ops.close()
