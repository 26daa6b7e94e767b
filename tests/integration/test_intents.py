"""Operator intents take effect or fail visibly (DESIGN 3.12, issue 12 items 4 and 5), through
``FleetClient`` on a real nats-server and Postgres: every write the board would refuse raises
``IntentRefused`` and publishes nothing; revoke, reassign, dependency changes and an agent's
pause, resume and retire publish the events the board applies."""

from __future__ import annotations

from collections.abc import Awaitable

import anyio
import pytest
from nats.js.errors import APIError

from fleetward.schemas import Event, decode
from fleetward.schemas.events import (
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    TaskAssigned,
    TaskCancelled,
    TaskDependenciesChanged,
    TaskRevoked,
)
from fleetward.schemas.headers import WRONG_LAST_SEQUENCE
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import boundary_wildcard
from fleetward.services.client import FleetClient, IntentRefused
from fleetward.services.client.taskstate import read_task
from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.connect import Runtime
from tests.helpers import agent, project_all, task_api


async def last(rt: Runtime, kind: str, key: str) -> tuple[int, Event]:
    """The last event on the subjects of ``fw.<kind>.<key>`` and its sequence."""
    msg = await rt.js.get_last_msg(EVENTS_STREAM, boundary_wildcard(kind, key))
    assert msg.seq is not None and msg.data is not None
    return msg.seq, decode(msg.data)


async def refused(rt: Runtime, task: str, why: str, write: Awaitable[object]) -> None:
    """``write`` raises IntentRefused saying ``why`` and publishes nothing on ``task``."""
    before = (await read_task(rt.nc, rt.js, task)).last_seq
    with pytest.raises(IntentRefused, match=why):
        await write
    assert (await read_task(rt.nc, rt.js, task)).last_seq == before


async def test_task_writes_the_board_would_refuse_fail_at_once(
    rt: Runtime, ops: FleetClient
) -> None:
    await ops.create_task("i-a", project="p", title="A")
    await refused(
        rt,
        "i-a",
        r"task i-a already exists \(inbox\)",
        ops.create_task("i-a", project="p", title="again"),
    )
    await refused(
        rt,
        "i-b",
        r"i-b depends on unknown task\(s\) i-nope",
        ops.create_task("i-b", project="p", title="B", depends_on=["i-nope"]),
    )
    await ops.create_task("i-qa", project="p", title="Q", required_role="qa")
    w1 = await agent(rt, "w1")
    old = await agent(rt, "old")
    try:
        async with task_api(rt):
            await project_all(rt)
            await refused(rt, "i-nope", "no task i-nope", ops.assign("i-nope", "w1"))
            await refused(rt, "i-a", "no agent ghost in the registry", ops.assign("i-a", "ghost"))
            await refused(
                rt,
                "i-qa",
                "agent w1 lacks the role qa that task i-qa requires",
                ops.assign("i-qa", "w1"),
            )
            await ops.retire_agent("old", "gone")
            await project_all(rt)
            await refused(rt, "i-a", "agent old is retired", ops.assign("i-a", "old"))
            await ops.assign("i-a", "w1")
            await refused(rt, "i-a", "task i-a is already assigned to w1", ops.assign("i-a", "w1"))
            claim = await w1.claim("i-a")
            await refused(
                rt,
                "i-a",
                r"task i-a is held by w1 \(in_progress, epoch 1\)",
                ops.assign("i-a", "w2"),
            )
            await w1.submit(claim, content="done")
            await refused(
                rt, "i-a", r"task i-a is held by w1 \(review, epoch 1\)", ops.assign("i-a", "w1")
            )
            await ops.review("i-a", "approve")
            await refused(rt, "i-a", "task i-a is done", ops.cancel("i-a"))
            await refused(rt, "i-a", "task i-a is done", ops.assign("i-a", "w1"))
            await refused(
                rt, "i-a", "task i-a is not waiting for review", ops.review("i-a", "reject")
            )
            await ops.cancel("i-qa", "not needed")
            await refused(rt, "i-qa", "task i-qa is cancelled", ops.cancel("i-qa"))
            await refused(rt, "i-nope", "no task i-nope", ops.cancel("i-nope"))
    finally:
        await w1.close()
        await old.close()
    await project_all(rt)
    async with rt.pool.acquire() as conn:
        rejections = await conn.fetch("SELECT task_id, type, reason FROM fleet.task_rejections")
    assert rejections == []  # the board refused nothing: nothing refusable was sent


