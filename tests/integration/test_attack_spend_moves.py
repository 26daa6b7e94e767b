"""Attacks on the guard's reservations through team moves (issue 14, promise 2: with
reservations, a budget's overshoot is bounded by one step's estimation error, not by
concurrency, team moves included). Real nats-server, Postgres and guard; the agents use only
their own credentials."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anyio

from fleetward.schemas.events import BudgetReleased, BudgetReserved
from fleetward.services.client.agent import Reservation
from fleetward.services.guard.service import Guard
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import project_all, wait_for
from tests.integration.test_guard import budget, by_guard, guarding, register, settled
from tests.integration.test_reserve import clients, reserved_usd, try_reserve


async def spent_usd(rt: Runtime, budget_id: str) -> tuple[Decimal, Decimal, str]:
    with anyio.fail_after(60):
        await project_all(rt)
    async with rt.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT spent_usd, limit_usd, state FROM fleet.budgets WHERE budget_id = $1",
            budget_id,
        )
    return row["spent_usd"], row["limit_usd"], row["state"]


async def test_reservations_that_do_not_fit_the_team_an_agent_moves_into_are_revoked(
    rt: Runtime,
) -> None:
    """An attacker run: one agent reserved 16 x $5 where it had room (team `rich`), moved itself
    to team `poor` ($10 a day), and every reservation was carried there: poor-day held $80 on
    $10, and each spend named a reservation ($80 recorded). Now a carried reservation is judged
    as a grant: two fit poor-day, the other 14 are revoked (released `refused` everywhere), so
    poor-day never holds more than it has; the spends naming them count after the fact, as any
    spend without a reservation (README, Guard: known gaps), and the guard stops the scope."""
    await publish_many(rt.js, [
        register("mover", "rich"), register("bystander", "poor"),
        budget("rich-day", "team", "rich", 1000.0), budget("poor-day", "team", "poor", 10.0),
    ])  # fmt: skip
    with anyio.fail_after(60):
        await project_all(rt)
    async with clients(rt, ["mover", "bystander"]) as (mover, bystander):
        guard = Guard(rt, name="guard_1")
        async with guarding(guard):
            held = [await try_reserve(mover, 5.0, 600.0) for _ in range(16)]
            assert all(isinstance(r, Reservation) for r in held), held
            await mover.send(register("mover", "poor"))  # its own registration: a move

            async def revoked() -> list[BudgetReleased]:
                return [e for e in await by_guard(rt, BudgetReleased) if e.reason == "refused"]

            await wait_for(lambda: _count(revoked, 14), 20, "14 reservations revoked")
            await settled(guard)
            on_poor = [e for e in await by_guard(rt, BudgetReserved) if e.budget == "poor-day"]
            assert len(on_poor) == 2
            assert guard.core.budgets["poor-day"].reserved_usd() == Decimal(10)
            assert "budget poor-day has 0" in str(await try_reserve(bystander, 1.0, 600.0))
            for r in held:
                assert isinstance(r, Reservation)
                await mover.spend(model="m", cost_usd=5.0, reservation=r.reservation)
            await settled(guard)
            await wait_for(lambda: _paused(rt, "mover"), 10, "the mover paused")
    assert await reserved_usd(rt, "poor-day") == 0
    assert await reserved_usd(rt, "rich-day") == 0  # settled or revoked: nothing left held


async def _count(read: Any, n: int) -> bool:
    return len(await read()) >= n


async def _paused(rt: Runtime, agent: str) -> bool:
    with anyio.fail_after(60):
        await project_all(rt)
    async with rt.pool.acquire() as conn:
        status = await conn.fetchval("SELECT status FROM fleet.agents WHERE agent_id = $1", agent)
    return bool(status == "paused")


async def test_agents_moving_together_into_a_team_carry_only_what_its_budget_has(
    rt: Runtime,
) -> None:
    """An attacker run: 10 agents, each with one $5 reservation granted in its own team, moved
    into team `poor` ($10) at once; every reservation was carried ($50 held on $10). Now only
    what poor-day has room for is carried, in stream order; the rest are revoked."""
    names = [f"mv-{i}" for i in range(10)]
    await publish_many(rt.js, [
        *(register(a, "rich") for a in names),
        budget("rich-day", "team", "rich", 1000.0), budget("poor-day", "team", "poor", 10.0),
    ])  # fmt: skip
    with anyio.fail_after(60):
        await project_all(rt)
    async with clients(rt, names) as agents:
        guard = Guard(rt, name="guard_1")
        async with guarding(guard):
            held = [await try_reserve(a, 5.0, 600.0) for a in agents]
            assert all(isinstance(r, Reservation) for r in held), held
            async with anyio.create_task_group() as tg:
                for i, agent in enumerate(agents):
                    tg.start_soon(agent.send, register(names[i], "poor"))

            async def revoked() -> list[BudgetReleased]:
                return [e for e in await by_guard(rt, BudgetReleased) if e.reason == "refused"]

            await wait_for(lambda: _count(revoked, 8), 20, "8 reservations revoked")
            await settled(guard)
            on_poor = [e for e in await by_guard(rt, BudgetReserved) if e.budget == "poor-day"]
            assert sum(e.usd for e in on_poor) == 10.0
    assert await reserved_usd(rt, "poor-day") == Decimal(10)


async def test_a_reservation_carried_while_others_reserve_on_the_new_budget_is_stored_there(
    rt: Runtime,
) -> None:
    """A carried reservation is one `budget.reserved` planned with compare-and-set on the new
    budget. If a grant to another agent is stored there first, the plan is 'moved' and dropped,
    and nothing plans it again: the hold lives only in this replica's memory. fleet.budgets
    and a restarted guard then hold less than the guard promised: the carried dollars are
    granted a second time."""
    busy = [f"busy-{i}" for i in range(6)]
    movers = [f"mover-{i}" for i in range(30)]
    await publish_many(rt.js, [
        *(register(a, "beta") for a in busy), *(register(a, "alpha") for a in movers),
        budget("alpha-day", "team", "alpha", 1000.0), budget("beta-day", "team", "beta", 1000.0),
    ])  # fmt: skip
    with anyio.fail_after(60):
        await project_all(rt)
    stop = anyio.Event()
    async with clients(rt, busy + movers) as everyone:
        by_name = {a.agent: a for a in everyone}
        guard = Guard(rt, name="guard_1")
        async with guarding(guard):
            held = {m: await try_reserve(by_name[m], 1.0, 600.0) for m in movers}
            assert all(isinstance(r, Reservation) for r in held.values()), held

            async def churn(name: str) -> None:  # ordinary traffic on beta-day
                while not stop.is_set():
                    await try_reserve(by_name[name], 0.01, 0.3)

            async with anyio.create_task_group() as tg:
                for b in busy:
                    tg.start_soon(churn, b)
                await anyio.sleep(0.5)
                for m in movers:
                    await by_name[m].send(register(m, "beta"))
                    await anyio.sleep(0.1)
                await anyio.sleep(1.0)
                stop.set()
            await anyio.sleep(2.0)  # the churn's reservations expire (ttl 0.3 s)
            await settled(guard)
            on_beta = {e.reservation for e in await by_guard(rt, BudgetReserved)
                       if e.budget == "beta-day"}  # fmt: skip
            missing = [m for m, r in held.items()
                       if isinstance(r, Reservation) and r.reservation not in on_beta]  # fmt: skip
            in_guard = guard.core.budgets["beta-day"].reserved_usd()
        view = await reserved_usd(rt, "beta-day")
        again = Guard(rt, name="guard_2")
        async with guarding(again):
            after_restart = again.core.budgets["beta-day"].reserved_usd()
    assert missing == [], (
        f"carried reservations never stored on beta-day: {missing}; the guard held ${in_guard}"
        f" there, fleet.budgets.reserved_usd=${view}, a restarted guard ${after_restart}"
    )
