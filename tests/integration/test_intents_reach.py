"""Every intent takes effect or fails visibly (issue 12), from the agent's side: claims settled by
the claim's identity, reports fenced, refusals and feedback that reach the sender whoever it is,
pauses and retirements that act. Real nats-server and Postgres; the projector's outbox is
published by ``project_all``."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from fleetward.schemas.events import TaskClaimed, TaskLeaseExpired, TaskReviewed
from fleetward.schemas.streams import COMMANDS_STREAM
from fleetward.services.api.tasks import serve_task_api
from fleetward.services.client import AgentClient, Claim, ClaimLost, FleetClient
from fleetward.services.client.claims import AgentPaused
from fleetward.services.client.taskstate import read_task
from fleetward.services.jetstream.publish import publish
from fleetward.services.runtime.connect import Runtime
from tests.helpers import HARNESS, agent, creds, envelope, project_all
from tests.raw_nats import Raw, publish_raw


async def task_row(rt: Runtime, task: str) -> dict[str, object]:
    async with rt.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM fleet.tasks WHERE task_id = $1", task)
    assert row is not None
    return dict(row)


async def commands(client: AgentClient) -> list[tuple[str, str | None, str]]:
    """Every command waiting in ``client``'s inbox: (command, task, reason)."""
    out = []
    while (cmd := await client.next_command(wait=0.5)) is not None:
        out.append((cmd.command, cmd.task, cmd.reason))
    return out


async def claim_into(client: AgentClient, task: str, out: list[object]) -> None:
    """Claim ``task`` and append the claim, or the ``ClaimLost`` it raised, to ``out``."""
    try:
        out.append(await client.claim(task))
    except ClaimLost as exc:
        out.append(exc)


async def test_two_processes_of_one_agent_never_both_win_a_claim(
    rt: Runtime, ops: FleetClient
) -> None:
    """Both compute the same epoch; the claim's event id settles which one stored it."""
    first = await agent(rt, "twin")
    second = await AgentClient.connect(rt.nats_url, creds(rt, "twin"))
    try:
        for i in range(5):
            task = f"twin-{i}"
            await ops.create_task(task, project="p", title=task)
            results: list[object] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(claim_into, first, task, results)
                tg.start_soon(claim_into, second, task, results)
            won = [r for r in results if not isinstance(r, ClaimLost)]
            assert len(won) == 1, results
            for c in (first, second):  # free the single slot for the next round
                for held in list(c.claims.values()):
                    await c.release(held)
    finally:
        await first.close()
        await second.close()


async def test_concurrent_claims_of_one_agent_stay_within_its_limit(
    rt: Runtime, ops: FleetClient
) -> None:
    worker = await agent(rt, "single", max_concurrent_tasks=1)
    try:
        for i in range(5):
            for t in ("a", "b"):
                await ops.create_task(f"lim-{i}-{t}", project="p", title=t)
            results: list[object] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(claim_into, worker, f"lim-{i}-a", results)
                tg.start_soon(claim_into, worker, f"lim-{i}-b", results)
            won = [r.task for r in results if isinstance(r, Claim)]
            lost = [r.task for r in results if isinstance(r, ClaimLost)]
            assert len(won) == 1 and len(lost) == 1, results
            await project_all(rt)
            loser = await task_row(rt, lost[0])
            assert loser["status"] == "inbox"  # the losing task was never taken
            await worker.release(worker.claims[won[0]])
    finally:
        await worker.close()


async def test_a_displaced_holder_is_told_and_its_reports_raise(
    rt: Runtime, ops: FleetClient
) -> None:
    await ops.create_task("lapse", project="p", title="t")
    worker = await agent(rt, "slow")
    try:
        claim = await worker.claim("lapse")
        expired = TaskLeaseExpired(**envelope("svc:watchdog"), task="lapse", agent="slow",
                                   epoch=claim.epoch)  # fmt: skip
        await publish(rt.js, expired)
        with pytest.raises(ClaimLost, match="no longer this agent's"):
            await worker.submit(claim, content="too late")
        assert "lapse" not in worker.claims
        await project_all(rt)
        assert ("lease_lost", "lapse", "the lease expired") in await commands(worker)
        assert (await task_row(rt, "lapse"))["status"] == "inbox"
    finally:
        await worker.close()


async def test_a_revoked_holder_is_told_and_the_task_goes_where_the_operator_said(
    rt: Runtime, ops: FleetClient
) -> None:
    await ops.create_task("rv", project="p", title="t")
    worker = await agent(rt, "held")
    other = await agent(rt, "next")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_task_api, rt)
            claim = await worker.claim("rv")
            await project_all(rt)
            await ops.reassign("rv", "next", reason="rebalancing")
            with pytest.raises(ClaimLost):
                await worker.progress(claim, "still on it")
            await project_all(rt)
            row = await task_row(rt, "rv")
            assert (row["status"], row["assignee"]) == ("assigned", "next")
            told = await commands(worker)
            assert [(c, t) for c, t, _ in told] == [("lease_lost", "rv")]
            taken = await other.claim("rv")
            assert taken.epoch == claim.epoch + 1
            tg.cancel_scope.cancel()
    finally:
        await worker.close()
        await other.close()


async def test_a_reviewer_agents_verdict_reaches_the_author(rt: Runtime, ops: FleetClient) -> None:
    await ops.create_task("rev", project="p", title="t")
    author = await agent(rt, "author")
    reviewer = await agent(rt, "critic", roles=("reviewer",))
    try:
        claim = await author.claim("rev")
        await author.submit(claim, content="draft")
        review = TaskReviewed(**envelope("critic"), task="rev", agent="author", verdict="reject",
                              feedback="cite your sources")  # fmt: skip
        await reviewer.send(review)
        await project_all(rt)
        cmd = await author.next_command(wait=5)
        assert cmd is not None and cmd.command == "review_feedback"
        assert (cmd.task, cmd.reason, cmd.payload["verdict"]) == ("rev", "cite your sources",
                                                                    "reject")  # fmt: skip
        assert cmd.payload["reviewer"] == "critic"
        author.rework(claim)
        await author.progress(claim, "adding sources")  # the rework is still this claim
    finally:
        await author.close()
        await reviewer.close()


