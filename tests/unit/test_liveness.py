"""The watchdog's pure core (services/watchdog/core/liveness.py, detectors.py, judge.py):
events in with their stream times, an explicit "now", plans out. No network, no clock, no
sleeping."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from fleetward.projections.base import Row
from fleetward.schemas.events import (
    AgentOffline,
    AgentOnline,
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    Deliverable,
    EscalationRaised,
    EscalationResolved,
    Event,
    RunFinished,
    RunOutcome,
    TaskClaimed,
    TaskCreated,
    TaskLeaseExpired,
    TaskProgressed,
    TaskReleased,
    TaskReviewed,
    TaskSubmitted,
    ToolCalled,
)
from fleetward.schemas.ids import new_id
from fleetward.schemas.subjects import subject_of
from fleetward.services.config import WatchdogSettings
from fleetward.services.watchdog.core.incidents import Plan, pause_step
from fleetward.services.watchdog.core.judge import Judge
from fleetward.services.watchdog.core.liveness import DeadlineHeap
from fleetward.services.watchdog.core.mirror import MIRRORED, stream_time

T0 = 1_800_000_000.0  # stream time of the tests' start, seconds
SETTINGS = WatchdogSettings(
    interval_s=10.0,
    warn_misses=2,
    critical_misses=5,
    grace_s=10.0,
    stall_s=60.0,
    default_sla_s=300.0,
    error_window_s=60.0,
    error_threshold=0.5,
    error_min_calls=10,
    wake_runs=5,
    wake_window_s=120.0,
)


def env(actor: str) -> dict[str, Any]:
    return {"id": new_id(), "actor": actor, "at": datetime.now(UTC)}


class World:
    """One judge fed as the watchdog would feed it, with a stream clock of our own."""

    def __init__(self, settings: WatchdogSettings = SETTINGS, *, judging: bool = True) -> None:
        self.judge = Judge(settings)
        self.hb_seq = 0
        self.ev_seq = 0
        self.plans: list[Plan] = []
        if judging:
            self.judge.ready = True
            self.judge.grace_until = 0.0

    def hb(self, agent: str, t: float, now: float | None = None) -> list[Plan]:
        self.hb_seq += 1
        out = self.judge.heartbeat(agent, self.hb_seq, int(t * 1e9), now if now else t)
        self.plans += out
        return out

    def event(self, event: Event, t: float, now: float | None = None) -> list[Plan]:
        self.ev_seq += 1
        kind = type(event).SUBJECT_KIND
        out = self.judge.event(kind, event, self.ev_seq, int(t * 1e9), now if now else t)
        self.plans += out
        return out

    def tick(self, now: float) -> list[Plan]:
        out = self.judge.tick(now)
        self.plans += out
        return out

    def register(self, agent: str, t: float, interval: float = 10.0) -> None:
        self.event(
            AgentRegistered(**env(agent), agent=agent, name=agent, owner="o", team="t",
                            heartbeat_interval_s=interval), t)  # fmt: skip

    def claim(
        self, agent: str, task: str, t: float, epoch: int = 1, sla: float | None = None
    ) -> TaskClaimed:
        if epoch == 1:
            self.event(
                TaskCreated(**env("user:p"), task=task, project="p", title=task, sla_s=sla), t
            )
        claim = TaskClaimed(**env(agent), task=task, agent=agent, epoch=epoch)
        self.event(claim, t)
        return claim


def task_row(
    task: str,
    status: str,
    assignee: str | None,
    epoch: int,
    *,
    updated_us: int,
    sla: float | None = None,
    claimed_us: int | None = None,
    lease_s: float | None = None,
    progress_us: int | None = None,
    last_seq: int = 0,
    submitted_us: int | None = None,
    depends_on: tuple[str, ...] = (),
) -> Row:
    """A task as the watchdog loads it from the board at start (stream times in µs)."""

    def time(us: int | None) -> datetime | None:
        return None if us is None else stream_time(us)

    row: Row = {
        "task_id": task, "status": status, "assignee": assignee, "claim_epoch": epoch,
        "lease_s": lease_s, "depends_on": list(depends_on), "sla_s": sla, "review_rounds": 0,
        "rework_count": 0, "deliverable_version": int(status == "review"),
        "blocked_reason": None, "created_at": time(claimed_us or updated_us),
        "updated_at": time(updated_us), "claimed_at": time(claimed_us),
        "submitted_at": time(submitted_us), "done_at": None, "last_seq": last_seq,
        "last_progress_at": time(progress_us), "claim_id": f"claim-{task}-{epoch}",
        "undo_event": None, "undo_status": None, "undo_assignee": None, "undo_verdict": None,
    }  # fmt: skip
    assert set(row) == set(MIRRORED)
    return row


def raised(plans: list[Plan]) -> list[EscalationRaised]:
    return [e for p in plans for s in p.steps if isinstance(e := s.event, EscalationRaised)]


def events(plans: list[Plan], kind: type[Event]) -> list[Any]:
    return [s.event for p in plans for s in p.steps if isinstance(s.event, kind)]


# ---- the heap --------------------------------------------------------------------------------


def test_heap_pops_due_keys_once_and_rescheduling_replaces_the_old_entry() -> None:
    heap: DeadlineHeap[str] = DeadlineHeap()
    heap.schedule("a", 5.0)
    heap.schedule("b", 3.0)
    heap.schedule("a", 10.0)  # replaces a@5
    heap.cancel("b")
    assert heap.next_due() == 10.0
    assert heap.pop_due(9.9) == []
    assert heap.pop_due(10.0) == ["a"]
    assert heap.pop_due(100.0) == [] and len(heap) == 0


def test_heap_drops_stale_entries_when_they_pile_up() -> None:
    heap: DeadlineHeap[int] = DeadlineHeap()
    for i in range(10_000):
        heap.schedule(i % 10, float(i))
    assert len(heap) == 10
    assert len(heap._heap) <= 2 * 10 + 1025
    assert sorted(heap.pop_due(1e9)) == list(range(10))


# ---- liveness --------------------------------------------------------------------------------


def test_a_silent_agent_gets_a_warning_then_a_critical_at_the_right_times() -> None:
    w = World()
    w.register("a1", T0)
    w.claim("a1", "t1", T0 + 0.5)
    w.claim("a1", "t2", T0 + 0.5)
    w.claim("a1", "t3", T0 + 0.5)
    w.event(TaskReleased(**env("a1"), task="t3", agent="a1", epoch=1), T0 + 0.6)
    w.hb("a1", T0 + 1)
    assert w.tick(T0 + 1 + 19.99) == []
    [warning] = w.tick(T0 + 21)
    [esc] = raised([warning])
    assert (esc.tier, esc.reason, esc.agent) == ("warning", "heartbeat_missed", "a1")
    assert esc.message == "no heartbeat for 20.0s (interval 10s)"
    assert esc.escalation.startswith("hb-")
    assert esc.evidence["misses"] == 2 and esc.evidence["last_heartbeat_seq"] == 1
    assert warning.steps[0].expect == "empty"
    assert warning.deadline == pytest.approx(T0 + 21)
    assert w.tick(T0 + 50.99) == []
    [critical] = w.tick(T0 + 51.2)
    assert [type(s.event) for s in critical.steps] == [
        EscalationRaised, AgentOffline, TaskLeaseExpired, TaskLeaseExpired]  # fmt: skip
    assert critical.steps[0].expect == "open"
    crit = raised([critical])[0]
    assert (crit.tier, crit.escalation) == ("critical", esc.escalation)
    assert crit.id != esc.id
    assert {(e.task, e.epoch) for e in events([critical], TaskLeaseExpired)} == {
        ("t1", 1), ("t2", 1)}  # fmt: skip
    assert w.tick(T0 + 500) == []  # judged once: critical waits for a heartbeat

    [recovery] = w.hb("a1", T0 + 600)
    [resolved] = events([recovery], EscalationResolved)
    [online] = events([recovery], AgentOnline)
    assert resolved.escalation == esc.escalation and recovery.steps[0].expect == "open"
    assert online.agent == "a1" and online.escalation == esc.escalation
    assert w.hb("a1", T0 + 601) == []  # recovered once
    assert dict(w.judge.states()) == {"alive": 1}


def test_heartbeats_keep_an_agent_alive_and_a_later_silence_is_a_new_incident() -> None:
    w = World()
    w.register("a1", T0)
    for k in range(30):
        w.hb("a1", T0 + 9 * k)
        assert w.tick(T0 + 9 * k + 0.5) == []
    last = T0 + 9 * 29
    [first] = w.tick(last + 20)
    w.hb("a1", last + 25)
    [second] = w.tick(last + 45)
    assert raised([first])[0].escalation != raised([second])[0].escalation


def test_time_is_the_streams_not_the_agents() -> None:
    w = World()
    w.register("a1", T0)
    hb = w.judge.heartbeat("a1", 1, int((T0 + 1) * 1e9), T0 + 100)  # judged late: no matter
    assert hb == []
    assert raised(w.tick(T0 + 21)) != []


def test_a_critical_after_a_long_silence_comes_at_once() -> None:
    w = World()
    w.register("a1", T0)
    w.hb("a1", T0)
    [plan] = w.tick(T0 + 200)
    assert [e.tier for e in raised([plan])] == ["critical"]
    assert plan.steps[0].expect == "empty"  # nothing was raised before: a new escalation


def test_a_heartbeat_no_newer_than_the_escalations_does_not_resolve_it() -> None:
    w = World()
    w.register("a1", T0)
    w.hb("a1", T0)
    assert len(w.tick(T0 + 21)) == 1
    # the same (last) heartbeat read again, as after a reconnect: not a sign of life
    assert w.judge.heartbeat("a1", 1, int(T0 * 1e9), T0 + 22) == []
    assert dict(w.judge.states()) == {"warning": 1}


def test_paused_and_retired_agents_are_not_judged_and_resume_counts_from_the_resume() -> None:
    w = World()
    w.register("a1", T0)
    w.hb("a1", T0)
    w.event(AgentPaused(**env("a1"), agent="a1"), T0 + 1)
    assert w.tick(T0 + 1000) == []
    w.event(AgentResumed(**env("user:op"), agent="a1"), T0 + 1000)
    assert w.tick(T0 + 1019) == []
    [plan] = w.tick(T0 + 1020)
    [esc] = raised([plan])
    assert esc.tier == "warning"
    assert esc.message == (  # the silence it counts, and the real one
        "no heartbeat for 20.0s (interval 10s), counted from its last status change "
        "(its last heartbeat: 1020.0s ago)"
    )


def test_an_unregistered_agent_gets_the_default_interval_until_it_registers() -> None:
    w = World(replace(SETTINGS, interval_s=60.0))
    w.hb("a1", T0)
    assert w.tick(T0 + 30) == []
    w.register("a1", T0 + 1, interval=5.0)
    [plan] = w.tick(T0 + 11.5)  # 2 x 5s after the registration (its last sign of life)
    assert raised([plan])[0].evidence["interval_s"] == 5.0


def test_a_person_resolving_a_silent_agents_escalation_dismisses_it_until_it_heartbeats() -> None:
    w = World()
    w.register("a1", T0)
    w.hb("a1", T0)
    [plan] = w.tick(T0 + 21)
    esc = raised([plan])[0].escalation
    w.event(EscalationRaised(**env("svc:watchdog"), escalation=esc, tier="warning",
                             reason="heartbeat_missed", agent="a1"), T0 + 21)  # fmt: skip
    w.event(EscalationResolved(**env("user:op"), escalation=esc), T0 + 30)
    assert w.tick(T0 + 1000) == []
    assert dict(w.judge.states()) == {"dismissed": 1}
    assert w.hb("a1", T0 + 1001) == []  # nothing to resolve any more
    assert raised(w.tick(T0 + 1021))[0].escalation != esc


def test_two_replicas_name_every_incident_and_event_alike() -> None:
    a, b = World(), World()
    for w in (a, b):
        for i in range(20):
            w.register(f"a{i}", T0)
            w.claim(f"a{i}", f"t{i}", T0)
        for i in range(20):
            w.hb(f"a{i}", T0 + 1 + (i if i % 2 else 1000))
    # a little apart in time, as two hosts would be
    plans_a = a.tick(T0 + 40) + a.tick(T0 + 80)
    plans_b = b.tick(T0 + 40.3) + b.tick(T0 + 80.3)
    ids_a = sorted(s.event.id for p in plans_a for s in p.steps)
    assert ids_a == sorted(s.event.id for p in plans_b for s in p.steps)
    reasons = Counter(e.reason for e in raised(plans_a))
    # odd agents: warning and critical; even ones stay alive but never report on their task
    assert reasons == {"heartbeat_missed": 20, "task_stalled": 10}


def test_a_raise_by_another_replica_is_adopted_not_raised_again() -> None:
    me, other = World(), World()
    for w in (me, other):
        w.register("a1", T0)
        w.hb("a1", T0)
    [theirs] = other.tick(T0 + 21)
    warning = raised([theirs])[0]
    me.event(warning, T0 + 21)  # read on fw.esc.> before this replica's own tick
    assert me.tick(T0 + 21.5) == []
    [critical] = me.tick(T0 + 51)
    assert raised([critical])[0].escalation == warning.escalation
    assert critical.steps[0].expect == "open"


def test_grace_judges_no_one_but_keeps_tracking() -> None:
    w = World(judging=False)
    w.register("silent", T0 - 100)
    w.register("alive", T0 - 100)
    w.hb("silent", T0 - 25)
    w.hb("alive", T0 - 25)
    w.judge.enter_grace(T0)
    assert w.tick(T0 + 5) == []  # not caught up yet
    w.judge.ready = True
    w.hb("alive", T0 + 5)  # heartbeats during grace count
    assert w.tick(T0 + 9.99) == []
    [plan] = w.tick(T0 + 10)
    assert raised([plan])[0].agent == "silent"
    assert w.judge.judging(T0 + 10)
    w.judge.enter_grace(T0 + 11)  # a reconnect
    w.hb("alive", T0 + 11)
    assert not w.judge.judging(T0 + 20) and w.tick(T0 + 20.5) == []


def test_a_restart_from_the_projections_escalates_only_the_truly_silent() -> None:
    """The state a restarted watchdog reads: the registry (with each agent's last lifecycle
    change), then each agent's last heartbeat from the stream."""
    w = World(judging=False)
    for i in range(10):
        w.judge.load_agent(f"a{i}", "active", 10.0, int(T0 * 1e6))
    w.judge.load_agent("paused", "paused", 10.0, int(T0 * 1e6))
    now = T0 + 100  # down for a while
    w.judge.enter_grace(now)
    for i in range(10):
        last = now - 45 if i < 4 else now - 5  # a0..a3 went silent during the downtime
        w.judge.heartbeat(f"a{i}", 100 + i, int(last * 1e9), now)
    w.judge.ready = True
    assert w.tick(now + 9) == []
    for i in range(4, 10):  # the living go on heartbeating
        w.hb(f"a{i}", now + 9)
    plans = w.tick(now + 10)
    assert sorted(str(e.agent) for e in raised(plans)) == ["a0", "a1", "a2", "a3"]
    assert {e.tier for e in raised(plans)} == {"critical"}  # silent for 55s > 5 x 10s


