"""The guard's pure core (services/guard/core.py): windows, states, scopes, and the plans a
crossing, a raise and a new window call for."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from fleetward.projections.lifecycle import Life
from fleetward.schemas.api import MAX_OPEN_RESERVATIONS
from fleetward.schemas.events import (
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    BudgetExhausted,
    BudgetReleased,
    BudgetReserved,
    BudgetRestored,
    SpendRecorded,
)
from fleetward.services.guard.core import (
    GUARD,
    Budget,
    Core,
    Grant,
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


# ---- reservations (issue 14 part 4) ------------------------------------------------------------


def _reserving_core() -> Core:
    core = Core(ready=True)
    core.load_agent("a1", "docs", Life(), "")
    core.load_agent("a2", "docs", Life("paused", "user:o"), "someone's pause")
    core.load_budget(Budget("t", "team", "docs", "day", Decimal("10"), None, 0.8, "user:o", 1))
    core.load_budget(Budget("o", "org", "", "day", Decimal("4"), None, 0.8, "user:o", 2, 5))
    core.load_spend([("agent", "a1"), ("team", "docs"), ("org", "")], DAY, Decimal("1.5"), 0)
    return core


def _reserved(budget: str, reservation: str, usd: float, expires_ns: int = NS) -> BudgetReserved:
    return BudgetReserved(
        id=reservation + budget, actor=GUARD, at=datetime.now(UTC), budget=budget,
        reservation=reservation, agent="a1", usd=usd,
        expires_at=datetime.fromtimestamp(expires_ns / 1e9, UTC),
    )  # fmt: skip


def test_a_reservation_is_judged_on_every_budget_in_scope_with_their_sequences() -> None:
    core = _reserving_core()
    assert core.judge_reserve("a1", Decimal("2.5"), DAY) == [Grant("o", 5), Grant("t", 0)]
    refused = core.judge_reserve("a1", Decimal("2.6"), DAY)  # org: 4 - 1.5 = 2.5 left
    assert refused == "budget o has 2.5 USD left; 2.6 USD asked"
    assert core.judge_reserve("a2", Decimal("0.1"), DAY) == "agent a2 is paused"
    assert core.judge_reserve("nobody", Decimal("0.1"), DAY) == "agent nobody is not registered"
    assert isinstance(Core().judge_reserve("a1", Decimal(1), DAY), str)  # not caught up


def test_open_reservations_count_until_released() -> None:
    core = _reserving_core()
    core.event(_reserved("o", "r1", 2.0, NS + 10**9), 6, NS)
    assert core.budgets["o"].seq == 5  # the service moves it (budget_seq), not the fold
    assert core.budgets["o"].reserved_usd() == Decimal("2.0")
    assert (
        core.judge_reserve("a1", Decimal("0.6"), DAY) == "budget o has 0.5 USD left; 0.6 USD asked"
    )
    assert core.releases(NS) == []  # not due yet
    [plan] = core.releases(NS + 10**9)  # expired
    [step] = plan.steps
    assert isinstance(step.event, BudgetReleased) and step.expect == "budget"
    assert (step.event.reason, step.event.usd, step.event.reservation) == ("expired", 2.0, "r1")
    assert core.releases(NS + 10**9) == []  # planned once
    core.done(plan, stored=False)  # the budget moved under it: planned again
    [again] = core.releases(NS + 10**9)
    assert again.steps[0].event.id == step.event.id  # deterministic: replicas store it once
    core.event(step.event, 7, NS)
    assert core.budgets["o"].reserved_usd() == 0
    assert core.judge_reserve("a1", Decimal("2.5"), DAY) == [Grant("o", 5), Grant("t", 0)]


def test_a_spend_naming_a_reservation_settles_it_and_a_refused_one_is_given_back() -> None:
    core = _reserving_core()
    core.event(_reserved("o", "r1", 1.0, NS + 10**12), 6, NS)
    core.event(_reserved("t", "r1", 1.0, NS + 10**12), 7, NS)
    core.event(_reserved("t", "r2", 1.0, NS + 10**12), 8, NS)
    spend = SpendRecorded(
        id="s", actor="a1", at=datetime.now(UTC), agent="a1", model="m", cost_usd=0.8,
        reservation="r1",
    )  # fmt: skip
    core.event(spend, 9, NS, spend=False)  # settles even when the projection counted it
    core.abandon("r2")
    plans = core.releases(NS)
    released = [(p.key, p.steps[0].event) for p in plans]
    assert [(k, e.reservation, e.reason) for k, e in released] == [  # type: ignore[attr-defined]
        ("o", "r1", "settled"), ("t", "r1", "settled"), ("t", "r2", "refused"),
    ]  # fmt: skip
    # a later budget.set keeps the open reservations (r2; r1 settled: its spend counts instead)
    core.load_budget(Budget("t", "team", "docs", "day", Decimal("20"), None, 0.8, "user:o", 10))
    assert core.budgets["t"].reserved_usd() == Decimal("1.0")


def test_a_spend_settles_only_its_own_agents_reservation() -> None:
    """A reservation's id is on its budget's subjects, which agents may read: another agent's
    spend naming it releases nothing (an attacker run released a1's $8 with a2's $0.01 spend,
    and a third agent was granted $8 more than the budget had)."""
    core = _reserving_core()
    core.event(_reserved("t", "r1", 8.0, NS + 10**12), 6, NS)
    other = SpendRecorded(
        id="s", actor="a2", at=datetime.now(UTC), agent="a2", model="m", cost_usd=0.01,
        reservation="r1",
    )  # fmt: skip
    core.event(other, 7, NS, spend=False)
    assert core.releases(NS) == []
    assert core.budgets["t"].reserved_usd() == Decimal("8.0")


def test_an_agent_another_paused_is_paused_once_resumed_while_its_budget_is_exhausted() -> None:
    """An attacker run: the guard left an operator's pause alone at the crossing and marked the
    agent judged, so once the operator resumed it, it claimed and spent on an exhausted budget.
    Now an agent the guard could not pause is judged again when it is resumed."""
    core = Core(ready=True)
    core.load_agent("a1", "docs", Life(), "")
    core.load_agent("k1", "docs", Life("paused", "user:o"), "someone's pause")
    core.load_budget(Budget("b", "team", "docs", "day", Decimal("1.0"), None, 0.8, "user:o", 1))
    core.load_spend([("agent", "a1"), ("team", "docs"), ("org", "")], DAY, Decimal("1.2"), 0)
    paused = [s.event.agent for p in core.reconcile(DAY, NS) for s in p.steps
              if isinstance(s.event, AgentPaused)]  # fmt: skip
    assert paused == ["a1"]
    resumed = AgentResumed(id="r", actor="user:o", at=datetime.now(UTC), agent="k1", v=2)
    plans = core.event(resumed, 9, NS)
    assert [(type(s.event), s.event.agent) for p in plans for s in p.steps] == [  # type: ignore[attr-defined]
        (AgentPaused, "k1")
    ]


def test_a_reservation_follows_its_agent_into_a_new_team_and_is_stored_there() -> None:
    """An attacker run: a reservation held team A's budget, the agent moved to team B and spent
    it there; team B's budget, which never held it, granted its whole remainder to others as
    well ($18 recorded on $10). Now the reservation holds team B's budget from the move on."""
    core = _reserving_core()
    core.load_budget(Budget("b", "team", "ops", "day", Decimal("10"), None, 0.8, "user:o", 3))
    core.budgets["o"].limit_usd = Decimal(100)
    core.event(_reserved("o", "r1", 6.0, NS + 10**12), 5, NS)
    core.event(_reserved("t", "r1", 6.0, NS + 10**12), 6, NS)
    moved = AgentRegistered(id="m", actor="user:o", at=datetime.now(UTC), agent="a1", name="a1",
                            owner="o", team="ops")  # fmt: skip
    plans = core.event(moved, 7, NS)
    carried = [s for p in plans for s in p.steps if isinstance(s.event, BudgetReserved)]
    assert [(s.event.budget, s.event.reservation, s.event.usd, s.expect) for s in carried] == [  # type: ignore[attr-defined]
        ("b", "r1", 6.0, "budget")
    ]
    assert core.budgets["b"].reserved_usd() == Decimal(6)  # judged with it at once
    core.load_agent("a3", "ops", Life(), "")
    assert core.judge_reserve("a3", Decimal(5), DAY) == "budget b has 4.0 USD left; 5 USD asked"
    # the carried hold is released with the reservation (it was stored on b: carried)
    core.event(carried[0].event, 8, NS)
    core.event(SpendRecorded(id="s", actor="a1", at=datetime.now(UTC), agent="a1", model="m",
                             cost_usd=5.0, reservation="r1"), 9, NS)  # fmt: skip
    reasons = sorted((p.key, p.steps[0].event.reason) for p in core.releases(NS))  # type: ignore[attr-defined]
    assert reasons == [("b", "settled"), ("o", "settled"), ("t", "settled")]


