"""Budgets as events and a view (issue 14, part 1), against the real projector, nats-server and
Postgres: ``fleet.budgets`` sums the spend of each scope (agent, team, project, org) over its
current window (day, month, lifetime), with its state, exactly; live equals rebuild.

Events are stored now, so each window that counts them includes now; spend on earlier days is
written into the spend rows directly (the stream's time of record cannot be set), to show what
each window leaves out."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio

from fleetward.projections import BY_NAME
from fleetward.schemas.events import (
    AgentRegistered,
    BudgetSet,
    Event,
    SpendRecorded,
    TaskCreated,
    ToolCalled,
)
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.projector.rebuild import rebuild
from fleetward.services.runtime.connect import Runtime
from tests.helpers import envelope, project_all, snapshot

USER = "user:ops"
THIRD = Decimal("0.3333333333333333")  # what an agent reporting 1/3 USD sends
MARGIN_S = 30  # the tests keep this far from a UTC midnight: the day would change under them


async def clear_of_midnight() -> None:
    """Wait until a UTC day has at least ``MARGIN_S`` seconds left: spend stored now and the
    view read a moment later must fall in the same day (and month)."""
    now = datetime.now(UTC)
    left = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC) - now
    if left.total_seconds() < MARGIN_S:
        await anyio.sleep(left.total_seconds() + 1)


def register(agent: str, team: str) -> AgentRegistered:
    return AgentRegistered(**envelope(agent), agent=agent, name=agent, owner="o", team=team)


def spend(agent: str, cost: float, tokens: tuple[int, int] = (0, 0), **kw: Any) -> SpendRecorded:
    return SpendRecorded(**envelope(agent), agent=agent, model="m", cost_usd=cost,
                         tokens_in=tokens[0], tokens_out=tokens[1], **kw)  # fmt: skip


def budget(budget_id: str, scope: str, scope_id: str, window: str, limit: float,
           **kw: Any) -> BudgetSet:  # fmt: skip
    return BudgetSet(**envelope(USER), budget=budget_id, scope=scope, scope_id=scope_id,
                     window=window, limit_usd=limit, **kw)  # fmt: skip


def fleet() -> list[Event]:
    """docs: a1 and a2, ops: a3; project alpha: t1, beta: t2. Today: a1 0.1 + 0.05 (tool) on
    t1, a2 0.3 on t2, a3 1/3 on no task."""
    return [
        register("a1", "docs"), register("a2", "docs"), register("a3", "ops"),
        TaskCreated(**envelope(USER), task="t1", project="alpha", title="one"),
        TaskCreated(**envelope(USER), task="t2", project="beta", title="two"),
        spend("a1", 0.1, (100, 50), task="t1"),
        ToolCalled(**envelope("a1"), agent="a1", tool="search", duration_ms=1.0, ok=True,
                   cost_usd=0.05, task="t1"),
        spend("a2", 0.3, (10, 0), task="t2"),
        spend("a3", 1 / 3),
    ]  # fmt: skip


BUDGETS = [
    budget("a1-day", "agent", "a1", "day", 0.18),  # 0.15 of 0.18: past 80%
    budget("docs-month", "team", "docs", "month", 1.0),
    budget("alpha-ever", "project", "alpha", "lifetime", 0.15),  # spent exactly: exhausted
    budget("org-day", "org", "acme", "day", 10.0, limit_tokens=200, warn_at=0.5),
    budget("ops-tokens", "team", "ops", "lifetime", 5.0, limit_tokens=0),  # none allowed
    budget("a2-zero", "agent", "a2", "month", 0.0),  # a zero limit: exhausted at once
    budget("ghost-day", "team", "ghost", "day", 5.0),  # a team that spends nothing
]


async def budget_rows(rt: Runtime) -> dict[str, tuple[Any, ...]]:
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT budget_id, scope, budget_window, window_start, limit_usd, spent_usd,"
            " reserved_usd, remaining_usd, limit_tokens, spent_tokens, remaining_tokens, state"
            " FROM fleet.budgets ORDER BY budget_id"
        )
    return {r["budget_id"]: tuple(r.values())[1:] for r in rows}


async def test_budgets_show_their_spend_and_state_in_every_scope_and_window(
    rt: Runtime,
) -> None:
    await clear_of_midnight()
    await publish_many(rt.js, [*fleet(), *BUDGETS])
    with anyio.fail_after(60):
        await project_all(rt)
    today = datetime.now(UTC).date()
    month = today.replace(day=1)
    zero = Decimal(0)
    org_usd = Decimal("0.1") + Decimal("0.05") + Decimal("0.3") + THIRD
    assert await budget_rows(rt) == {
        "a1-day": ("agent", "day", today, Decimal("0.18"), Decimal("0.15"), zero,
                   Decimal("0.03"), None, 150, None, "warning"),
        "a2-zero": ("agent", "month", month, Decimal("0.0"), Decimal("0.3"), zero,
                    Decimal("-0.3"), None, 10, None, "exhausted"),
        "alpha-ever": ("project", "lifetime", None, Decimal("0.15"), Decimal("0.15"), zero,
                       zero, None, 150, None, "exhausted"),
        "docs-month": ("team", "month", month, Decimal("1.0"), Decimal("0.45"), zero,
                       Decimal("0.55"), None, 160, None, "ok"),
        "ghost-day": ("team", "day", today, Decimal("5.0"), zero, zero, Decimal("5.0"), None,
                      0, None, "ok"),
        "ops-tokens": ("team", "lifetime", None, Decimal("5.0"), THIRD, zero,
                       Decimal("5.0") - THIRD, 0, 0, 0, "exhausted"),
        # 160 tokens of 200: past half (warn_at 0.5) though its dollars are far from it
        "org-day": ("org", "day", today, Decimal("10.0"), org_usd, zero,
                    Decimal("10.0") - org_usd, 200, 160, 40, "warning"),
    }  # fmt: skip

    # a new limit for a budget changes its row, not its spend
    await publish_many(rt.js, [budget("a1-day", "agent", "a1", "day", 0.15)])
    with anyio.fail_after(60):
        await project_all(rt)
    row = (await budget_rows(rt))["a1-day"]
    assert (row[3], row[4], row[6], row[-1]) == (Decimal("0.15"), Decimal("0.15"), zero,
                                                  "exhausted")  # fmt: skip

    # live equals rebuild, the view included
    projections = (BY_NAME["budgets"], BY_NAME["spend"])
    live, view = await snapshot(rt, projections), await budget_rows(rt)
    for projection in projections:
        await rebuild(rt, projection)
    assert await snapshot(rt, projections) == live
    assert await budget_rows(rt) == view


async def test_each_window_counts_only_its_days(rt: Runtime) -> None:
    """Spend of yesterday, of last month and of years ago, written as the spend projection
    keeps it: the day window counts today only, the month window this month, lifetime all."""
    await clear_of_midnight()
    await publish_many(rt.js, [*fleet(), *(
        budget(f"{scope}-{window}", scope, scope_id, window, 100.0)
        for scope, scope_id in (("agent", "a1"), ("team", "docs"), ("project", "alpha"),
                                ("org", "acme"))
        for window in ("day", "month", "lifetime")
    )])  # fmt: skip
    with anyio.fail_after(60):
        await project_all(rt)
    today = datetime.now(UTC).date()
    yesterday, last_month, long_ago = today - timedelta(days=1), today.replace(day=1) - timedelta(
        days=1), date(2020, 1, 1)  # fmt: skip
    past = {yesterday: Decimal("1"), last_month: Decimal("20"), long_ago: Decimal("300")}
    async with rt.pool.acquire() as conn:
        for day, cost in past.items():
            await conn.execute(
                "INSERT INTO fleetward.spend_daily VALUES ($1, $2, 'docs', $3, 0, 7, 0, 0, 0, 0,"
                " 0, 1, 0, 0) ON CONFLICT (agent_id, day, team) DO UPDATE"
                " SET model_cost_usd = spend_daily.model_cost_usd + EXCLUDED.model_cost_usd,"
                " tokens_in = spend_daily.tokens_in + 7",
                "a1", day, cost,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO fleetward.spend_task_daily VALUES ('t1', $1, $2, 0, 7, 0, 0, 0, 0, 1)"
                " ON CONFLICT (task_id, day) DO UPDATE"
                " SET model_cost_usd = spend_task_daily.model_cost_usd + EXCLUDED.model_cost_usd,"
                " tokens_in = spend_task_daily.tokens_in + 7",
                day, cost,
            )  # fmt: skip

    def before(start: date | None) -> Decimal:
        return sum((c for d, c in past.items() if start is None or d >= start), Decimal(0))

    starts = {"day": today, "month": today.replace(day=1), "lifetime": None}
    now_spent = {"agent": Decimal("0.15"), "team": Decimal("0.45"), "project": Decimal("0.15"),
                 "org": Decimal("0.45") + THIRD}  # fmt: skip
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch("SELECT budget_id, scope, budget_window, spent_usd, spent_tokens"
                                " FROM fleet.budgets")  # fmt: skip
    assert len(rows) == 12
    for r in rows:
        start = starts[r["budget_window"]]
        earlier = before(start)
        assert r["spent_usd"] == now_spent[r["scope"]] + earlier, dict(r)
        count = sum(1 for d in past if start is None or d >= start)
        tokens_now = {"agent": 150, "team": 160, "project": 150, "org": 160}[r["scope"]]
        assert r["spent_tokens"] == tokens_now + 7 * count, dict(r)