def test_an_offline_agent_that_heartbeats_comes_back_online() -> None:
    w = World()
    w.judge.load_agent("a1", "offline", 10.0, int(T0 * 1e6))
    [plan] = w.hb("a1", T0 + 5)
    [online] = events([plan], AgentOnline)
    assert online.escalation is None
    w.event(AgentOnline(**env("svc:watchdog"), agent="a1"), T0 + 5.1)
    assert dict(w.judge.states()) == {"alive": 1}


def test_a_tick_does_work_only_for_the_agents_that_are_due() -> None:
    """10,000 agents: a tick with nobody due pops nothing; work grows with the deadlines that
    pass, never with the number of agents times the number of ticks."""
    w = World()
    rng = random.Random(4)
    n = 10_000
    for i in range(n):
        w.judge.load_agent(f"a{i}", "active", 10.0, int(T0 * 1e6))
    for i in range(n):
        w.hb(f"a{i}", T0 + rng.random())
    heap = w.judge.liveness.heap
    start = heap.popped
    for k in range(1, 1800):  # ticks every 10 ms until just before the first deadline
        assert w.tick(T0 + 1 + k / 100) == []
    assert heap.popped == start
    # 35 s more, everyone heartbeating every 9 s except a7: each entry pops about once per
    # interval, and a7 is judged twice (warning, critical)
    silent = "a7"
    t = T0 + 1
    for k in range(1, 3500):
        now = T0 + 19 + k / 100
        while t + 9 <= now:
            t += 9
            for i in range(n):
                if f"a{i}" != silent:
                    w.hb(f"a{i}", t)
        w.tick(now)
    assert [e.agent for e in raised(w.plans)] == [silent, silent]
    assert heap.popped - start < 5 * n  # ~1 pop per agent per interval; a scan: 35M