async def test_two_creations_of_one_id_race_and_one_is_refused(
    rt: Runtime, ops: FleetClient
) -> None:
    """The id check and the creation are one compare-and-set on the task's empty subject."""
    outcomes: list[str] = []

    async def create(title: str) -> None:
        try:
            await ops.create_task("race-1", project="p", title=title)
            outcomes.append("created")
        except IntentRefused as exc:
            outcomes.append(str(exc))

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(create, f"t{i}")
    assert outcomes.count("created") == 1, outcomes
    assert all("already exists" in o for o in outcomes if o != "created")
    seq, _ = await last(rt, "task", "race-1")
    assert (await read_task(rt.nc, rt.js, "race-1")).last_seq == seq
    assert (
        await rt.js.get_msg(EVENTS_STREAM, seq=1, subject="fw.task.race-1.>", next=True)
    ).seq == seq


async def test_a_try_that_landed_unseen_is_recognised_by_its_id(
    rt: Runtime, ops: FleetClient
) -> None:
    """A publish that was stored but answered "wrong last sequence" (a retry after a timeout)
    counts as sent, once, and is not judged again against its own effect."""
    await ops.create_task("once-1", project="p", title="T")

    class Unlucky(FleetClient):
        tries = 0

        async def send(self, event: Event, **headers: str):  # type: ignore[no-untyped-def]
            self.tries += 1
            ack = await super().send(event, **headers)
            if self.tries == 1:  # stored, but the answer we get is the retry's
                raise APIError(
                    code=400, err_code=WRONG_LAST_SEQUENCE, description="wrong last sequence"
                )
            return ack

    unlucky = Unlucky(ops.nc, "user:ops")
    ack = await unlucky.cancel("once-1", "stop")
    assert ack.duplicate and unlucky.tries == 1
    seq, event = await last(rt, "task", "once-1")
    assert seq == ack.seq and isinstance(event, TaskCancelled)
    assert (await read_task(rt.nc, rt.js, "once-1")).last_seq == seq  # sent once


async def test_revoke_and_reassign_publish_the_holder_and_epoch(
    rt: Runtime, ops: FleetClient
) -> None:
    for t in ("rv-1", "rv-2", "rv-3"):
        await ops.create_task(t, project="p", title=t)
    w1 = await agent(rt, "w1", max_concurrent_tasks=3)
    w2 = await agent(rt, "w2")
    try:
        async with task_api(rt):
            await project_all(rt)
            await refused(rt, "rv-1", "task rv-1 is not held: it is inbox", ops.revoke("rv-1"))
            await refused(rt, "rv-nope", "no task rv-nope", ops.revoke("rv-nope"))
            await w1.claim("rv-1")
            second = await w1.claim("rv-2")
            await w1.release(second, "later")
            second = await w1.claim("rv-2")  # epoch 2

            revoked = await ops.revoke("rv-1", "too slow")
            _, event = await last(rt, "task", "rv-1")
            assert event == revoked
            assert isinstance(event, TaskRevoked)
            assert (event.agent, event.epoch, event.reason, event.assign_to, event.actor) == (
                "w1",
                1,
                "too slow",
                None,
                "user:ops",
            )

            await refused(
                rt, "rv-2", "no agent ghost in the registry", ops.reassign("rv-2", "ghost")
            )
            await refused(
                rt,
                "rv-2",
                r"task rv-2 is held by w1 \(in_progress, epoch 2\) already",
                ops.reassign("rv-2", "w1"),
            )
            moved = await ops.reassign("rv-2", "w2", "w2 knows this")
            _, event = await last(rt, "task", "rv-2")
            assert event == moved and isinstance(event, TaskRevoked)
            assert (event.agent, event.epoch, event.assign_to) == ("w1", 2, "w2")

            assigned = await ops.reassign("rv-3", "w2")  # not held: an assignment
            _, event = await last(rt, "task", "rv-3")
            assert event == assigned and isinstance(event, TaskAssigned) and event.agent == "w2"
            await refused(
                rt, "rv-3", "task rv-3 is already assigned to w2", ops.reassign("rv-3", "w2")
            )
            await ops.cancel("rv-3")
            await refused(rt, "rv-3", "task rv-3 is cancelled", ops.reassign("rv-3", "w1"))
            await refused(rt, "rv-3", "task rv-3 is cancelled", ops.revoke("rv-3"))
    finally:
        await w1.close()
        await w2.close()


