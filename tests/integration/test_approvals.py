"""Approval gates and tool policies against real servers (issue 15): a gated tool call waits for
a person's approval; a grant lets it run and names the approver and the policy version; a
denial and an expiry refuse it and the client raises; nobody decides their own request; a
person without the role approver is refused at once by the CLI; a denied tool called anyway
(a raw event, as an agent in another language might send it) becomes a violation and an
escalation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import anyio
import pytest

from fleetward.projections.gates import Gate
from fleetward.schemas import decode
from fleetward.schemas.events import ApprovalGranted, ApprovalRequested, ToolCalled
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.services.client import (
    AgentClient,
    ApprovalExpired,
    ApprovalRefused,
    FleetClient,
    IntentRefused,
    ToolDenied,
)
from fleetward.services.jetstream.publish import publish
from fleetward.services.runtime.connect import Runtime
from fleetward.services.watchdog.core.approvals import ApprovalDeadlines
from fleetward.services.watchdog.core.incidents import Escalations
from tests.helpers import agent, creds, envelope, person, project_all, task_api, wait_for
from tests.integration.test_cli_tasks import CLI, ROOT


async def _requested(rt: Runtime, who: str) -> ApprovalRequested:
    """The last approval request of agent ``who`` on the stream (waits for one)."""

    async def found() -> ApprovalRequested | None:
        try:
            msg = await rt.js.get_last_msg(EVENTS_STREAM, f"fw.approval.*.{who}")
        except Exception:  # none yet
            return None
        event = decode(msg.data or b"")
        return event if isinstance(event, ApprovalRequested) else None

    return await wait_for(found, what=f"an approval request of {who}")


async def _gated_call(
    rt: Runtime, a: AgentClient, decide: Callable[[str], Awaitable[object]]
) -> tuple[list[str], BaseException | None, ApprovalRequested]:
    """Call the gated tool ``payments.send`` as ``a``; once its request is stored (and the tool
    has not run), ``decide`` it; project until the call ends. What ran, what it raised."""
    ran: list[str] = []
    raised: list[BaseException] = []

    async def call() -> None:
        try:
            async with a.tool("payments.send", summary="refund order 7") as c:
                ran.append("payments.send")
                c.cost_usd = 0.5
        except (ApprovalRefused, ToolDenied) as exc:
            raised.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        request = await _requested(rt, a.agent)
        assert ran == []  # it waits for the decision
        await decide(request.approval)

        async def ended() -> bool:
            await project_all(rt)  # the decision reaches the inbox through the outbox
            return bool(ran or raised)

        await wait_for(ended, what="the gated call to end")
    return ran, (raised[0] if raised else None), request


async def _ops(rt: Runtime) -> FleetClient:
    return await FleetClient.connect(rt.nats_url, creds(rt, "user:ops"))


async def test_a_gated_tool_call_waits_and_runs_once_a_person_grants_it(rt: Runtime) -> None:
    async with task_api(rt):
        a, ops = await agent(rt, "gate-a"), await _ops(rt)
        try:
            _, version = await ops.set_policy("agent", "gate-a", approve=("payments.send",))
            assert version == 1
            await project_all(rt)

            async def grant(approval: str) -> object:
                return await ops.decide(approval, grant=True, reason="refund agreed")

            ran, raised, request = await _gated_call(rt, a, grant)
            assert (ran, raised) == (["payments.send"], None)
            await project_all(rt)
            async with rt.pool.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT * FROM fleet.approvals WHERE approval_id = $1", request.approval
                )
                violations = await conn.fetchval("SELECT count(*) FROM fleet.policy_violations")
            assert row is not None
            assert (row["state"], row["decided_by"], row["reason"]) == (
                "granted", "user:ops", "refund agreed")  # fmt: skip
            assert row["policy_version"] == 1 and row["policy_id"].startswith("agent-")
            assert row["used_by"] is not None  # the call named it
            assert violations == 0
            with pytest.raises(IntentRefused, match="granted already"):
                await ops.decide(request.approval, grant=False, reason="too late")
        finally:
            await a.close()
            await ops.close()


async def test_a_denied_request_refuses_the_call_and_names_the_approver(rt: Runtime) -> None:
    async with task_api(rt):
        a, ops = await agent(rt, "gate-b"), await _ops(rt)
        try:
            await ops.set_policy("team", "t", approve=("payments.send",))
            await project_all(rt)

            async def deny(approval: str) -> object:
                return await ops.decide(approval, grant=False, reason="not this one")

            ran, raised, _ = await _gated_call(rt, a, deny)
            assert ran == []
            assert isinstance(raised, ApprovalRefused) and not isinstance(raised, ApprovalExpired)
            assert (raised.by, raised.reason) == ("user:ops", "not this one")
        finally:
            await a.close()
            await ops.close()


async def test_an_expired_request_is_denied_by_the_watchdog_and_the_client_raises(
    rt: Runtime,
) -> None:
    """The watchdog's core plans the escalation at the first deadline and the denial at the
    second (its clock is passed in: no waiting); the plan's denial, stored, reaches the agent."""
    async with task_api(rt):
        a, ops = await agent(rt, "gate-c"), await _ops(rt)
        try:
            await ops.set_policy("agent", "gate-c", approve=("payments.send",))
            await project_all(rt)
            deadlines = ApprovalDeadlines(Escalations())

            async def expire(approval: str) -> object:
                msg = await rt.js.get_last_msg(EVENTS_STREAM, f"fw.approval.{approval}.>")
                request = decode(msg.data or b"")
                assert isinstance(request, ApprovalRequested)
                stored = msg.time if hasattr(msg, "time") else datetime.now(UTC)
                deadlines.event(request, stored, 0.0)
                gate: Gate = deadlines.gates[approval]
                first = deadlines.due(gate.deadline.timestamp(), lambda _: True)
                assert [p.raised.reason for p in first if p.raised] == ["approval_overdue"]
                second = deadlines.due(gate.expires.timestamp(), lambda _: True)
                for plan in second:
                    for step in plan.steps:
                        await publish(rt.js, step.event)
                return second

            ran, raised, _ = await _gated_call(rt, a, expire)
            assert ran == []
            assert isinstance(raised, ApprovalExpired) and raised.by == "svc:watchdog"
        finally:
            await a.close()
            await ops.close()