def test_partitions_split_the_agents_between_replicas() -> None:
    judges = [Judge(replace(SETTINGS, partition=(i, 3))) for i in range(3)]
    owners = Counter(sum(j.owns(f"agent-{k}") for j in judges) for k in range(3000))
    assert owners == {1: 3000}
    shares = [sum(j.owns(f"agent-{k}") for k in range(3000)) for j in judges]
    assert min(shares) > 900


def test_a_replica_ignores_the_agents_of_other_partitions() -> None:
    w = World(replace(SETTINGS, partition=(0, 2)))
    mine = next(f"a{i}" for i in range(100) if w.judge.owns(f"a{i}"))
    theirs = next(f"a{i}" for i in range(100) if not w.judge.owns(f"a{i}"))
    for agent in (mine, theirs):
        w.judge.load_agent(agent, "active", 10.0, int(T0 * 1e6))
    assert [e.agent for e in raised(w.tick(T0 + 21))] == [mine]


# ---- task detectors --------------------------------------------------------------------------


def keep_alive(w: World, agents: list[str], until: float) -> None:
    t = T0
    while t < until:
        for a in agents:
            w.hb(a, t)
        t += 5


def test_an_overdue_task_is_escalated_and_a_healthy_control_group_is_not() -> None:
    w = World(replace(SETTINGS, stall_s=10_000))
    agents = ["late", "quick", "default"]
    for a in agents:
        w.register(a, T0)
    w.claim("late", "t-late", T0, sla=30)
    w.claim("quick", "t-quick", T0, sla=30)
    w.claim("default", "t-default", T0)  # the default SLA: 300 s
    w.event(TaskProgressed(**env("late"), task="t-late", agent="late", epoch=1), T0 + 10)
    w.event(
        TaskSubmitted(
            **env("quick"),
            task="t-quick",
            agent="quick",
            epoch=1,
            deliverable=Deliverable(kind="markdown", sha256="0" * 64),
        ),
        T0 + 20,
    )
    approved = TaskReviewed(**env("user:r"), task="t-quick", agent="quick", verdict="approve")
    w.event(approved, T0 + 40)  # within its SLA in review too
    keep_alive(w, agents, T0 + 400)
    assert w.tick(T0 + 29.9) == []
    [plan] = w.tick(T0 + 30)
    [esc] = raised([plan])
    assert (esc.reason, esc.task, esc.agent, esc.tier) == (
        "task_overdue",
        "t-late",
        "late",
        "warning",
    )
    assert esc.evidence["epoch"] == 1 and plan.steps[0].expect == "empty"
    assert w.tick(T0 + 299) == []
    assert [e.task for e in raised(w.tick(T0 + 300))] == ["t-default"]
    # the late task is submitted at last: its escalation resolves
    done = w.event(TaskReleased(**env("late"), task="t-late", agent="late", epoch=1), T0 + 301)
    assert [e.escalation for e in events(done, EscalationResolved)] == [esc.escalation]


