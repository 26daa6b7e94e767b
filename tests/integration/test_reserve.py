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
import msgspec
import pytest
from nats.js import JetStreamContext

from fleetward.schemas.api import BUDGETS_RELEASE, BUDGETS_RESERVE, ReleaseRequest, ReserveRequest
from fleetward.schemas.events import BudgetReleased, BudgetReserved, Event, TaskCreated
from fleetward.schemas.ids import new_id
from fleetward.services.client.agent import AgentClient, Reservation
from fleetward.services.config import Settings
from fleetward.services.errors import ApiRefused
from fleetward.services.guard import service
from fleetward.services.guard.service import Guard
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime, open_runtime
from tests.helpers import as_harness, creds, envelope, project_all, wait_for
from tests.integration.test_guard import (
    OPS as OPS_PERSON,
)
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


async def try_reserve(agent: AgentClient, usd: float, ttl_s: float, **kw: Any) -> Reservation | str:
    """Ask for a reservation and keep it (the raw API: ``agent.reserve`` gives it back when its
    block ends); the error's text when refused."""
    try:
        reply = await agent.ask(BUDGETS_RESERVE, ReserveRequest(usd=usd, ttl_s=ttl_s, **kw))
    except ApiRefused as exc:
        return str(exc)
    assert reply.reservation is not None and reply.expires_at is not None
    return Reservation(reply.reservation, usd, reply.budgets, reply.expires_at)


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

        # a restart: the open reservation still holds (read from fleetward.reservations)
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
    await publish_many(rt.js, [
        register("x1", "solo"), register("x2", "solo"), budget("solo-day", "team", "solo", 3.0),
    ])  # fmt: skip
    with anyio.fail_after(60):
        await project_all(rt)
    async with clients(rt, ["x2"]) as (impostor,):
        guard = Guard(rt, name="guard_1")
        async with guarding(guard):
            # naming another agent in its own request: refused by the guard
            with pytest.raises(ApiRefused, match="names agent x1 but was sent by x2"):
                await impostor.ask(BUDGETS_RESERVE, ReserveRequest(agent="x1", usd=1.0))
            # asking on x1's subject, with a reply on x1's inbox: refused by the server (x2's
            # credentials may not publish there), so nothing is reserved in x1's name
            request = msgspec.json.encode(ReserveRequest(usd=3.0, ttl_s=86_400.0))
            await impostor.nc.publish(
                BUDGETS_RESERVE.subject_for("x1"), request, reply="_INBOX_x1.stolen"
            )
            await impostor.nc.flush()
            await anyio.sleep(0.5)
            await settled(guard)
            assert await by_guard(rt, BudgetReserved) == []
            assert sum(guard.reservations.values()) == 0


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
        """Another replica stores a reservation on z-org just before the guard's first there
        (a person's budget.set there would not hold the guard up: only the guard's own subject
        is compared)."""
        if isinstance(event, BudgetReserved) and event.budget == "z-org" and not raced:
            raced.append(event.reservation)
            await real(js, budget("z-org", "org", "acme", 100.0))  # moves nothing the guard sees
            other = msgspec.structs.replace(event, id=new_id(), reservation="other-replica",
                                            usd=1.0)  # fmt: skip
            await real(js, other)
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
            assert await reserved_usd(rt, "z-org") == Decimal(3)  # 2 + the other replica's 1
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


