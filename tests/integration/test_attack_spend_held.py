"""Probes of the guard's promises that held (issue 14, promises 1 and 4), kept as passing
tests: a role-less person cannot reserve or release in an agent's name; an agent naming
another agent's reservation in its spend settles nothing; junk on an agent's own subjects
is counted and stalls nothing. Real nats-server, Postgres and guard."""

from __future__ import annotations

import contextlib

import anyio
import msgspec
import nats
from nats.errors import NoRespondersError, TimeoutError

from fleetward.schemas.api import BUDGETS_RELEASE, BUDGETS_RESERVE, ReleaseRequest, ReserveRequest
from fleetward.schemas.events import BudgetReleased, BudgetReserved
from fleetward.services.client.agent import Reservation
from fleetward.services.guard.service import Guard
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import creds, project_all
from tests.integration.test_guard import budget, by_guard, guarding, register, settled, spend
from tests.integration.test_reserve import clients, try_reserve


async def test_a_person_without_roles_cannot_reserve_or_release_for_an_agent(rt: Runtime) -> None:
    await publish_many(rt.js, [register("h1", "held"), budget("held-day", "team", "held", 5.0)])
    with anyio.fail_after(60):
        await project_all(rt)
    errors: list[Exception] = []

    async def err(exc: Exception) -> None:
        errors.append(exc)

    eve = await nats.connect(rt.nats_url, user_credentials=str(creds(rt, "user:eve")),
                             inbox_prefix="_INBOX_user:eve", error_cb=err)  # fmt: skip
    async with clients(rt, ["h1"]) as (h1,):
        guard = Guard(rt, name="guard_1")
        async with guarding(guard):
            mine = await try_reserve(h1, 1.0, 600.0)
            assert isinstance(mine, Reservation)
            for subj, body in (
                (BUDGETS_RESERVE.subject_for("h1"), ReserveRequest(usd=4.0)),
                (BUDGETS_RELEASE.subject_for("h1"), ReleaseRequest(reservation=mine.reservation)),
            ):
                for reply in ("_INBOX_h1.x", "_INBOX_user:eve.x"):
                    await eve.publish(subj, msgspec.json.encode(body), reply=reply)
                with contextlib.suppress(TimeoutError, NoRespondersError):
                    await eve.request(subj, msgspec.json.encode(body), timeout=1.0)
            await eve.flush()
            await anyio.sleep(1.0)
            await settled(guard)
            assert [e.reservation for e in await by_guard(rt, BudgetReserved)] == [mine.reservation]
            assert await by_guard(rt, BudgetReleased) == []
            assert any("permissions violation" in str(e).lower() for e in errors), errors
    await eve.close()


async def test_naming_another_agents_reservation_and_junk_on_its_own_subject_change_nothing(
    rt: Runtime,
) -> None:
    await publish_many(rt.js, [
        register("o1", "own"), register("o2", "own"), budget("own-day", "team", "own", 5.0),
    ])  # fmt: skip
    with anyio.fail_after(60):
        await project_all(rt)
    async with clients(rt, ["o1", "o2"]) as (o1, o2):
        guard = Guard(rt, name="guard_1")
        async with guarding(guard):
            victim = await try_reserve(o1, 4.0, 600.0)
            assert isinstance(victim, Reservation)
            # o2 names o1's reservation in its spend: it must settle (free) nothing
            await o2.spend(model="m", cost_usd=0.0, reservation=victim.reservation)
            for junk in (b"not json", b"[" * 100_000, b'{"type":"spend.recorded"}',
                         b'{"type":"spend.recorded","cost_usd":1e999}'):  # fmt: skip
                await o2.nc.publish("fw.agent.o2.o2", junk)
            await publish_many(rt.js, [spend("o2", 0.5)])
            await o2.nc.flush()
            await anyio.sleep(1.0)
            await settled(guard)
            assert guard.core.budgets["own-day"].reserved_usd() == 4
            assert "has 0.5 USD left" in str(await try_reserve(o2, 0.75, 600.0))
            assert isinstance(await try_reserve(o2, 0.25, 600.0), Reservation)
            assert guard.rejected >= 4