def test_a_stalled_task_is_escalated_and_resolved_by_the_next_report() -> None:
    w = World()
    agents = ["stuck", "busy"]
    for a in agents:
        w.register(a, T0)
    w.claim("stuck", "t-stuck", T0)
    w.claim("busy", "t-busy", T0)
    for k in range(1, 10):  # the control reports every 20 s
        w.event(TaskProgressed(**env("busy"), task="t-busy", agent="busy", epoch=1), T0 + 20 * k)
    w.event(TaskProgressed(**env("stuck"), task="t-stuck", agent="stuck", epoch=1), T0 + 50)
    keep_alive(w, agents, T0 + 200)
    assert w.tick(T0 + 60) == []  # reported at 50: its deadline moved to 110
    [plan] = w.tick(T0 + 110)
    [esc] = raised([plan])
    assert (esc.reason, esc.task) == ("task_stalled", "t-stuck")
    assert w.tick(T0 + 180) == []
    back = w.event(TaskProgressed(**env("stuck"), task="t-stuck", agent="stuck", epoch=1), T0 + 190)
    assert [e.escalation for e in events(back, EscalationResolved)] == [esc.escalation]
    assert raised(w.plans) == [esc]


def test_a_task_loaded_at_start_is_watched_and_its_lease_released_at_critical() -> None:
    w = World()
    w.judge.load_agent("a1", "active", 10.0, int(T0 * 1e6))
    us = int(T0 * 1e6)
    w.judge.load_task(task_row("t1", "in_progress", "a1", 3, claimed_us=us, updated_us=us), T0)
    w.judge.load_task(task_row("t2", "review", "a1", 1, claimed_us=us, updated_us=us), T0)
    [critical] = w.tick(T0 + 50)
    assert [(e.task, e.epoch) for e in events([critical], TaskLeaseExpired)] == [("t1", 3)]


