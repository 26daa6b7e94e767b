"""Attacking "every intent takes effect or fails visibly" (issue 12) with hostile and unlucky
inputs and orderings, against real nats-server and Postgres.

Tests marked ``BUG:`` in their docstring expose a promise that does not hold; they assert what
*should* happen and are left failing on purpose (``xfail(strict=True)``, so they turn into
errors the day the product is fixed and the mark must be removed; ``pytest --runxfail``
shows each failure). Every other test shows a promise that held under attack.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from nats.js.api import PubAck

from fleetward.projections.tasks import TaskBoard
from fleetward.schemas.events import (
    AgentPaused,
    Deliverable,
    TaskClaimed,
    TaskClaimRefused,
    TaskCreated,
    TaskDependenciesChanged,
    TaskProgressed,
    TaskReleased,
    TaskReviewed,
    TaskReviewRefused,
    TaskSubmitted,
    ToolCalled,
)
from fleetward.schemas.headers import MSG_ID
from fleetward.schemas.ids import deterministic_id
from fleetward.schemas.streams import COMMANDS_STREAM, EVENTS_STREAM, inbox_durable
from fleetward.services.auth.store import AuthStore
from fleetward.services.client import AgentClient, Claim, ClaimLost, FleetClient
from fleetward.services.client.agent import INBOX_REDELIVERY_S
from fleetward.services.client.claims import AgentPaused as AgentPausedError
from fleetward.services.client.intents import IntentRefused
from fleetward.services.client.taskstate import read_task
from fleetward.services.jetstream.publish import encode, publish
from fleetward.services.projector import rebuild as rebuilding
from fleetward.services.projector.outbox import Outbox
from fleetward.services.runtime.connect import Runtime
from tests.helpers import (
    agent,
    as_harness,
    creds,
    envelope,
    grant_test_admins,
    past_the_duplicate_window,
    person,
    project_all,
    snapshot,
    task_api,
    wait_for,
)
from tests.integration.test_attack_identity import Attacker

ROOT = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "fleetward.services.cli")
MAX_EPOCH = 2_147_483_647
BUG = pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="BUG: exposes a broken promise (see docstring)"
)


# ---- helpers ----


@contextlib.asynccontextmanager
async def api(rt: Runtime) -> Any:
    """The task API served while the block runs; a failure inside comes out as itself, not
    wrapped in the task group's exception group."""
    try:
        async with task_api(rt):
            yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def board_row(rt: Runtime, task: str) -> dict[str, Any] | None:
    async with rt.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM fleet.tasks WHERE task_id = $1", task)
    return None if row is None else dict(row)


async def stream_row(rt: Runtime, task: str) -> dict[str, Any] | None:
    return (await read_task(rt.nc, rt.js, task)).row


def status_of(row: dict[str, Any] | None) -> tuple[Any, Any, Any]:
    """(status, assignee, epoch); ("missing", None, None) for no such task."""
    if row is None:
        return ("missing", None, None)
    return (row["status"], row["assignee"], row["claim_epoch"])


async def inbox(client: AgentClient, wait: float = 0.5) -> list[Any]:
    """Every command waiting for ``client`` now, as the client sees them."""
    out = []
    while (cmd := await client.next_command(wait=wait)) is not None:
        out.append(cmd)
    return out


async def dead_letters(rt: Runtime, projection: str = "tasks") -> list[dict[str, Any]]:
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT seq, subject, reason, detail FROM fleet.dead_letters WHERE projection = $1 "
            "ORDER BY seq",
            projection,
        )
    return [dict(r) for r in rows]


async def rejections(rt: Runtime, task: str) -> list[dict[str, Any]]:
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM fleet.task_rejections WHERE task_id = $1 ORDER BY seq", task
        )
    return [dict(r) for r in rows]


async def last_seq(rt: Runtime, stream: str) -> int:
    return int((await rt.js.stream_info(stream)).state.last_seq)


async def raw(rt: Runtime, event: Any, msg_id: str | None = None, **headers: str) -> PubAck:
    """Publish ``event`` as it is, skipping every client check (``msg_id``: another
    Nats-Msg-Id than the event's id, i.e. a copy stored past the duplicate window)."""
    hdrs = {"Nats-Msg-Id": msg_id or event.id, **headers}
    return await rt.js.publish(_subject(event), encode(event), headers=hdrs)


def _subject(event: Any) -> str:
    from fleetward.schemas import subject_of  # noqa: PLC0415

    return subject_of(event)


def claimed(agent_id: str, task: str, epoch: int, lease_s: float = 300.0) -> TaskClaimed:
    return TaskClaimed(**envelope(agent_id), task=task, agent=agent_id, epoch=epoch,
                       lease_s=lease_s)  # fmt: skip


def submitted(agent_id: str, task: str, epoch: int, content: str = "work") -> TaskSubmitted:
    import hashlib  # noqa: PLC0415

    d = Deliverable(kind="markdown", sha256=hashlib.sha256(content.encode()).hexdigest(),
                    content=content)  # fmt: skip
    return TaskSubmitted(**envelope(agent_id), task=task, agent=agent_id, epoch=epoch,
                         deliverable=d)  # fmt: skip


