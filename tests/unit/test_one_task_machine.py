"""One task state machine (DESIGN 3.3; issue 12, item 1): every reader of the stream agrees on
each task's status, holder and claim epoch, at every position of the stream. Pure: no network.

The property test folds random interleavings of task and agent events over a few tasks and
agents three ways, as each reader does:

- the board (``TaskBoard.apply`` on a ``Rows``), reading task and agent subjects; what it emits
  on task subjects (its verdicts) goes to an outbox, which publishes it, in order, at a random
  later position of the stream (other events come in between, as with the projector's outbox);
- ``step`` per task subject (the agent client's ``read_task``);
- the watchdog (``Judge``): its task mirror and lease book, fed as the service feeds it, with its
  heartbeats and its own lease expiries (published compare-and-set on the task's subject, as the
  service does).

After every event they agree, a claim the board refused never holds a task once its verdict is
folded, the watchdog's leases are exactly the claims that hold, and a lease expiry the watchdog
publishes is never one the board refuses. ``FLEETWARD_TASK_MACHINE_EXAMPLES`` sets how many
examples run (fixed ones, unless ``FLEETWARD_TASK_MACHINE_RANDOM`` is set); a failing one is
reported with its events, and shrunk first with ``FLEETWARD_TASK_MACHINE_SHRINK`` (minutes).
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, given, note, seed, settings
from hypothesis import strategies as st

from fleetward.projections.base import Meta, Row, Rows
from fleetward.projections.lifecycle import FORBIDDEN
from fleetward.projections.tasks import (
    BOARD,
    HELD,
    OPEN,
    REJECTIONS,
    TASK_AGENTS,
    TASKS,
    TaskBoard,
    holder,
    step,
)
from fleetward.schemas import Rejected, new_id
from fleetward.schemas.events import (
    AgentOffline,
    AgentOnline,
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    Deliverable,
    Event,
    TaskAssigned,
    TaskBlocked,
    TaskCancelled,
    TaskClaimed,
    TaskClaimRefused,
    TaskCreated,
    TaskDependenciesChanged,
    TaskLeaseExpired,
    TaskProgressed,
    TaskReleased,
    TaskReviewed,
    TaskRevoked,
    TaskSubmitted,
)
from fleetward.schemas.subjects import subject_of
from fleetward.services.db import q
from fleetward.services.watchdog.core.incidents import TASK_OVERDUE, TASK_STALLED
from fleetward.services.watchdog.core.judge import Judge
from fleetward.services.watchdog.core.mirror import MIRRORED, micros
from tests.unit.test_liveness import SETTINGS, T0, World, env, events, raised

EXAMPLES = int(os.environ.get("FLEETWARD_TASK_MACHINE_EXAMPLES", "80"))
SEED = 3  # the fixed examples (any seed reaches every state and verdict in 80 examples)
# shrinking a failure takes minutes: by default a failing example is reported whole (its trace)
PHASES = tuple(Phase) if os.environ.get("FLEETWARD_TASK_MACHINE_SHRINK") else (
    Phase.explicit, Phase.reuse, Phase.generate)  # fmt: skip
TASK_IDS = ("t0", "t1", "t2", "t3", "t4")
AGENT_IDS = ("a0", "a1", "a2")
PEOPLE = ("user:ops", "svc:planner")
# an agent reviews only with the role reviewer (agents come twice: they review more often)
REVIEWERS = ("user:rev", *AGENT_IDS, "svc:qa", *AGENT_IDS)
START = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
# liveness stays out of the way (agents promise a heartbeat every day); leases and stalls do not
QUIET = replace(SETTINGS, interval_s=86_400.0, stall_s=120.0, default_sla_s=900.0)
DELIVERABLE = Deliverable(kind="markdown", sha256="0" * 64, content="x")
T = TypeVar("T")


def envelope(actor: str) -> dict[str, Any]:
    return {"id": new_id(), "actor": actor, "at": START}


class Readers:
    """The stream, and the three readers folding it. ``delay()`` says how many events come
    between a verdict the board emits and its publication."""

    def __init__(self, delay: Callable[[], int] = lambda: 0) -> None:
        self.delay = delay
        self.seq = 0
        self.time = START
        self.board, self.rows = TaskBoard(), Rows()
        self.client: dict[str, Row] = {}
        self.judge = Judge(QUIET)
        self.judge.ready, self.judge.grace_until = True, 0.0
        # the board's verdicts waiting to be published, in order, each with the sequence after
        # which the outbox publishes it
        self.outbox: list[tuple[int, Event]] = []
        self.last_on: dict[str, int] = {}  # the last sequence on each task's subject
        self.refused_claims: set[str] = set()  # claims whose verdict is folded, or rejected
        self.hb_seq = 0
        self.reached: Counter[str] = Counter()  # what the example went through

    # ---- the stream ----------------------------------------------------------------------------

    def now(self) -> float:
        return micros(self.time) / 1e6

    def publish(self, event: Event, after: float) -> None:
        """Store ``event`` ``after`` seconds after the last one; every reader folds it."""
        self.seq += 1
        self.time += timedelta(seconds=after)
        subject = subject_of(event)
        meta = Meta(self.seq, self.time, subject)
        note(f"{self.seq} {self.time:%H:%M:%S.%f} {event!r}")  # the trace of a failing example
        kind = type(event).SUBJECT_KIND
        before = len(self.rows.outbox)
        try:
            self.board.apply(self.rows, event, meta)
        except Rejected as refused:  # an agent overruling its operators: dead-lettered
            assert refused.reason == FORBIDDEN, refused
            self.reached["lifecycle_refused"] += 1
        for emitted, _ in self.rows.outbox[before:]:
            if type(emitted).SUBJECT_KIND == "task":  # verdicts; commands go to inboxes
                due = max(self.outbox[-1][0] if self.outbox else 0, self.seq + self.delay())
                self.outbox.append((due, emitted))
        if kind == "task":
            task = getattr(event, "task")  # noqa: B009
            self.last_on[task] = self.seq
            was = self.client.get(task)
            folded = step(was, event, meta)
            if not isinstance(folded, str):
                self.client[task] = folded
                self.reached[folded["status"]] += 1
                self._note(event, was)
            if isinstance(event, TaskClaimed) and self.rows.get(REJECTIONS, (task, self.seq)):
                self.refused_claims.add(event.id)
            if isinstance(event, TaskClaimRefused):
                self.refused_claims.add(event.claim)
        self.judge.event(kind, event, self.seq, micros(self.time) * 1000, self.now())
        self.check()

    def _note(self, event: Event, was: Row | None) -> None:
        """Count the board's verdicts that took effect."""
        if event.actor == BOARD:
            name = type(event).__struct_config__.tag.split(".")[1]
            self.reached[name if name.endswith("refused") else f"board_{name}"] += 1
            if isinstance(event, TaskClaimRefused) and holder(was) is not None:
                self.reached["voided_claim"] += 1

    def heartbeat(self, agent: str, task: str | None, after: float) -> None:
        self.time += timedelta(seconds=after)
        self.hb_seq += 1
        self.judge.heartbeat(agent, self.hb_seq, micros(self.time) * 1000, self.now(), task)
        self.check()

    def tick(self, after: float) -> None:
        """The watchdog judges; its lease expiries are published compare-and-set on the task's
        subject (a lapse the subject moved past is dropped, as the service drops it)."""
        now = self.now() + after
        for plan in self.judge.tick(now):
            for s in plan.steps:
                expired = s.event
                if not isinstance(expired, TaskLeaseExpired):
                    continue
                assert s.expect == "exact", "liveness stays quiet here"
                if self.last_on.get(expired.task) == s.seq:
                    self.publish(expired, 0.001)
                    rejected = self.rows.get(REJECTIONS, (expired.task, self.seq))
                    assert rejected is None, f"the board refused the watchdog's {expired}"
                    self.reached["watchdog_expiry"] += 1

    # ---- the checks ----------------------------------------------------------------------------

    def check(self) -> None:
        mirror, leases = self.judge.tasks, self.judge.leases.leases
        for task in TASK_IDS:
            board, client = self.rows.get(TASKS, (task,)), self.client.get(task)
            mine = mirror.rows.get(task)
            status = None if board is None else board["status"]
            assert mirror.status(task) == status == (None if client is None else client["status"])
            held = mirror.held.get(task)
            assert holder(board) == holder(client) == (None if held is None else held.agent)
            if board is None:
                assert client is None and mine is None
                continue
            assert client is not None
            same = ("assignee", "claim_epoch", "claim_id", "lease_s", "last_progress_at")
            assert {k: client[k] for k in same} == {k: board[k] for k in same}
            if mine is not None:  # a loaded row is a folded row: the board's
                assert mine == {c: board[c] for c in MIRRORED}
            else:
                assert status in ("done", "cancelled")
            if held is not None:
                assert (held.epoch, held.claim) == (board["claim_epoch"], board["claim_id"])
            lease = leases.get(task)
            if holder(board) is not None:
                assert lease is not None
                assert (lease.agent, lease.epoch, lease.claim) == (
                    board["assignee"], board["claim_epoch"], board["claim_id"])  # fmt: skip
            else:
                assert lease is None, f"{task} is {status}, yet leased to {lease}"
            for row in (board, client, mine):  # a refused claim, once its verdict is folded
                if row is not None and holder(row) is not None:
                    assert row["claim_id"] not in self.refused_claims, f"{task}: {row}"
        for agent in AGENT_IDS:  # the board and the watchdog agree on every agent's status
            known = self.rows.get(TASK_AGENTS, (agent,))
            clock = self.judge.liveness.agents.get(agent)
            if known is not None:
                assert clock is not None and clock.status == known["status"], (agent, known)
                assert clock.paused_by == known["paused_by"]
        assert self.judge.failures.total == 0, list(self.judge.failures.drain())