async def test_dependencies_change_only_backwards_in_time(rt: Runtime, ops: FleetClient) -> None:
    """A new dependency must exist, be alive and be older than the task: no cycle can form."""
    await ops.create_task("d-a", project="p", title="A")
    await ops.create_task("d-b", project="p", title="B")
    await ops.create_task("d-c", project="p", title="C", depends_on=["d-a"])
    await ops.create_task("d-x", project="p", title="X")
    await ops.cancel("d-x")

    for task, why, write in [
        ("d-a", "dependency d-c was created after d-a", ops.set_dependencies("d-a", ["d-c"])),
        ("d-c", "dependency d-nope is unknown", ops.set_dependencies("d-c", ["d-nope"])),
        ("d-c", "dependency d-x is cancelled", ops.set_dependencies("d-c", ["d-x"])),
        ("d-c", "d-c cannot depend on itself", ops.set_dependencies("d-c", ["d-c"])),
        ("d-c", "task d-c already depends on d-a", ops.set_dependencies("d-c", ["d-a"])),
        ("d-c", "task d-c does not depend on d-b", ops.drop_dependencies("d-c", ["d-b"])),
        ("d-x", "task d-x is cancelled", ops.set_dependencies("d-x", ["d-a"])),
        ("d-nope", "no task d-nope", ops.set_dependencies("d-nope", ["d-a"])),
    ]:
        await refused(rt, task, why, write)

    changed = await ops.set_dependencies("d-c", ["d-a", "d-b"], "needs B too")
    _, event = await last(rt, "task", "d-c")
    assert event == changed and isinstance(event, TaskDependenciesChanged)
    assert (event.depends_on, event.reason) == (("d-a", "d-b"), "needs B too")
    await ops.create_task("d-d", project="p", title="D", depends_on=["d-a", "d-b"])
    dropped = await ops.drop_dependencies("d-d", ["d-a"])
    _, event = await last(rt, "task", "d-d")
    assert event == dropped and dropped.depends_on == ("d-b",)


async def test_pause_resume_retire_an_agent(rt: Runtime, ops: FleetClient) -> None:
    worker = await agent(rt, "w-life")
    try:
        async with task_api(rt):
            await project_all(rt)
            assert (await ops.agent_profile("w-life") or {})["status"] == "active"
            assert await ops.agent_profile("ghost") is None
            for write in (ops.pause_agent, ops.resume_agent, ops.retire_agent):
                with pytest.raises(IntentRefused, match="no agent ghost in the registry"):
                    await write("ghost")
            with pytest.raises(IntentRefused, match=r"agent w-life is not paused \(it is active\)"):
                await ops.resume_agent("w-life")

            await ops.pause_agent("w-life", "budget review")
            _, event = await last(rt, "agent", "w-life")
            assert isinstance(event, AgentPaused) and (event.reason, event.actor) == (
                "budget review",
                "user:ops",
            )
            await project_all(rt)
            with pytest.raises(IntentRefused, match="agent w-life is already paused"):
                await ops.pause_agent("w-life")

            await ops.resume_agent("w-life", "budget raised")
            _, event = await last(rt, "agent", "w-life")
            assert isinstance(event, AgentResumed) and event.reason == "budget raised"
            await project_all(rt)

            await ops.retire_agent("w-life", "replaced")
            _, event = await last(rt, "agent", "w-life")
            assert isinstance(event, AgentRetired) and event.reason == "replaced"
            await project_all(rt)
            for write, why in (
                (ops.retire_agent, "agent w-life is already retired"),
                (ops.pause_agent, "agent w-life is retired"),
                (ops.resume_agent, r"agent w-life is not paused \(it is retired\)"),
            ):
                with pytest.raises(IntentRefused, match=why):
                    await write("w-life")
    finally:
        await worker.close()