# ---- agent detectors -------------------------------------------------------------------------


def tool(agent: str, ok: bool) -> ToolCalled:
    return ToolCalled(**env(agent), agent=agent, tool="web.search", duration_ms=5.0, ok=ok,
                      error=None if ok else "timeout")  # fmt: skip


def test_a_tool_error_spike_pauses_the_agent_and_a_healthy_control_group_stays_quiet() -> None:
    w = World()
    for a in ("flaky", "steady", "few"):
        w.register(a, T0)
    for k in range(10):
        w.event(tool("steady", ok=k % 5 != 0), T0 + k)  # 20% errors
        w.event(tool("few", ok=False), T0 + k) if k < 5 else None  # all fail, but only 5 calls
    plans: list[Plan] = []
    for k in range(12):
        plans += w.event(tool("flaky", ok=k % 3 == 0), T0 + k)  # 2/3 fail
    [plan] = plans
    [esc] = raised([plan])
    assert (esc.reason, esc.tier, esc.agent) == ("tool_error_spike", "critical", "flaky")
    assert_paused_as_an_operator_would(plan, "flaky", esc.escalation)
    assert raised(w.plans) == [esc]  # one per window, however many errors follow


def assert_paused_as_an_operator_would(plan: Plan, agent: str, esc: str) -> None:
    """The plan raises ``esc`` and then pauses ``agent`` with ``agent.paused`` on the agent's
    subject, naming the escalation (the board turns it into the inbox's pause command); no
    command of its own."""
    assert [type(s.event) for s in plan.steps] == [EscalationRaised, AgentPaused]
    assert plan.steps[0].expect == "empty" and plan.steps[1].expect == "any"
    paused = plan.steps[1].event
    assert isinstance(paused, AgentPaused)
    assert (paused.agent, paused.actor) == (agent, "svc:watchdog")
    assert esc in paused.reason
    assert subject_of(paused) == f"fw.agent.{agent}.svc:watchdog"
    # its id depends on the escalation alone: every replica, whenever it judges, sends the same
    assert paused.id == pause_step(esc, agent, T0 + 1e6, "another wording").event.id