async def test_a_paused_agent_cannot_claim_and_a_resumed_one_can(
    rt: Runtime, ops: FleetClient
) -> None:
    await ops.create_task("pz", project="p", title="t")
    worker = await agent(rt, "pausable")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_task_api, rt)
            await project_all(rt)
            await ops.pause_agent("pausable", reason="too many errors")
            await project_all(rt)
            with pytest.raises(AgentPaused, match="paused"):
                await worker.claim("pz")
            assert worker.paused
            # a claim that skips the client's check is overruled by the board
            raw = TaskClaimed(**envelope("pausable"), task="pz", agent="pausable", epoch=1)
            await publish(rt.js, raw)
            await project_all(rt)
            assert (await task_row(rt, "pz"))["status"] == "inbox"
            state = await read_task(rt.nc, rt.js, "pz")
            assert state.row is not None and state.row["status"] == "inbox"
            await ops.resume_agent("pausable")
            await project_all(rt)
            claim = await worker.claim("pz")
            assert claim.epoch == 2 and not worker.paused
            tg.cancel_scope.cancel()
    finally:
        await worker.close()


async def test_retiring_an_agent_ends_its_leases(rt: Runtime, ops: FleetClient) -> None:
    await ops.create_task("rt1", project="p", title="t")
    worker = await agent(rt, "leaver")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_task_api, rt)
            await worker.claim("rt1")
            await project_all(rt)
            await ops.retire_agent("leaver", reason="replaced")
            await project_all(rt)
            row = await task_row(rt, "rt1")
            assert (row["status"], row["assignee"]) == ("inbox", None)
            told = [(c, t) for c, t, _ in await commands(worker)]
            assert ("retire", None) in told and ("lease_lost", "rt1") in told
            assert worker.retired and "rt1" not in worker.claims
            tg.cancel_scope.cancel()
    finally:
        await worker.close()


async def test_a_cancelled_dependency_is_a_visible_dead_end(rt: Runtime, ops: FleetClient) -> None:
    await ops.create_task("base", project="p", title="t")
    await ops.create_task("top", project="p", title="t", depends_on=["base"])
    await ops.cancel("base", reason="not needed")
    await project_all(rt)
    row = await task_row(rt, "top")
    assert row["cancelled_dependencies"] == ["base"] and row["waiting_on_dependencies"]


async def test_an_agent_in_any_language_reads_its_refusals_from_the_inbox(
    rt: Runtime, ops: FleetClient
) -> None:
    """A raw NATS client publishes a bad event and a report that does not fit, then reads its
    inbox with the JetStream API alone (JSON over core NATS requests)."""
    await ops.create_task("poly-task", project="p", title="t")
    bad_spend = b'{"type":"spend.recorded","id":"x1","actor":"poly","at":"2026-01-01T00:00:00Z",'
    bad_spend += b'"agent":"poly","model":"m","cost_usd":-5}'
    stray = envelope("poly") | {"type": "task.progressed", "task": "poly-task", "agent": "poly",
                                "epoch": 3, "at": "2026-01-01T00:00:00Z"}  # fmt: skip
    # contract v2: each on a subject naming its actor
    acks = await publish_raw(rt.nats_url, creds=creds(rt, HARNESS), messages=[
        Raw(b"fw.agent.poly.poly", bad_spend),
        Raw(b"fw.task.poly-task.poly", msgspec.json.encode(stray)),
    ])  # fmt: skip
    assert all("seq" in a for a in acks), acks
    await project_all(rt)

    # the inbox as docs/agents.md creates it: the explicit-filter form a permission can pin
    consumer = {"stream_name": COMMANDS_STREAM, "config": {
        "durable_name": "inbox_poly", "filter_subject": "fw.cmd.poly.>",
        "ack_policy": "explicit", "deliver_policy": "all"}}  # fmt: skip
    created = await rt.nc.request(
        f"$JS.API.CONSUMER.CREATE.{COMMANDS_STREAM}.inbox_poly.fw.cmd.poly.>",
        msgspec.json.encode(consumer),
    )
    assert "error" not in msgspec.json.decode(created.data)
    mismatch = consumer | {"config": consumer["config"] | {"filter_subject": "fw.cmd.>"}}
    refused = await rt.nc.request(
        f"$JS.API.CONSUMER.CREATE.{COMMANDS_STREAM}.inbox_poly.fw.cmd.poly.>",
        msgspec.json.encode(mismatch),
    )
    assert "error" in msgspec.json.decode(refused.data)  # the subject pins the filter
    inbox = rt.nc.new_inbox()
    sub = await rt.nc.subscribe(inbox)
    await rt.nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{COMMANDS_STREAM}.inbox_poly",
                        b'{"batch": 10, "expires": 2000000000}', reply=inbox)  # fmt: skip
    got = []
    while len(got) < 2:
        msg = await sub.next_msg(timeout=5)
        if msg.data:
            got.append(msgspec.json.decode(msg.data))
    await sub.unsubscribe()
    assert {c["command"] for c in got} == {"refused"}
    reasons = sorted(c["reason"] for c in got)
    assert reasons[0].startswith("epoch 3 of poly is not the current claim"), reasons
    assert reasons[1].startswith("invalid"), reasons
    assert any(c["payload"].get("event") == stray["id"] for c in got)
