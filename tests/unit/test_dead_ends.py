"""Dead ends in the watchdog's pure core (services/watchdog/core/dead_ends.py): a review past
its SLA and a cancelled dependency are escalated once, only while judging, and resolved when
they end; at start they come from the projection's rows. No network, no clock."""

from __future__ import annotations

from dataclasses import replace

from fleetward.schemas.events import (
    Deliverable,
    EscalationRaised,
    EscalationResolved,
    TaskCancelled,
    TaskClaimRefused,
    TaskCreated,
    TaskDependenciesChanged,
    TaskReviewed,
    TaskRevoked,
    TaskSubmitted,
    Verdict,
)
from fleetward.services.config import WatchdogSettings
from fleetward.services.watchdog.core.incidents import Plan, escalation_id
from tests.unit.test_liveness import SETTINGS, T0, World, env, events, raised, task_row

REVIEWS = replace(SETTINGS, stall_s=10_000.0, review_sla_s=600.0)
US = int(T0 * 1e6)


def submit(w: World, agent: str, task: str, t: float, epoch: int = 1) -> list[Plan]:
    deliverable = Deliverable(kind="markdown", sha256="0" * 64)
    return w.event(TaskSubmitted(**env(agent), task=task, agent=agent, epoch=epoch,
                                 deliverable=deliverable), t)  # fmt: skip


def review(w: World, agent: str, task: str, t: float, verdict: Verdict = "approve") -> list[Plan]:
    return w.event(TaskReviewed(**env("user:r"), task=task, agent=agent, verdict=verdict), t)


def beat(w: World, agents: list[str], start: float, until: float) -> None:
    t = start
    while t < until:
        for a in agents:
            w.hb(a, t)
        t += 5


def reasons(plans: list[Plan], reason: str) -> list[EscalationRaised]:
    return [e for e in raised(plans) if e.reason == reason]


def resolved(plans: list[Plan]) -> list[tuple[str, str]]:
    return [(e.escalation, e.resolution) for e in events(plans, EscalationResolved)]


# ---- reviews ---------------------------------------------------------------------------------


def test_a_review_past_its_sla_is_escalated_once_and_resolved_by_the_verdict() -> None:
    w = World(REVIEWS)
    agents = ["slow", "quick", "plain"]
    for a in agents:
        w.register(a, T0)
    beat(w, agents, T0, T0 + 700)
    w.claim("slow", "t-slow", T0, sla=30)
    w.claim("quick", "t-quick", T0, sla=30)
    w.claim("plain", "t-plain", T0)  # no SLA of its own: review_sla_s (600 s) in review
    for a in agents:
        submit(w, a, f"t-{a}", T0 + 10)
    review(w, "quick", "t-quick", T0 + 20, "reject")  # back to work, handed in again
    submit(w, "quick", "t-quick", T0 + 25)
    assert w.tick(T0 + 39.99) == []
    [plan] = w.tick(T0 + 40)
    [esc] = raised([plan])
    assert (esc.reason, esc.tier, esc.task, esc.agent) == (
        "review_overdue", "warning", "t-slow", "slow")  # fmt: skip
    assert esc.evidence["sla_from"] == "task" and esc.evidence["sla_s"] == 30
    assert plan.steps[0].expect == "empty" and plan.deadline == T0 + 40
    review(w, "quick", "t-quick", T0 + 50)  # in time: nothing
    assert w.tick(T0 + 100) == []
    back = review(w, "slow", "t-slow", T0 + 101, "reject")
    assert resolved(back) == [(esc.escalation, "the review arrived (reject)")]
    submit(w, "slow", "t-slow", T0 + 110)  # a new submission: a new incident when late again
    [again] = raised(w.tick(T0 + 140))
    assert again.task == "t-slow" and again.escalation != esc.escalation
    [plain] = raised(w.tick(T0 + 610))
    assert (plain.task, plain.evidence["sla_from"], plain.evidence["sla_s"]) == (
        "t-plain", "default", 600)  # fmt: skip
    assert len(reasons(w.plans, "review_overdue")) == 3
    assert reasons(w.plans, "task_overdue") == []


