"""Attacks on the reservations' idempotency key (issue 14, promises 6 and 7): a key used again
once its reservation ended. Real nats-server, Postgres and guard."""

from __future__ import annotations

import contextlib
import time
from decimal import Decimal

import anyio

from fleetward.schemas.api import BUDGETS_RELEASE, ReleaseRequest
from fleetward.schemas.events import BudgetReleased, BudgetReserved
from fleetward.services.client.agent import AgentClient, Reservation
from fleetward.services.errors import ApiRefused
from fleetward.services.guard.service import Guard
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import project_all, wait_for
from tests.integration.test_guard import budget, by_guard, guarding, register, settled
from tests.integration.test_reserve import clients, reserved_usd, try_reserve


async def test_a_key_used_again_after_its_reservation_ended_is_refused_and_holds_nothing(
    rt: Runtime,
) -> None:
    """An attacker run: an agent that names its steps (key "step-1", run after run) asked with
    the same key once the first reservation had expired and the stream's duplicate window (2
    minutes) had passed. The second grant was stored under the same reservation id, which the
    guard counted as released already: it held $9 of a $10 budget for as long as it ran, while
    fleet.budgets said nothing was reserved, and releases waited on each other 5 s. Now a key
    whose reservation ended is refused, at once or after a restart (its id is in
    fleet.reservations), and requests are answered side by side."""
    await publish_many(rt.js, [
        register("k1", "keys"), register("k2", "keys"), budget("keys-day", "team", "keys", 10.0),
    ])  # fmt: skip
    with anyio.fail_after(60):
        await project_all(rt)
    async with clients(rt, ["k1", "k2"]) as (k1, k2):
        guard = Guard(rt, name="guard_1")
        async with guarding(guard):
            first = await try_reserve(k1, 9.0, 1.0, key="step-1")
            assert isinstance(first, Reservation)

            async def released() -> list[BudgetReleased]:
                return await by_guard(rt, BudgetReleased)

            await wait_for(released, 10, "the first expiry")
            again = await try_reserve(k1, 9.0, 1.0, key="step-1")
            assert isinstance(again, str) and "use a new key" in again, again
            await settled(guard)
            assert len(await by_guard(rt, BudgetReserved)) == 1  # stored once, never again

            # k2 (its team mate) finds the $9 back; a release held up waits alone
            big = await try_reserve(k2, 5.0, 600.0)
            assert isinstance(big, Reservation), big
            small = await try_reserve(k2, 0.5, 600.0)
            assert isinstance(small, Reservation), small
            took: dict[str, float] = {}

            async def give_back(who: str, agent: AgentClient, reservation: str) -> None:
                t0 = time.monotonic()
                with contextlib.suppress(ApiRefused):
                    await agent.ask(BUDGETS_RELEASE, ReleaseRequest(reservation=reservation))
                took[who] = time.monotonic() - t0

            async with anyio.create_task_group() as tg:
                tg.start_soon(give_back, "k1", k1, first.reservation)  # ended: refused at once
                tg.start_soon(give_back, "k2", k2, small.reservation)
            await settled(guard)
            assert guard.core.budgets["keys-day"].reserved_usd() == Decimal(5)
        assert await reserved_usd(rt, "keys-day") == Decimal(5)

        # a restarted guard knows the key from fleet.reservations
        restarted = Guard(rt, name="guard_2")
        async with guarding(restarted):
            after = await try_reserve(k1, 0.5, 600.0, key="step-1")
            assert isinstance(after, str) and "use a new key" in after, after