def test_old_tool_errors_and_errors_during_grace_raise_nothing() -> None:
    w = World()
    w.register("flaky", T0)
    for k in range(20):  # a replay of an old spike
        w.event(tool("flaky", ok=False), T0 + k, now=T0 + 3600)
    assert w.plans == []
    g = World(judging=False)
    g.register("flaky", T0)
    for k in range(20):
        g.event(tool("flaky", ok=False), T0 + k)
    assert g.plans == []


def run_finished(agent: str, run: str) -> RunFinished:
    return RunFinished(**env(agent), agent=agent, run=run, outcome="succeeded", latency_ms=10.0)


def test_a_wake_loop_is_escalated_and_resolved_by_progress() -> None:
    w = World()
    for a in ("looping", "working"):
        w.register(a, T0)
    w.claim("working", "t1", T0)
    for k in range(10):
        w.event(run_finished("working", f"r{k}"), T0 + 10 * k)
        w.event(
            TaskProgressed(**env("working"), task="t1", agent="working", epoch=1), T0 + 10 * k + 1
        )
    plans: list[Plan] = []
    for k in range(8):
        plans += w.event(run_finished("looping", f"r{k}"), T0 + 10 * k)
    [plan] = plans
    [esc] = raised([plan])
    assert (esc.reason, esc.tier, esc.agent) == ("wake_loop", "warning", "looping")
    assert esc.evidence["runs"] == 5
    w.claim("looping", "t2", T0 + 100)
    assert [e.escalation for e in events(w.plans, EscalationResolved)] == [esc.escalation]
    assert raised(w.plans) == [esc]