def test_a_cancel_a_revoke_or_a_refused_claim_ends_the_wait_for_a_review() -> None:
    w = World(replace(REVIEWS, review_sla_s=0.0))  # none by default: the tasks' SLAs only
    agents = ["c", "r", "x", "none"]
    for a in agents:
        w.register(a, T0)
    beat(w, agents, T0, T0 + 200)
    claims = {}
    for a in agents:
        claims[a] = w.claim(a, f"t-{a}", T0, sla=None if a == "none" else 30)
        submit(w, a, f"t-{a}", T0 + 1)
    w.event(TaskCancelled(**env("user:o"), task="t-c"), T0 + 5)
    escalated = {e.task: e.escalation for e in raised(w.tick(T0 + 31))}
    assert set(escalated) == {"t-r", "t-x"}
    revoked = w.event(TaskRevoked(**env("user:o"), task="t-r", agent="r", epoch=1), T0 + 40)
    assert resolved(revoked) == [(escalated["t-r"], "the task was revoked")]
    other_claim = TaskClaimRefused(**env("svc:board"), task="t-x", agent="x", epoch=2,
                                   claim="c1", reason="not the claim under review")  # fmt: skip
    assert w.event(other_claim, T0 + 41) == []
    refused = TaskClaimRefused(**env("svc:board"), task="t-x", agent="x", epoch=1,
                               claim=claims["x"].id, reason="agent x is paused")  # fmt: skip
    assert resolved(w.event(refused, T0 + 42)) == [(escalated["t-x"], "the claim was refused")]
    assert (
        reasons(w.tick(T0 + 10_000), "review_overdue") == []
    )  # (the agents fell silent meanwhile)


def test_a_review_loaded_at_start_is_judged_after_grace_and_ended_ones_are_reconciled() -> None:
    w = World(REVIEWS, judging=False)
    w.judge.load_agent("a1", "active", 10.0, US)
    for task, epoch in (("t1", 2), ("t2", 1)):
        row = task_row(task, "review", "a1", epoch, sla=30.0, claimed_us=US, updated_us=US,
                       submitted_us=US)  # fmt: skip
        w.judge.load_task(row, T0)
    stale = escalation_id("ro", "t-done", str(US))  # reviewed while no watchdog looked
    w.judge.load_escalation(EscalationRaised(**env("svc:watchdog"), escalation=stale,
                                             tier="warning", reason="review_overdue",
                                             agent="a1", task="t-done"), 9, T0)  # fmt: skip
    kept = escalation_id("ro", "t2", str(US))  # t2 is still waiting for the same submission
    w.judge.load_escalation(EscalationRaised(**env("svc:watchdog"), escalation=kept,
                                             tier="warning", reason="review_overdue",
                                             agent="a1", task="t2"), 10, T0)  # fmt: skip
    w.judge.enter_grace(T0 + 100)
    w.hb("a1", T0 + 100)
    assert w.tick(T0 + 101) == []  # not caught up yet
    w.judge.ready = True
    assert resolved(w.judge.reconcile(T0 + 101)) == [(stale, "the task no longer waits")]
    assert w.tick(T0 + 105) == []  # in grace
    w.hb("a1", T0 + 108)
    [esc] = raised(w.tick(T0 + 110))
    assert (esc.task, esc.evidence["epoch"]) == ("t1", 2)
    assert esc.escalation == escalation_id("ro", "t1", str(US))


# ---- dependencies ----------------------------------------------------------------------------


def created(w: World, task: str, t: float, *deps: str) -> list[Plan]:
    return w.event(TaskCreated(**env("user:p"), task=task, project="p", title=task,
                               depends_on=deps), t)  # fmt: skip


