"""The KPI drift detector (services/watchdog/core/drift.py), pure: which comparison applies
(the previous version after a recent version change, else the previous window), each KPI's
threshold and minimum sample, one escalation per incident whatever the readings."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from fleetward.schemas.events import EscalationRaised
from fleetward.services.config import WatchdogSettings
from fleetward.services.watchdog.core.drift import AgentVersions, DriftDetector, Sums, drifts
from fleetward.services.watchdog.core.incidents import Escalations, Plan

S = WatchdogSettings()  # 10 runs, 5 reviews; -10 points, +50% cost, +10 points rework
TODAY = date(2026, 11, 30)
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp()
Book = dict[tuple[str, str, str], Sums]


def raised(plans: list[Plan]) -> list[EscalationRaised]:
    events = [step.event for plan in plans for step in plan.steps]
    assert all(step.expect == "empty" for plan in plans for step in plan.steps)
    return [e for e in events if isinstance(e, EscalationRaised)]


def judge(
    detector: DriftDetector, agent: AgentVersions, book: Book, owns: bool = True
) -> list[EscalationRaised]:
    return raised(detector.judge([agent], book, TODAY, NOW, lambda _: owns))


def test_each_kpi_drifts_past_its_threshold_and_only_with_enough_behind_it() -> None:
    base = Sums(runs=10, succeeded=9, cost_usd=Decimal("5"), approved=5, reviewed=5)
    assert drifts(S, base, base) == []
    assert drifts(S, base, Sums(runs=10, succeeded=8)) == []  # 10 points down: not yet...
    [d] = drifts(S, base, Sums(runs=20, succeeded=15))  # ... 15 are
    assert (d.kpi, d.before, d.after) == ("success_rate", 0.9, 0.75)
    assert drifts(S, base, Sums(runs=9, succeeded=0)) == []  # too few runs to judge
    [d] = drifts(S, base, Sums(cost_usd=Decimal("7.5"), approved=5, reviewed=5))  # +50%
    assert (d.kpi, d.before, d.after) == ("cost_per_task_usd", 1.0, 1.5)
    assert drifts(S, base, Sums(cost_usd=Decimal("7.4"), approved=5, reviewed=5)) == []
    [d] = drifts(S, base, Sums(cost_usd=Decimal("5"), approved=4, reviewed=5, rejected=1))
    assert (d.kpi, d.before, d.after) == ("rework_rate", 0.0, 0.2)
    assert drifts(S, base, Sums(approved=3, reviewed=4, rejected=4)) == []  # too few reviews
    # better is no drift
    assert drifts(S, Sums(runs=10, succeeded=5), Sums(runs=10, succeeded=10)) == []


def test_a_recent_version_change_is_judged_against_the_previous_version_once() -> None:
    detector = DriftDetector(S, Escalations())
    since = datetime(2026, 11, 25, tzinfo=UTC)
    agent = AgentVersions("a1", "2", "1", since)
    book: Book = {("a1", "1", "30"): Sums(runs=10, succeeded=10),
                  ("a1", "2", "30"): Sums(runs=10, succeeded=5),
                  # the window comparison would say nothing: both weeks alike
                  ("a1", "1", "prev"): Sums(runs=10, succeeded=5),
                  ("a1", "2", "cur"): Sums(runs=10, succeeded=5)}  # fmt: skip
    [esc] = judge(detector, agent, book)
    assert (esc.reason, esc.tier, esc.agent) == ("kpi_drift", "warning", "a1")
    assert esc.escalation.startswith("kpi-")
    assert (esc.evidence["basis"], esc.evidence["previous_version"]) == ("version", "1")
    assert judge(detector, agent, book) == []  # raised already: the next reading is quiet
    assert judge(DriftDetector(S, Escalations()), agent, book, owns=False) == []
    # another replica names it the same: the compare-and-set on the empty subject keeps one
    assert judge(DriftDetector(S, Escalations()), agent, book)[0].id == esc.id


def test_without_a_recent_version_change_the_last_7_days_are_judged_against_the_7_before() -> None:
    old = datetime(2026, 11, 1, tzinfo=UTC)
    book: Book = {("a1", "1", "prev"): Sums(runs=6, succeeded=6),
                  ("a1", "2", "prev"): Sums(runs=6, succeeded=6),  # all versions together
                  ("a1", "2", "cur"): Sums(runs=12, succeeded=6),
                  ("a1", "1", "30"): Sums(runs=6, succeeded=6),
                  ("a1", "2", "30"): Sums(runs=18, succeeded=12)}  # fmt: skip
    escalations = Escalations()
    detector = DriftDetector(S, escalations)
    for agent in (AgentVersions("a1", "2", "1", old), AgentVersions("a1", "2", None, None)):
        [esc] = judge(DriftDetector(S, Escalations()), agent, book)
        assert esc.evidence["basis"] == "window"
        assert (esc.evidence["before"], esc.evidence["after"]) == (1.0, 0.5)
        assert esc.evidence["before_of"] == "the 7 days to 2026-11-23"
        assert esc.message == (
            "success rate of a1 went from 100.0% (the 7 days to 2026-11-23) "
            "to 50.0% (the 7 days to 2026-11-30)"
        )
    [esc] = judge(detector, AgentVersions("a1", "2", None, None), book)
    # tomorrow's window is another incident, but not while this one is open
    agent, tomorrow = AgentVersions("a1", "2", None, None), TODAY + timedelta(days=1)
    assert raised(detector.judge([agent], book, tomorrow, NOW + 86_400, lambda _: True)) == []
    escalations.close(esc.escalation)
    [again] = raised(detector.judge([agent], book, tomorrow, NOW + 86_400, lambda _: True))
    assert again.escalation != esc.escalation