# ---- the events ---------------------------------------------------------------------------------


def current(w: Readers, task: str) -> Row | None:
    return w.rows.get(TASKS, (task,))


@functools.cache
def _index(n: int) -> st.SearchStrategy[int]:
    return st.integers(0, n - 1)


def pick(d: st.DataObject, options: Sequence[T]) -> T:
    """One of ``options`` (one draw, the first the simplest, as hypothesis shrinks)."""
    return options[d.draw(_index(len(options)))]


def an_agent(w: Readers, d: st.DataObject, task: str) -> str:
    """Mostly the task's holder (or assignee), else anyone."""
    row = current(w, task)
    mine = row["assignee"] if row is not None else None
    return pick(d, (mine, mine, mine, mine, mine, *AGENT_IDS) if mine else AGENT_IDS)


def an_epoch(w: Readers, d: st.DataObject, task: str, ahead: int, least: int = 1) -> int:
    """The task's current epoch plus ``ahead``, or off by one (a wrong one); ``least`` at least
    (a revocation may name epoch 0: an assigned task never claimed)."""
    row = current(w, task)
    base = 0 if row is None else row["claim_epoch"]
    return max(least, base + ahead + pick(d, (0, 0, 0, 0, 0, -1, 1)))


def registration(agent: str, d: st.DataObject, by: str | None = None) -> AgentRegistered:
    """Mostly a writer, now and then a reviewer too, or neither; a limit of 2 or 1 tasks. By
    the agent itself, or ``by`` a person or a service (whose roles and limit then hold)."""
    roles = pick(d, (("writer",), ("writer", "reviewer"), ("writer",), ()))
    return AgentRegistered(**envelope(by or agent), agent=agent, name=agent, owner="o", team="t",
                           heartbeat_interval_s=86_400.0, roles=roles,
                           max_concurrent_tasks=pick(d, (2, 1)))  # fmt: skip