def test_runs_spread_wider_than_the_window_are_not_a_loop() -> None:
    w = World()
    w.register("slow", T0)
    for k in range(10):
        w.event(run_finished("slow", f"r{k}"), T0 + 40 * k)  # 5 runs take 160 s > 120 s
    assert w.plans == []


def test_detectors_leave_paused_agents_alone() -> None:
    w = World()
    w.register("p", T0)
    w.event(AgentPaused(**env("p"), agent="p"), T0)
    for k in range(20):
        w.event(tool("p", ok=False), T0 + k)
        w.event(run_finished("p", f"r{k}"), T0 + k)
    assert w.plans == []


def test_a_copy_of_a_heartbeat_stored_late_is_no_sign_of_life() -> None:
    """A heartbeat counts only if its id is newer than the agent's last counted one (the rule
    of projections/idempotence.py): a copy republished under another Nats-Msg-Id, or an older
    heartbeat stored late, neither resolves an escalation nor keeps the agent alive."""
    w = World()
    w.register("a1", T0)
    older, last, newer = sorted(new_id() for _ in range(3))
    assert w.judge.heartbeat("a1", 1, int(T0 * 1e9), T0, event_id=last) == []
    assert [e.tier for e in raised(w.tick(T0 + 60))] == ["critical"]
    for n, copy in enumerate((last, older)):  # stored again later, at new stream sequences
        assert w.judge.heartbeat("a1", 2 + n, int((T0 + 61) * 1e9), T0 + 61, event_id=copy) == []
    assert dict(w.judge.states()) == {"critical": 1}
    [recovered] = w.judge.heartbeat("a1", 4, int((T0 + 62) * 1e9), T0 + 62, event_id=newer)
    assert dict(w.judge.states()) == {"alive": 1}
    assert recovered.steps  # the escalation is resolved by the newer heartbeat alone


# ---- failed runs -----------------------------------------------------------------------------


def run_failed(agent: str, run: str, outcome: RunOutcome = "failed") -> RunFinished:
    return RunFinished(**env(agent), agent=agent, run=run, outcome=outcome, latency_ms=10.0)


def failed_runs(plans: list[Plan]) -> list[EscalationRaised]:
    return [e for e in raised(plans) if e.reason == "failed_runs"]


def test_runs_failed_in_a_row_pause_the_agent_however_far_apart() -> None:
    """1 s, 3 s and 200 s apart (the error spike's and the wake loop's windows see none of the
    last two): the fifth failure in a row raises a critical escalation and pauses the agent,
    once however many follow; a success in between, or fewer failures, raise nothing."""
    w = World()
    spacing = {"fast": 1.0, "slow": 3.0, "sparse": 200.0, "mixed": 3.0, "few": 3.0}
    for a in spacing:
        w.register(a, T0)
    for k in range(9):
        for a, gap in spacing.items():
            t = T0 + gap * k
            if a == "mixed":
                w.event(run_failed(a, f"r{k}", "succeeded" if k == 4 else "failed"), t)
            elif a != "few" or k < 4:
                w.event(run_failed(a, f"r{k}", "cancelled" if k == 2 else "failed"), t)
    found = failed_runs(w.plans)
    assert sorted(str(e.agent) for e in found) == ["fast", "slow", "sparse"]
    for esc in found:
        assert (esc.tier, esc.evidence["failed_runs"], esc.evidence["run"]) == ("critical", 5, "r5")
        [plan] = [p for p in w.plans if p.raised == esc]
        assert_paused_as_an_operator_would(plan, str(esc.agent), esc.escalation)


