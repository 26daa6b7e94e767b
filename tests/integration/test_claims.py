"""Task coordination on a real nats-server and Postgres: atomic claims, dependencies, the
review loop and the durable inbox, through the agent client."""

from __future__ import annotations

import random
from collections import Counter

import anyio
import pytest

from fleetward.schemas import subject_of
from fleetward.schemas.events import TaskClaimed, TaskReviewed
from fleetward.schemas.subjects import boundary, boundary_wildcard
from fleetward.services.api.tasks import serve_task_api
from fleetward.services.client import AgentClient, Claim, ClaimLost, FleetClient
from fleetward.services.client.agent import INBOX_REDELIVERY_S
from fleetward.services.client.taskstate import read_subjects, read_task
from fleetward.services.jetstream.publish import encode
from fleetward.services.runtime.connect import Runtime
from tests.helpers import agent, creds, envelope, project_all

AGENTS = 50
TASKS = 20
ROUNDS = 20  # 50 agents on 20 tasks: 1,000 claims raced (each round all at once)


@pytest.mark.slow
async def test_racing_agents_never_share_a_task(rt: Runtime, ops: FleetClient) -> None:
    """50 agents race for 20 tasks, 20 rounds: each (task, epoch) has exactly one holder, every
    loser is told, and the board ends with every claim counted and none refused. Contract v2:
    each claimer publishes on its own subject (``fw.task.<task>.<agent>``), so only a
    compare-and-set over all of the task's subjects (``fw.task.<task>.>``) keeps two claimers
    of one epoch from both landing: the stream holds exactly one claim per (task, epoch)."""
    tasks = [f"race-{i:02d}" for i in range(TASKS)]
    for task in tasks:
        await ops.create_task(task, project="race", title=task)
    agents = [await agent(rt, f"racer-{i:02d}") for i in range(AGENTS)]
    rng = random.Random(50)
    wins: Counter[tuple[str, int]] = Counter()
    told = 0
    try:
        for _round in range(ROUNDS):
            won: list[tuple[AgentClient, Claim]] = []
            picks = [(a, rng.choice(tasks)) for a in agents]

            async def race(a: AgentClient, task: str, won: list[tuple[AgentClient, Claim]]) -> None:
                nonlocal told
                try:
                    won.append((a, await a.claim(task, lease_s=60)))
                except ClaimLost:
                    told += 1

            async with anyio.create_task_group() as tg:
                for a, task in picks:
                    tg.start_soon(race, a, task, won)
            for _a, claim in won:
                wins[(claim.task, claim.epoch)] += 1
            contested = {task for _, task in picks}
            assert {c.task for _, c in won} == contested, "a contested task found no holder"
            for a, claim in won:
                await a.release(claim, "round over")
        assert all(n == 1 for n in wins.values()), [k for k, n in wins.items() if n > 1]
        assert sum(wins.values()) + told == AGENTS * ROUNDS
        await project_all(rt)
        async with rt.pool.acquire() as conn:
            board = {
                r["task_id"]: (r["status"], r["claim_epoch"])
                for r in await conn.fetch("SELECT * FROM fleet.tasks WHERE project = 'race'")
            }
            refused = await conn.fetchval("SELECT count(*) FROM fleet.task_rejections")
        per_task = Counter(task for task, _ in wins)
        assert board == {t: ("inbox", per_task[t]) for t in tasks}  # no task lost
        assert refused == 0  # losers' claims never reached the stream
        stored: Counter[tuple[str, int]] = Counter()
        for task in tasks:
            assert await read_subjects(rt.nc, boundary("task", task)) == []  # nothing on v1
            for m in await read_subjects(rt.nc, boundary_wildcard("task", task)):
                assert m.event is not None and m.subject == subject_of(m.event)
                assert m.subject.rsplit(".", 1)[1] == m.event.actor  # the subject's actor
                if isinstance(m.event, TaskClaimed):
                    stored[(task, m.event.epoch)] += 1
        assert stored == wins
    finally:
        for a in agents:
            await a.close()


