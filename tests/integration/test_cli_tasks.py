"""``fleetward tasks`` and ``fleetward agents`` as an operator types them: create, assign,
reassign, revoke, deps, review, cancel, the board; pause, resume, retire. A request the fleet
would refuse exits 2 with one line saying why and publishes nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from fleetward.schemas import decode
from fleetward.schemas.events import (
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    Event,
    TaskAssigned,
    TaskDependenciesChanged,
    TaskRevoked,
)
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.services.client import AgentClient
from fleetward.services.runtime.connect import Runtime
from tests.helpers import agent, creds, person, project_all, task_api

ROOT = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "fleetward.services.cli")


async def fleetward(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run ``fleetward ARGS`` as user alice: exit code, stdout, stderr."""
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [*CLI, *args],
            cwd=ROOT,
            env=env | {"FLEETWARD_CREDS": str(person(env, "alice"))},
            check=False,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def ok(env: dict[str, str], *args: str) -> str:
    code, out, err = await fleetward(env, *args)
    assert code == 0, f"fleetward {' '.join(args)} exited {code}: {err}"
    return out


async def refused(rt: Runtime, env: dict[str, str], why: str, *args: str) -> None:
    """``fleetward ARGS`` exits 2 with the one line ``fleetward: error: ...why...`` and
    publishes nothing."""
    before = (await rt.js.stream_info(EVENTS_STREAM)).state.last_seq
    code, out, err = await fleetward(env, *args)
    assert (code, out) == (2, ""), f"fleetward {' '.join(args)}: {code} {out} {err}"
    assert err.count("\n") == 1 and err.startswith("fleetward: error: "), err
    assert why in err, err
    assert (await rt.js.stream_info(EVENTS_STREAM)).state.last_seq == before


async def last(rt: Runtime, subj: str) -> Event:
    """The last event on ``subj`` (a boundary's subjects: ``fw.task.t1.>``)."""
    msg = await rt.js.get_last_msg(EVENTS_STREAM, subj)
    assert msg.data is not None
    return decode(msg.data)


@pytest.mark.slow
async def test_an_operator_runs_a_task_from_creation_to_review(
    rt: Runtime, env: dict[str, str]
) -> None:
    made = await ok(env, "tasks", "create", "cli-a", "--project", "docs", "--title", "A",
                    "--priority", "high")  # fmt: skip
    assert "created cli-a (high) in docs" in made
    await refused(rt, env, "cli-b depends on unknown task(s) cli-nope", "tasks", "create", "cli-b",
                  "--project", "docs", "--title", "B", "--depends-on", "cli-nope")  # fmt: skip
    await refused(rt, env, "task cli-a already exists (inbox)", "tasks", "create", "cli-a",
                  "--project", "docs", "--title", "again")  # fmt: skip
    await ok(env, "tasks", "create", "cli-c", "--project", "docs", "--title", "C")

    writer = await AgentClient.connect(rt.nats_url, creds(rt, "writer-9"))
    try:
        await writer.register(name="writer", owner="o", team="docs")
        async with task_api(rt):
            await project_all(rt)
            await refused(rt, env, "no task cli-nope", "tasks", "assign", "cli-nope", "writer-9")
            await refused(rt, env, "no agent ghost in the registry",
                          "tasks", "assign", "cli-a", "ghost")  # fmt: skip
            assigned = await ok(env, "tasks", "assign", "cli-a", "writer-9")
            assert "assigned cli-a to writer-9" in assigned
            claim = await writer.claim("cli-a")
            await refused(rt, env, "task cli-a is held by writer-9 (in_progress, epoch 1)",
                          "tasks", "assign", "cli-a", "writer-9")  # fmt: skip
            await writer.submit(claim, content="# A")
            await refused(rt, env, "task cli-c is not waiting for review (it is inbox)",
                          "tasks", "review", "cli-c", "--approve")  # fmt: skip
            rejected = await ok(env, "tasks", "review", "cli-a", "--reject", "--feedback",
                                "cite sources")  # fmt: skip
            assert "rejected cli-a (deliverable of writer-9)" in rejected
            await project_all(rt)  # the board turns the review into the author's command
            woken = await writer.next_command(wait=5)  # first: the assignment woke it
            assert woken is not None and (woken.command, woken.task) == ("wake", "cli-a")
            feedback = await writer.next_command(wait=5)
            assert feedback is not None and (feedback.command, feedback.reason) == (
                "review_feedback",
                "cite sources",
            )
            assert feedback.payload["reviewer"] == "user:alice"
    finally:
        await writer.close()
    cancelled = await ok(env, "tasks", "cancel", "cli-c", "--reason", "duplicate")
    assert "cancelled cli-c" in cancelled
    await refused(rt, env, "task cli-c is cancelled", "tasks", "cancel", "cli-c")

    await project_all(rt)
    board = await ok(env, "tasks", "--board")
    assert "in_progress (1)" in board and "cancelled (1)" in board
    assert "cli-a (writer-9)" in board
    listed = await ok(env, "tasks", "--status", "cancelled")
    assert "cli-c" in listed and "cli-a" not in listed
    story = await ok(env, "tasks", "show", "cli-a")  # the task's subject, event by event
    assert "in_progress by writer-9, epoch 1" in story
    for line in ("task.created", "task.assigned", "task.claimed", "task.submitted",
                 "task.reviewed"):  # fmt: skip
        assert line in story
    assert "verdict=reject" in story and "feedback=cite sources" in story
    await refused(rt, env, "no task cli-nowhere", "tasks", "show", "cli-nowhere")
    async with rt.pool.acquire() as conn:
        assert await conn.fetch("SELECT * FROM fleet.task_rejections") == []