def test_a_carry_read_while_catching_up_is_planned_once_caught_up_and_never_released_unstored() -> (
    None
):
    core = _reserving_core()
    core.ready = False
    core.load_budget(Budget("b", "team", "ops", "day", Decimal("10"), None, 0.8, "user:o", 3))
    core.event(_reserved("o", "r1", 1.0, NS + 10**12), 5, NS)
    core.event(_reserved("t", "r1", 1.0, NS + 10**12), 6, NS)
    moved = AgentRegistered(id="m", actor="user:o", at=datetime.now(UTC), agent="a1", name="a1",
                            owner="o", team="ops")  # fmt: skip
    assert core.event(moved, 7, NS) == []
    core.ready = True
    carried = [s.event for p in core.reconcile(DAY, NS) for s in p.steps
               if isinstance(s.event, BudgetReserved)]  # fmt: skip
    assert [(e.budget, e.reservation) for e in carried] == [("b", "r1")]
    core.budgets["b"].holds["r1"].stored = False  # suppose it was never stored
    core.give_back("r1", "a1")
    released = [p.steps[0].event for p in core.releases(NS)]
    assert [(e.budget, e.reason) for e in released] == [("o", "returned"), ("t", "returned")]  # type: ignore[attr-defined]
    assert "r1" not in core.budgets["b"].holds


