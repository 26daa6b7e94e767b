"""Idempotence by event id, forever (DESIGN 3.1, issue 11 item 4), against a real nats-server
and Postgres: an event stored twice (under another Nats-Msg-Id, or after the stream's duplicate
window) applies once however late the copy comes and however the windows fall, live and after a
rebuild alike.

FW_EVENTS keeps a ledger of the first sequence of every event id (per subject kind); a
heartbeat counts only if its id sorts after the last one counted for its agent
(``projections.idempotence``)."""

from __future__ import annotations

from decimal import Decimal

import anyio
import pytest

from fleetward.projections import ALL, BY_NAME, Projection
from fleetward.schemas import Event
from fleetward.schemas.events import AgentRegistered, Heartbeat, SpendRecorded
from fleetward.schemas.headers import MSG_ID
from fleetward.schemas.subjects import subject_of
from fleetward.services.jetstream.publish import encode, publish, publish_many
from fleetward.services.projector.rebuild import rebuild
from fleetward.services.projector.runner import ProjectionRunner
from fleetward.services.runtime.connect import Runtime
from tests.helpers import envelope, project_all, snapshot


def register(agent: str) -> AgentRegistered:
    return AgentRegistered(**envelope(agent), agent=agent, name=agent, owner="o", team="t")


def spend(agent: str, cost: float) -> SpendRecorded:
    return SpendRecorded(**envelope(agent), agent=agent, model="m", tokens_in=10, cost_usd=cost)


def beat(agent: str, status: str = "busy") -> Heartbeat:
    return Heartbeat(**envelope(agent), agent=agent, status=status)  # type: ignore[arg-type]


async def store_again(rt: Runtime, event: Event, msg_id: str | None = None) -> int:
    """Store ``event`` once more: under another message id, or none (as after the duplicate
    window, which the stream's deduplication no longer covers). Returns its sequence."""
    headers = {MSG_ID: msg_id} if msg_id else None
    ack = await rt.js.publish(subject_of(event), encode(event), headers=headers)
    assert not ack.duplicate
    return ack.seq


async def spend_of(rt: Runtime, agent: str) -> tuple[Decimal, int, int]:
    async with rt.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT coalesce(sum(model_cost_usd + tool_cost_usd), 0) AS cost,"
            " coalesce(sum(tokens_in), 0) AS tokens, coalesce(sum(spend_events), 0) AS n"
            " FROM fleetward.spend_daily WHERE agent_id = $1",
            agent,
        )
    assert row is not None
    return row["cost"], row["tokens"], row["n"]


async def heartbeats_of(rt: Runtime, agent: str) -> int:
    async with rt.pool.acquire() as conn:
        n = await conn.fetchval(
            "SELECT heartbeats FROM fleet.utilization WHERE agent_id = $1", agent
        )
    return int(n)


async def rebuild_equals_live(rt: Runtime, projections: tuple[Projection, ...] = ALL) -> None:
    live = await snapshot(rt, projections)
    for projection in projections:
        await rebuild(rt, projection)
    assert await snapshot(rt, projections) == live


@pytest.mark.parametrize(
    ("between", "copies"),
    [
        (0, ("another-id",)),  # at once, under another message id
        (300, (None, "third-copy")),  # long after (past the duplicate window: no message id)
    ],
)
async def test_a_spend_stored_again_counts_once(
    rt: Runtime, between: int, copies: tuple[str | None, ...]
) -> None:
    """However late the copies come (each projected as it comes), the spend counts once, live
    and after a rebuild whose windows fall elsewhere."""
    event = spend("a1", 0.25)
    await publish_many(rt.js, [register("a1"), event])
    await project_all(rt)
    if between:
        await publish_many(rt.js, [spend(f"b{i % 5}", 0.01) for i in range(between)])
        await project_all(rt)
    for msg_id in copies:
        await store_again(rt, event, msg_id)
    await project_all(rt)
    assert await spend_of(rt, "a1") == (Decimal("0.25"), 10, 1)
    await rebuild_equals_live(rt)
    assert await spend_of(rt, "a1") == (Decimal("0.25"), 10, 1)


async def test_copies_in_consecutive_windows_of_the_live_loop_count_once(rt: Runtime) -> None:
    """The live loop with small batches: copies land in the window being committed and in the
    next one, folded meanwhile."""
    events = [register("a1")] + [spend("a1", 0.5) for _ in range(20)]
    await publish_many(rt.js, events)
    for event in events[1:]:
        await store_again(rt, event)
    group = tuple(p for p in ALL if p.stream == "FW_EVENTS")
    runner = ProjectionRunner(rt, *group, batch_size=7)
    last = (await rt.js.stream_info("FW_EVENTS")).state.last_seq
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run, stop.is_set)
        await runner.signals.wait_for(lambda: runner.checkpoint >= last, what="every event")
        stop.set()
    assert await spend_of(rt, "a1") == (Decimal("10.0"), 200, 20)
    await rebuild_equals_live(rt, group)


async def test_a_heartbeat_stored_again_later_counts_once(rt: Runtime) -> None:
    first = beat("a1")
    await publish(rt.js, first)
    await project_all(rt, (BY_NAME["utilization"],))
    second = beat("a1", "idle")
    await publish(rt.js, second)
    await project_all(rt, (BY_NAME["utilization"],))
    await store_again(rt, first)  # an old heartbeat comes back: it would reset the state
    await store_again(rt, second, msg_id="other")
    await project_all(rt, (BY_NAME["utilization"],))
    assert await heartbeats_of(rt, "a1") == 2
    async with rt.pool.acquire() as conn:
        state = await conn.fetchval("SELECT state FROM fleet.utilization WHERE agent_id = 'a1'")
    assert state == "idle"
    await rebuild_equals_live(rt, (BY_NAME["utilization"],))
    assert await heartbeats_of(rt, "a1") == 2


async def test_two_processes_reading_one_kind_share_the_ledger(rt: Runtime) -> None:
    """Two runners that each read fw.agent.* (as `projector --only agents` and `--only spend`
    would) record the same ids side by side, at their own pace: every verdict is the same."""
    events = [register("a1")] + [spend("a1", 0.5) for _ in range(30)]
    await publish_many(rt.js, events)
    for event in events[1:]:
        await store_again(rt, event)
    runners = [ProjectionRunner(rt, BY_NAME[name], batch_size=n) for name, n in
               (("spend", 4), ("agents", 9))]  # fmt: skip
    last = (await rt.js.stream_info("FW_EVENTS")).state.last_seq
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        for runner in runners:
            tg.start_soon(runner.run, stop.is_set)
        for runner in runners:
            await runner.signals.wait_for(lambda r=runner: r.checkpoint >= last, what="the end")
        stop.set()
    assert await spend_of(rt, "a1") == (Decimal("15.0"), 300, 30)
    await rebuild_equals_live(rt, (BY_NAME["agents"], BY_NAME["spend"]))