def some_deps(d: st.DataObject, task: str) -> tuple[str, ...]:
    """Mostly none (most tasks wait for nothing); else one or two other tasks, seldom one that
    is missing."""
    if pick(d, (0, 0, 0, 1)) == 0:
        return ()
    others = [t for t in TASK_IDS if t != task]
    first = pick(d, (*others, *others, "t-no"))
    second = pick(d, ("", "", *others))
    return (first, second) if second and second != first else (first,)


def build(w: Readers, d: st.DataObject, kind: str = "") -> Event | None:
    kind = kind or pick(d, KINDS)
    if kind == "next":  # the next step of the work on an open task
        open_ = [t for t in TASK_IDS if (r := current(w, t)) is not None and r["status"] in OPEN]
        task = pick(d, open_) if open_ else ""
        kind = pick(d, NEXT[current(w, task)["status"]]) if task else "create"
    # mostly a task the event may fit (a new one to create, a held one to report on, ...), now
    # and then any
    fits = FITS.get(kind, OPEN)
    likely = [t for t in TASK_IDS if (r := current(w, t)) is None or r["status"] in fits]
    if kind != "create":
        likely = [t for t in likely if current(w, t) is not None]
    task = pick(d, (*likely, *likely, *likely, *TASK_IDS))
    match kind:
        case "create":
            return TaskCreated(**envelope(pick(d, PEOPLE)), task=task, project="p", title=task,
                               depends_on=some_deps(d, task),
                               required_role=pick(d, (None, None, "writer")),
                               sla_s=pick(d, (None, 60.0, 5000.0)))  # fmt: skip
        case "assign":
            return TaskAssigned(**envelope(pick(d, PEOPLE)), task=task, agent=pick(d, AGENT_IDS))
        case "claim":
            agent = pick(d, AGENT_IDS)
            return TaskClaimed(**envelope(agent), task=task, agent=agent,
                               epoch=an_epoch(w, d, task, 1),
                               lease_s=pick(d, (60.0, 600.0, 600.0, 5.0)))  # fmt: skip
        case "progress" | "block" | "release" | "submit":
            me = an_agent(w, d, task)
            mine = {"task": task, "agent": me, "epoch": an_epoch(w, d, task, 0)}
            if kind == "progress":
                return TaskProgressed(**envelope(me), **mine)
            if kind == "block":
                return TaskBlocked(**envelope(me), **mine, reason="waiting")
            if kind == "release":
                return TaskReleased(**envelope(me), **mine)
            return TaskSubmitted(**envelope(me), **mine, deliverable=DELIVERABLE)
        case "review":  # nobody reviews their own work (admission refuses it)
            author = an_agent(w, d, task)
            reviewer = pick(d, [r for r in REVIEWERS if r != author])
            verdict = pick(d, ("approve", "reject"))
            return TaskReviewed(**envelope(reviewer), task=task, agent=author, verdict=verdict)
        case "cancel":
            return TaskCancelled(**envelope(pick(d, PEOPLE)), task=task)
        case "expire":
            agent = an_agent(w, d, task)
            return TaskLeaseExpired(**envelope("svc:watchdog"), task=task, agent=agent,
                                    epoch=an_epoch(w, d, task, 0))  # fmt: skip
        case "revoke":
            return TaskRevoked(**envelope(pick(d, PEOPLE)), task=task,
                               agent=an_agent(w, d, task), epoch=an_epoch(w, d, task, 0, 0),
                               assign_to=pick(d, (None, None, *AGENT_IDS)))  # fmt: skip
        case "deps":
            return TaskDependenciesChanged(**envelope(pick(d, PEOPLE)), task=task,
                                           depends_on=some_deps(d, task))  # fmt: skip
    # mostly one that holds a task (its pause, retirement or silence matters most)
    holders = [h for t in TASK_IDS if (h := holder(current(w, t))) is not None]
    agent = pick(d, (*holders, *holders, *AGENT_IDS))
    # its own lifecycle events too: those that overrule its operators are refused
    match pick(d, AGENT_KINDS):
        case "register":
            return registration(agent, d, by=pick(d, (agent, agent, *PEOPLE)))
        case "pause":
            return AgentPaused(**envelope(pick(d, (*PEOPLE, agent))), agent=agent)
        case "resume":
            return AgentResumed(**envelope(pick(d, (*PEOPLE, agent))), agent=agent)
        case "retire":
            return AgentRetired(**envelope(pick(d, PEOPLE)), agent=agent)
        case "overrule":  # an agent someone else paused or retired tries to undo it: refused
            kept = [a for a in AGENT_IDS if (r := w.rows.get(TASK_AGENTS, (a,))) is not None
                    and r["status"] in ("paused", "retired") and r["paused_by"] != a]  # fmt: skip
            me = pick(d, kept) if kept else agent
            if pick(d, (False, True)):
                return AgentResumed(**envelope(me), agent=me)
            return registration(me, d)
        case "offline":
            return AgentOffline(**envelope("svc:watchdog"), agent=agent, escalation="e-1")
        case "online":
            return AgentOnline(**envelope("svc:watchdog"), agent=agent)
    return None