async def nothing_published(rt: Runtime, write: Awaitable[object], why: str) -> None:
    """``write`` raises IntentRefused saying ``why`` and publishes nothing."""
    before = (await rt.js.stream_info(EVENTS_STREAM)).state.last_seq
    with pytest.raises(IntentRefused, match=why):
        await write
    assert (await rt.js.stream_info(EVENTS_STREAM)).state.last_seq == before


async def test_an_agents_client_refuses_at_once_to_overrule_its_operators(
    rt: Runtime, ops: FleetClient
) -> None:
    """projections/lifecycle.py, judged by the agent's own client before it publishes: once
    retired it cannot register itself back, it cannot resume itself from an operator's pause,
    and it keeps the roles and limit the operator registered it with. An operator brings it
    back with ``register_agent``, keeping the registry's profile where it gives none."""
    worker = await agent(rt, "w-own", roles=["writer", "reviewer"], max_concurrent_tasks=5)
    try:
        async with task_api(rt):
            await nothing_published(
                rt, ops.register_agent("ghost", name="G"),
                "no agent ghost in the registry: give its owner, team",
            )  # fmt: skip
            await project_all(rt)
            await ops.retire_agent("w-own", "replaced")
            await project_all(rt)
            await nothing_published(
                rt, worker.register(name="w-own", owner="o", team="t"),
                "agent w-own is retired, and retirement is final for the agent",
            )  # fmt: skip
            assert worker.retired and worker.paused

            await ops.register_agent("w-own", roles=["writer"], max_concurrent_tasks=2)
            _, event = await last(rt, "agent", "w-own")
            assert isinstance(event, AgentRegistered) and event.actor == "user:ops"
            assert (event.name, event.owner, event.team) == ("w-own", "o", "t")  # kept
            assert (event.roles, event.max_concurrent_tasks) == (("writer",), 2)
            await project_all(rt)
            profile = await ops.agent_profile("w-own") or {}
            assert (profile["status"], profile["registered_by"]) == ("active", "user:ops")

            await nothing_published(
                rt, worker.register(name="w-own", owner="o", team="t", roles=["reviewer"]),
                r"w-own's roles \(writer\) and task limit \(2\) are set by user:ops",
            )  # fmt: skip
            await worker.register(name="W own", owner="o", team="t", version="2")
            _, event = await last(rt, "agent", "w-own")
            assert (event.roles, event.max_concurrent_tasks) == (("writer",), 2)  # theirs
            assert not (worker.retired or worker.paused)
            assert (worker.profile.roles, worker.profile.max_concurrent_tasks) == (("writer",), 2)
            await project_all(rt)
            profile = await ops.agent_profile("w-own") or {}
            assert (profile["name"], profile["version"], profile["roles"]) == (
                "W own", "2", ["writer"])  # fmt: skip

            await ops.pause_agent("w-own", "audit")
            await project_all(rt)
            assert (await ops.agent_profile("w-own") or {})["paused_by"] == "user:ops"
            await nothing_published(
                rt, worker.resume_agent("w-own"),
                "agent w-own was paused by user:ops: an agent may resume itself only",
            )  # fmt: skip
            await ops.resume_agent("w-own", "audit done")
            await project_all(rt)
            assert (await ops.agent_profile("w-own") or {})["status"] == "active"
    finally:
        await worker.close()


async def test_without_the_task_api_agent_writes_say_what_is_missing(
    rt: Runtime, ops: FleetClient
) -> None:
    with pytest.raises(FleetwardError, match=r"nothing serves fw\.api\.agents\.get"):
        await ops.pause_agent("w1")
