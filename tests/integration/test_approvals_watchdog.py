"""Approval deadlines through the real watchdog (issue 15): a request no one decides is escalated
to the approvers (``approval_overdue``) at its first deadline, once, across a watchdog restart,
and denied at its second; the stored denial reaches the agent, whose client raises
``ApprovalExpired``. The watchdog's denial is stored only on an open request (compare-and-set
over its subjects): a person who decides first keeps the decision, and the watchdog's denial is
not stored at all."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import anyio
import pytest
from nats.js.errors import NotFoundError

from fleetward.schemas import decode
from fleetward.schemas.events import (
    ApprovalDenied,
    ApprovalRequested,
    EscalationRaised,
    EscalationResolved,
)
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.services.client import ApprovalExpired, FleetClient
from fleetward.services.client.approvals import GateState, read_gate
from fleetward.services.jetstream.publish import publish
from fleetward.services.runtime.connect import Runtime
from fleetward.services.watchdog.core.approvals import ApprovalDeadlines, escalation_of
from fleetward.services.watchdog.core.incidents import Escalations, Plan
from fleetward.services.watchdog.escalate import Publisher
from fleetward.services.watchdog.service import Watchdog
from tests.helpers import agent, envelope, project_all, wait_for
from tests.integration.test_watchdog import FAST, running


@contextlib.asynccontextmanager
async def projecting(rt: Runtime) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """The projections (and their outbox: decisions to agents' inboxes) applied every 0.2 s
    while the block runs, as the projector would; it yields a function that applies them now
    (one runner at a time: two would move each other's checkpoints)."""
    lock = anyio.Lock()

    async def project() -> None:
        async with lock:
            await project_all(rt)

    async with anyio.create_task_group() as tg:

        async def loop() -> None:
            while True:
                await project()
                await anyio.sleep(0.2)

        tg.start_soon(loop)
        try:
            yield project
        finally:
            tg.cancel_scope.cancel()


async def _stored_on(rt: Runtime, subject: str) -> list[object]:
    """Every event stored on ``subject`` (a wildcard) of FW_EVENTS, in order."""
    info = await rt.js.stream_info(EVENTS_STREAM)
    out: list[object] = []
    for seq in range(1, (info.state.last_seq or 0) + 1):
        with contextlib.suppress(NotFoundError):
            msg = await rt.js.get_msg(EVENTS_STREAM, seq)
            if _matches(msg.subject, subject):
                out.append(decode(msg.data or b""))
    return out


def _matches(subject: str, pattern: str) -> bool:
    s, p = subject.split("."), pattern.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(s) == len(p)


async def test_the_watchdog_escalates_once_across_a_restart_then_denies_and_the_agent_raises(
    rt: Runtime,
) -> None:
    a = await agent(rt, "slow-a")
    outcome: list[BaseException] = []
    try:
        async with projecting(rt) as project, anyio.create_task_group() as tg:

            async def ask() -> None:
                try:
                    await a.approval(kind="action", name="deploy", summary="ship it",
                                     escalate_after_s=1.0, expire_after_s=5.0)  # fmt: skip
                except ApprovalExpired as exc:
                    outcome.append(exc)

            tg.start_soon(ask)

            async def requested() -> ApprovalRequested | None:
                with contextlib.suppress(NotFoundError):
                    msg = await rt.js.get_last_msg(EVENTS_STREAM, "fw.approval.*.slow-a")
                    event = decode(msg.data or b"")
                    return event if isinstance(event, ApprovalRequested) else None
                return None

            request = await wait_for(requested, 10, "the request")
            esc = escalation_of(request.approval)
            await project()
            first = Watchdog(rt, FAST, name="wd_first")
            async with running(rt, first) as (rec, _):

                async def overdue() -> list[EscalationRaised]:
                    return [e for e in rec.escalations("slow-a") if e.escalation == esc]

                [raised] = await wait_for(overdue, 15, "the approval_overdue escalation")
            assert raised.reason == "approval_overdue" and raised.tier == "warning"
            assert raised.evidence["notify"] == "approver"
            assert raised.actor == "svc:watchdog" and not outcome  # still open, still waiting

            await project()  # the restarted watchdog loads the escalation as open
            second = Watchdog(rt, FAST, name="wd_second")
            async with running(rt, second) as (rec2, _):
                await wait_for(lambda: _true(outcome), 20, "the agent's client to raise")

                async def resolved() -> list[EscalationResolved]:
                    return [e for e in rec2.of(EscalationResolved) if e.escalation == esc]

                await wait_for(resolved, 10, "the escalation resolved")
            assert second.publisher.outcomes["stored"] >= 2  # the denial, the resolution
    finally:
        await a.close()
    [expired] = outcome
    assert isinstance(expired, ApprovalExpired) and expired.by == "svc:watchdog"
    on_request = await _stored_on(rt, f"fw.approval.{request.approval}.>")
    assert [type(e) for e in on_request] == [ApprovalRequested, ApprovalDenied]
    denial = on_request[1]
    assert isinstance(denial, ApprovalDenied) and denial.expired
    raises = [e for e in await _stored_on(rt, f"fw.esc.{esc}.>") if isinstance(e, EscalationRaised)]
    assert len(raises) == 1, raises  # the restart judged it once
    async with rt.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT state, decided_by, expired FROM fleet.approvals WHERE approval_id = $1",
            request.approval,
        )
    assert row is not None and tuple(row) == ("denied", "svc:watchdog", True)


async def _true(items: list[BaseException]) -> bool:
    return bool(items)


async def _expiry_plan(rt: Runtime, approval: str, agent_id: str) -> Plan:
    """The watchdog's core's plan at the request's second deadline (its clock passed in)."""
    request = ApprovalRequested(**envelope(agent_id), approval=approval, agent=agent_id,
                                kind="action", name="deploy", escalate_after_s=0.1,
                                expire_after_s=0.1)  # fmt: skip
    await publish(rt.js, request)
    deadlines = ApprovalDeadlines(Escalations())
    deadlines.event(request, datetime.now(UTC), 0.0)
    gate = deadlines.gates[approval]
    [plan] = deadlines.due(gate.expires.timestamp() + 1, lambda _: True)
    assert [type(s.event) for s in plan.steps] == [ApprovalDenied]
    assert plan.steps[0].expect == "gate"
    return plan


Reader = Callable[[str], Awaitable[GateState]]


def _publisher(rt: Runtime, reader: Reader | None = None) -> Publisher:
    return Publisher(
        rt.js, on_stored=lambda *_: None, on_closed=lambda _: None,
        read_gate=reader or (lambda approval: read_gate(rt.nc, approval)),
    )  # fmt: skip


async def test_a_person_who_decides_first_keeps_the_decision_and_the_watchdogs_is_not_stored(
    rt: Runtime, ops: FleetClient
) -> None:
    plan = await _expiry_plan(rt, "race-1", "race-a")
    await ops.decide("race-1", grant=True, reason="just in time")  # between plan and publish
    publisher = _publisher(rt)
    await publisher.execute(plan)
    assert publisher.outcomes == {"closed": 1}
    with pytest.raises(NotFoundError):  # not stored, so not dead-lettered either
        await rt.js.get_last_msg(EVENTS_STREAM, "fw.approval.race-1.svc:watchdog")
    await project_all(rt)
    async with rt.pool.acquire() as conn:
        state = await conn.fetchval(
            "SELECT state FROM fleet.approvals WHERE approval_id = 'race-1'"
        )
        dead = await conn.fetchval(
            "SELECT count(*) FROM fleet.dead_letters WHERE projection = 'approvals'"
        )
    assert (state, dead) == ("granted", 0)


async def test_the_watchdogs_denial_lands_on_an_open_request_after_a_write_in_between(
    rt: Runtime,
) -> None:
    """Something stored on the request's subjects between the watchdog's read and its publish
    (here another agent's refused request under the same id) fails the compare-and-set; the
    request read again is still open, so the denial is stored on top. Another replica's
    publish of the same plan then finds it done (a duplicate), stored once."""
    plan = await _expiry_plan(rt, "race-2", "race-b")
    reads = 0

    async def meddling(approval: str) -> GateState:
        nonlocal reads
        state = await read_gate(rt.nc, approval)
        reads += 1
        if reads == 1:
            squat = ApprovalRequested(**envelope("intruder"), approval=approval,
                                      agent="intruder", kind="action", name="x")  # fmt: skip
            await publish(rt.js, squat)
        return state

    publisher = _publisher(rt, meddling)
    await publisher.execute(plan)
    assert (publisher.outcomes, reads) == ({"stored": 1}, 2)
    replica = _publisher(rt)
    await replica.execute(plan)
    assert replica.outcomes == {"duplicate": 1}
    on_request = await _stored_on(rt, "fw.approval.race-2.>")
    assert [type(e) for e in on_request] == [ApprovalRequested, ApprovalRequested, ApprovalDenied]
    await project_all(rt)
    async with rt.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT state, decided_by, expired FROM fleet.approvals WHERE approval_id = 'race-2'"
        )
    assert row is not None and tuple(row) == ("denied", "svc:watchdog", True)
