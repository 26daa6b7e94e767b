"""The watchdog's pure core fed the extremes that admission lets through (and rows that hold
worse): nothing escapes, every agent is still judged, and everything it plans to publish is
admitted on its own subject. Then the isolation behind it: an agent or task whose judgement
raises is noted, quarantined or skipped, and the rest are judged."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from fleetward.schemas import Rejected, admit, new_id, subject, subject_of
from fleetward.schemas.events import (
    AgentRegistered,
    Event,
    Heartbeat,
    TaskClaimed,
    TaskCreated,
    TaskLeaseExpired,
)
from fleetward.services.watchdog.core.incidents import Plan
from fleetward.services.watchdog.core.judge import Judge
from fleetward.services.watchdog.core.limits import MAX_PERIOD_S, MIN_PERIOD_S, period
from tests.unit.test_liveness import SETTINGS, T0, World, env, events, raised, task_row

# floats above 0 that JSON carries and admission takes today, smallest to largest
TINY, HUGE = 5e-324, 1.7976931348623157e308
POSITIVE = [TINY, 2.2250738585072014e-308, 1e-300, 1e-9, 0.001, 1.0, 1e9, 1e15, 1e300, 1e308, HUGE]
INTS = [1, 2, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1]
EVIDENCE = [*INTS, 0, -(2**63), True, False, None, "x" * 200, -HUGE, -TINY, TINY, HUGE, 0.5]
ROW_EPOCHS = [n for n in INTS if n < 2**31]  # tasks.claim_epoch is a Postgres integer
ROW_FLOATS = [*POSITIVE, 0.0, -1.0, -HUGE, math.inf, -math.inf, math.nan]  # rows can hold worse
AGENTS = [f"a{i}" for i in range(6)]
TASKS = [f"t{i}" for i in range(6)]
ESCALATIONS = [f"e{i}" for i in range(3)]


def admitted(payload: dict[str, Any], boundary: str) -> Event | None:
    """The event admission makes of ``payload`` on its subject in ``boundary`` (``fw.task.t1``;
    contract v2: the subject carries the actor), or None if it refuses it (so this test keeps
    its meaning as the contract's bounds tighten)."""
    base = {"id": new_id(), "at": datetime.now(UTC).isoformat()}
    _, kind, key = boundary.split(".")
    try:
        return admit(subject(kind, key, payload["actor"]), msgspec.json.encode(base | payload))
    except Rejected:
        return None


def extreme_event(rng: random.Random) -> tuple[str, Event] | None:
    """A random admitted event with extreme values in the fields the watchdog reads."""
    agent, task, esc = rng.choice(AGENTS), rng.choice(TASKS), rng.choice(ESCALATIONS)
    f, n = rng.choice(POSITIVE), rng.choice(INTS)
    own = {"actor": agent, "agent": agent, "task": task}
    choices: list[tuple[str, dict[str, Any]]] = [
        (f"fw.agent.{agent}", {"type": "agent.registered", "actor": agent, "agent": agent,
                                "name": "n", "owner": "o", "team": "t",
                                "heartbeat_interval_s": f, "max_concurrent_tasks": n}),
        (f"fw.agent.{agent}", {"type": "agent.paused", "actor": "user:o", "agent": agent}),
        (f"fw.agent.{agent}", {"type": "agent.resumed", "actor": "user:o", "agent": agent}),
        (f"fw.agent.{agent}", {"type": "agent.offline", "actor": "svc:x", "agent": agent,
                                "escalation": esc}),
        (f"fw.agent.{agent}", {"type": "agent.online", "actor": "svc:x", "agent": agent}),
        (f"fw.agent.{agent}", {"type": "tool.called", "actor": agent, "agent": agent,
                                "tool": "x" * 200, "duration_ms": f, "ok": rng.random() < 0.3,
                                "error": "e" * 8000, "cost_usd": f}),
        (f"fw.agent.{agent}", {"type": "run.finished", "actor": agent, "agent": agent,
                                "run": "r", "outcome": "failed", "latency_ms": f}),
        (f"fw.task.{task}", {"type": "task.created", "actor": "user:o", "task": task,
                              "project": "p", "title": "t", "sla_s": f}),
        (f"fw.task.{task}", {"type": "task.claimed", **own, "epoch": n, "lease_s": f}),
        (f"fw.task.{task}", {"type": "task.progressed", **own, "epoch": n, "percent": 100.0}),
        (f"fw.task.{task}", {"type": "task.blocked", **own, "epoch": n, "reason": "r"}),
        (f"fw.task.{task}", {"type": "task.released", **own, "epoch": n}),
        (f"fw.task.{task}", {"type": "task.lease_expired", "actor": "svc:x", "task": task,
                              "agent": agent, "epoch": n}),
        (f"fw.task.{task}", {"type": "task.reviewed", "actor": "user:r", "task": task,
                              "agent": agent, "verdict": rng.choice(["approve", "reject"])}),
        (f"fw.task.{task}", {"type": "task.cancelled", "actor": "user:o", "task": task}),
        (f"fw.task.{task}", {"type": "task.submitted", **own, "epoch": n,
                              "deliverable": {"kind": "link", "sha256": "0" * 64}}),
        (f"fw.task.{task}", {"type": "task.created", "actor": "user:o", "task": task,
                              "project": "p", "title": "t", "sla_s": f,
                              "depends_on": rng.sample(TASKS, rng.randrange(4))}),
        (f"fw.task.{task}", {"type": "task.dependencies_changed", "actor": "user:o",
                              "task": task, "depends_on": rng.sample(TASKS, rng.randrange(4))}),
        (f"fw.task.{task}", {"type": "task.revoked", "actor": "user:o", "task": task,
                              "agent": agent, "epoch": n}),
        (f"fw.task.{task}", {"type": "task.claim_refused", "actor": "svc:x", "task": task,
                              "agent": agent, "epoch": n, "claim": "c", "reason": "r"}),
        (f"fw.agent.{agent}", {"type": "run.finished", "actor": agent, "agent": agent,
                                "run": "r", "outcome": rng.choice(["succeeded", "cancelled"]),
                                "latency_ms": f}),
        (f"fw.esc.{esc}", {"type": "escalation.raised", "actor": "svc:x", "escalation": esc,
                            "tier": rng.choice(["info", "warning", "critical"]),
                            "reason": rng.choice(["heartbeat_missed", "task_overdue", "x",
                                                  "review_overdue", "dependency_cancelled",
                                                  "failed_runs"]),
                            "agent": agent, "task": task, "message": "m" * 8000,
                            "evidence": {"last_heartbeat_seq": rng.choice(EVIDENCE),
                                         "epoch": rng.choice(EVIDENCE),
                                         "interval_s": rng.choice(EVIDENCE)}}),
        (f"fw.esc.{esc}", {"type": "escalation.acknowledged", "actor": "user:o",
                            "escalation": esc}),
        (f"fw.esc.{esc}", {"type": "escalation.resolved", "actor": "user:o", "escalation": esc}),
    ]  # fmt: skip
    subject, payload = rng.choice(choices)
    event = admitted(payload, subject)
    return None if event is None else (subject.split(".")[1], event)


def extreme_row(rng: random.Random, judge: Judge, now: float) -> None:
    """A projection row read at start, with what a row may hold (worse than admission)."""
    us = int(now * 1e6)
    if rng.random() < 0.5:
        judge.load_agent(rng.choice(AGENTS), rng.choice(["active", "paused", "offline"]),
                         rng.choice(ROW_FLOATS), us)  # fmt: skip
    else:
        sla = rng.choice([None, *ROW_FLOATS])
        deps = tuple(rng.sample(TASKS, rng.randrange(4)))
        for dep in deps[: rng.randrange(len(deps) + 1)]:
            judge.load_ended(dep, "cancelled")
        row = task_row(rng.choice(TASKS),
                       rng.choice(["in_progress", "blocked", "review", "inbox", "assigned"]),
                       rng.choice(AGENTS), rng.choice(ROW_EPOCHS), sla=sla, claimed_us=us,
                       updated_us=us, lease_s=rng.choice(ROW_FLOATS), progress_us=us,
                       last_seq=rng.choice(INTS), submitted_us=rng.choice([None, us]),
                       depends_on=deps)  # fmt: skip
        judge.load_task(row, now)


def assert_publishable(plans: list[Plan]) -> None:
    """What the watchdog plans to publish is admitted on its own subject (a watchdog that
    publishes what admission refuses has judged nothing)."""
    for plan in plans:
        for step in plan.steps:
            subject = subject_of(step.event)
            assert admit(subject, msgspec.json.encode(step.event)) == step.event, step.event


@pytest.mark.parametrize("seed", range(12))
def test_extreme_admitted_values_never_escape_and_every_agent_is_still_judged(seed: int) -> None:
    rng = random.Random(seed)
    judge = Judge(SETTINGS)
    judge.ready, judge.grace_until = True, 0.0
    t = T0  # stream time, seconds
    seq, hb_seq = itertools.count(1), itertools.count(1)
    plans: list[Plan] = []
    for _ in range(400):
        t += rng.choice([0.0, 1e-6, 0.001, 0.5, 10.0, 1e4])
        now = t + rng.choice([0.0, 0.001, 1.0, 100.0])
        roll = rng.random()
        if roll < 0.45:
            picked = extreme_event(rng)
            if picked is not None:
                kind, event = picked
                plans += judge.event(kind, event, next(seq), int(t * 1e9), now)
        elif roll < 0.75:
            agent = rng.choice(AGENTS)
            plans += judge.heartbeat(agent, next(hb_seq), int(t * 1e9), now,
                                     rng.choice([None, *TASKS]))  # fmt: skip
        elif roll < 0.80:
            extreme_row(rng, judge, now)
        elif roll < 0.85:
            plans += judge.reconcile(now)
        else:
            plans += judge.tick(now)
            due = judge.next_due()
            assert due is None or not math.isnan(due)
    assert [str(f) for f in judge.failures.drain()] == []  # the clamps left nothing to isolate
    assert_publishable(plans)

    # after all that, an ordinary agent that falls silent is judged on time
    ctl = AgentRegistered(**env("ctl"), agent="ctl", name="c", owner="o", team="t",
                          heartbeat_interval_s=10.0)  # fmt: skip
    judge.event("agent", ctl, next(seq), int(t * 1e9), t)
    judge.heartbeat("ctl", next(hb_seq), int(t * 1e9), t)
    late = judge.tick(t + 21)
    assert [e.tier for e in raised(late) if e.agent == "ctl"] == ["warning"]
    assert_publishable(late)


@pytest.mark.parametrize(
    ("seconds", "clamped"),
    [(TINY, MIN_PERIOD_S), (0.0, MIN_PERIOD_S), (-1.0, MIN_PERIOD_S), (0.25, 0.25),
     (1e308, MAX_PERIOD_S), (math.inf, MAX_PERIOD_S), (math.nan, MAX_PERIOD_S)],
)  # fmt: skip
def test_a_period_is_clamped_to_what_arithmetic_can_take(seconds: float, clamped: float) -> None:
    assert period(seconds) == clamped


def test_an_interval_of_5e_324_is_judged_as_one_millisecond() -> None:
    """It made the watchdog exit with OverflowError (misses = silence / interval)."""
    w = World()
    w.event(admitted_registration("a1", TINY), T0)
    w.hb("a1", T0)
    [plan] = w.tick(T0 + 1)
    [esc] = raised([plan])
    assert (esc.tier, esc.evidence["interval_s"]) == ("critical", MIN_PERIOD_S)
    assert esc.evidence["misses"] in (999, 1000)  # 1 s // 1 ms, in floating point
    assert_publishable([plan])


def test_an_interval_of_1e308_is_judged_as_ten_years_and_its_deadlines_fit_a_datetime() -> None:
    w = World()
    w.event(admitted_registration("a1", 1e308), T0)
    w.hb("a1", T0)
    agent = w.judge.liveness.agents["a1"]
    warn_at = T0 + MAX_PERIOD_S * SETTINGS.warn_misses
    assert w.judge.liveness.warn_at(agent) == warn_at
    assert w.tick(warn_at - 1) == []
    [plan] = w.tick(warn_at)
    assert raised([plan])[0].evidence["deadline"] == "2047-01-10T08:00:00.000+00:00"
    assert_publishable([plan])


def admitted_registration(agent: str, interval: float) -> AgentRegistered:
    event = admitted({"type": "agent.registered", "actor": agent, "agent": agent, "name": "n",
                      "owner": "o", "team": "t", "heartbeat_interval_s": interval},
                     f"fw.agent.{agent}")  # fmt: skip
    if event is None:  # the contract refuses it now: what a row from before the bound holds
        return AgentRegistered(**env(agent), agent=agent, name="n", owner="o", team="t",
                               heartbeat_interval_s=interval)  # fmt: skip
    assert isinstance(event, AgentRegistered)
    return event


def test_a_lease_of_1e308_and_a_heartbeat_renewing_it_fit_a_datetime() -> None:
    """``timedelta(seconds=1e308)`` raised OverflowError while reading the claim."""
    w = World()
    w.register("a1", T0)
    w.event(TaskCreated(**env("user:p"), task="t1", project="p", title="t1"), T0)
    w.event(TaskClaimed(**env("a1"), task="t1", agent="a1", epoch=1, lease_s=1e308), T0)
    w.hb("a1", T0 + 1)
    w.judge.heartbeat("a1", 99, int((T0 + 2) * 1e9), T0 + 2, "t1")
    assert w.judge.leases.leases["t1"].lease.total_seconds() == MAX_PERIOD_S
    assert w.judge.failures.total == 0
    assert w.tick(T0 + 5) == []


# ---- isolation --------------------------------------------------------------------------------


def test_an_agent_whose_judgement_raises_is_quarantined_and_the_rest_are_judged() -> None:
    w = World()
    for agent in ("bad", "ok"):
        w.register(agent, T0)
        w.claim(agent, f"t-{agent}", T0)
        w.hb(agent, T0)
    liveness, tasks = w.judge.liveness, w.judge.tasks

    def holdings(agent: str) -> list[tuple[str, int]]:  # what a critical releases
        if agent == "bad":
            raise ArithmeticError("judging bad went wrong")
        return tasks.holdings(agent)

    plans = liveness.due(T0 + 51, holdings)  # both silent past critical
    assert {e.agent for e in raised(plans)} == {"ok"}
    assert [e.task for e in events(plans, TaskLeaseExpired)] == ["t-ok"]
    [failure] = w.judge.failures.drain()
    assert (failure.stage, failure.key) == ("liveness", "bad")
    assert isinstance(failure.error, ArithmeticError)
    assert dict(w.judge.states()) == {"critical": 1, "quarantined": 1}
    assert liveness.due(T0 + 1000, holdings) == [] and not w.judge.failures  # left alone
    w.hb("bad", T0 + 1001)  # a heartbeat does not lift it ...
    assert liveness.due(T0 + 2000, holdings) == []
    w.register("bad", T0 + 2001)  # ... a registration does
    assert [e.agent for e in raised(liveness.due(T0 + 2100, tasks.holdings))] == ["bad"]


def test_a_task_whose_judgement_raises_is_skipped_and_the_rest_are_judged() -> None:
    w = World()
    w.register("a1", T0)
    w.claim("a1", "bad", T0, sla=5.0)
    w.claim("a1", "ok", T0, sla=5.0)
    for k in range(1, 4):
        w.hb("a1", T0 + 9 * k)
    overdue = w.judge.overdue
    overdue.incident = failing_for_held("bad", overdue.incident)  # type: ignore[method-assign]
    plans = w.tick(T0 + 30)
    assert [(e.reason, e.task) for e in raised(plans)] == [("task_overdue", "ok")]
    [failure] = w.judge.failures.drain()
    assert (failure.stage, failure.key) == ("overdue", "bad")


def failing_for_held(task: str, real: Callable[..., Any]) -> Callable[..., Any]:
    def call(held: Any) -> Any:
        if held.task == task:
            raise ValueError(f"judging {task} went wrong")
        return real(held)

    return call


def test_an_event_one_part_of_the_judge_cannot_take_still_reaches_the_others() -> None:
    """The lease book failing on a claim leaves the task mirror and the detectors working."""
    w = World()
    w.register("a1", T0)
    w.judge.leases.observe = failing_observe  # type: ignore[method-assign]
    w.claim("a1", "t1", T0, sla=5.0)
    assert "t1" in w.judge.tasks.held
    assert [f.stage for f in w.judge.failures.drain()] == ["lease", "lease"]  # created, claimed
    w.hb("a1", T0 + 9)
    assert [e.task for e in raised(w.tick(T0 + 10))] == ["t1"]


def failing_observe(event: Event, at: datetime, seq: int) -> None:
    raise OverflowError(f"{type(event).__name__}: date value out of range")


def test_a_heartbeat_can_be_admitted_with_every_extreme_and_judged() -> None:
    w = World()
    w.register("a1", T0)
    beat = admitted({"type": "agent.heartbeat", "actor": "a1", "agent": "a1", "task": "t1",
                     "message": "m" * 200}, "fw.hb.a1")  # fmt: skip
    assert isinstance(beat, Heartbeat)
    assert w.judge.heartbeat("a1", 1, int(T0 * 1e9), T0, beat.task) == []