async def fleetward(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [*CLI, *args],
            cwd=ROOT,
            env=env | {"FLEETWARD_CREDS": str(person(env, "alice"))},
            check=False,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


# ---- (1) board verdicts: hostile claims ----


async def test_a_claim_skipping_to_the_top_epoch_is_rejected_and_honest_claims_take_effect(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: a hostile agent claims with epoch 2,147,483,647 (within the contract's bounds)
    and releases at that epoch. A claim must open exactly the next epoch, so the board and
    every client fold reject both (the task stays in the inbox at epoch 0, nothing is
    dead-lettered) and the rogue is told twice (``refused``). An honest agent's claim, progress
    and submit then take effect: the board and the clients agree on review, epoch 1."""
    await ops.create_task("brick", project="p", title="t")
    rogue = await agent(rt, "rogue")
    honest = await agent(rt, "honest")
    try:
        await project_all(rt)
        await raw(rt, claimed("rogue", "brick", MAX_EPOCH))
        await raw(rt, TaskReleased(**envelope("rogue"), task="brick", agent="rogue",
                                   epoch=MAX_EPOCH))  # fmt: skip
        await project_all(rt)
        assert status_of(await board_row(rt, "brick")) == ("inbox", None, 0)
        assert status_of(await stream_row(rt, "brick")) == ("inbox", None, 0)
        reasons = [r["reason"] for r in await rejections(rt, "brick")]
        print("rejections:", reasons)
        assert len(reasons) == 2 and "is not the next one (1)" in reasons[0], reasons
        assert [c.command for c in await inbox(rogue)] == ["refused", "refused"]

        c = await honest.claim("brick")
        await honest.progress(c, "working")
        await honest.submit(c, content="done")
        await project_all(rt)
        assert c.epoch == 1
        assert status_of(await board_row(rt, "brick")) == ("review", "honest", 1)
        assert status_of(await stream_row(rt, "brick")) == ("review", "honest", 1)
        assert await dead_letters(rt) == []
        assert await inbox(honest) == []
    finally:
        await rogue.close()
        await honest.close()


async def test_an_agent_cannot_take_its_verdicts_id_first(rt: Runtime, ops: FleetClient) -> None:
    """Holds: the board's verdict on a claim is published under an id derived with the
    deployment's secret and the claim's stream sequence, which no publisher can compute. A
    claimer lacking the task's role first publishes one of its *own* events (a tool call on
    ``fw.agent.<self>.<self>``, no forging) under the id a verdict derived from the claim's id alone
    would have (``deterministic_id(claim.id, "verdict")``), then claims. The verdict is stored
    anyway under another id: the claim is refused for the board and every client fold (the
    task back in the inbox) and the claimer is told (``refused``)."""
    await ops.create_task("guarded", project="p", title="t", required_role="admin")
    rogue = await agent(rt, "rogue")
    try:
        await project_all(rt)
        claim = claimed("rogue", "guarded", 1)
        guessed = deterministic_id(claim.id, "verdict")
        decoy = ToolCalled(id=guessed, actor="rogue", at=claim.at, agent="rogue",
                           tool="noop", duration_ms=1.0, ok=True)  # fmt: skip
        await raw(rt, decoy)
        await raw(rt, claim)
        await project_all(rt)
        async with rt.pool.acquire() as conn:
            verdicts = await conn.fetch(
                "SELECT event_id, published_at FROM fleet.outbox WHERE subject LIKE $1",
                "fw.task.guarded.%",
            )
        assert len(verdicts) == 1 and verdicts[0]["published_at"] is not None
        assert verdicts[0]["event_id"] != guessed
        assert status_of(await board_row(rt, "guarded")) == ("inbox", None, 1)
        assert status_of(await stream_row(rt, "guarded")) == ("inbox", None, 1)
        told = [(c.command, c.task) for c in await inbox(rogue)]
        assert told == [("refused", "guarded")]
    finally:
        await rogue.close()


async def test_an_event_id_reused_on_another_tasks_subject_does_not_hide_a_verdict(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: event ids are unique per task subject, for the board's ledger and for every
    client fold. A rogue publishes stray reports of its own on another task's subject whose
    *event ids* (under other Nats-Msg-Ids) are the id its verdict would have from the claim's
    id alone, and even the verdict's real id (computed here with the deployment's secret, as
    if it had leaked). The verdict is still applied: the board and the clients agree the
    claim was refused (the task in the inbox), and the rogue is told."""
    await ops.create_task("guarded2", project="p", title="t", required_role="admin")
    await ops.create_task("elsewhere", project="p", title="t")
    rogue = await agent(rt, "rogue2")
    try:
        await project_all(rt)
        async with rt.pool.acquire() as conn:
            secret = await conn.fetchval("SELECT secret FROM fleetward.outbox_secret")
        claim = claimed("rogue2", "guarded2", 1)
        ack = await raw(rt, claim)
        guessed = deterministic_id(claim.id, "verdict")
        real = deterministic_id(secret, guessed, str(ack.seq))  # services/projector/commit.py
        for i, stray_id in enumerate((guessed, real)):
            stray = TaskProgressed(id=stray_id, actor="rogue2", at=claim.at, task="elsewhere",
                                   agent="rogue2", epoch=7)  # fmt: skip
            await raw(rt, stray, msg_id=f"not-the-event-id-{i}")
        await project_all(rt)
        async with rt.pool.acquire() as conn:
            stored = await conn.fetchval(
                "SELECT event_id FROM fleet.outbox WHERE subject LIKE 'fw.task.guarded2.%'"
            )
        assert stored == real  # the stray really carried the verdict's id
        board = status_of(await board_row(rt, "guarded2"))
        stream = status_of(await stream_row(rt, "guarded2"))
        print("board:", board, "stream fold:", stream)
        assert board == stream == ("inbox", None, 1), "the board and the client fold disagree"
        told = sorted((c.command, c.task) for c in await inbox(rogue))
        assert told == [("refused", "elsewhere"), ("refused", "elsewhere"),
                        ("refused", "guarded2")]  # fmt: skip
    finally:
        await rogue.close()


def long_ids(prefix: str, n: int) -> list[str]:
    """``n`` task ids of 64 characters."""
    return [f"{prefix}-{i:04d}-".ljust(64, "x") for i in range(n)]


async def test_a_verdict_listing_many_dependencies_fits_its_contract_and_refuses_the_claim(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: a raw claim of a task with 130 dependencies of 64-character ids, none done. The
    board's verdict would list them all (~8,600 characters, past the 8,000 the contract allows
    for ``reason``); it is cut to fit, so nothing is dead-lettered, the claim is refused for
    the board and every client fold, and the claimer is told (``refused``)."""
    deps = long_ids("dep", 130)
    for d in deps:
        await ops.create_task(d, project="p", title="dep")
    await ops.create_task("many-deps", project="p", title="t", depends_on=deps)
    rogue = await agent(rt, "eager")
    try:
        await project_all(rt)
        await raw(rt, claimed("eager", "many-deps", 1))
        await project_all(rt)
        dead = await dead_letters(rt)
        print("dead letters:", [(d["subject"], d["reason"], d["detail"][:80]) for d in dead])
        assert dead == []
        row = await board_row(rt, "many-deps")
        assert row is not None and row["waiting_on_dependencies"]
        assert status_of(row) == status_of(await stream_row(rt, "many-deps")) == ("inbox", None, 1)
        told = await inbox(rogue)
        assert [c.command for c in told] == ["refused"]
        assert told[0].reason is not None and "waiting on dependencies" in told[0].reason
    finally:
        await rogue.close()


async def test_a_task_with_many_unknown_dependencies_is_cancelled_and_no_cycle_forms(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: an agent may publish ``task.created``; one with 130 unknown dependencies (the
    cancellation's reason listing them all would outgrow the contract: it is cut) is cancelled
    by the board, for the board and every client fold. Creating one of those ghosts depending
    on it is then refused by the client (a cancelled dependency); published raw, the board
    takes it as a dead end (``cancelled_dependencies``), not a live cycle."""
    ghosts = long_ids("ghost", 130)
    planner = await agent(rt, "planner")
    try:
        created = TaskCreated(**envelope("planner"), task="loop-a", project="p", title="A",
                              depends_on=tuple(ghosts))  # fmt: skip
        await raw(rt, created)
        await project_all(rt)
        assert await dead_letters(rt) == []
        assert status_of(await board_row(rt, "loop-a"))[0] == "cancelled"
        assert status_of(await stream_row(rt, "loop-a"))[0] == "cancelled"
        # the first ghost now comes to life, depending on loop-a (which exists)
        with pytest.raises(IntentRefused, match="loop-a is cancelled"):
            await ops.create_task(ghosts[0], project="p", title="B", depends_on=["loop-a"])
        await raw(rt, TaskCreated(**envelope("planner"), task=ghosts[0], project="p",
                                  title="B", depends_on=("loop-a",)))  # fmt: skip
        await project_all(rt)
        a, b = await board_row(rt, "loop-a"), await board_row(rt, ghosts[0])
        assert a is not None and b is not None
        print("loop-a:", a["status"], "depends on ghost0:", ghosts[0] in a["depends_on"],
              "| ghost0:", b["status"], b["depends_on"], b["cancelled_dependencies"])  # fmt: skip
        assert a["status"] == "cancelled", "a live dependency cycle"
        assert b["cancelled_dependencies"] == ["loop-a"] and b["waiting_on_dependencies"]
    finally:
        await planner.close()


async def test_a_claim_on_a_dependency_done_by_an_overruled_approval_is_refused(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: an agent without the role ``reviewer`` approves another agent's deliverable;
    ``step`` applies the approval (the task is done) until the board's ``task.review_refused``
    lands. In between, an honest agent's client folds the dependency as done and claims the
    dependent task; the board does not count a dependency done by a review it overruled, and
    refuses that claim. At the end the dependency is back in review and the dependent in the
    inbox, for the board and every client fold; the claimer and the unauthorised reviewer
    are each told (``refused``)."""
    await ops.create_task("base", project="p", title="t")
    await ops.create_task("top", project="p", title="t", depends_on=["base"])
    author = await agent(rt, "author")
    crony = await agent(rt, "crony")  # no role reviewer
    worker = await agent(rt, "worker")
    try:
        await project_all(rt)
        c = await author.claim("base")
        await author.submit(c, content="draft")
        await crony.send(TaskReviewed(**envelope("crony"), task="base", agent="author",
                                      verdict="approve"))  # fmt: skip
        top = await worker.claim("top")  # the client folds base as done: the claim goes out
        assert top.epoch == 1
        await project_all(rt)
        base, dependent = await board_row(rt, "base"), await board_row(rt, "top")
        assert base is not None and dependent is not None
        print("base:", status_of(base), "top:", status_of(dependent),
              dependent["waiting_on_dependencies"])  # fmt: skip
        assert status_of(base) == status_of(await stream_row(rt, "base")) == ("review", "author", 1)
        assert status_of(dependent) == status_of(await stream_row(rt, "top")) == ("inbox", None, 1)
        assert [(x.command, x.task) for x in await inbox(worker)] == [("refused", "top")]
        assert [(x.command, x.task) for x in await inbox(crony)] == [("refused", "base")]
        assert "top" not in worker.claims
    finally:
        for c_ in (author, crony, worker):
            await c_.close()


async def test_a_refused_claim_is_undone_even_after_an_agent_review_of_its_work(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: a claimer lacking the task's role claims raw and submits at once; a reviewer
    agent (it holds the role reviewer) rejects the deliverable before the projector has run.
    The board folds claim, submit and review, then the claim's verdict: the claim's undo is
    kept apart from the agent review's, so ``task.claim_refused`` still names the current
    claim and the task goes back to the inbox, for the board and every client fold; the
    claimer is told (``refused``)."""
    await ops.create_task("roled", project="p", title="t", required_role="admin")
    rogue = await agent(rt, "nobody")
    critic = await agent(rt, "critic", roles=("reviewer",))
    try:
        await project_all(rt)
        claim = claimed("nobody", "roled", 1)
        await raw(rt, claim)
        await raw(rt, submitted("nobody", "roled", 1))
        await critic.send(TaskReviewed(**envelope("critic"), task="roled", agent="nobody",
                                       verdict="reject", feedback="redo"))  # fmt: skip
        await project_all(rt)
        rows = [(r["type"], r["reason"]) for r in await rejections(rt, "roled")]
        told = [(c.command, c.task) for c in await inbox(rogue)]
        print("board:", status_of(await board_row(rt, "roled")), "rejections:", rows, told)
        assert status_of(await board_row(rt, "roled")) == ("inbox", None, 1)
        assert status_of(await stream_row(rt, "roled")) == ("inbox", None, 1)
        assert told == [("review_feedback", "roled"), ("refused", "roled")]
    finally:
        await rogue.close()
        await critic.close()


async def test_a_claim_ended_before_its_verdict_lands_does_not_block_dependents(
    rt: Runtime, ops: FleetClient
) -> None:
    """An agent at its limit claims an open task and releases it at once: the release ends the
    claim before the board's ``task.claim_refused`` lands (which is then rejected). The board
    marks a task ``overruled`` only while what it overruled can still be undone, so once the
    task is later done honestly its dependents are claimable, for the board as for the
    clients."""
    await ops.create_task("gate", project="p", title="t")
    await ops.create_task("gated", project="p", title="t", depends_on=["gate"])
    await ops.create_task("busy", project="p", title="t")
    rogue = await agent(rt, "jammer")  # at most one task
    honest = await agent(rt, "opener")
    later = await agent(rt, "follower")
    try:
        await project_all(rt)
        await rogue.claim("busy")  # now at its limit
        await raw(rt, claimed("jammer", "gate", 1))  # refused: over the limit
        await raw(rt, TaskReleased(**envelope("jammer"), task="gate", agent="jammer", epoch=1))
        await project_all(rt)
        assert status_of(await board_row(rt, "gate")) == ("inbox", None, 1)
        c = await honest.claim("gate")
        await honest.submit(c, content="done right")
        await ops.review("gate", "approve")
        await project_all(rt)
        gate = await board_row(rt, "gate")
        assert gate is not None and gate["status"] == "done"
        async with rt.pool.acquire() as conn:
            mark = await conn.fetchval(
                "SELECT overruled FROM fleetward.tasks WHERE task_id = 'gate'"
            )
        print("gate overruled by:", mark, [r["reason"] for r in await rejections(rt, "gate")])
        row = await board_row(rt, "gated")
        assert row is not None and not row["waiting_on_dependencies"]
        claim = await later.claim("gated")  # the client sees gate done: the claim goes out
        await project_all(rt)
        board = status_of(await board_row(rt, "gated"))
        told = [(x.command, x.reason) for x in await inbox(later)]
        print("gated:", board, "| claimer told:", told)
        assert board == ("in_progress", "follower", claim.epoch), told
    finally:
        for c_ in (rogue, honest, later):
            await c_.close()


# ---- (2) claim races ----


async def claim_into(client: AgentClient, task: str, out: list[object]) -> None:
    try:
        out.append(await client.claim(task))
    except ClaimLost as exc:
        out.append(exc)


async def test_many_processes_of_many_agents_race_one_task_and_exactly_one_wins(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: 6 processes of one agent and 4 other agents race each of 3 tasks; exactly one
    claim wins each, and the board, the client fold and the winner agree on it."""
    procs = [await agent(rt, "multi", max_concurrent_tasks=5)]
    procs += [await AgentClient.connect(rt.nats_url, creds(rt, "multi")) for _ in range(5)]
    for p in procs[1:]:
        p.profile = procs[0].profile
    others = [await agent(rt, f"rival-{i}", max_concurrent_tasks=5) for i in range(4)]
    try:
        await project_all(rt)
        for i in range(3):
            task = f"race-{i}"
            await ops.create_task(task, project="p", title=task)
            results: list[object] = []
            async with anyio.create_task_group() as tg:
                for c in (*procs, *others):
                    tg.start_soon(claim_into, c, task, results)
            won = [r for r in results if isinstance(r, Claim)]
            assert len(won) == 1, results
            await project_all(rt)
            board, stream = await board_row(rt, task), await stream_row(rt, task)
            assert board is not None and stream is not None
            assert board["claim_id"] == stream["claim_id"] == won[0].id
            assert board["status"] == "in_progress"
    finally:
        for c in (*procs, *others):
            await c.close()


async def test_one_clients_concurrent_claims_never_pass_its_limit(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: 8 concurrent claims of one client with a limit of 2: two win, the board agrees
    and refuses nothing."""
    worker = await agent(rt, "two-slots", max_concurrent_tasks=2)
    try:
        tasks = [f"slot-{i}" for i in range(8)]
        for t in tasks:
            await ops.create_task(t, project="p", title=t)
        await project_all(rt)
        results: list[object] = []
        async with anyio.create_task_group() as tg:
            for t in tasks:
                tg.start_soon(claim_into, worker, t, results)
        won = [r for r in results if isinstance(r, Claim)]
        assert len(won) == 2, results
        await project_all(rt)
        async with rt.pool.acquire() as conn:
            held = await conn.fetchval(
                "SELECT count(*) FROM fleet.tasks WHERE assignee = 'two-slots' "
                "AND status = 'in_progress'"
            )
        assert held == 2
        assert [c.command for c in await inbox(worker)] == []
    finally:
        await worker.close()


async def test_a_second_process_of_a_paused_agent_claims_without_agent_paused(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds (was a BUG): two processes of one agent share one durable inbox consumer
    (``inbox_<agent>``), so each command reaches only one of them. Every process also follows
    the registry's commands to its agent on a plain subscription (``fw.cmd.<agent>.svc:registry``,
    ``AgentClient._follow_registry``), so the process that did not read the ``pause`` from the
    inbox learns it too: ``claim`` raises AgentPaused in both (promise 5), and after a
    ``resume`` both claim again."""
    first = await agent(rt, "pair", max_concurrent_tasks=2)
    second = await AgentClient.connect(rt.nats_url, creds(rt, "pair"))
    try:
        async with api(rt):
            await ops.create_task("pz-a", project="p", title="t")
            await ops.create_task("pz-b", project="p", title="t")
            await project_all(rt)
            await second.sync_inbox()  # both processes read their inbox once
            await ops.pause_agent("pair", reason="stop")
            await project_all(rt)
            outcomes: list[object] = []  # whichever process the pause reached, in turn
            for process, task in ((first, "pz-a"), (second, "pz-b")):
                try:
                    outcomes.append(await process.claim(task))
                except ClaimLost as exc:
                    outcomes.append(exc)
            print("the two processes:", outcomes)
            assert all(isinstance(o, AgentPausedError) for o in outcomes)
            await ops.resume_agent("pair")
            await project_all(rt)
            assert (await first.claim("pz-a")).task == "pz-a"
            assert (await second.claim("pz-b")).task == "pz-b"
    finally:
        await first.close()
        await second.close()


async def test_a_claim_racing_a_pause_is_overruled_and_the_claimer_told(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: a pause stored before the claim, but not yet turned into an inbox command, lets
    the claim go out; the board refuses it, the claimer's inbox says ``refused`` and the
    client drops the task; its next claim raises AgentPaused."""
    worker = await agent(rt, "racer")
    try:
        async with api(rt):
            await ops.create_task("rp", project="p", title="t")
            await ops.create_task("rp2", project="p", title="t")
            await project_all(rt)
            await ops.pause_agent("racer")  # stored; the projector has not run
            claim = await worker.claim("rp")  # the inbox is still empty: it goes out
            await project_all(rt)
            assert status_of(await board_row(rt, "rp"))[:2] == ("inbox", None)
            told = await inbox(worker)
            assert {c.command for c in told} == {"pause", "refused"}
            assert "rp" not in worker.claims and claim.task == "rp"
            with pytest.raises(AgentPausedError):
                await worker.claim("rp2")
    finally:
        await worker.close()


# ---- (3) fenced reports ----


async def test_reports_after_the_inbox_said_lease_lost_or_from_another_process_are_fenced(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: reports are always compare-and-set. A second process of the holder (a restart,
    with the Claim but without the task's last sequence) reads the task first and reports
    while the claim holds. Once the inbox says ``lease_lost`` (the client drops the task and
    its last sequence), a ``submit`` on that claim, from this process or the other, raises
    ClaimLost and stores nothing (promise 3)."""
    worker = await agent(rt, "dropped")
    restarted = await AgentClient.connect(rt.nats_url, creds(rt, "dropped"))
    try:
        async with api(rt):
            await ops.create_task("ll", project="p", title="t")
            await project_all(rt)
            claim = await worker.claim("ll")
            await restarted.progress(claim, "still mine")  # not known there: read, then fenced
            await project_all(rt)
            assert status_of(await board_row(rt, "ll")) == ("in_progress", "dropped", 1)
            assert await rejections(rt, "ll") == []
            await ops.revoke("ll", reason="taken back")
            await project_all(rt)
            assert [c.command for c in await inbox(worker)] == ["lease_lost"]
            assert "ll" not in worker.claims
            before = await last_seq(rt, EVENTS_STREAM)
            outcomes: list[object] = []
            for process in (worker, restarted):
                try:
                    outcomes.append(await process.submit(claim, content="late work"))
                except ClaimLost as exc:
                    outcomes.append(exc)
            stored = await last_seq(rt, EVENTS_STREAM) - before
            print("submit after lease_lost:", outcomes, "events stored:", stored)
            assert all(isinstance(o, ClaimLost) for o in outcomes) and stored == 0
    finally:
        await worker.close()
        await restarted.close()


async def test_reports_of_a_displaced_holder_raise_claim_lost_while_it_still_knows_the_task(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: a holder displaced by a revocation, an expiry or a cancellation, that has not
    read its inbox yet, gets ClaimLost on progress, block, release and submit, and nothing is
    stored."""
    worker = await agent(rt, "fenced", max_concurrent_tasks=4)
    try:
        async with api(rt):
            for t in ("f-rev", "f-exp", "f-can", "f-sub"):
                await ops.create_task(t, project="p", title=t)
            await project_all(rt)
            claims = {t: await worker.claim(t) for t in ("f-rev", "f-exp", "f-can", "f-sub")}
            await project_all(rt)
            await ops.revoke("f-rev")
            from fleetward.schemas.events import TaskLeaseExpired  # noqa: PLC0415

            await publish(rt.js, TaskLeaseExpired(**envelope("svc:watchdog"), task="f-exp",
                                                  agent="fenced", epoch=1))  # fmt: skip
            await ops.cancel("f-can")
            await ops.revoke("f-sub")
            before = await last_seq(rt, EVENTS_STREAM)
            with pytest.raises(ClaimLost):
                await worker.progress(claims["f-rev"], "x")
            with pytest.raises(ClaimLost):
                await worker.block(claims["f-exp"], "stuck")
            with pytest.raises(ClaimLost):
                await worker.release(claims["f-can"])
            with pytest.raises(ClaimLost):
                await worker.submit(claims["f-sub"], content="x")
            assert await last_seq(rt, EVENTS_STREAM) == before
            await project_all(rt)
            told = sorted((c.command, c.task) for c in await inbox(worker))
            assert told == [("lease_lost", t) for t in ("f-can", "f-exp", "f-rev", "f-sub")]
    finally:
        await worker.close()


# ---- reviews, cancels and retirements racing each other ----


async def test_a_late_copy_of_a_review_is_skipped_by_the_board_and_every_client(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: a reviewer agent's rejection is stored again later under another Nats-Msg-Id (a
    retry past the 2-minute duplicate window) after the author has resubmitted. The board's
    ledger and the client fold (``read_task``) both skip an event id seen before on the task's
    subject: both say ``review``, so the operator's approval goes through and the task is
    done for all."""
    author = await agent(rt, "writer")
    critic = await agent(rt, "editor", roles=("reviewer",))
    try:
        await ops.create_task("copy", project="p", title="t")
        await project_all(rt)
        c = await author.claim("copy")
        await author.submit(c, content="v1")
        review = TaskReviewed(**envelope("editor"), task="copy", agent="writer",
                              verdict="reject", feedback="again")  # fmt: skip
        await critic.send(review)
        await project_all(rt)
        author.rework(c)
        await author.submit(c, content="v2")
        await raw(rt, review, msg_id=review.id + "-retry")  # the same event, stored again
        await project_all(rt)
        board, stream = await board_row(rt, "copy"), await stream_row(rt, "copy")
        print("board:", status_of(board), "clients:", status_of(stream))
        assert status_of(board) == status_of(stream) == ("review", "writer", 1)
        await ops.review("copy", "approve")  # the board waits for exactly this
        await project_all(rt)
        board, stream = await board_row(rt, "copy"), await stream_row(rt, "copy")
        assert status_of(board)[0] == status_of(stream)[0] == "done"
    finally:
        await author.close()
        await critic.close()


async def test_an_operator_review_racing_a_revoke_is_refused_to_the_operator(
    rt: Runtime, ops: FleetClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Holds: ``FleetClient.review`` publishes compare-and-set on the task's last sequence. A
    revocation stored between its read and its publish makes the publish fail; the review
    reads the task again and raises IntentRefused (not waiting for review): the board has
    nothing to reject, and the operator is told (promise 4)."""
    author = await agent(rt, "subject")
    other = await FleetClient.connect(rt.nats_url, creds(rt, "user:bob"))
    try:
        await ops.create_task("rr", project="p", title="t")
        await project_all(rt)
        c = await author.claim("rr")
        await author.submit(c, content="draft")
        real_publish = ops._publish
        raced: list[str] = []

        async def revoke_first(event: Any, **headers: str) -> PubAck:
            if isinstance(event, TaskReviewed) and not raced:  # bob revokes in between
                raced.append("revoked")
                await other.revoke("rr", reason="rebalancing")
            return await real_publish(event, **headers)

        monkeypatch.setattr(ops, "_publish", revoke_first)
        outcome: object
        try:
            outcome = await ops.review("rr", "approve", feedback="great")
        except (IntentRefused, ClaimLost) as exc:
            outcome = exc
        await project_all(rt)
        row = await board_row(rt, "rr")
        print("review returned:", repr(outcome), "board:", status_of(row),
              [r["reason"] for r in await rejections(rt, "rr")])  # fmt: skip
        assert raced == ["revoked"]
        assert isinstance(outcome, IntentRefused) and "not waiting for review" in str(outcome)
        assert status_of(row) == ("inbox", None, 1)
        assert await rejections(rt, "rr") == []
    finally:
        await author.close()
        await other.close()


async def test_cancel_racing_submit_ends_one_way_and_the_author_knows(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: a cancellation and a submission race 10 times; the task always ends cancelled;
    the author either got ClaimLost on submit or, when its submit landed first, a
    ``lease_lost`` in its inbox; the board and the client fold agree."""
    author = await agent(rt, "racer-s", max_concurrent_tasks=10)
    try:
        tasks = [f"cs-{i}" for i in range(10)]
        for t in tasks:
            await ops.create_task(t, project="p", title=t)
        await project_all(rt)
        claims = {t: await author.claim(t) for t in tasks}
        outcomes: dict[str, object] = {}

        async def submit(t: str, delay: float) -> None:
            await anyio.sleep(delay)  # staggered, so that both orders happen
            try:
                outcomes[t] = await author.submit(claims[t], content="x")
            except ClaimLost as exc:
                outcomes[t] = exc

        async with anyio.create_task_group() as tg:
            for i, t in enumerate(tasks):
                tg.start_soon(submit, t, 0.004 * i)
                tg.start_soon(ops.cancel, t)
        await project_all(rt)
        told = {c.task: c.command for c in await inbox(author)}
        for t in tasks:
            board, stream = await board_row(rt, t), await stream_row(rt, t)
            assert status_of(board) == status_of(stream)
            assert board is not None and board["status"] == "cancelled"
            if not isinstance(outcomes[t], ClaimLost):
                assert told.get(t) == "lease_lost", (t, outcomes[t], told)
        print({t: type(o).__name__ for t, o in outcomes.items()})
    finally:
        await author.close()


async def test_a_rejection_owed_by_a_retired_agent_returns_the_task_to_the_inbox(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: retiring revokes the tasks the agent holds (in progress, blocked); its work in
    review stays for review. Rejecting that deliverable would hand it back to the retired
    agent for rework; the board revokes it instead: the task is back in the inbox for the
    board and every client fold, and another agent claims it."""
    worker = await agent(rt, "leaver", max_concurrent_tasks=3)
    heir = await agent(rt, "heir")
    try:
        async with api(rt):
            for t in ("h1", "h2", "in-review"):
                await ops.create_task(t, project="p", title=t)
            await project_all(rt)
            h1, h2 = await worker.claim("h1"), await worker.claim("h2")
            r = await worker.claim("in-review")
            await worker.submit(r, content="draft")
            await project_all(rt)
            await ops.retire_agent("leaver", reason="replaced")
            await project_all(rt)
            for t in ("h1", "h2"):  # the held ones are back in the inbox
                assert status_of(await board_row(rt, t))[:2] == ("inbox", None)
            assert h1.task == "h1" and h2.task == "h2"
            print("in review after retirement:", status_of(await board_row(rt, "in-review")))
            await ops.review("in-review", "reject", feedback="needs work")
            await project_all(rt)
            row = await board_row(rt, "in-review")
            print("after the rejection:", status_of(row))
            assert status_of(row) == status_of(await stream_row(rt, "in-review"))
            assert status_of(row) == ("inbox", None, 1)
            assert (await heir.claim("in-review")).epoch == 2
    finally:
        await worker.close()
        await heir.close()


# ---- forged verdicts, odd epochs, reused ids, cycles ----


async def test_forged_verdicts_naming_the_wrong_claim_or_review_do_nothing(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: a ``task.claim_refused`` naming another claim id and a ``task.review_refused``
    naming another review id (even as svc:board) are rejected by the board and by every
    client fold; the same verdicts sent by an agent are dead-lettered (actor_forbidden) and
    reported to that agent. The holder keeps its task and is told nothing."""
    holder = await agent(rt, "keeper")
    forger = await agent(rt, "forger")
    author = await agent(rt, "auth2")
    critic = await agent(rt, "crit2", roles=("reviewer",))
    try:
        await ops.create_task("fv", project="p", title="t")
        await ops.create_task("fr", project="p", title="t")
        await project_all(rt)
        claim = await holder.claim("fv")
        c2 = await author.claim("fr")
        await author.submit(c2, content="x")
        await critic.send(TaskReviewed(**envelope("crit2"), task="fr", agent="auth2",
                                       verdict="reject"))  # fmt: skip
        await project_all(rt)
        before_fv, before_fr = await board_row(rt, "fv"), await board_row(rt, "fr")
        for actor in ("svc:board", "forger"):
            await raw(rt, TaskClaimRefused(**envelope(actor), task="fv", agent="keeper",
                                           epoch=1, claim="some-other-claim",
                                           reason="forged"))  # fmt: skip
            await raw(rt, TaskReviewRefused(**envelope(actor), task="fr", agent="auth2",
                                            reviewer="crit2", review="some-other-review",
                                            reason="forged"))  # fmt: skip
        # and one naming the right claim, but sent by an agent: refused at admission
        await raw(rt, TaskClaimRefused(**envelope("forger"), task="fv", agent="keeper", epoch=1,
                                       claim=claim.id, reason="forged"))  # fmt: skip
        await project_all(rt)
        after_fv, after_fr = await board_row(rt, "fv"), await board_row(rt, "fr")
        assert status_of(after_fv) == status_of(before_fv) == ("in_progress", "keeper", 1)
        assert status_of(after_fr) == status_of(before_fr)
        assert after_fv is not None and after_fv["claim_id"] == claim.id
        assert status_of(await stream_row(rt, "fv")) == status_of(after_fv)
        assert status_of(await stream_row(rt, "fr")) == status_of(after_fr)
        await holder.progress(claim, "unaffected")
        assert [c.command for c in await inbox(holder)] == []
        forged = [c for c in await inbox(forger)]
        assert len(forged) == 3 and {c.command for c in forged} == {"refused"}
        assert all("actor_forbidden" in c.reason for c in forged)
    finally:
        for c in (holder, forger, author, critic):
            await c.close()


async def test_claims_with_zero_negative_or_fractional_epochs_are_refused_and_reported(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: epochs 0, -1, 1.5 and 2^31 are dead-lettered as invalid; the task stays in the
    inbox for the board and the clients; each is reported to the sender's inbox."""
    await ops.create_task("odd", project="p", title="t")
    odd = await agent(rt, "odd")
    try:
        await project_all(rt)
        for epoch in (0, -1, 1.5, MAX_EPOCH + 1):
            body = {**json.loads(encode(claimed("odd", "odd", 1))), "epoch": epoch}
            await rt.js.publish("fw.task.odd.odd", json.dumps(body).encode(),
                                headers={"Nats-Msg-Id": body["id"]})  # fmt: skip
        await project_all(rt)
        assert status_of(await board_row(rt, "odd")) == ("inbox", None, 0)
        assert status_of(await stream_row(rt, "odd")) == ("inbox", None, 0)
        assert [d["reason"] for d in await dead_letters(rt)] == ["invalid"] * 4
        told = await inbox(odd)
        assert len(told) == 4 and {c.command for c in told} == {"refused"}
        assert all(c.reason.startswith("invalid") for c in told)
    finally:
        await odd.close()


async def test_a_claim_reusing_an_old_event_id_gets_one_verdict_for_every_reader(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: event ids are unique per task subject, for the board's ledger and every client
    fold alike. An agent claims a task with the event id of its claim of *another* task
    (under a fresh Nats-Msg-Id): a new event there, judged as any claim (here refused: the
    agent is at its limit) and the agent told. It then claims the task again reusing that
    same id on its subject: a copy, skipped by the board and by every client. The board and
    the clients agree all along, and an honest agent's claim takes the task."""
    await ops.create_task("lockable", project="p", title="t")
    await ops.create_task("mine", project="p", title="t")
    rogue = await agent(rt, "locker")  # at most one task
    honest = await agent(rt, "victim")
    try:
        await project_all(rt)
        first = await rogue.claim("mine")
        lock = TaskClaimed(id=first.id, actor="locker", at=claimed("x", "y", 1).at,
                           task="lockable", agent="locker", epoch=1)  # fmt: skip
        await raw(rt, lock, msg_id="fresh-msg-id")
        await project_all(rt)
        board = status_of(await board_row(rt, "lockable"))
        assert board == status_of(await stream_row(rt, "lockable")) == ("inbox", None, 1)
        told = [(c.command, c.task) for c in await inbox(rogue)]
        assert told == [("refused", "lockable")]
        again = TaskClaimed(id=first.id, actor="locker", at=claimed("x", "y", 1).at,
                            task="lockable", agent="locker", epoch=2)  # fmt: skip
        await raw(rt, again, msg_id="another-fresh-msg-id")
        await project_all(rt)
        board = status_of(await board_row(rt, "lockable"))
        assert board == status_of(await stream_row(rt, "lockable")) == ("inbox", None, 1)
        outcome: object
        try:
            outcome = await honest.claim("lockable")
        except ClaimLost as exc:
            outcome = exc
        await project_all(rt)
        board = status_of(await board_row(rt, "lockable"))
        print("board:", board, "| honest claim:", outcome,
              "| rejections:", await rejections(rt, "lockable"))  # fmt: skip
        assert isinstance(outcome, Claim) and outcome.epoch == 2
        assert board == status_of(await stream_row(rt, "lockable")) == ("in_progress", "victim", 2)
    finally:
        await rogue.close()
        await honest.close()


async def test_a_raw_dependency_change_the_board_refuses_is_put_back_for_every_reader(
    rt: Runtime, ops: FleetClient
) -> None:
    """A person publishes ``task.dependencies_changed`` raw, making the older task depend on
    the younger, which depends on it. The board refuses it (only older dependencies) by
    publishing the old dependencies again (a corrective ``task.dependencies_changed``), which
    every reader folds: the board and the clients agree, and no cycle stays."""
    await ops.create_task("cyc-a", project="p", title="t")
    await ops.create_task("cyc-b", project="p", title="t", depends_on=["cyc-a"])
    worker = await agent(rt, "cycler")
    try:
        await raw(rt, TaskDependenciesChanged(**envelope("user:mallory"), task="cyc-a",
                                              depends_on=("cyc-b",)))  # fmt: skip
        await project_all(rt)
        board, stream = await board_row(rt, "cyc-a"), await stream_row(rt, "cyc-a")
        assert board is not None and stream is not None
        print("board deps:", board["depends_on"], "client deps:", stream["depends_on"],
              [r["reason"] for r in await rejections(rt, "cyc-a")])  # fmt: skip
        assert board["depends_on"] == []  # holds: the board refuses the cycle
        assert stream["depends_on"] == board["depends_on"]
        await worker.claim("cyc-a")
    finally:
        await worker.close()


async def test_the_operator_cannot_make_a_dependency_cycle(
    rt: Runtime, ops: FleetClient, env: dict[str, str]
) -> None:
    """Holds: the client and the CLI refuse a dependency on a younger task, on itself, and on a
    cancelled one, one line and exit 2, publishing nothing."""
    await ops.create_task("d-a", project="p", title="t")
    await ops.create_task("d-b", project="p", title="t", depends_on=["d-a"])
    await ops.create_task("d-c", project="p", title="t")
    await ops.cancel("d-c")
    for deps, why in ((["d-b"], "created after"), (["d-a"], "itself")):
        target = "d-a"
        with pytest.raises(IntentRefused, match=why):
            await ops.set_dependencies(target, deps)
    with pytest.raises(IntentRefused, match="cancelled"):
        await ops.set_dependencies("d-b", ["d-a", "d-c"])
    before = await last_seq(rt, EVENTS_STREAM)
    code, out, err = await fleetward(env, "tasks", "deps", "d-a", "--set", "d-b")
    assert (code, out) == (2, "") and err.count("\n") == 1 and "created after" in err, err
    assert await last_seq(rt, EVENTS_STREAM) == before


# ---- rebuild, outbox crash, inbox deliveries ----


async def _fleet_with_verdicts_and_commands(rt: Runtime, ops: FleetClient) -> list[AgentClient]:
    """A history with every kind of verdict and inbox command."""
    a = await agent(rt, "rb-a", max_concurrent_tasks=3)
    b = await agent(rt, "rb-b")
    crony = await agent(rt, "rb-crony")
    await ops.create_task("rb-1", project="p", title="t")
    await ops.create_task("rb-2", project="p", title="t", depends_on=["rb-1"])
    await ops.create_task("rb-3", project="p", title="t", required_role="admin")
    await ops.create_task("rb-4", project="p", title="t")
    await project_all(rt)
    await raw(rt, claimed("rb-b", "rb-2", 1))  # refused: dependency not done
    await raw(rt, claimed("rb-b", "rb-3", 1))  # refused: role (the second is over the limit)
    await raw(
        rt,
        TaskCreated(
            **envelope("rb-a"), task="rb-5", project="p", title="t", depends_on=("nowhere",)
        ),
    )  # cancelled: unknown dependency
    c1 = await a.claim("rb-1")
    await a.submit(c1, content="x")
    await crony.send(
        TaskReviewed(**envelope("rb-crony"), task="rb-1", agent="rb-a", verdict="approve")
    )  # refused: not a reviewer
    c4 = await a.claim("rb-4")
    await project_all(rt)
    await ops.review("rb-1", "reject", feedback="more")
    await ops.revoke("rb-4")
    await publish(rt.js, AgentPaused(**envelope("user:ops"), agent="rb-b", reason="x"))
    await project_all(rt)
    assert c4.task == "rb-4"
    return [a, b, crony]


async def test_a_rebuild_of_the_task_board_gives_the_same_rows_and_republishes_nothing(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: after verdicts and commands, rebuilding ``tasks`` (and running everything again)
    gives the same rows, and publishes no event and no inbox command again."""
    clients = await _fleet_with_verdicts_and_commands(rt, ops)
    try:
        async with rt.pool.acquire() as conn:
            kinds = await conn.fetch("SELECT subject, count(*) FROM fleet.outbox GROUP BY 1")
        assert len(kinds) >= 5, kinds
        before = await snapshot(rt, (TaskBoard(),))
        counts = (await last_seq(rt, EVENTS_STREAM), await last_seq(rt, COMMANDS_STREAM))
        await rebuilding.rebuild(rt, TaskBoard())
        await project_all(rt)
        assert (await last_seq(rt, EVENTS_STREAM), await last_seq(rt, COMMANDS_STREAM)) == counts
        after = await snapshot(rt, (TaskBoard(),))
        for table in before:
            assert before[table] == after[table], table
    finally:
        for c in clients:
            await c.close()


async def test_a_crash_between_storing_and_publishing_the_outbox_delivers_each_command_once(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: the projector stores a ``lease_lost`` and dies before publishing it; a new outbox
    publishes it; dying again after publishing and before marking it published publishes it
    again (a duplicate the stream drops). The agent sees it once; so does a second copy stored
    under another message id, for the same client process."""
    worker = await agent(rt, "crashy")
    try:
        await ops.create_task("oc", project="p", title="t")
        await project_all(rt)
        await worker.claim("oc")
        await project_all(rt)
        await ops.revoke("oc")
        await project_all(rt, outbox=False)  # stored, not published: the crash
        before = await last_seq(rt, COMMANDS_STREAM)
        assert await Outbox(rt).publish_once() == 1  # the projector comes back
        async with rt.pool.acquire() as conn:  # ... and crashed before marking it published
            subject, data = await conn.fetchrow(
                "UPDATE fleetward.outbox SET published_at = NULL "
                "WHERE subject LIKE 'fw.cmd.crashy.%' RETURNING subject, data"
            )
        assert await Outbox(rt).publish_once() == 1
        assert await last_seq(rt, COMMANDS_STREAM) == before + 1
        await rt.js.publish(subject, data, headers={"Nats-Msg-Id": "past-the-window"})
        assert await last_seq(rt, COMMANDS_STREAM) == before + 2
        told = await inbox(worker)
        assert [c.command for c in told] == ["lease_lost"]
    finally:
        await worker.close()


async def test_a_command_published_again_past_the_duplicate_window_is_stored_once(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds (was a BUG of low severity): the outbox publishes a command again after a crash
    between publishing and marking it published. Past the stream's duplicate window (the
    projector down for longer: here the window is shortened to half a second and the row
    made ten minutes old), the stream would store a second copy, and a restarted agent, whose
    client remembers command ids only in memory, would act on it again (a second
    ``review_feedback`` for one review). The outbox looks for a late event on its subject
    first (``Outbox._stored_already``): found, it is marked published, not published again."""
    author = await agent(rt, "twice")
    try:
        await ops.create_task("tw", project="p", title="t")
        await project_all(rt)
        c = await author.claim("tw")
        await author.submit(c, content="x")
        await ops.review("tw", "reject", feedback="once")
        await project_all(rt)
        first = await inbox(author)
        assert [x.command for x in first] == ["review_feedback"]
        await author.close()
        await past_the_duplicate_window(rt)  # the server forgets the command's message id
        before = await last_seq(rt, COMMANDS_STREAM)
        async with rt.pool.acquire() as conn:  # the crash: published, never marked
            marked = await conn.execute(
                "UPDATE fleetward.outbox SET published_at = NULL, "
                "created_at = now() - interval '10 minutes' WHERE subject LIKE 'fw.cmd.twice.%'"
            )
        assert marked == "UPDATE 1"
        await project_all(rt)  # the outbox runs again
        assert await last_seq(rt, COMMANDS_STREAM) == before  # no second copy stored
        async with rt.pool.acquire() as conn:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM fleetward.outbox WHERE published_at IS NULL"
            )
        assert waiting == 0
        author = await AgentClient.connect(rt.nats_url, creds(rt, "twice"))  # the agent restarted
        again = await inbox(author)
        print("restarted agent sees:", [(x.command, x.id) for x in again])
        assert again == []
    finally:
        await author.close()


async def test_an_event_waiting_past_the_duplicate_window_and_never_stored_is_published(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: a late event the stream does not hold (NATS was away while it waited) is
    published once, as any other; one stored before it on the subject does not hide it."""
    author = await agent(rt, "late", max_concurrent_tasks=2)
    try:
        for t in ("lt-1", "lt-2"):
            await ops.create_task(t, project="p", title="t")
        await project_all(rt)
        for t in ("lt-1", "lt-2"):
            await author.submit(await author.claim(t), content="x")
        await ops.review("lt-1", "reject", feedback="first")
        await project_all(rt)
        assert [x.reason for x in await inbox(author)] == ["first"]
        await ops.review("lt-2", "reject", feedback="second")
        await project_all(rt, outbox=False)  # stored in the outbox, not published
        async with rt.pool.acquire() as conn:
            late = await conn.execute(
                "UPDATE fleetward.outbox SET created_at = now() - interval '10 minutes' "
                "WHERE published_at IS NULL AND subject LIKE 'fw.cmd.late.%'"
            )
        assert late == "UPDATE 1"
        await project_all(rt)
        assert [(x.command, x.reason) for x in await inbox(author)] == [
            ("review_feedback", "second")
        ]
    finally:
        await author.close()


async def test_commands_read_ahead_by_claim_come_back_when_the_agent_dies(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: ``claim`` first reads the whole inbox (``sync_inbox``) and acts on every command,
    but acknowledges one only when ``next_command`` hands it out. An agent that dies after a
    claim, before asking for its next command, gets the ``review_feedback`` of its rejected
    deliverable again after the restart (redelivered after ``INBOX_REDELIVERY_S``): the
    durable inbox is at least once."""
    author = await agent(rt, "forgetful", max_concurrent_tasks=2)
    try:
        await ops.create_task("fg-1", project="p", title="t")
        await ops.create_task("fg-2", project="p", title="t")
        await project_all(rt)
        c = await author.claim("fg-1")
        await author.submit(c, content="x")
        await ops.review("fg-1", "reject", feedback="the only copy")
        await project_all(rt)
        await author.claim("fg-2")  # reads (and acts on) the inbox first
        await author.close()  # the process dies before asking for its next command
        author = await AgentClient.connect(rt.nats_url, creds(rt, "forgetful"))
        got = await author.next_command(wait=INBOX_REDELIVERY_S + 5)
        print("after the restart:", got)
        assert got is not None and (got.command, got.reason) == ("review_feedback", "the only copy")
        assert await inbox(author) == []
    finally:
        await author.close()


async def test_a_redelivered_command_acts_once_in_one_process(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: the same pause published three times under other message ids is seen once."""
    worker = await agent(rt, "redeliver")
    try:
        await publish(rt.js, AgentPaused(**envelope("user:ops"), agent="redeliver"))
        await project_all(rt)
        async with rt.pool.acquire() as conn:
            subject, data = await conn.fetchrow(
                "SELECT subject, data FROM fleetward.outbox WHERE subject LIKE 'fw.cmd.redeliver.%'"
            )
        for i in range(2):
            await rt.js.publish(subject, data, headers={"Nats-Msg-Id": f"again-{i}"})
        assert [c.command for c in await inbox(worker)] == ["pause"]
        assert worker.paused
    finally:
        await worker.close()


async def test_an_agent_whose_inbox_consumer_was_deleted_re_creates_it_and_obeys(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: someone deletes ``inbox_<agent>`` (an operator cleaning consumers, a stream
    restore) under a running client. The client notices, re-creates its durable inbox from
    after the last command it read, and obeys a ``pause`` sent afterwards: ``next_command``
    returns it and ``claim`` raises AgentPaused."""
    worker = await agent(rt, "orphan")
    try:
        async with api(rt):
            await ops.create_task("orph", project="p", title="t")
            await project_all(rt)
            assert await worker.next_command(wait=0.5) is None  # the inbox is open
            await rt.js.delete_consumer(COMMANDS_STREAM, inbox_durable("orphan"))
            await ops.pause_agent("orphan", reason="stop now")
            await project_all(rt)
            got = await worker.next_command(wait=3)
            outcome: object
            try:
                outcome = await worker.claim("orph")
            except Exception as exc:  # what does it raise?
                outcome = exc
            print("next_command:", got, "| claim:", type(outcome).__name__, outcome)
            assert got is not None and got.command == "pause"
            assert isinstance(outcome, AgentPausedError)
    finally:
        await worker.close()


async def test_an_outbox_stuck_while_nats_is_away_shows_in_healthz(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth: AuthStore
) -> None:
    """Holds: commands stored while the projector ran, then NATS goes away before the outbox
    publishes them: /healthz answers 503 and names NATS, the projector and, once the oldest
    command has waited ``STUCK_S``, the outbox with how many wait and the last error."""
    from fleetward.services.config import Settings  # noqa: PLC0415
    from fleetward.services.projector import outbox as outbox_module  # noqa: PLC0415
    from fleetward.services.runtime.embedded import EmbeddedNats  # noqa: PLC0415
    from fleetward.services.serve import run_services  # noqa: PLC0415
    from tests.helpers import http_get  # noqa: PLC0415

    monkeypatch.setattr(outbox_module, "STUCK_S", 2.0)
    server = EmbeddedNats.start(tmp_path / "nats-away", auth)
    settings = Settings.from_env({"FLEETWARD_NATS_URL": server.url,
                                  "FLEETWARD_DATABASE_URL": database,
                                  "FLEETWARD_HOME": str(tmp_path / "home"),
                                  "FLEETWARD_AUTH_DIR": str(auth.root)})  # fmt: skip
    try:
        # (closing the connection to a server that is gone raises ConnectionResetError)
        with contextlib.suppress(ConnectionResetError):
            await _stuck_outbox(settings, server, run_services, http_get)
    finally:
        server.stop()


async def _stuck_outbox(settings: Any, server: Any, run_services: Any, http_get: Any) -> None:
    from fleetward.projections import ALL  # noqa: PLC0415
    from fleetward.services.runtime.connect import open_runtime  # noqa: PLC0415

    async with open_runtime(settings, identity=as_harness(settings)) as rt:
        await grant_test_admins(rt)
        for i in range(3):
            await publish(rt.js, AgentPaused(**envelope("user:ops"), agent=f"away-{i}"))
        await project_all(rt, outbox=False)
        server.stop()
        ports: list[int] = []

        async def ready(port: int) -> None:
            ports.append(port)

        async def stuck() -> str | None:
            if not ports:
                return None
            code, body = await http_get(ports[0], "/healthz")
            report = json.loads(body)
            return body if code == 503 and not report["checks"]["outbox"]["ok"] else None

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: run_services(rt, ALL, on_ready=ready))
            body = await wait_for(stuck, timeout=60, what="the outbox to be reported stuck")
            tg.cancel_scope.cancel()
        assert body is not None
        report = json.loads(body)
        print(json.dumps(report, indent=1))
        assert not report["checks"]["nats"]["ok"]
        assert "3 event(s) waiting to be published" in report["checks"]["outbox"]["reason"]


# ---- (6) refusals: reaching the right inbox, and only it ----


async def publish_flood(rt: Runtime, subject: str, task: str, victim: str, n: int) -> None:
    """``n`` junk events (no epoch: invalid) and ``n`` stray reports, each naming ``victim`` as
    actor, published on ``subject``."""
    for i in range(n):
        bad = {"type": "task.progressed", "id": f"junk-{task}-{i}", "actor": victim,
               "at": "2026-01-01T00:00:00Z", "task": task, "agent": victim}  # fmt: skip
        await rt.js.publish(subject, json.dumps(bad).encode(), headers={MSG_ID: bad["id"]})
        stray = TaskProgressed(**envelope(victim), task=task, agent=victim, epoch=9)
        await rt.js.publish(subject, encode(stray), headers={MSG_ID: stray.id})


async def test_one_agent_cannot_flood_another_agents_inbox_with_refusals(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds (was a BUG until credentials landed, issue #13 part 1): a refusal goes to the
    subject's actor (the test below), so an agent that could publish on *victim's* subjects
    could fill victim's inbox with durable ``refused`` commands. With its own credentials,
    ``flooder`` tries: 400 junk events on ``fw.task.target.victim`` (half invalid, half
    well-formed reports that do not fit). Each is a permission violation, none is stored,
    victim's inbox stays empty and its next claim works."""
    await ops.create_task("target", project="p", title="t")
    await ops.create_task("work", project="p", title="t")
    victim = await agent(rt, "victim")
    await (await agent(rt, "flooder")).close()  # registered, with credentials
    subject = "fw.task.target.victim"
    try:
        await project_all(rt)
        commands, events = await last_seq(rt, COMMANDS_STREAM), await last_seq(rt, EVENTS_STREAM)
        async with Attacker(rt, "flooder") as flooder:
            for i in range(200):
                bad = {"type": "task.progressed", "id": f"junk-{i}", "actor": "victim",
                       "at": "2026-01-01T00:00:00Z", "task": "target"}  # fmt: skip
                await flooder.nc.publish(subject, json.dumps(bad).encode())
                stray = TaskProgressed(**envelope("victim"), task="target", agent="victim", epoch=9)
                await flooder.nc.publish(subject, encode(stray))
            await flooder.nc.flush()
            assert await flooder.violated(subject)
            assert await flooder.request(subject, encode(stray)) is None  # as a JetStream publish
        await project_all(rt)
        assert await last_seq(rt, EVENTS_STREAM) == events  # nothing stored
        assert await last_seq(rt, COMMANDS_STREAM) == commands  # no refusal for anybody
        assert await inbox(victim) == []
        assert (await victim.claim("work")).task == "work"
    finally:
        await victim.close()


async def test_events_naming_another_actor_on_ones_own_subject_are_refused_to_their_sender(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds (contract v2, issue #13 part 2): ``flooder`` publishes, on its own subjects (all a
    credential will let it), events whose payload names ``victim``: well-formed reports are
    dead-lettered as ``actor_mismatch``, junk as ``invalid``, and every refusal goes to the
    subject's actor, the flooder; victim's inbox stays empty."""
    await ops.create_task("target2", project="p", title="t")
    victim = await agent(rt, "victim2")
    flooder = await agent(rt, "flooder2")
    try:
        await project_all(rt)
        await publish_flood(rt, "fw.task.target2.flooder2", "target2", "victim2", 5)
        await project_all(rt)
        dead = [(d["subject"], d["reason"]) for d in await dead_letters(rt)]
        on = "fw.task.target2.flooder2"
        assert sorted(dead) == [(on, "actor_mismatch")] * 5 + [(on, "invalid")] * 5
        assert await inbox(victim) == []
        told = await inbox(flooder)
        assert len(told) == 10 and {c.command for c in told} == {"refused"}
    finally:
        await victim.close()
        await flooder.close()


async def test_every_review_reaches_the_author_once_whoever_sends_it(
    rt: Runtime, ops: FleetClient, env: dict[str, str]
) -> None:
    """Holds: reviews by a person (client), a person (CLI), a service and a reviewer agent each
    reach the author's inbox exactly once, with verdict and reviewer; a review by an agent
    without the role reaches the author not at all (it is undone) and its sender as refused."""
    author = await agent(rt, "prolific", max_concurrent_tasks=5)
    critic = await agent(rt, "critic9", roles=("reviewer",))
    crony = await agent(rt, "crony9")
    svc = await FleetClient.connect(rt.nats_url, creds(rt, "svc:qa"))
    try:
        tasks = ("rv-ops", "rv-cli", "rv-svc", "rv-agent", "rv-crony")
        for t in tasks:
            await ops.create_task(t, project="p", title=t)
        await project_all(rt)
        for t in tasks:
            await author.submit(await author.claim(t), content=t)
        await ops.review("rv-ops", "reject", feedback="ops")
        code, _, err = await fleetward(env, "tasks", "review", "rv-cli", "--approve")
        assert code == 0, err
        await svc.review("rv-svc", "approve", feedback="svc")
        await critic.review("rv-agent", "reject", feedback="agent")
        await crony.review("rv-crony", "approve", feedback="crony")
        await project_all(rt)
        got = sorted((c.task, c.command, c.payload.get("reviewer")) for c in await inbox(author))
        assert got == [("rv-agent", "review_feedback", "critic9"),
                       ("rv-cli", "review_feedback", "user:alice"),
                       ("rv-ops", "review_feedback", "user:ops"),
                       ("rv-svc", "review_feedback", "svc:qa")]  # fmt: skip
        assert status_of(await board_row(rt, "rv-crony"))[0] == "review"
        told = [(c.command, c.task) for c in await inbox(crony)]
        assert told == [("refused", "rv-crony")]
    finally:
        for c in (author, critic, crony, svc):
            await c.close()


# ---- (4) the CLI as an operator types it ----


async def cli_refused(rt: Runtime, env: dict[str, str], why: str, *args: str) -> None:
    """``fleetward ARGS`` exits 2 with one line naming ``why`` and publishes nothing."""
    before = (await last_seq(rt, EVENTS_STREAM), await last_seq(rt, COMMANDS_STREAM))
    code, out, err = await fleetward(env, *args)
    assert (code, out) == (2, ""), f"fleetward {' '.join(args)}: {code} {out!r} {err!r}"
    assert err.count("\n") == 1 and err.startswith("fleetward: error: "), err
    assert why in err, err
    assert (await last_seq(rt, EVENTS_STREAM), await last_seq(rt, COMMANDS_STREAM)) == before


@pytest.mark.slow
async def test_every_cli_write_the_fleet_would_refuse_fails_at_once(
    rt: Runtime, ops: FleetClient, env: dict[str, str]
) -> None:
    """Holds: each write below exits 2 with one line and publishes nothing."""
    worker = await agent(rt, "cli-w", roles=("writer",))
    try:
        async with api(rt):
            await ops.create_task("c-held", project="p", title="t")
            await ops.create_task("c-open", project="p", title="t")
            await ops.create_task("c-role", project="p", title="t", required_role="admin")
            await ops.create_task("c-done", project="p", title="t")
            await project_all(rt)
            await worker.claim("c-held")
            await ops.cancel("c-done")
            await project_all(rt)
            await cli_refused(rt, env, "held by cli-w", "tasks", "assign", "c-held", "cli-w")
            await cli_refused(rt, env, "no agent ghost", "tasks", "assign", "c-open", "ghost")
            await cli_refused(rt, env, "lacks the role admin", "tasks", "assign", "c-role",
                              "cli-w")  # fmt: skip
            await cli_refused(rt, env, "is cancelled", "tasks", "cancel", "c-done")
            await cli_refused(rt, env, "no task nope", "tasks", "cancel", "nope")
            await cli_refused(rt, env, "not held", "tasks", "revoke", "c-open")
            await cli_refused(rt, env, "already", "tasks", "reassign", "c-held", "cli-w")
            await cli_refused(rt, env, "already exists", "tasks", "create", "c-open",
                              "--project", "p", "--title", "again")  # fmt: skip
            await cli_refused(rt, env, "unknown task(s) nope", "tasks", "create", "c-new",
                              "--project", "p", "--title", "t", "--depends-on", "nope")  # fmt: skip
            await cli_refused(rt, env, "not waiting for review", "tasks", "review", "c-held",
                              "--approve")  # fmt: skip
            await cli_refused(rt, env, "does not depend on", "tasks", "deps", "c-open",
                              "--drop", "c-held")  # fmt: skip
            await cli_refused(rt, env, "no agent ghost", "agents", "pause", "ghost")
            await cli_refused(rt, env, "not paused", "agents", "resume", "cli-w")
            code, _, err = await fleetward(env, "agents", "retire", "cli-w")
            assert code == 0, err
            await project_all(rt)
            await cli_refused(rt, env, "already retired", "agents", "retire", "cli-w")
            await cli_refused(rt, env, "retired", "agents", "pause", "cli-w")
        # without the task API, agent writes say what is missing, still in one line
        await cli_refused(rt, env, "fw.api.agents.get", "agents", "pause", "cli-w")
    finally:
        await worker.close()


async def test_pausing_twice_before_the_registry_catches_up_exits_2(
    rt: Runtime, env: dict[str, str]
) -> None:
    """Fixed (it was a BUG of low severity: registry lag). "Pausing a paused agent" exits 2;
    an agent's state was read from the registry (a projection) alone, so a second ``agents
    pause`` right after the first (the projector not yet through it) exited 0 and published a
    second ``agent.paused`` that changed nothing. Now the operator's client folds the agent's
    lifecycle events stored after the registry's checkpoint (``FleetClient.agent_now``)."""
    worker = await agent(rt, "pp")
    try:
        async with api(rt):
            await project_all(rt)
            code, _, err = await fleetward(env, "agents", "pause", "pp")
            assert code == 0, err
            code, out, err = await fleetward(env, "agents", "pause", "pp")
            assert code == 2, (code, out, err)
            assert err.strip().endswith("agent pp is already paused"), err
            # ... and resuming it, the registry still behind, is not refused as "not paused"
            code, out, err = await fleetward(env, "agents", "resume", "pp")
            assert code == 0, (code, out, err)
    finally:
        await worker.close()


async def test_a_task_cannot_be_created_on_a_cancelled_dependency(
    rt: Runtime, ops: FleetClient, env: dict[str, str]
) -> None:
    """Holds: as ``tasks deps --set`` does, ``tasks create --depends-on`` refuses a cancelled
    dependency ("it would never be done"): one line, exit 2, nothing published, no task."""
    await ops.create_task("gone", project="p", title="t")
    await ops.cancel("gone")
    await project_all(rt)
    await cli_refused(rt, env, "dependency gone is cancelled", "tasks", "create", "orphaned",
                      "--project", "p", "--title", "t", "--depends-on", "gone")  # fmt: skip
    await project_all(rt)
    assert await board_row(rt, "orphaned") is None


async def test_a_reviewer_agent_cannot_keep_its_verdict_from_reaching_the_author(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds (assuming an agent may publish on a subject of FW_COMMANDS naming itself,
    ``fw.cmd.<anyone>.<self>``). The reviewer chooses ``review.id``, but the author's
    ``review_feedback`` is published under an id derived with the deployment's secret and the
    review's stream sequence. The reviewer first puts a message on FW_COMMANDS with the
    Nats-Msg-Id the feedback would have from the review's id alone
    (``deterministic_id(review.id, "inbox")``), then rejects: the feedback is still stored
    and reaches the author's inbox exactly once (promise 6)."""
    await ops.create_task("silenced", project="p", title="t")
    author = await agent(rt, "unheard")
    critic = await agent(rt, "muffler", roles=("reviewer",))
    try:
        await project_all(rt)
        c = await author.claim("silenced")
        await author.submit(c, content="draft")
        review = TaskReviewed(**envelope("muffler"), task="silenced", agent="unheard",
                              verdict="reject", feedback="you will never read this")  # fmt: skip
        guessed = deterministic_id(review.id, "inbox")
        await rt.js.publish("fw.cmd.unheard.muffler", b"{}", headers={"Nats-Msg-Id": guessed})
        await critic.send(review)
        await project_all(rt)
        assert status_of(await board_row(rt, "silenced"))[:2] == ("in_progress", "unheard")
        told = await inbox(author)
        got = [(x.command, x.reason) for x in told]
        print("author's inbox:", got)
        assert got == [("review_feedback", "you will never read this")]
        assert told[0].id != guessed
    finally:
        await author.close()
        await critic.close()


async def test_retiring_an_agent_returns_the_tasks_assigned_to_it(
    rt: Runtime, ops: FleetClient
) -> None:
    """A task assigned (not yet claimed) to an agent that is then retired goes back to the inbox
    (the board's ``task.revoked``), so another agent can claim it."""
    leaver = await agent(rt, "assignee")
    other = await agent(rt, "bystander")
    try:
        async with api(rt):
            await ops.create_task("for-you", project="p", title="t")
            await project_all(rt)
            await ops.assign("for-you", "assignee")
            await project_all(rt)
            await ops.retire_agent("assignee")
            await project_all(rt)
            row = await board_row(rt, "for-you")
            outcome: object
            try:
                outcome = await other.claim("for-you")
            except ClaimLost as exc:
                outcome = exc
            print("after retirement:", status_of(row), "| another agent's claim:", outcome)
            assert isinstance(outcome, Claim)
    finally:
        await leaver.close()
        await other.close()


# ---- (7) dead ends ----


async def test_a_dependency_cancelled_by_the_board_shows_as_a_cancelled_dependency(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: a task the board cancels (created with an unknown dependency) and one an operator
    cancels, both after the dependent was created on them (creation refuses a cancelled
    dependency), show in the dependent's ``cancelled_dependencies`` (which keeps it waiting),
    and the client refuses to claim it; dropping them clears the dead end."""
    planner = await agent(rt, "planner7")
    worker = await agent(rt, "worker7")
    try:
        await raw(rt, TaskCreated(**envelope("planner7"), task="doomed", project="p", title="t",
                                  depends_on=("never-made",)))  # fmt: skip
        await ops.create_task("dropped", project="p", title="t")
        # created before the board's verdict on "doomed" is stored: not cancelled yet
        await ops.create_task("waits", project="p", title="t", depends_on=["doomed", "dropped"])
        await project_all(rt)
        assert status_of(await board_row(rt, "doomed"))[0] == "cancelled"
        await ops.cancel("dropped")
        await project_all(rt)
        row = await board_row(rt, "waits")
        assert row is not None
        assert row["cancelled_dependencies"] == ["doomed", "dropped"]
        assert row["waiting_on_dependencies"]
        with pytest.raises(ClaimLost, match="waiting on dependencies"):
            await worker.claim("waits")
        await ops.drop_dependencies("waits", ["doomed", "dropped"])
        await project_all(rt)
        row = await board_row(rt, "waits")
        assert row is not None and row["cancelled_dependencies"] == []
        assert (await worker.claim("waits")).epoch == 1
    finally:
        await planner.close()
        await worker.close()
