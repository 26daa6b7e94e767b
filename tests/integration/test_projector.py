"""The projector against a real nats-server and Postgres: exactly-once effect, dead letters,
rebuilds."""

from __future__ import annotations

from decimal import Decimal

import anyio
import msgspec

from fleetward.projections import ALL, BY_NAME
from fleetward.projections.utilization import partition
from fleetward.schemas import new_id, subject_of
from fleetward.schemas.admission import MAX_EVENT_BYTES
from fleetward.schemas.events import AgentRegistered, Heartbeat, SpendRecorded, TaskCreated
from fleetward.schemas.partitions import partition_of
from fleetward.services import metrics
from fleetward.services.jetstream.consumer import recreate_consumer
from fleetward.services.jetstream.publish import encode, publish, publish_many
from fleetward.services.projector.rebuild import catch_up, rebuild, reset
from fleetward.services.projector.runner import ProjectionRunner
from fleetward.services.runtime.connect import Runtime
from fleetward.services.simulate import Fleet
from tests.helpers import envelope, now, project_all, run_to_end, snapshot


def spend(agent: str, cost: float, event_id: str | None = None) -> SpendRecorded:
    env = envelope(agent) | ({"id": event_id} if event_id else {})
    return SpendRecorded(**env, agent=agent, model="m", tokens_in=10, cost_usd=cost)


def register(agent: str, team: str = "t") -> AgentRegistered:
    return AgentRegistered(**envelope(agent), agent=agent, name=agent, owner="o", team=team)


async def spend_total(rt: Runtime, agent: str) -> tuple[Decimal, int]:
    async with rt.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT coalesce(sum(cost_usd), 0) AS cost, coalesce(sum(tokens_in), 0) AS tokens "
            "FROM fleet.spend_daily WHERE agent_id = $1",
            agent,
        )
    assert row is not None
    return row["cost"], row["tokens"]


async def test_a_republish_with_the_same_id_is_stored_once(rt: Runtime) -> None:
    event = spend("a1", 0.25)
    first = await publish(rt.js, event)
    again = await publish(rt.js, event)
    assert not first.duplicate
    assert again.duplicate and again.seq == first.seq
    await project_all(rt)
    assert await spend_total(rt, "a1") == (Decimal("0.25"), 10)


async def test_a_duplicate_inside_one_batch_is_applied_once(rt: Runtime) -> None:
    """The same event stored twice (published without Nats-Msg-Id, so the stream cannot
    deduplicate) lands in one batch and still counts once."""
    await publish(rt.js, register("a1"))
    event = spend("a1", 0.5)
    for _ in range(2):
        await rt.js.publish(subject_of(event), encode(event))
    await project_all(rt)
    assert await spend_total(rt, "a1") == (Decimal("0.5"), 10)
    assert metrics.SKIPPED.labels("spend")._value.get() >= 1


async def test_redelivery_after_the_checkpoint_changes_nothing(rt: Runtime) -> None:
    """Messages delivered again (the consumer rewound to the start, as after a lost ack) are
    skipped by the checkpoint and acknowledged."""
    await publish_many(rt.js, [register("a1")] + [spend("a1", 0.1) for _ in range(50)])
    await project_all(rt)
    before = await snapshot(rt)
    projection = BY_NAME["spend"]
    runner = ProjectionRunner(rt, projection)
    await runner.position()
    assert runner.checkpoint == (await rt.js.stream_info(projection.stream)).state.last_seq
    # rewind the durable consumer behind the runner's back: everything is delivered again
    await recreate_consumer(rt.js, projection.stream, runner.durable, projection.subjects, 0)
    assert runner.consumer is not None
    await runner.consumer.stop()
    await runner.consumer.start()
    redelivered = await runner.step(wait=5)
    assert redelivered > 0
    await catch_up(runner)
    await runner.consumer.stop()
    assert await snapshot(rt) == before
    assert await spend_total(rt, "a1") == (Decimal("5.0"), 500)