async def test_nobody_decides_their_own_request(rt: Runtime) -> None:
    async with task_api(rt):
        a = await agent(rt, "gate-d", roles=("approver",))
        try:
            request = ApprovalRequested(**envelope("gate-d"), approval="own-1", agent="gate-d",
                                        kind="action", name="deploy")  # fmt: skip
            await a.send(request)
            with pytest.raises(IntentRefused, match="may not decide its own request"):
                await a.decide("own-1", grant=True)
            # sent anyway, as a client in another language could: refused, request still open
            await a.send(ApprovalGranted(**envelope("gate-d"), approval="own-1", agent="gate-d"))
            await project_all(rt)
            async with rt.pool.acquire() as conn:
                state = await conn.fetchval(
                    "SELECT state FROM fleet.approvals WHERE approval_id = 'own-1'"
                )
                reasons = await conn.fetch(
                    "SELECT reason, detail FROM fleet.dead_letters WHERE projection = 'approvals'"
                )
            assert state == "open"
            assert [r["reason"] for r in reasons] == ["actor_forbidden"]
            assert "may not decide its own request" in reasons[0]["detail"]
        finally:
            await a.close()


async def test_a_person_without_the_approver_role_is_refused_at_once(
    rt: Runtime, env: dict[str, str]
) -> None:
    await publish(rt.js, ApprovalRequested(**envelope("gate-e"), approval="cli-1", agent="gate-e",
                                           kind="action", name="deploy"))  # fmt: skip
    before = (await rt.js.stream_info(EVENTS_STREAM)).state.last_seq
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [*CLI, "approve", "cli-1"], cwd=ROOT, check=False,
            env=env | {"FLEETWARD_CREDS": str(person(env, "carl"))},
        )  # fmt: skip
    err = done.stderr.decode()
    assert done.returncode == 2 and done.stdout == b"", err
    assert err.count("\n") == 1 and err.startswith("fleetward: error: "), err
    assert "does not hold the role 'approver'" in err
    assert (await rt.js.stream_info(EVENTS_STREAM)).state.last_seq == before


async def test_a_denied_tool_called_anyway_is_a_violation_and_an_escalation(rt: Runtime) -> None:
    async with task_api(rt):
        a, ops = await agent(rt, "gate-f", risk_class="high"), await _ops(rt)
        try:
            await ops.set_policy("risk", "high", deny=("shell.exec",))
            await project_all(rt)
            with pytest.raises(ToolDenied, match=r"shell\.exec is denied"):
                async with a.tool("shell.exec"):
                    pass
            # a raw event, as an agent in another language might publish it
            await a.send(ToolCalled(**envelope("gate-f"), agent="gate-f", tool="shell.exec",
                                    duration_ms=3.0, ok=True))  # fmt: skip
            await project_all(rt)
            async with rt.pool.acquire() as conn:
                v = await conn.fetchrow("SELECT * FROM fleet.policy_violations")
                esc = await conn.fetchrow(
                    "SELECT * FROM fleet.escalations WHERE reason = 'policy_violation'"
                )
            assert v is not None and (v["agent_id"], v["tool"], v["kind"]) == (
                "gate-f", "shell.exec", "denied")  # fmt: skip
            assert v["policy_version"] == 1
            assert esc is not None and esc["escalation_id"] == v["escalation_id"]
            assert (esc["tier"], esc["agent_id"], esc["state"]) == ("critical", "gate-f", "open")
        finally:
            await a.close()
            await ops.close()