def test_a_cancelled_dependency_is_a_dead_end_until_the_dependencies_change() -> None:
    w = World()
    for task in ("d1", "d2", "d3"):
        created(w, task, T0)
    created(w, "t1", T0 + 1, "d1", "d2")
    created(w, "t2", T0 + 1, "d1")
    created(w, "t3", T0 + 1, "d2")  # control: its dependency is never cancelled
    assert w.event(TaskCancelled(**env("user:o"), task="d1"), T0 + 10) == []  # raised when judged
    found = raised(w.tick(T0 + 10.5))
    assert sorted((e.task, e.evidence["dependency"]) for e in found) == [("t1", "d1"), ("t2", "d1")]
    assert {(e.reason, e.tier, e.agent) for e in found} == {
        ("dependency_cancelled", "warning", None)}  # fmt: skip
    ids = {e.task: e.escalation for e in found}
    assert w.tick(T0 + 11) == []  # once
    changed = TaskDependenciesChanged(**env("user:o"), task="t1", depends_on=("d2", "d3"))
    assert resolved(w.event(changed, T0 + 20)) == [(ids["t1"], "the task's dependencies changed")]
    assert resolved(w.event(TaskCancelled(**env("user:o"), task="t2"), T0 + 21)) == [
        (ids["t2"], "the task was cancelled")]  # fmt: skip
    # a dead end made by a change or a creation is one too
    w.event(TaskDependenciesChanged(**env("user:o"), task="t3", depends_on=("d1",)), T0 + 30)
    created(w, "t4", T0 + 31, "d3", "d1")
    assert sorted((e.task, e.evidence["dependency"]) for e in raised(w.tick(T0 + 32))) == [
        ("t3", "d1"), ("t4", "d1")]  # fmt: skip
    assert len(raised(w.plans)) == 4


def test_a_cancel_the_board_refuses_is_no_dead_end() -> None:
    """A done task stays done: a cancel of it (refused by the board) leaves its dependents
    alone."""
    w = World(replace(SETTINGS, stall_s=10_000.0))
    w.register("a1", T0)
    beat(w, ["a1"], T0, T0 + 100)
    w.claim("a1", "d1", T0)
    created(w, "t1", T0 + 1, "d1")
    submit(w, "a1", "d1", T0 + 2)
    review(w, "a1", "d1", T0 + 3)
    w.event(TaskCancelled(**env("user:o"), task="d1"), T0 + 4)
    assert w.tick(T0 + 50) == []


def test_dead_ends_loaded_at_start_wait_for_grace_and_ended_ones_are_reconciled() -> None:
    w = World(judging=False)
    w.judge.load_ended("d1", "cancelled")  # before the tasks that need it
    for dep in ("d2", "d3"):
        w.judge.load_task(task_row(dep, "inbox", None, 0, updated_us=US), T0)
    t1 = task_row("t1", "inbox", None, 0, updated_us=US, depends_on=("d1", "d2"))
    w.judge.load_task(t1, T0)
    w.judge.load_task(task_row("t2", "assigned", "a1", 0, updated_us=US, depends_on=("d3",)), T0)
    gone = escalation_id("dc", "t9", "d9")  # t9 was cancelled while no watchdog looked
    w.judge.load_escalation(EscalationRaised(**env("svc:watchdog"), escalation=gone,
                                             tier="warning", reason="dependency_cancelled",
                                             task="t9"), 9, T0)  # fmt: skip
    w.judge.enter_grace(T0 + 100)
    w.event(TaskCancelled(**env("user:o"), task="d3"), T0 + 99, now=T0 + 100)  # catching up
    w.judge.ready = True
    assert resolved(w.judge.reconcile(T0 + 100)) == [(gone, "the task no longer waits")]
    assert w.tick(T0 + 109) == []  # in grace
    found = raised(w.tick(T0 + 110))
    assert sorted((e.task, e.evidence["dependency"]) for e in found) == [("t1", "d1"), ("t2", "d3")]
    assert {p.deadline for p in w.plans if p.raised} == {T0, T0 + 99}  # when each was found


def test_replicas_split_dead_ends_by_task_and_reviews_by_submitter() -> None:
    worlds = [World(replace(REVIEWS, partition=(i, 2))) for i in range(2)]
    for w in worlds:
        created(w, "d", T0)
        for k in range(20):
            created(w, f"t{k}", T0, "d")
        w.event(TaskCancelled(**env("user:o"), task="d"), T0 + 1)
        w.tick(T0 + 2)
    split = [{e.task for e in raised(w.plans)} for w in worlds]
    assert split[0].isdisjoint(split[1]) and len(split[0] | split[1]) == 20
    assert all(split)


def test_a_task_that_settings_give_no_review_sla_is_never_overdue_in_review() -> None:
    w = World(replace(REVIEWS, review_sla_s=0.0))
    w.register("a1", T0)
    beat(w, ["a1"], T0, T0 + 100)
    w.claim("a1", "t1", T0)
    submit(w, "a1", "t1", T0 + 1)
    assert w.tick(T0 + 99) == []
    assert WatchdogSettings().review_sla_s == 86_400.0