# how often each kind comes: the work of the holders most, the lifecycle of agents less
KINDS = (
    *["next"] * 8, *["claim"] * 4, *["progress"] * 2, "block", *["submit"] * 4, *["review"] * 4,
    *["create"] * 2, "release", "assign", "cancel", "expire", "revoke", "deps", *["agent"] * 3,
)  # fmt: skip
AGENT_KINDS = ("register", "register", "pause", "resume", "resume", "retire", "offline", "online",
               "online", "retire", "overrule")  # fmt: skip
# what comes next in the work on a task, by its status
NEXT = {
    "inbox": ("claim",), "assigned": ("claim",),
    "in_progress": ("submit", "progress", "submit", "block"),
    "blocked": ("progress",), "review": ("review",),
}  # fmt: skip
# the statuses each kind of event fits (default: open; None: no task yet)
FITS: dict[str, frozenset[str | None]] = {
    "create": frozenset({None}),
    "claim": frozenset({"inbox", "assigned"}),
    "progress": HELD, "block": HELD, "release": HELD, "submit": HELD, "expire": HELD,
    "revoke": HELD | {"review", "assigned"},
    "review": frozenset({"review"}),
}  # fmt: skip
# how many events come between a verdict and its publication (the outbox is quick, mostly)
DELAYS = (0, 1, 2, 4, 8, 12)
# seconds between events: mostly close, now and then long enough for leases to lapse
GAPS = (0.001, 0.001, 0.001, 0.001, 1.0, 1.0, 1.0, 4.0, 4.0, 30.0, 400.0)