async def test_the_clients_block_gives_back_what_it_did_not_spend_and_a_repeated_key_holds_once(
    rt: Runtime,
) -> None:
    await publish_many(rt.js, [register("k1", "keys"), budget("keys-day", "team", "keys", 5.0)])
    with anyio.fail_after(60):
        await project_all(rt)
    async with clients(rt, ["k1"]) as (k1,):
        guard = Guard(rt, name="guard_1")
        async with guarding(guard):
            async with k1.reserve(usd=4.0) as unspent:  # nothing spent: given back at the end
                assert "has 1.0 USD left" in str(await try_reserve(k1, 2.0, 600.0))
            assert guard.core.budgets["keys-day"].reserved_usd() == 0  # answered once folded
            async with k1.reserve(usd=4.0) as paid:
                await k1.spend(model="m", cost_usd=3.5, reservation=paid.reservation)
            # the same key twice (a retry after a timeout): one reservation, stored once
            first = await try_reserve(k1, 0.5, 600.0, key="retry-1")
            again = await try_reserve(k1, 0.5, 600.0, key="retry-1")
            assert isinstance(first, Reservation) and isinstance(again, Reservation)
            assert first.reservation == again.reservation
            # not its own reservation, or gone already: refused at once
            with pytest.raises(ApiRefused, match="holds no open reservation"):
                await k1.ask(BUDGETS_RELEASE, ReleaseRequest(reservation=unspent.reservation))
            with pytest.raises(ApiRefused, match="bad request"):  # dust is no reservation
                await k1.ask(BUDGETS_RESERVE, ReserveRequest(usd=5e-324))
            await settled(guard)
        reasons = {e.reservation: e.reason for e in await by_guard(rt, BudgetReleased)}
        assert reasons == {unspent.reservation: "returned", paid.reservation: "settled"}
        reserved = [e.reservation for e in await by_guard(rt, BudgetReserved)]
        assert sorted(reserved) == sorted(
            [unspent.reservation, paid.reservation, first.reservation]
        )
        assert await reserved_usd(rt, "keys-day") == Decimal("0.5")
        async with rt.pool.acquire() as conn:
            rows = await conn.fetch("SELECT reservation, released_reason, open "
                                    "FROM fleet.reservations")  # fmt: skip
        assert {r["reservation"]: (r["released_reason"], r["open"]) for r in rows} == {
            unspent.reservation: ("returned", False), paid.reservation: ("settled", False),
            first.reservation: (None, True),
        }  # fmt: skip


async def test_a_reservation_follows_its_agent_into_another_team_and_a_task_names_its_project(
    rt: Runtime,
) -> None:
    """An attacker run recorded $18 on a $10 team budget: a reservation granted on team A was
    spent after a move to team B, whose budget never held it; and a spend on a project's task
    was never reserved on the project's budget."""
    await publish_many(rt.js, [
        register("v1", "alpha"), register("v2", "beta"), budget("alpha-day", "team", "alpha", 10.0),
        budget("beta-day", "team", "beta", 10.0), budget("site-day", "project", "site", 3.0),
        TaskCreated(**envelope(OPS_PERSON), task="T-9", title="t", project="site"),
    ])  # fmt: skip
    with anyio.fail_after(60):
        await project_all(rt)
    async with clients(rt, ["v1", "v2"]) as (v1, v2):
        guard = Guard(rt, name="guard_1")
        async with guarding(guard):
            held = await try_reserve(v1, 6.0, 600.0)
            assert isinstance(held, Reservation) and held.budgets == ("alpha-day",)
            await v1.send(register("v1", "beta"))  # a move with the reservation open

            async def carried() -> bool:
                return any(e.budget == "beta-day" for e in await by_guard(rt, BudgetReserved))

            await wait_for(carried, 10, "the reservation carried to beta-day")
            assert "budget beta-day has 4.0 USD left" in str(await try_reserve(v2, 5.0, 600.0))
            # naming a task: its project's budget is held too, and judged
            assert "budget site-day has 3.0 USD left" in str(
                await try_reserve(v2, 3.5, 600.0, task="T-9")
            )
            on_site = await try_reserve(v2, 2.5, 600.0, task="T-9")
            assert isinstance(on_site, Reservation)
            assert on_site.budgets == ("beta-day", "site-day")
            await settled(guard)
        assert await reserved_usd(rt, "beta-day") == Decimal("8.5")
        assert await reserved_usd(rt, "site-day") == Decimal("2.5")


async def test_a_flood_on_a_budgets_subjects_by_someone_else_holds_no_reservation_up(
    rt: Runtime,
) -> None:
    """An attacker run: a person with no role flooding fw.budget.<id>.<person> moved the
    sequence every grant compared on, so reservations timed out while grants were stored.
    Grants now compare only on the guard's own subject of the budget."""
    await publish_many(rt.js, [register("f1", "fl"), budget("fl-day", "team", "fl", 100.0)])
    with anyio.fail_after(60):
        await project_all(rt)
    stop = anyio.Event()

    async def flood() -> None:
        while not stop.is_set():
            await publish_many(
                rt.js, [budget("fl-day", "team", "fl", 1.0) for _ in range(20)]
            )  # fmt: skip  (as user:ops: stored; the guard must not wait on them)

    async with clients(rt, ["f1"]) as (f1,):
        guard = Guard(rt, name="guard_1")
        async with guarding(guard), anyio.create_task_group() as tg:
            tg.start_soon(flood)
            results = [await try_reserve(f1, 0.01, 600.0) for _ in range(10)]
            stop.set()
        assert guard.reservations["moved"] == 0
        assert all(isinstance(r, Reservation) or "budget fl-day" in r for r in results), results