def test_an_agent_resuming_itself_from_the_watchdogs_pause_is_ignored() -> None:
    """The watchdog's pause is lifted only by a person or a service (projections/lifecycle.py):
    the agent's own resume neither makes it active again nor ends the streak and resolves its
    escalation; a person's does."""
    w = World()
    w.register("a1", T0)
    for k in range(5):
        w.event(run_failed("a1", f"r{k}"), T0 + 10 * k)
    [first] = failed_runs(w.plans)
    w.event(AgentPaused(**env("svc:watchdog"), agent="a1"), T0 + 41)
    assert w.event(AgentResumed(**env("a1"), agent="a1"), T0 + 50) == []
    assert w.judge.liveness.agents["a1"].status == "paused"
    back = w.event(AgentResumed(**env("user:op"), agent="a1"), T0 + 100)
    assert [e.escalation for e in events(back, EscalationResolved)] == [first.escalation]
    assert w.judge.liveness.agents["a1"].status == "active"


def test_a_success_or_a_resume_ends_the_streak_and_resolves_its_escalation() -> None:
    w = World()
    w.register("a1", T0)
    for k in range(5):
        w.event(run_failed("a1", f"r{k}"), T0 + 10 * k)
    [first] = failed_runs(w.plans)
    w.event(AgentPaused(**env("svc:watchdog"), agent="a1"), T0 + 41)
    w.event(run_failed("a1", "late"), T0 + 42)  # a run that was under way: no second raise
    back = w.event(AgentResumed(**env("user:op"), agent="a1"), T0 + 100)
    assert [e.escalation for e in events(back, EscalationResolved)] == [first.escalation]
    for k in range(4):  # a new streak after the resume: escalated and paused anew at five
        w.event(run_failed("a1", f"s{k}"), T0 + 200 + k)
    assert failed_runs(w.plans) == [first]
    [plan] = w.event(run_failed("a1", "s4"), T0 + 204)
    [second] = raised([plan])
    assert second.escalation != first.escalation
    assert_paused_as_an_operator_would(plan, "a1", second.escalation)
    w.event(AgentResumed(**env("user:op"), agent="a1"), T0 + 300)
    [resolved] = events(w.plans[-1:], EscalationResolved)
    assert resolved.escalation == second.escalation
    for k in range(4):
        w.event(run_failed("a1", f"u{k}"), T0 + 400 + k)
    ok = w.event(run_failed("a1", "u-ok", "succeeded"), T0 + 410)
    assert ok == []  # nothing open: nothing to resolve, and the streak of four is over
    for k in range(4):
        w.event(run_failed("a1", f"v{k}"), T0 + 500 + k)
    assert len(failed_runs(w.plans)) == 2


def test_failed_runs_read_before_judging_raise_only_at_a_new_failure_and_never_twice() -> None:
    """At start the watchdog reads every failure since the projections' checkpoints without
    judging: a streak among them raises nothing until a failure is read while judging, and not
    at all when its escalation is open already (raised before a restart, loaded at start)."""
    w = World(judging=False)
    w.judge.load_agent("again", "active", 10.0, int(T0 * 1e6))
    w.judge.load_agent("known", "active", 10.0, int(T0 * 1e6))
    before = EscalationRaised(**env("svc:watchdog"), escalation="fr-before-restart",
                              tier="critical", reason="failed_runs", agent="known")  # fmt: skip
    w.judge.load_escalation(before, 7, T0)
    for k in range(8):  # the replay: old failures, read hours later
        for a in ("again", "known"):
            w.event(run_failed(a, f"r{k}"), T0 + 3 * k, now=T0 + 7200)
    w.judge.enter_grace(T0 + 7200)
    w.judge.ready = True
    for a in ("again", "known"):
        w.hb(a, T0 + 7205)
    assert w.tick(T0 + 7210) == [] and w.plans == []
    for a in ("again", "known"):
        w.event(run_failed(a, "new"), T0 + 7211)
    [esc] = failed_runs(w.plans)
    assert (esc.agent, esc.evidence["failed_runs"], esc.evidence["run"]) == ("again", 9, "new")


def test_two_replicas_raise_the_same_failed_runs_escalation_and_pause() -> None:
    a, b = World(), World()
    for w in (a, b):
        w.register("a1", T0)
        for k in range(5):
            w.event(run_failed("a1", f"r{k}"), T0 + 60 * k, now=T0 + 60 * k + (w is b) * 0.3)
    ids = [sorted(s.event.id for p in w.plans for s in p.steps) for w in (a, b)]
    assert ids[0] == ids[1] and len(ids[0]) == 2
