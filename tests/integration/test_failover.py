"""One active projector per projection, with failover (issue 18 part 3): two ``fleetward
projector`` processes for the same projections: one writes, the other stands by (its metrics,
/healthz and log say so, and ``fleetward status`` names both); the active one killed with
SIGKILL while events flow, the standby takes over, and the views equal a rebuild. And the
runner's invariant: deliveries that went to another puller of its consumer fail the window
instead of being skipped."""

from __future__ import annotations

import contextlib
import re
import signal
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from subprocess import Popen

import anyio
import pytest

from fleetward.projections import ALL, BY_NAME
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.projector.consumers import by_stream
from fleetward.services.projector.rebuild import catch_up, rebuild
from fleetward.services.projector.runner import ProjectionRunner
from fleetward.services.projector.window import Gap
from fleetward.services.runtime.connect import Runtime
from tests.helpers import http_get, snapshot, wait_for
from tests.integration.test_chaos import all_caught_up, make_events
from tests.integration.test_cli import checkpoints, fleetward_ok, output, spawn
from tests.integration.test_health import health, ready_port
from tests.integration.test_projector import register, spend, spend_total

PROJECTIONS = [p.name for p in ALL]


@contextlib.contextmanager
def projectors(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[Popen[bytes], ...]]:
    """Two projector processes; the second starts once the first holds every runner's lease.
    (Started together, each may win the lease of some runners: one writer per projection
    still, but not the one active process and one standby these tests are about.)"""
    settings = {"FLEETWARD_METRICS_PORT": "0", "FLEETWARD_BATCH_SIZE": "250"}
    with spawn(["projector"], {**env, **settings}, tmp_path / "a") as a:
        _await_leases(tmp_path / "a", len(by_stream(ALL)))
        with spawn(["projector"], {**env, **settings}, tmp_path / "b") as b:
            yield a, b


