"""The guard (issue 14, part 3) against a real nats-server and Postgres: a hard limit pauses
every agent in scope and none out of it (their claims are refused), a raised limit resumes
exactly the agents the guard paused (not one an operator paused meanwhile), one warning per
window, two replicas publish everything once, and a restarted guard re-derives its state."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
from anyio.abc import TaskGroup

from fleetward.schemas.admission import Rejected, admit
from fleetward.schemas.events import (
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    BudgetExhausted,
    BudgetRestored,
    BudgetSet,
    EscalationRaised,
    Event,
    SpendRecorded,
    TaskClaimed,
    TaskCreated,
)
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.services.config import Settings
from fleetward.services.guard.core import BUDGET_WARNING, GUARD
from fleetward.services.guard.service import Guard
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime, open_runtime
from tests.helpers import as_harness, envelope, project_all, wait_for

OPS = "user:ops"


def register(agent: str, team: str) -> AgentRegistered:
    return AgentRegistered(**envelope(agent), agent=agent, name=agent, owner="o", team=team)


def spend(agent: str, cost: float, **kw: Any) -> SpendRecorded:
    return SpendRecorded(**envelope(agent), agent=agent, model="m", cost_usd=cost, **kw)


def budget(budget_id: str, scope: str, scope_id: str, limit: float, **kw: Any) -> BudgetSet:
    return BudgetSet(**envelope(OPS), budget=budget_id, scope=scope, scope_id=scope_id,
                     window="day", limit_usd=limit, **kw)  # fmt: skip


async def stored(rt: Runtime) -> list[Event]:
    """Every readable event of FW_EVENTS, in order."""
    info = await rt.js.stream_info(EVENTS_STREAM)
    events = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await rt.js.get_msg(EVENTS_STREAM, seq, direct=True)
        with contextlib.suppress(Rejected):
            events.append(admit(msg.subject, msg.data or b""))
    return events


async def by_guard(rt: Runtime, kind: type[Event]) -> list[Any]:
    return [e for e in await stored(rt) if isinstance(e, kind) and e.actor == GUARD]


@contextlib.asynccontextmanager
async def guarding(*guards: Guard) -> AsyncIterator[TaskGroup]:
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        for guard in guards:
            tg.start_soon(guard.run, stop.is_set)
        for guard in guards:
            await guard.signals.wait_for(lambda g=guard: g.core.ready, 30, "the guard to catch up")
        yield tg
        stop.set()


async def settled(*guards: Guard) -> None:
    """Every plan in hand published (plans are made as events are read: wait a moment)."""

    async def idle() -> bool:
        return all(g.publisher.in_flight == 0 for g in guards)

    await anyio.sleep(0.3)
    await wait_for(idle, 10, "the guards to finish publishing")


async def paused_agents(rt: Runtime) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in await by_guard(rt, AgentPaused):
        counts[e.agent] = counts.get(e.agent, 0) + 1
    return counts


async def test_a_hard_limit_pauses_its_scope_and_a_raise_resumes_exactly_the_guards_pauses(
    rt: Runtime,
) -> None:
    await publish_many(rt.js, [
        register("a1", "docs"), register("a2", "docs"), register("a3", "ops"),
        TaskCreated(**envelope(OPS), task="t1", project="alpha", title="one"),
        spend("a1", 0.1), budget("docs-day", "team", "docs", 1.0, warn_at=0.5),
    ])  # fmt: skip
    with anyio.fail_after(60):
        await project_all(rt)
    guard = Guard(rt)
    async with guarding(guard):
        await publish_many(rt.js, [spend("a2", 0.45)])  # 0.55 of 1.0: a warning

        async def warned() -> list[Any]:
            return await by_guard(rt, EscalationRaised)

        [warning] = await wait_for(warned, 10, "the warning")
        assert warning.reason == BUDGET_WARNING and warning.tier == "warning"
        assert warning.evidence["owner"] == OPS and warning.evidence["budget"] == "docs-day"
        assert await paused_agents(rt) == {}

        await publish_many(rt.js, [spend("a1", 0.5)])  # 1.05: exhausted

        async def both_paused() -> bool:
            return set(await paused_agents(rt)) == {"a1", "a2"}

        await wait_for(both_paused, 10, "the team's pauses")
        await settled(guard)
        [exhausted] = await by_guard(rt, BudgetExhausted)
        assert (exhausted.budget, exhausted.spent_usd, exhausted.limit_usd) == (
            "docs-day", 1.05, 1.0,
        )  # fmt: skip
        assert await paused_agents(rt) == {"a1": 1, "a2": 1}  # a3 (ops) out of scope

        # their new claims are refused (the pause rule of the board)
        await publish_many(rt.js, [TaskClaimed(**envelope("a1"), task="t1", agent="a1", epoch=1)])
        with anyio.fail_after(60):
            await project_all(rt)
        async with rt.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT status, paused_by FROM fleet.agents WHERE agent_id = 'a1'"
            )
            task = await conn.fetchval("SELECT status FROM fleet.tasks WHERE task_id = 't1'")
        assert tuple(row) == ("paused", GUARD)
        assert task == "inbox"

        # an operator pauses a2 meanwhile: theirs now; raising the limit resumes a1 only
        await publish_many(rt.js, [
            AgentPaused(**envelope(OPS), agent="a2", reason="looking into it"),
            budget("docs-day", "team", "docs", 5.0, warn_at=0.5),
        ])  # fmt: skip

        async def resumed() -> list[Any]:
            return await by_guard(rt, AgentResumed)

        await wait_for(resumed, 10, "the resume")
        await settled(guard)
        assert [e.agent for e in await by_guard(rt, AgentResumed)] == ["a1"]
        [restored] = await by_guard(rt, BudgetRestored)
        assert restored.reason == "limit_raised"
        assert len(await by_guard(rt, EscalationRaised)) == 1  # one warning per window


async def test_two_guards_publish_one_exhaustion_and_one_pause_per_agent_and_a_restart_re_derives(
    rt: Runtime, settings: Settings
) -> None:
    team = [f"w-{i:02d}" for i in range(30)]
    await publish_many(rt.js, [
        *(register(a, "big") for a in team), register("other", "small"),
        budget("big-day", "team", "big", 1.0),
    ])  # fmt: skip
    with anyio.fail_after(60):
        await project_all(rt)
    async with open_runtime(settings, identity=as_harness(settings)) as rt2:
        a, b = Guard(rt, name="guard_a"), Guard(rt2, name="guard_b")
        async with guarding(a, b):
            await publish_many(rt.js, [spend(w, 0.05) for w in team])  # 1.5 of 1.0

            async def all_paused() -> bool:
                return len(await paused_agents(rt)) == len(team)

            await wait_for(all_paused, 15, "every pause")
            await settled(a, b)
            assert len(await by_guard(rt, BudgetExhausted)) == 1
            assert await paused_agents(rt) == dict.fromkeys(team, 1)
            stored_ = a.publisher.outcomes["stored"] + b.publisher.outcomes["stored"]
            raced = a.publisher.outcomes["duplicate"] + b.publisher.outcomes["duplicate"]
            assert stored_ == 1 + len(team) + 1  # exhaustion, pauses, the warning
            assert raced > 0, "the replicas never raced: the test proves nothing"

    # a restart: the state comes from the projections and the stream, nothing is done twice
    with anyio.fail_after(60):
        await project_all(rt)
    again = Guard(rt, name="guard_c")
    async with guarding(again):
        await publish_many(rt.js, [spend("w-00", 0.01)])
        await settled(again)
        assert again.core.budgets["big-day"].exhausted is not None
        assert again.publisher.outcomes["stored"] == 0
        assert await paused_agents(rt) == dict.fromkeys(team, 1)
        await publish_many(rt.js, [budget("big-day", "team", "big", 10.0)])

        async def all_resumed() -> bool:
            return len(await by_guard(rt, AgentResumed)) == len(team)

        await wait_for(all_resumed, 15, "every resume")
        await settled(again)
        assert sorted(e.agent for e in await by_guard(rt, AgentResumed)) == team