async def test_bad_events_become_dead_letters_and_good_ones_still_apply(rt: Runtime) -> None:
    good = register("a1")
    hb = Heartbeat(**envelope("a1"), agent="a1", status="busy")
    as_dict = msgspec.to_builtins(hb)
    bad = {
        "not_json": (b"{this is not json", "fw.hb.a1"),
        "unknown_type": (msgspec.json.encode(as_dict | {"type": "agent.dance"}), "fw.hb.a1"),
        "invalid": (
            msgspec.json.encode({k: v for k, v in as_dict.items() if k != "agent"}),
            "fw.hb.a1",
        ),
        "oversized": (
            msgspec.json.encode(as_dict | {"message": "x" * MAX_EVENT_BYTES}),
            "fw.hb.a1",
        ),
        "actor_forbidden": (msgspec.json.encode(as_dict | {"actor": "a2"}), "fw.hb.a1"),
        "wrong_subject": (encode(hb), "fw.hb.a2"),
    }
    mistyped = msgspec.json.encode(as_dict | {"status": 42, "id": new_id()})
    await publish(rt.js, good)
    published = {}
    for reason, (data, subject) in bad.items():
        ack = await rt.js.publish(subject, data)
        published[ack.seq] = (reason, data, subject)
    mistyped_ack = await rt.js.publish("fw.hb.a1", mistyped)
    await publish(rt.js, hb)  # a good event after all the bad ones
    before = metrics.DEAD_LETTERS.labels("utilization", "invalid")._value.get()

    await project_all(rt)

    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT seq, subject, reason, detail, raw FROM fleet.dead_letters "
            "WHERE projection = 'utilization' ORDER BY seq"
        )
        util = await conn.fetchrow("SELECT * FROM fleet.utilization WHERE agent_id = 'a1'")
        agent = await conn.fetchrow("SELECT * FROM fleet.agents WHERE agent_id = 'a1'")
    found = {r["seq"]: (r["reason"], bytes(r["raw"]), r["subject"]) for r in rows}
    assert found == published | {mistyped_ack.seq: ("invalid", mistyped, "fw.hb.a1")}
    assert all(r["detail"] for r in rows)
    assert metrics.DEAD_LETTERS.labels("utilization", "invalid")._value.get() == before + 2
    # the good heartbeat after them applied; the good registration applied to its projection
    assert util is not None and util["state"] == "busy" and util["heartbeats"] == 1
    assert agent is not None and agent["name"] == "a1"
    # the stream keeps every original
    for seq, (_, data, subject) in published.items():
        stored = await rt.js.get_msg("FW_HEARTBEATS", seq)
        assert stored.data == data and stored.subject == subject


async def test_one_runner_feeds_several_projections_each_its_own_subjects(rt: Runtime) -> None:
    """The projections of one stream share a consumer that reads the whole stream (several
    filter subjects are slow in nats-server); each applies, and dead-letters, only the subjects
    it reads."""
    await publish_many(rt.js, [register("a1"), spend("a1", 0.5)])
    on_agent = (await rt.js.publish("fw.agent.a1.a1", b"garbage")).seq
    on_esc = (await rt.js.publish("fw.esc.e1.svc:x", b"garbage")).seq
    group = tuple(p for p in ALL if p.stream == "FW_EVENTS")
    assert {p.name for p in group} == {
        "agents",
        "tasks",
        "spend",
        "escalations",
        "budgets",
        "people",
        "approvals",  # reads fw.agent.> too: agents' teams, risk classes and tool calls
        "audit",
    }
    runner = ProjectionRunner(rt, *group)
    await run_to_end(runner)
    info = await rt.js.consumer_info("FW_EVENTS", runner.durable)
    assert not info.config.filter_subject and not info.config.filter_subjects
    async with rt.pool.acquire() as conn:
        dead = await conn.fetch("SELECT projection, seq FROM fleet.dead_letters")
        checkpoints = dict(await conn.fetch("SELECT projection, checkpoint FROM fleet.projections"))
    assert sorted((r["projection"], r["seq"]) for r in dead) == sorted(
        [("agents", on_agent), ("tasks", on_agent), ("spend", on_agent),
         ("approvals", on_agent), ("escalations", on_esc)]
    )  # fmt: skip
    assert {checkpoints[p.name] for p in group} == {on_esc}  # each has seen the whole stream
    assert await spend_total(rt, "a1") == (Decimal("0.5"), 10)
    live = await snapshot(rt, group)
    for projection in group:
        await rebuild(rt, projection)  # alone, on a consumer filtered to its own subject
    assert await snapshot(rt, group) == live


