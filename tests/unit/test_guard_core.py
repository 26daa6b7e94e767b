"""The guard's pure core (services/guard/core.py): windows, states, scopes, and the plans a
crossing, a raise and a new window call for."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from fleetward.projections.lifecycle import Life
from fleetward.schemas.events import AgentPaused, AgentResumed, BudgetExhausted, BudgetRestored
from fleetward.services.guard.core import (
    GUARD,
    Budget,
    Core,
    Sums,
    held_by,
    pause_reason,
    window_key,
)

DAY = date(2025, 3, 14)
NS = int(datetime(2025, 3, 14, 12, tzinfo=UTC).timestamp() * 1e9)


def test_windows_are_utc_days_months_or_lifetime() -> None:
    assert window_key("day", DAY) == "2025-03-14"
    assert window_key("month", DAY) == "2025-03-01"
    assert window_key("lifetime", DAY) == "lifetime"


def test_states_match_the_view() -> None:
    b = Budget("b", "team", "docs", "day", Decimal("1.0"), 100, 0.5, "user:o", 1)
    assert b.state(Sums(Decimal("0.49"), 0)) == "ok"
    assert b.state(Sums(Decimal("0.5"), 0)) == "warning"
    assert b.state(Sums(Decimal("0.1"), 50)) == "warning"
    assert b.state(Sums(Decimal("1.0"), 0)) == "exhausted"
    assert b.state(Sums(Decimal(0), 100)) == "exhausted"


def test_a_pause_reason_names_its_budget() -> None:
    assert held_by(pause_reason("b-1", "day", Decimal(2), Decimal(1))) == "b-1"
    assert held_by("looking into it") is None


def test_a_crossing_pauses_the_scope_and_a_new_window_resumes_the_guards_pauses() -> None:
    core = Core(ready=True)
    for agent, team in (("a1", "docs"), ("a2", "docs"), ("a3", "ops")):
        core.load_agent(agent, team, Life(), "")
    core.load_agent("a4", "docs", Life("paused", "user:o"), "someone's pause")
    core.load_budget(Budget("b", "team", "docs", "day", Decimal("1.0"), None, 0.8, "user:o", 1))
    core.load_spend([("agent", "a1"), ("team", "docs"), ("org", "")], DAY, Decimal("1.2"), 0)
    plans = core.reconcile(DAY, NS)
    events = [s.event for p in plans for s in p.steps]
    assert isinstance(events[0], BudgetExhausted)
    assert [e.agent for e in events if isinstance(e, AgentPaused)] == ["a1", "a2"]
    assert len(plans) == 2  # the exhaustion with its pauses; one warning
    assert core.reconcile(DAY, NS) == []  # planned once

    # the stream says so; the next day restores it and resumes exactly the guard's pauses
    core.budgets["b"].exhausted = "2025-03-14"
    for agent in ("a1", "a2"):
        core.agents[agent].life = Life("paused", GUARD)
        core.agents[agent].hold = "b"
    core.agents["a2"].life = Life("paused", "user:o")  # an operator's pause took over
    [restore] = core.tick(date(2025, 3, 15), NS)
    restored, *resumes = [s.event for s in restore.steps]
    assert isinstance(restored, BudgetRestored) and restored.reason == "new_window"
    assert [(type(e), e.agent) for e in resumes] == [(AgentResumed, "a1")]
