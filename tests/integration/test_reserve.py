"""Reservations (issue 14, part 4) against a real nats-server and Postgres: agents reserving at
once against one budget through two guard replicas never get more than its remainder; a
reservation no spend settles expires and its amount returns; a spend naming one settles it; a
restarted guard keeps the open reservations and grants nothing twice."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import anyio
import pytest
from nats.js import JetStreamContext

from fleetward.schemas.api import BUDGETS_RESERVE, ReserveRequest
from fleetward.schemas.events import BudgetReleased, BudgetReserved, Event
from fleetward.services.client.agent import AgentClient, Reservation
from fleetward.services.config import Settings
from fleetward.services.errors import ApiRefused, ReservationRefused
from fleetward.services.guard import service
from fleetward.services.guard.service import Guard
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime, open_runtime
from tests.helpers import as_harness, creds, project_all, wait_for
from tests.integration.test_guard import budget, by_guard, guarding, register, settled, spend


@contextlib.asynccontextmanager
async def clients(rt: Runtime, names: list[str]) -> AsyncIterator[list[AgentClient]]:
    """One connection per agent, as its own credentials (the guard answers only there)."""
    connected = [await AgentClient.connect(rt.nats_url, creds(rt, n)) for n in names]
    try:
        yield connected
    finally:
        for client in connected:
            await client.close()


async def reserved_usd(rt: Runtime, budget_id: str) -> Decimal:
    with anyio.fail_after(60):
        await project_all(rt)
    async with rt.pool.acquire() as conn:
        found: Decimal = await conn.fetchval(
            "SELECT reserved_usd FROM fleet.budgets WHERE budget_id = $1", budget_id
        )
    return found


async def try_reserve(agent: AgentClient, usd: float, ttl_s: float) -> Reservation | str:
    try:
        async with agent.reserve(usd=usd, ttl_s=ttl_s) as r:
            return r
    except ReservationRefused as exc:
        return str(exc)


async def test_fifty_agents_reserving_at_once_through_two_guards_never_exceed_the_remainder(
    rt: Runtime, settings: Settings
) -> None:
    team = [f"r-{i:02d}" for i in range(50)]
    await publish_many(rt.js, [
        *(register(a, "crew") for a in team), budget("crew-day", "team", "crew", 10.0),
        spend("r-00", 1.0),
    ])  # fmt: skip
    with anyio.fail_after(60):
        await project_all(rt)
    results: dict[str, Reservation | str] = {}
    async with (
        open_runtime(settings, identity=as_harness(settings)) as rt2,
        clients(rt, team) as agents,
    ):
        a, b = Guard(rt, name="guard_a"), Guard(rt2, name="guard_b")
        async with guarding(a, b):

            async def one(agent: AgentClient) -> None:
                results[agent.agent] = await try_reserve(agent, 0.5, 600.0)

            async with anyio.create_task_group() as tg:
                for agent in agents:
                    tg.start_soon(one, agent)
            await settled(a, b)
            granted = [r for r in results.values() if isinstance(r, Reservation)]
            refused = [r for r in results.values() if isinstance(r, str)]
            assert len(results) == len(team)
            assert all("budget crew-day has" in r for r in refused), refused
            assert all(r.budgets == ("crew-day",) for r in granted)
            # 9 USD remain; every grant is stored, once, and they fit
            stored = await by_guard(rt, BudgetReserved)
            assert sorted(e.reservation for e in stored) == sorted(r.reservation for r in granted)
            assert sum(Decimal(str(e.usd)) for e in stored) <= Decimal(9)
            assert len(granted) == 18, f"{len(granted)} granted: the budget was not used up"
            assert await by_guard(rt, BudgetReleased) == []
            # both replicas answered (which one grants is the queue group's draw)
            assert sum(a.reservations.values()) > 0 and sum(b.reservations.values()) > 0
            assert a.reservations["moved"] + b.reservations["moved"] > 0, "no race: proves nothing"

            assert await reserved_usd(rt, "crew-day") == Decimal(9)


async def test_an_unsettled_reservation_expires_a_settled_one_is_released_and_a_restart_keeps_them(
    rt: Runtime,
) -> None:
    await publish_many(rt.js, [
        register("x1", "solo"), register("x2", "solo"), budget("solo-day", "team", "solo", 3.0),
    ])  # fmt: skip
    with anyio.fail_after(60):
        await project_all(rt)
    async with clients(rt, ["x1", "x2"]) as (x1, x2):
        guard = Guard(rt, name="guard_1")
        async with guarding(guard):
            long = await try_reserve(x1, 2.0, 600.0)
            short = await try_reserve(x2, 0.5, 1.0)
            assert isinstance(long, Reservation) and isinstance(short, Reservation)
            assert "has 0.5 USD left" in str(await try_reserve(x2, 0.6, 600.0))

            async def expired() -> list[BudgetReleased]:
                return await by_guard(rt, BudgetReleased)

            [released] = await wait_for(expired, 10, "the expiry")
            assert (released.reservation, released.reason, released.usd) == (
                short.reservation, "expired", 0.5,
            )  # fmt: skip
            await settled(guard)
            assert await reserved_usd(rt, "solo-day") == Decimal(2)  # the checkpoint moves on

        # a restart: the open reservation still holds (read from the guard's budget subjects)
        again = Guard(rt, name="guard_2")
        async with guarding(again):
            assert again.core.budgets["solo-day"].reserved_usd() == Decimal(2)
            assert "has 1.0 USD left" in str(await try_reserve(x2, 1.5, 600.0))
            await x1.spend(model="m", cost_usd=1.2, reservation=long.reservation)

            async def settled_one() -> bool:
                return any(e.reason == "settled" for e in await by_guard(rt, BudgetReleased))

            await wait_for(settled_one, 10, "the settlement")
            await settled(again)
            assert await reserved_usd(rt, "solo-day") == 0
            # 3.0 - 1.2 spent: 1.8 left, nothing held twice
            assert isinstance(await try_reserve(x2, 1.8, 600.0), Reservation)
            assert "budget solo-day" in str(await try_reserve(x1, 0.01, 600.0))
            await settled(again)
        releases = await by_guard(rt, BudgetReleased)
        assert sorted(e.reason for e in releases) == ["expired", "settled"]
        assert len(await by_guard(rt, BudgetReserved)) == 3


async def test_an_agent_reserves_only_for_itself(rt: Runtime) -> None:
    await publish_many(rt.js, [register("x1", "solo"), register("x2", "solo")])
    async with clients(rt, ["x2"]) as (impostor,):
        guard = Guard(rt, name="guard_1")
        async with guarding(guard):
            with pytest.raises(ApiRefused, match="only agent x1 may reserve for itself"):
                await impostor.ask(BUDGETS_RESERVE, ReserveRequest(agent="x1", usd=1.0))


async def test_a_reservation_holds_every_budget_in_scope_and_a_part_refused_is_given_back(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish_many(rt.js, [
        register("m1", "duo"), budget("a-team", "team", "duo", 5.0),
        budget("z-org", "org", "acme", 100.0),
    ])  # fmt: skip
    real = service.publish
    raced: list[str] = []

    async def racing(js: JetStreamContext, event: Event, **kw: Any) -> Any:
        """Someone sets z-org again just before the guard's first reservation there."""
        if isinstance(event, BudgetReserved) and event.budget == "z-org" and not raced:
            raced.append(event.reservation)
            await real(js, budget("z-org", "org", "acme", 100.0))
        return await real(js, event, **kw)

    monkeypatch.setattr(service, "publish", racing)
    async with clients(rt, ["m1"]) as (m1,):
        guard = Guard(rt, name="guard_1")
        async with guarding(guard):
            granted = await try_reserve(m1, 2.0, 600.0)
            assert isinstance(granted, Reservation)
            assert granted.budgets == ("a-team", "z-org")  # sorted by id
            [first] = raced
            assert granted.reservation != first and guard.reservations["moved"] == 1

            async def given_back() -> list[BudgetReleased]:
                return await by_guard(rt, BudgetReleased)

            [released] = await wait_for(given_back, 10, "the refused part given back")
            assert (released.budget, released.reservation, released.reason) == (
                "a-team", first, "refused",
            )  # fmt: skip
            await settled(guard)
            assert await reserved_usd(rt, "a-team") == Decimal(2)
            assert await reserved_usd(rt, "z-org") == Decimal(2)
            assert "budget a-team has 3.0 USD left" in str(await try_reserve(m1, 3.5, 600.0))


async def test_the_guard_on_its_own_credentials_serves_reservations(
    rt: Runtime, settings: Settings
) -> None:
    await publish_many(rt.js, [register("c1", "own"), budget("own-day", "team", "own", 1.0)])
    with anyio.fail_after(60):
        await project_all(rt)
    async with (
        open_runtime(settings, identity="svc:guard", prepare=False) as grt,
        clients(rt, ["c1"]) as (c1,),
    ):
        guard = Guard(grt, name="guard_own")
        async with guarding(guard):
            granted = await try_reserve(c1, 0.75, 1.0)
            assert isinstance(granted, Reservation) and granted.budgets == ("own-day",)

            async def expired() -> list[BudgetReleased]:
                return await by_guard(rt, BudgetReleased)

            [released] = await wait_for(expired, 10, "the expiry, published as svc:guard")
            assert released.reason == "expired"
            await settled(guard)