async def test_far_behind_the_stream_windows_span_many_batches_with_the_same_rows(
    rt: Runtime,
) -> None:
    """A runner far behind (a deep backlog of events older than its window time) folds many
    batches into one commit; the rows are the same as committing batch by batch."""
    await publish_many(rt.js, await fleet_events(30, 40))  # type: ignore[arg-type]
    await anyio.sleep(0.5)  # every event is now older than the runner's window time
    runner = ProjectionRunner(rt, BY_NAME["utilization"], batch_size=20, window_seconds=0.3)
    with runner.signals.committed.recording() as commits:
        await run_to_end(runner)
    stored = (await rt.js.stream_info("FW_HEARTBEATS")).state
    assert stored.messages > 200
    assert commits[-1] == ("utilization", stored.last_seq)
    assert len(commits) < stored.messages / 20 / 2  # not one commit per batch
    windowed = await snapshot(rt, (BY_NAME["utilization"],))
    batched = ProjectionRunner(rt, BY_NAME["utilization"], batch_size=20, window_size=20)
    await reset(rt, BY_NAME["utilization"])
    await run_to_end(batched)
    assert await snapshot(rt, (BY_NAME["utilization"],)) == windowed


async def fleet_events(size: int, ticks: int, seed: int = 11) -> list[object]:
    fleet = Fleet(size, seed=seed)
    events: list[object] = list(fleet.start(now()))
    for _ in range(ticks):
        events += fleet.tick(now())
    return events


async def test_a_rebuild_equals_the_live_projection(rt: Runtime) -> None:
    events = await fleet_events(30, 25)
    await publish_many(rt.js, events)  # type: ignore[arg-type]  # all are Events
    await rt.js.publish("fw.agent.sim-001.sim-001", b"garbage")  # a dead letter must rebuild too
    await project_all(rt)
    live = await snapshot(rt)
    assert len(live["fleetward.tasks"]) > 10 and live["dead_letters"]
    for projection in ALL:
        await rebuild(rt, projection)
    assert await snapshot(rt) == live


async def test_a_second_writer_beside_a_running_projector_ends_identical(rt: Runtime) -> None:
    """Two writers on one projection (the live runner of its stream and a reset, as a rebuild
    starts) commit by compare-and-set on the checkpoint; the live runner re-positions. Nothing
    is applied twice or skipped, and the runner's other projections neither re-position nor
    stop committing."""
    events = await fleet_events(20, 30, seed=5)
    half = len(events) // 2
    await publish_many(rt.js, events[:half])  # type: ignore[arg-type]
    group = tuple(p for p in ALL if p.stream == "FW_EVENTS")
    projection = BY_NAME["tasks"]
    live = ProjectionRunner(rt, *group, batch_size=50)
    signals = live.signals
    stop = anyio.Event()
    with signals.resynced.recording() as resynced:
        async with anyio.create_task_group() as tg:
            tg.start_soon(live.run, stop.is_set)
            await signals.wait_for(lambda: live.checkpoint >= 1, what="the live runner to commit")
            before = signals.resynced.count
            await reset(rt, projection)  # a second writer moves the checkpoint under the runner
            await publish_many(rt.js, events[half:])  # type: ignore[arg-type]
            await signals.wait_for(
                lambda: signals.resynced.count > before,
                what="the live runner to find the tasks checkpoint moved",
            )
            last = (await rt.js.stream_info("FW_EVENTS")).state.last_seq
            await signals.wait_for(lambda: live.checkpoint >= last, what="the runner to catch up")
            stop.set()
    assert set(resynced) == {("tasks",)}  # only tasks re-positioned
    async with rt.pool.acquire() as conn:  # what the runner knows is what the database holds
        stored = dict(await conn.fetch("SELECT projection, checkpoint FROM fleet.projections"))
    assert {p.name: stored[p.name] for p in group} == dict.fromkeys((p.name for p in group), last)
    together = await snapshot(rt, group)
    for p in group:
        await rebuild(rt, p)
    assert await snapshot(rt, group) == together


async def test_events_reach_the_public_views(rt: Runtime) -> None:
    await publish_many(
        rt.js,
        [
            register("a1", team="red"),
            Heartbeat(**envelope("a1"), agent="a1", status="busy", task="t1"),
            spend("a1", 1.25),
            TaskCreated(**envelope("user:op"), task="t1", project="p", title="T", priority="high"),
            TaskCreated(
                **envelope("user:op"), task="t2", project="p", title="U", depends_on=("t1",)
            ),
        ],
    )
    await project_all(rt)
    async with rt.pool.acquire() as conn:
        agent = await conn.fetchrow("SELECT * FROM fleet.agents WHERE agent_id = 'a1'")
        util = await conn.fetchrow("SELECT * FROM fleet.utilization WHERE agent_id = 'a1'")
        team = await conn.fetchrow("SELECT * FROM fleet.spend_team_daily WHERE team = 'red'")
        t2 = await conn.fetchrow("SELECT * FROM fleet.tasks WHERE task_id = 't2'")
        t1 = await conn.fetchrow("SELECT * FROM fleet.tasks WHERE task_id = 't1'")
    assert agent is not None and (agent["team"], agent["status"]) == ("red", "active")
    assert util is not None and (util["state"], util["current_task"]) == ("busy", "t1")
    assert team is not None and team["cost_usd"] == Decimal("1.25") and team["agents"] == 1
    assert t1 is not None and t1["status"] == "inbox" and not t1["waiting_on_dependencies"]
    assert t2 is not None and t2["waiting_on_dependencies"]