def _await_leases(log: Path, runners: int, timeout_s: float = 60.0) -> None:
    """Until the process logging under ``log`` says it holds the lease of ``runners`` runners
    (a blocking wait: the process starts meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while output(log).count("active (this process holds the lease)") < runners:
        assert time.monotonic() < deadline, f"no lease within {timeout_s} s: {output(log)}"
        time.sleep(0.1)


async def active_series(port: int) -> dict[str, float]:
    """fleetward_projection_active by projection, as the process on ``port`` exports it."""
    status, body = await http_get(port, "/metrics")
    assert status == 200
    found = re.findall(r'^fleetward_projection_active\{projection="(\w+)"\} (\S+)$', body, re.M)
    return {name: float(value) for name, value in found}


async def applied(port: int) -> float:
    """The events the process on ``port`` applied, all projections together."""
    _, body = await http_get(port, "/metrics")
    found = re.findall(r"^fleetward_events_processed_total\{.*\} (\S+)$", body, re.M)
    return sum(float(v) for v in found)


async def roles(ports: list[int]) -> tuple[int, int]:
    """(the index of the active process, that of the standby), once every projection has
    exactly one writer among them."""

    async def settled() -> tuple[int, int] | None:
        series = [await active_series(port) for port in ports]
        for i, mine in enumerate(series):
            other = series[1 - i]
            if all(mine.get(p) == 1 for p in PROJECTIONS) and all(
                other.get(p) == 0 for p in PROJECTIONS
            ):
                return i, 1 - i
        return None

    return await wait_for(settled, 60, "one process active for every projection, one standby")


async def test_two_projectors_one_writes_the_other_stands_by(
    rt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    with projectors(env, tmp_path) as procs:
        logs = [tmp_path / "a", tmp_path / "b"]
        ports = [await ready_port(proc, log) for proc, log in zip(procs, logs, strict=True)]
        active, standby = await roles(ports)
        await publish_many(rt.js, [register("a1")] + [spend("a1", 0.01) for _ in range(300)])
        await wait_for(lambda: all_caught_up(rt), 60, "the active projector to catch up")
        assert await applied(ports[active]) >= 301
        assert await applied(ports[standby]) == 0, "the standby applied events"

        status, body = await health(ports[standby])
        checks = body["checks"]
        assert isinstance(checks, dict)
        assert status == 200 and checks["projector"]["ok"] is True, body
        assert "standby" in checks["projector"]["reason"], body
        status, body = await health(ports[active])
        assert status == 200 and body["problems"] == [], body
        assert "standby (active: " in output(logs[standby]), output(logs[standby])

        shown = await fleetward_ok(env, "status")
        assert f"pid {procs[active].pid}" in shown and f"pid {procs[standby].pid}" in shown, shown
        for proc, role in ((procs[active], "active"), (procs[standby], "standby")):
            line = next(line for line in shown.splitlines() if f"pid {proc.pid}" in line)
            assert role in line, shown
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=30) == 0


@pytest.mark.slow
async def test_the_standby_takes_over_from_a_killed_active_and_the_views_equal_a_rebuild(
    rt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    events = make_events(seed=11)
    published = anyio.Event()
    with projectors(env, tmp_path) as procs:
        logs = [tmp_path / "a", tmp_path / "b"]
        ports = [await ready_port(proc, log) for proc, log in zip(procs, logs, strict=True)]
        active, standby = await roles(ports)

        async def publish_all() -> None:
            for i in range(0, len(events), 1_000):
                await publish_many(rt.js, events[i : i + 1_000])
            published.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(publish_all)
            # events flow, and the active one has applied some of them: kill it
            await wait_for(lambda: applied_over(ports[active], 2_000), 60, "commits of the first")
            procs[active].kill()
            procs[active].wait()

            async def took_over() -> bool:
                series = await active_series(ports[standby])
                return all(series.get(p) == 1 for p in PROJECTIONS)

            await wait_for(took_over, 30, "the standby to take over")
            await wait_for(lambda: applied_over(ports[standby], 0), 30, "its first commit")
        assert published.is_set()
        await wait_for(lambda: all_caught_up(rt), 120, "the new active projector to catch up")
        procs[standby].send_signal(signal.SIGTERM)
        assert procs[standby].wait(timeout=30) == 0, output(logs[standby])

    after_failover = await snapshot(rt)
    for projection in ALL:
        await rebuild(rt, projection)
    clean = await snapshot(rt)
    assert sum(len(rows) for rows in clean.values()) > 1_000, "the fleet should have filled tables"
    assert clean["dead_letters"] == []
    for table, rows in clean.items():
        assert after_failover[table] == rows, f"{table} differs from a clean rebuild"


async def applied_over(port: int, floor: float) -> bool:
    return await applied(port) > floor


async def test_deliveries_taken_by_another_puller_fail_the_window_instead_of_being_skipped(
    rt: Runtime,
) -> None:
    """A second process pulling from a runner's durable consumer (as two projectors did before
    leases) takes deliveries the runner never sees: the runner's next window would start past
    them. It fails (``Gap``), commits nothing, and a re-positioned runner applies them all."""
    await publish_many(rt.js, [register("a1")] + [spend("a1", 0.01) for _ in range(40)])
    projection = BY_NAME["spend"]
    runner = ProjectionRunner(rt, projection, batch_size=10)
    await runner.position()
    other = await rt.js.pull_subscribe_bind(runner.durable, stream=projection.stream)
    stolen = await other.fetch(5, timeout=5)  # never acknowledged: the runner's to apply
    assert stolen
    with pytest.raises(Gap, match="deliveries went elsewhere"):
        await runner.step(wait=5)
    assert (await checkpoints(rt)).get("spend", 0) == 0, "the failed window committed"
    assert runner.consumer is not None
    await runner.consumer.stop()
    await other.unsubscribe()
    await runner.position()
    await catch_up(runner)
    await runner.consumer.stop()
    assert await spend_total(rt, "a1") == (Decimal("0.40"), 400)
    live = await snapshot(rt, (projection,))
    await rebuild(rt, projection)
    assert await snapshot(rt, (projection,)) == live


async def test_two_projectors_started_together_split_or_not_never_write_one_projection_twice(
    rt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    """Started at the same moment, each process may win the leases of some runners (a split):
    at every look, no projection has two writers, every one gets one, and once the events are
    in, the views equal a rebuild."""
    settings = {"FLEETWARD_METRICS_PORT": "0", "FLEETWARD_BATCH_SIZE": "100"}
    events = make_events(seed=23)[:5_000]
    logs = [tmp_path / "a", tmp_path / "b"]
    with (
        spawn(["projector"], {**env, **settings}, logs[0]) as a,
        spawn(["projector"], {**env, **settings}, logs[1]) as b,
    ):
        ports = [await ready_port(proc, log) for proc, log in zip((a, b), logs, strict=True)]
        writers: dict[str, set[int]] = {p: set() for p in PROJECTIONS}

        async def look() -> None:
            series = [await active_series(port) for port in ports]
            for p in PROJECTIONS:
                both = [i for i in (0, 1) if series[i].get(p) == 1]
                assert len(both) <= 1, f"{p} has two writers: {series}"
                writers[p].update(both)

        async def every_projection_written() -> bool:
            await look()
            return all(writers[p] for p in PROJECTIONS)

        await wait_for(every_projection_written, 60, "a writer for every projection")
        for i in range(0, len(events), 1_000):
            await publish_many(rt.js, events[i : i + 1_000])
            await look()

        async def drained() -> bool:
            await look()
            return await all_caught_up(rt)

        await wait_for(drained, 120, "every projection to catch up")
        for proc in (a, b):
            proc.send_signal(signal.SIGTERM)
        for proc, log in zip((a, b), logs, strict=True):
            assert proc.wait(timeout=30) == 0, output(log)
    live = await snapshot(rt)
    for projection in ALL:
        await rebuild(rt, projection)
    clean = await snapshot(rt)
    assert sum(len(rows) for rows in clean.values()) > 1_000
    for table, rows in clean.items():
        assert live[table] == rows, f"{table} differs from a clean rebuild"