def play(d: st.DataObject) -> Readers:
    """One random interleaving, checked after every event (``Readers.check``)."""
    w = Readers(lambda: pick(d, DELAYS))
    for agent in AGENT_IDS:
        w.publish(registration(agent, d), 0.001)
    for _ in range(pick(d, (3, 2, 4, 5))):  # tasks to work on; more may come
        task = build(w, d, "create")
        assert task is not None
        w.publish(task, 0.001)
    for _ in range(d.draw(st.integers(20, 120))):
        after = pick(d, GAPS)
        if w.outbox and w.outbox[0][0] <= w.seq:  # the outbox publishes the next verdict
            w.publish(w.outbox.pop(0)[1], after)
            continue
        roll = pick(d, ("event", "event", "event", "event", "heartbeat", "tick"))
        if roll == "heartbeat":
            w.heartbeat(pick(d, AGENT_IDS), pick(d, (None, *TASK_IDS)), after)
        elif roll == "tick":
            w.tick(after)
        else:
            event = build(w, d)
            if event is not None:
                w.publish(event, after)
    while w.outbox:
        w.publish(w.outbox.pop(0)[1], 0.001)
    w.tick(10_000.0)  # every lease left lapses: the watchdog's expiries all fit
    return w


@pytest.mark.slow
def test_the_board_the_client_and_the_watchdog_fold_every_task_alike() -> None:
    reached: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=PHASES,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(d=st.data())
    def example(d: st.DataObject) -> None:
        w = play(d)
        reached.update(w.reached)

    if os.environ.get("FLEETWARD_TASK_MACHINE_RANDOM"):
        example()
        return
    seed(SEED)(example)()
    # the fixed examples reach every status, the board's verdicts folded, claims it refused by
    # a verdict while they held, lease expiries of the watchdog's own, and agents' own
    # lifecycle events refused (overruling their operators)
    statuses = {"inbox", "assigned", "in_progress", "blocked", "review", "done", "cancelled"}
    verdicts = {"claim_refused", "review_refused", "board_cancelled", "board_revoked"}
    more = {"voided_claim", "watchdog_expiry", "lifecycle_refused"}
    assert reached.keys() >= statuses | verdicts | more, reached


# ---- the two bugs of issue 12 -------------------------------------------------------------------


