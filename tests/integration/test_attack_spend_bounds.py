"""Attacks on the guard's arithmetic against the contract's bounds (issue 14, promise 5: no
value admission accepts fails later). Real nats-server, Postgres and guard."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime

import anyio
import msgspec
import pytest
from nats.js.errors import NotFoundError

from fleetward.schemas import subject_of
from fleetward.schemas.admission import Rejected, admit
from fleetward.schemas.events import AgentPaused, AgentResumed, SpendRecorded
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.services.guard.service import Guard
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import envelope, project_all, wait_for
from tests.integration.test_guard import budget, guarding, register, settled

N = 500_000  # spends of 2e9 tokens each (the most one spend may carry), after one of 1 token


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_a_token_budget_crossed_past_its_bound_is_never_restored(rt: Runtime) -> None:
    """A team budget limits tokens to 1e15 (the largest limit admitted). Its agent spends 2e9
    tokens a call (admitted) until it crosses: the guard's budget.exhausted carries
    spent_tokens = 1e15 + 1, above the contract's bound for that field (1e15; the guard
    clamps at 1e18), so every reader, the guard itself included, refuses it. The pause goes
    out, but the budget is never 'exhausted' for the guard: raising the limit resumes nobody."""
    await publish_many(rt.js, [
        register("t1", "tok"),
        budget("tok", "team", "tok", 1e12, limit_tokens=10**15),
    ])  # fmt: skip
    with anyio.fail_after(60):
        await project_all(rt)
    guard = Guard(rt, name="guard_1")
    async with guarding(guard):
        one = SpendRecorded(**envelope("t1"), agent="t1", model="m", cost_usd=0.0,
                            tokens_in=10**9, tokens_out=10**9)  # fmt: skip
        subj = subject_of(one)
        t0 = time.monotonic()
        first = msgspec.structs.replace(one, id="tok-first", tokens_in=1, tokens_out=0)
        await rt.nc.publish(subj, msgspec.json.encode(first))
        for i in range(N):
            data = msgspec.json.encode(msgspec.structs.replace(one, id=f"tok-{i}"))
            await rt.nc.publish(subj, data)
            if i % 5000 == 0:
                await rt.nc.flush()
        await rt.nc.flush()

        async def last(subject: str) -> object:
            try:
                msg = await rt.js.get_last_msg(EVENTS_STREAM, subject, direct=True)
            except NotFoundError:
                return None
            try:
                return admit(msg.subject, msg.data or b"")
            except Rejected as exc:
                return exc

        async def paused() -> bool:
            return isinstance(await last("fw.agent.t1.svc:guard"), AgentPaused)

        await wait_for(paused, 300, "the guard's pause")
        print(
            f"published {N} in {time.monotonic() - t0:.0f}s; guard spent tokens "
            f"{guard.core.spent(guard.core.budgets['tok'], datetime.now(UTC).date())}"
        )
        exhausted = await last("fw.budget.tok.svc:guard")
        # the limit raised (no token limit any more): restore, and resume t1
        await publish_many(rt.js, [budget("tok", "team", "tok", 1e12, limit_tokens=None)])

        async def resumed() -> bool:
            return isinstance(await last("fw.agent.t1.svc:guard"), AgentResumed)

        with contextlib.suppress(AssertionError):  # the detail below says what was read
            await wait_for(resumed, 30, "the guard's resume")
        await settled(guard)  # and nothing the guard still had in hand came after it
        detail = (f"the guard's budget.exhausted as read: {exhausted!r}; guard.rejected="
                  f"{guard.rejected}; guard's exhausted window="
                  f"{guard.core.budgets['tok'].exhausted}; last on the budget: "
                  f"{await last('fw.budget.tok.svc:guard')!r}; last on t1: "
                  f"{await last('fw.agent.t1.svc:guard')!r}")  # fmt: skip
        print(detail)
        assert await resumed(), detail