async def test_a_task_waits_for_its_dependency_and_cycles_are_refused(
    rt: Runtime, ops: FleetClient
) -> None:
    await ops.create_task("dep-a", project="p", title="A")
    await ops.create_task("dep-b", project="p", title="B", depends_on=["dep-a"])
    with pytest.raises(ValueError, match="cannot depend on itself"):
        await ops.create_task("dep-c", project="p", title="C", depends_on=["dep-c"])
    with pytest.raises(ValueError, match="unknown task"):
        await ops.create_task("dep-d", project="p", title="D", depends_on=["dep-e"])
    worker = await agent(rt, "worker-1")
    try:
        with pytest.raises(ClaimLost, match="waiting on dependencies: dep-a"):
            await worker.claim("dep-b")
        a = await worker.claim("dep-a")
        await worker.submit(a, content="A done")
        with pytest.raises(ClaimLost, match="waiting on dependencies: dep-a"):
            await worker.claim("dep-b")  # in review is not done
        await ops.review("dep-a", "approve")
        b = await worker.claim("dep-b")
        assert (b.task, b.epoch) == ("dep-b", 1)
        await project_all(rt)
        async with rt.pool.acquire() as conn:
            statuses = dict(await conn.fetch("SELECT task_id, status FROM fleet.tasks"))
        assert statuses == {"dep-a": "done", "dep-b": "in_progress"}
    finally:
        await worker.close()


async def test_the_board_refuses_what_the_client_would_not_send(
    rt: Runtime, ops: FleetClient
) -> None:
    """A claim that skips the client's checks is overruled by the board's verdict, which every
    reader folds, and the claimer is told through its inbox."""
    await ops.create_task("raw-a", project="p", title="A")
    await ops.create_task("raw-b", project="p", title="B", depends_on=["raw-a"])
    rogue = await agent(rt, "rogue")
    try:
        claim = TaskClaimed(**envelope("rogue"), task="raw-b", agent="rogue", epoch=1)
        await rt.js.publish(subject_of(claim), encode(claim))
        await project_all(rt)
        async with rt.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM fleet.tasks WHERE task_id = 'raw-b'")
        assert row is not None and (row["status"], row["assignee"]) == ("inbox", None)
        local = await read_task(rt.nc, rt.js, "raw-b")  # a reader of the subject agrees
        assert local.row is not None and (local.row["status"], local.row["assignee"]) == (
            "inbox",
            None,
        )
        told = await rogue.next_command(wait=5)
        assert told is not None and told.command == "refused"
        assert told.reason == "waiting on dependencies: raw-a"
        assert told.payload["event"] == claim.id
    finally:
        await rogue.close()


async def test_review_feedback_reaches_the_inbox_and_the_loop_completes(
    rt: Runtime, ops: FleetClient
) -> None:
    await ops.create_task("rev-1", project="p", title="Write the guide")
    writer = await agent(rt, "writer-1")
    try:
        claim = await writer.claim("rev-1")
        await writer.submit(claim, content="# Guide v1")
        with pytest.raises(ValueError, match="may not review its own"):
            await FleetClient(writer.nc, "writer-1").review("rev-1", "approve")
        await ops.review("rev-1", "reject", feedback="add an example")
        await project_all(rt)  # the board turns the review into the author's inbox command
        command = await writer.next_command(wait=5)
        assert command is not None
        assert (command.command, command.task, command.reason) == (
            "review_feedback",
            "rev-1",
            "add an example",
        )
        assert command.payload == {"verdict": "reject", "version": 1, "reviewer": ops.actor}
        state = await read_task(writer.nc, writer.js, "rev-1")
        assert state.row is not None and state.row["status"] == "in_progress"
        again = writer.rework(claim)
        await writer.submit(again, content="# Guide v2, with an example")
        await ops.review("rev-1", "approve")
        await project_all(rt)
        approved = await writer.next_command(wait=5)
        assert approved is not None and approved.payload["verdict"] == "approve"
        await project_all(rt)
        async with rt.pool.acquire() as conn:
            task = await conn.fetchrow("SELECT * FROM fleet.tasks WHERE task_id = 'rev-1'")
            versions = await conn.fetch(
                "SELECT version, content FROM fleet.deliverables WHERE task_id = 'rev-1' "
                "ORDER BY version"
            )
        assert task is not None
        assert (task["status"], task["review_rounds"], task["rework_count"]) == ("done", 2, 1)
        assert [(v["version"], v["content"]) for v in versions] == [
            (1, "# Guide v1"),
            (2, "# Guide v2, with an example"),
        ]
    finally:
        await writer.close()