def test_a_claim_the_board_refuses_never_replaces_the_holders_lease() -> None:
    """A paused agent's claim of a task another agent holds replaced the holder's lease: the
    watchdog then expired the paused agent's claim (refused by the board) and let the holder's
    lapse unseen, and the holder's heartbeats no longer renewed it."""
    w = World(QUIET)
    for agent in ("holder", "paused"):
        w.register(agent, T0, interval=86_400.0)
    w.event(AgentPaused(**env("user:o"), agent="paused"), T0)
    w.event(TaskCreated(**env("user:p"), task="t1", project="p", title="t1"), T0)
    w.event(TaskClaimed(**env("holder"), task="t1", agent="holder", epoch=1, lease_s=30), T0)
    w.event(TaskClaimed(**env("paused"), task="t1", agent="paused", epoch=2, lease_s=5), T0 + 1)
    w.judge.heartbeat("holder", 1, int((T0 + 20) * 1e9), T0 + 20, "t1")  # renews to T0 + 50
    assert events(w.tick(T0 + 49), TaskLeaseExpired) == []
    [lapse] = events(w.tick(T0 + 50), TaskLeaseExpired)
    assert (lapse.agent, lapse.epoch) == ("holder", 1)

    # a claim the task's state takes and the board's verdict voids holds until the verdict
    w.event(TaskCreated(**env("user:p"), task="t2", project="p", title="t2"), T0 + 51)
    claim = TaskClaimed(**env("paused"), task="t2", agent="paused", epoch=1, lease_s=5)
    w.event(claim, T0 + 51)
    assert w.judge.leases.leases["t2"].agent == "paused"
    w.event(TaskClaimRefused(**env(BOARD), task="t2", agent="paused", epoch=1, claim=claim.id,
                             reason="agent paused is paused"), T0 + 52)  # fmt: skip
    assert "t2" not in w.judge.leases.leases and "t2" not in w.judge.tasks.held
    plans = w.tick(T0 + 10_000)
    assert events(plans, TaskLeaseExpired) == []  # t1's was handed out: once
    assert [e.task for e in raised(plans) if e.task == "t2"] == []


def test_a_claim_of_a_cancelled_task_raises_no_stall_and_no_lease_expiry() -> None:
    """A cancelled task was forgotten, so a claim of it (refused by the board) looked like a
    new hold: task_stalled, task_overdue and a lease expiry followed."""
    w = World(QUIET)
    w.register("a1", T0, interval=86_400.0)
    w.register("a2", T0, interval=86_400.0)
    w.event(TaskCreated(**env("user:p"), task="t1", project="p", title="t1", sla_s=60), T0)
    w.event(TaskCancelled(**env("user:o"), task="t1"), T0 + 1)
    w.event(TaskClaimed(**env("a1"), task="t1", agent="a1", epoch=1, lease_s=5), T0 + 2)
    w.event(TaskCreated(**env("user:p"), task="t2", project="p", title="t2", sla_s=60), T0)
    w.event(TaskClaimed(**env("a1"), task="t2", agent="a1", epoch=1, lease_s=5), T0 + 3)
    w.event(TaskCancelled(**env("user:o"), task="t2"), T0 + 4)  # held, then cancelled
    w.event(TaskClaimed(**env("a2"), task="t2", agent="a2", epoch=2, lease_s=5), T0 + 5)
    plans = [*w.tick(T0 + 30), *w.tick(T0 + 10_000)]
    assert events(plans, TaskLeaseExpired) == []
    assert [(e.reason, e.task) for e in raised(plans)
            if e.reason in (TASK_STALLED, TASK_OVERDUE)] == []  # fmt: skip
    assert w.judge.tasks.status("t1") == w.judge.tasks.status("t2") == "cancelled"
    assert not w.judge.tasks.held and not w.judge.leases.leases


def test_the_watchdog_loads_the_columns_it_folds() -> None:
    """A row loaded at start is a folded row: the query reads exactly ``MIRRORED``."""
    select = q("watchdog_tasks").split("SELECT", 1)[1].split("FROM", 1)[0]
    assert [c.strip() for c in select.split(",")] == list(MIRRORED)