async def test_an_operator_takes_tasks_back_and_changes_dependencies(
    rt: Runtime, env: dict[str, str]
) -> None:
    for task in ("tb-a", "tb-b", "tb-c"):
        await ok(env, "tasks", "create", task, "--project", "p", "--title", task)
    holder = await agent(rt, "holder", max_concurrent_tasks=2)
    other = await agent(rt, "other")
    try:
        await holder.claim("tb-a")
        await holder.claim("tb-b")
        async with task_api(rt):
            await project_all(rt)
            await refused(rt, env, "task tb-c is not held: it is inbox", "tasks", "revoke", "tb-c")
            out = await ok(env, "tasks", "revoke", "tb-a", "--reason", "stalled")
            assert "revoked tb-a from holder (epoch 1)" in out
            event = await last(rt, "fw.task.tb-a.>")
            assert isinstance(event, TaskRevoked)
            assert (event.agent, event.epoch, event.reason, event.assign_to, event.actor) == (
                "holder", 1, "stalled", None, "user:alice"
            )  # fmt: skip
            await refused(rt, env, "no agent ghost in the registry",
                          "tasks", "reassign", "tb-b", "ghost")  # fmt: skip
            out = await ok(env, "tasks", "reassign", "tb-b", "other")
            assert "reassigned tb-b from holder (epoch 1) to other" in out
            event = await last(rt, "fw.task.tb-b.>")
            assert isinstance(event, TaskRevoked) and event.assign_to == "other"
            out = await ok(env, "tasks", "reassign", "tb-c", "other")
            assert "assigned tb-c to other" in out
            assert isinstance(await last(rt, "fw.task.tb-c.>"), TaskAssigned)
    finally:
        await holder.close()
        await other.close()

    await refused(rt, env, "dependency tb-c was created after tb-a",
                  "tasks", "deps", "tb-a", "--set", "tb-c")  # fmt: skip
    await refused(rt, env, "dependency tb-nope is unknown",
                  "tasks", "deps", "tb-c", "--set", "tb-nope")  # fmt: skip
    await refused(rt, env, "task tb-c does not depend on tb-a",
                  "tasks", "deps", "tb-c", "--drop", "tb-a")  # fmt: skip
    out = await ok(env, "tasks", "deps", "tb-c", "--set", "tb-a", "tb-b", "--reason", "order")
    assert "tb-c now depends on tb-a, tb-b" in out
    event = await last(rt, "fw.task.tb-c.>")
    assert isinstance(event, TaskDependenciesChanged) and event.depends_on == ("tb-a", "tb-b")


async def test_an_operator_pauses_resumes_and_retires_an_agent(
    rt: Runtime, env: dict[str, str]
) -> None:
    worker = await agent(rt, "w-7")
    try:
        async with task_api(rt):
            await project_all(rt)
            for action in ("pause", "resume", "retire"):
                await refused(rt, env, "no agent ghost in the registry", "agents", action, "ghost")
            await refused(rt, env, "agent w-7 is not paused (it is active)",
                          "agents", "resume", "w-7")  # fmt: skip
            assert "paused w-7" in await ok(env, "agents", "pause", "w-7", "--reason", "budget")
            event = await last(rt, "fw.agent.w-7.>")
            assert isinstance(event, AgentPaused)
            assert (event.reason, event.actor) == ("budget", "user:alice")
            await project_all(rt)
            await refused(rt, env, "agent w-7 is already paused", "agents", "pause", "w-7")
            assert "resumed w-7" in await ok(env, "agents", "resume", "w-7")
            assert isinstance(await last(rt, "fw.agent.w-7.>"), AgentResumed)
            await project_all(rt)
            assert "retired w-7" in await ok(env, "agents", "retire", "w-7", "--reason", "done")
            assert isinstance(await last(rt, "fw.agent.w-7.>"), AgentRetired)
            await project_all(rt)
            await refused(rt, env, "agent w-7 is already retired", "agents", "retire", "w-7")
            await refused(rt, env, "agent w-7 is retired", "agents", "pause", "w-7")
            listed = await ok(env, "agents")  # the bare list still works
            assert "w-7" in listed and "retired" in listed
            # only a person (or a service) brings it back, by registering it
            await refused(rt, env, "no agent ghost in the registry: give its name, owner, team",
                          "agents", "register", "ghost")  # fmt: skip
            out = await ok(env, "agents", "register", "w-7", "--role", "writer", "--max-tasks", "2")
            assert "registered w-7" in out
            event = await last(rt, "fw.agent.w-7.>")
            assert isinstance(event, AgentRegistered) and event.actor == "user:alice"
            assert (event.name, event.roles, event.max_concurrent_tasks) == ("w-7", ("writer",), 2)
            await project_all(rt)
            assert (await worker.agent_profile("w-7") or {})["status"] == "active"
    finally:
        await worker.close()