async def test_self_review_sent_raw_is_refused_at_admission(rt: Runtime, ops: FleetClient) -> None:
    await ops.create_task("self-1", project="p", title="T")
    writer = await agent(rt, "writer-2")
    try:
        await writer.submit(await writer.claim("self-1"), content="mine")
        own = TaskReviewed(
            **envelope("writer-2"), task="self-1", agent="writer-2", verdict="approve"
        )
        await rt.js.publish(subject_of(own), encode(own))
        await project_all(rt)
        async with rt.pool.acquire() as conn:
            status = await conn.fetchval("SELECT status FROM fleet.tasks WHERE task_id = 'self-1'")
            reason = await conn.fetchval(
                "SELECT reason FROM fleet.dead_letters WHERE projection = 'tasks'"
            )
        assert (status, reason) == ("review", "actor_forbidden")
    finally:
        await writer.close()


async def test_a_pause_sent_while_offline_arrives_on_reconnect(
    rt: Runtime, ops: FleetClient
) -> None:
    first = await agent(rt, "sleeper")
    assert await first.next_command(wait=0.2) is None  # opens its durable inbox
    await first.close()  # offline
    async with await FleetClient.connect(rt.nats_url, creds(rt, "svc:ops")) as service:
        await service.command("sleeper", "pause", reason="budget review")
    back = await AgentClient.connect(rt.nats_url, creds(rt, "sleeper"))
    try:
        # at once, or after INBOX_REDELIVERY_S if the closed client's last pull took it
        command = await back.next_command(wait=2 * INBOX_REDELIVERY_S)
        assert command is not None and (command.command, command.reason) == (
            "pause",
            "budget review",
        )
        assert await back.next_command(wait=0.2) is None  # acknowledged: delivered once
    finally:
        await back.close()


async def test_claim_next_takes_the_most_urgent_claimable_task(
    rt: Runtime, ops: FleetClient
) -> None:
    await ops.create_task("next-low", project="p", title="L", priority="low")
    await ops.create_task("next-urgent", project="p", title="U", priority="urgent")
    await ops.create_task("next-role", project="p", title="R", priority="urgent",
                          required_role="auditor")  # fmt: skip
    await ops.create_task("next-high", project="p", title="H", priority="high")
    worker = await agent(rt, "picker", max_concurrent_tasks=5)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_task_api, rt)
            await project_all(rt)
            taken = [await worker.claim_next() for _ in range(4)]
            tg.cancel_scope.cancel()
        assert [c.task if c else None for c in taken] == [
            "next-urgent",
            "next-high",
            "next-low",
            None,  # the auditor task needs a role the picker lacks
        ]
    finally:
        await worker.close()


async def test_a_task_folded_on_from_the_cache_equals_a_fold_from_the_start(
    rt: Runtime, ops: FleetClient
) -> None:
    """A client keeps the folds of the tasks it read (``TaskCache``) and reads only what was
    stored since: after claims, progress, a copy of an event and a release, the fold it keeps
    equals a fold of the whole task, and it asked only for the new messages."""
    await ops.create_task("cached", project="p", title="t")
    a = await agent(rt, "cacher")
    try:
        claim = await a.claim("cached", lease_s=60)  # read and folded before the claim: kept
        kept = a.tasks.get("cached")
        assert kept is not None and kept.row["status"] == "inbox"
        await a.progress(claim, "halfway")
        progress = await read_subjects(rt.nc, boundary_wildcard("task", "cached"))
        copy = progress[-1]
        assert copy.event is not None
        await rt.js.publish(copy.subject, encode(copy.event))  # a copy, another message id
        await a.release(claim, "done for now")
        cached = await read_task(a.nc, a.js, "cached", roles=a.roles, cache=a.tasks)
        whole = await read_task(a.nc, a.js, "cached", roles=a.roles)
        assert (cached.row, cached.last_seq) == (whole.row, whole.last_seq)
        assert cached.row is not None and cached.row["status"] == "inbox"
        kept = a.tasks.get("cached")
        assert kept is not None and kept.read_to == whole.last_seq
    finally:
        await a.close()