async def test_batches_taken_while_a_commit_is_held_up_commit_together_when_it_is_done(
    rt: Runtime,
) -> None:
    """Group commit near the head: while a commit waits (here on the checkpoint's row lock,
    held by another session), the runner goes on taking and folding batches into the open
    window instead of waiting; once the commit is done, everything folded meanwhile commits in
    one transaction, without waiting for another batch. The rows equal a rebuild's."""
    projection = BY_NAME["utilization"]
    runner = ProjectionRunner(rt, projection, batch_size=5)
    await runner.position()

    def heartbeats(n: int, offset: int) -> list[Heartbeat]:
        return [Heartbeat(**envelope(f"g{offset + i}"), agent=f"g{offset + i}", status="busy")
                for i in range(n)]  # fmt: skip

    with runner.signals.committed.recording() as commits:
        async with rt.pool.acquire() as blocker, blocker.transaction():
            await blocker.execute("SELECT seq FROM fleetward.checkpoints "
                                  "WHERE projection = 'utilization' FOR UPDATE")  # fmt: skip
            before = (await rt.js.stream_info(projection.stream)).state.last_seq
            await publish_many(rt.js, heartbeats(5, 0))
            with anyio.fail_after(30):  # (a guard: before group commit, the 2nd step hung here)
                first = await runner.step(wait=10)  # its commit starts, and waits
                assert 0 < first <= 5  # (5, or fewer when a loaded machine delivers in pieces)
                await publish_many(rt.js, heartbeats(10, 5))
                folded = first  # the rest is folded while the first commit waits
                while folded < 15:
                    n = await runner.step(wait=10)
                    assert 0 < n <= 5
                    folded += n
                assert folded == 15
            assert commits == []
        with anyio.fail_after(30):  # the lock is gone: the first commit ends, the window follows
            assert await runner.step(wait=60) == 0  # woken by the end of the commit, not a batch
            await runner.flush()
    assert runner.consumer is not None
    await runner.consumer.stop()
    last = (await rt.js.stream_info(projection.stream)).state.last_seq
    assert last == before + 15
    assert commits == [("utilization", before + first), ("utilization", last)]
    live = await snapshot(rt, (projection,))
    await rebuild(rt, projection)
    assert await snapshot(rt, (projection,)) == live
    assert len(live["fleetward.utilization"]) == 15


async def test_a_heartbeat_runner_positioned_on_rows_holds_them_all_and_folds_without_reads(
    rt: Runtime,
) -> None:
    """Warm start: positioned on a utilization table that has rows (a restart, a takeover), a
    runner reads them all at once, a partition's runner only its agents', instead of a read per
    batch while the agents' next heartbeats come in; their rows still equal a rebuild's."""
    agents = [f"w{i:02d}" for i in range(40)]

    def beats() -> list[Heartbeat]:
        return [Heartbeat(**envelope(a), agent=a, status="busy") for a in agents]

    projection = BY_NAME["utilization"]
    await publish_many(rt.js, beats())
    await project_all(rt, (projection,))
    runner = ProjectionRunner(rt, projection)
    await runner.position()
    cache = runner.members[0].cache
    assert cache.holds_all(projection.tables)  # no key is read from Postgres any more
    assert set(cache.tables["fleetward.utilization"]) == {(a,) for a in agents}
    assert runner.consumer is not None
    await runner.consumer.stop()
    half = ProjectionRunner(rt, partition(0, 2))
    await half.position()
    assert half.consumer is not None
    await half.consumer.stop()
    mine = {(a,) for a in agents if partition_of(a, 2) == 0}
    assert 0 < len(mine) < len(agents)
    assert set(half.members[0].cache.tables["fleetward.utilization"]) == mine
    await publish_many(rt.js, beats())
    await run_to_end(runner)
    live = await snapshot(rt, (projection,))
    await rebuild(rt, projection)
    assert await snapshot(rt, (projection,)) == live