def test_a_reservation_naming_a_task_holds_its_projects_budgets() -> None:
    core = _reserving_core()
    core.load_task("T-1", "site", None)
    core.load_budget(Budget("p", "project", "site", "day", Decimal("3"), None, 0.8, "user:o", 4))
    assert [g.budget for g in core.judge_reserve("a1", Decimal(2), DAY)] == ["o", "t"]  # type: ignore[union-attr]
    assert [g.budget for g in core.judge_reserve("a1", Decimal(2), DAY, task="T-1")] == [  # type: ignore[union-attr]
        "o",
        "p",
        "t",
    ]
    assert core.judge_reserve("a1", Decimal("2.6"), DAY, task="T-1") == (
        "budget o has 2.5 USD left; 2.6 USD asked"
    )


def test_an_agent_holds_a_bounded_number_of_reservations_and_gives_back_only_its_own() -> None:
    core = _reserving_core()
    for i in range(MAX_OPEN_RESERVATIONS):
        core.event(_reserved("t", f"r{i}", 0.01, NS + 10**12), 6 + i, NS)
    refused = core.judge_reserve("a1", Decimal("0.01"), DAY)
    assert isinstance(refused, str) and "16 open reservations" in refused
    assert core.give_back("r0", "a2") == ()  # not a2's
    assert core.give_back("r0", "a1") == ("t",)
    assert core.granted("r1", "a1") is not None and core.granted("r1", "a2") is None


def test_money_is_exact_beyond_28_digits() -> None:
    """The default decimal context rounds at 28 digits: 1e6 + 1e-30 would be 1e6."""
    core = _reserving_core()
    core.load_budget(Budget("x", "agent", "a1", "lifetime", Decimal("1000000"), None, 0.8,
                            "user:o", 9))  # fmt: skip
    core.load_spend([("agent", "a1")], None, Decimal("999999.999999"), 0)
    core.load_spend([("agent", "a1")], None, Decimal("1E-30"), 0)
    spent = core.spent(core.budgets["x"], DAY).usd  # with a1's 1.5 of the day before
    assert spent == Decimal("1000001.499999000000000000000000000001")
