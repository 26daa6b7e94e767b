"""The simulator's plan (services/simulate.py) without servers: fresh task ids in every run,
what a run carries on from the board earlier runs left, and how each agent answers the commands
of its inbox. Every event the plan makes passes admission and is folded by the agent registry and
the task board, as the projector would: the board refuses none of them, across a restart and
whatever commands come."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from fleetward.projections.agents import AGENTS, AgentRegistry
from fleetward.projections.base import Meta, Rows, Table
from fleetward.projections.tasks import REJECTIONS, TASKS, TaskBoard
from fleetward.schemas import Event, admit, new_id, subject_of
from fleetward.schemas.bounds import IDENT_PATTERN
from fleetward.schemas.events import (
    AgentOffline,
    AgentOnline,
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    CommandIssued,
    CommandName,
    Heartbeat,
    RunFinished,
    RunStarted,
    SpendRecorded,
    TaskAssigned,
    TaskClaimed,
    TaskCreated,
    TaskLeaseExpired,
    TaskProgressed,
    TaskReleased,
    TaskReviewed,
    ToolCalled,
)
from fleetward.schemas.grants import REGISTRY
from fleetward.services.jetstream.publish import encode
from fleetward.services.simulate import Carried, Fleet, SimAgent, carried_from, run_prefix

T0 = datetime(2025, 3, 14, 9, 0, 0, tzinfo=UTC)
OPS = "user:ops"
WATCHDOG = "svc:watchdog"
E = TypeVar("E", bound=Event)
WORK = (TaskClaimed, RunStarted, SpendRecorded, ToolCalled)  # what a paused agent must not do


class Board:
    """The registry and the task board, folding events in order as the projector would."""

    def __init__(self) -> None:
        self.registry, self.board, self.rows = AgentRegistry(), TaskBoard(), Rows()
        self.seq, self.time = 0, T0
        self.events: list[Event] = []

    def __call__(self, events: Iterable[Event]) -> list[Event]:
        events = list(events)
        for event in events:
            subject = subject_of(event)
            admit(subject, encode(event))  # raises Rejected: nothing the plan makes is refused
            self.seq += 1
            self.time += timedelta(milliseconds=10)
            meta = Meta(self.seq, self.time, subject)
            if subject.startswith("fw.agent."):
                self.registry.apply(self.rows, event, meta)
            if subject.startswith(("fw.agent.", "fw.task.")):
                self.board.apply(self.rows, event, meta)
        self.events += events
        return events

    def table(self, table: Table) -> list[dict[str, Any]]:
        return list(self.rows.data.get(table.name, {}).values())

    def task(self, task: str) -> dict[str, Any]:
        row = self.rows.get(TASKS, (task,))
        assert row is not None, task
        return row

    def rejections(self) -> list[tuple[str, str, str]]:
        return [(r["task_id"], r["type"], r["reason"]) for r in self.table(REJECTIONS)]

    def carried(self, fleet: Fleet) -> Carried:
        """What ``simulate.read_board`` reads from the views, from the folded rows."""
        open_tasks = sorted(
            (r for r in self.table(TASKS) if r["status"] in ("inbox", "in_progress", "review")),
            key=lambda r: (r["created_at"], r["task_id"]),
        )
        return carried_from(self.table(AGENTS), open_tasks, [a.agent_id for a in fleet.agents])


class Sim:
    """A fleet whose plan a board folds, tick by tick."""

    def __init__(self, fleet: Fleet, board: Board | None = None, carried: Carried | None = None):
        self.fleet, self.board = fleet, board or Board()
        self.now = T0
        self.board(fleet.start(self.now, carried))

    def tick(self, n: int = 1) -> list[Event]:
        out: list[Event] = []
        for _ in range(n):
            self.now += timedelta(seconds=1)
            out += self.board(self.fleet.tick(self.now))
        return out

    def until(self, done: Callable[[], bool], limit: int = 300) -> list[Event]:
        out: list[Event] = []
        for _ in range(limit):
            if done():
                return out
            out += self.tick()
        raise AssertionError(f"not within {limit} ticks")

    def command(
        self,
        agent: str,
        name: CommandName,
        task: str | None = None,
        *,
        reason: str = "",
        actor: str = OPS,
        **payload: str | int,
    ) -> list[Event]:
        """``agent``'s answer to a command from ``actor`` (folded by the board)."""
        command = CommandIssued(
            id=new_id(), actor=actor, at=self.now, agent=agent, command=name, reason=reason,
            task=task, payload=dict(payload),
        )  # fmt: skip
        return self.board(self.fleet.command(agent, command, self.now))

    def agent(self, agent: str) -> SimAgent:
        return self.fleet.by_id[agent]


def quiet(fleet: Fleet) -> Fleet:
    """No agent falls silent (so each one acts as long as a test needs)."""
    for a in fleet.agents:
        a.silent_after = None
    return fleet


def by(events: Iterable[Event], agent: str, *kinds: type[Event]) -> list[Event]:
    """The events ``agent`` published (of ``kinds``, if given)."""
    return [e for e in events if e.actor == agent and (not kinds or isinstance(e, kinds))]


def of(events: Iterable[Event], agent: str, kind: type[E]) -> list[E]:
    """The events of one ``kind`` that ``agent`` published."""
    return [e for e in events if e.actor == agent and isinstance(e, kind)]


def working(a: SimAgent) -> bool:
    return a.task is not None and a.run is not None and not a.in_review


# ---- fresh task ids --------------------------------------------------------------------------


def test_every_run_names_its_tasks_with_a_prefix_of_its_own() -> None:
    first, again = run_prefix(1_750_000_000), run_prefix(1_750_000_000)
    later = run_prefix(1_750_000_001)
    assert len({first, again, later}) >= 2 and later[:-3] > first[:-3]
    assert first[:-3] == again[:-3]  # the same second: the 3 random characters tell them apart
    fleet = Fleet(4, prefix=f"task-{first}-")
    created = [e.task for e in fleet.start(T0) if isinstance(e, TaskCreated)]
    assert created[0] == f"task-{first}-00001"
    assert all(re.match(IDENT_PATTERN, t) and t.startswith(f"task-{first}-") for t in created)


# ---- a second run carries on -----------------------------------------------------------------


def test_after_a_restart_the_fleet_carries_on_and_the_board_refuses_nothing() -> None:
    sim = Sim(quiet(Fleet(8, seed=5, prefix="task-a-")))
    sim.tick(10)
    sim.command("sim-002", "pause", reason="budget review")
    sim.command("sim-003", "retire", reason="replaced")
    sim.tick(30)
    sim.board([AgentOffline(id=new_id(), actor=WATCHDOG, at=sim.now, agent="sim-004",
                            escalation="esc-1")])  # fmt: skip
    board = sim.board
    carried = board.carried(sim.fleet)
    assert carried.status["sim-002"] == ("paused", "budget review")
    assert carried.status["sim-003"][0] == "retired"
    assert carried.status["sim-004"][0] == "offline"
    assert carried.held and "sim-003" not in carried.held
    left = [task for task, _ in carried.held.values()] + [t for t, _, _ in carried.review]

    # the second run: the same agents, the same board
    fleet = quiet(Fleet(8, seed=5, prefix="task-b-"))
    before = len(board.events)
    again = Sim(fleet, board, carried)
    registered = {e.actor for e in board.events[before:] if isinstance(e, AgentRegistered)}
    assert registered == {f"sim-{i:03d}" for i in range(8)} - {"sim-003"}  # retired for good
    assert fleet.by_id["sim-002"].paused and fleet.by_id["sim-004"].offline

    second = again.tick(5)
    assert not by(second, "sim-004", TaskClaimed)  # offline: the board would refuse its claims
    board([AgentOnline(id=new_id(), actor=WATCHDOG, at=again.now, agent="sim-004")])
    fleet.seen({r["agent_id"]: r["status"] for r in board.table(AGENTS)})
    second += again.tick(60)

    assert board.rejections() == []
    assert not by(second, "sim-002", *WORK)  # still paused
    assert not by(second, "sim-003")  # retired: not even a heartbeat
    assert by(second, "sim-004", TaskClaimed)
    assert any(board.task(t)["status"] in ("review", "done") for t in left)
    created = [e.task for e in second if isinstance(e, TaskCreated)]
    assert created and all(t.startswith("task-b-") for t in created)
    assert any(board.task(t)["status"] == "done" for t in created)
    # an agent that held a task goes on with it, in the same epoch
    agent, (task, epoch) = next((a, held) for a, held in carried.held.items() if a != "sim-002")
    reports = [e for e in of(second, agent, TaskProgressed) if e.task == task]
    assert reports and {e.epoch for e in reports} == {epoch}


# ---- commands --------------------------------------------------------------------------------


def test_a_paused_agent_only_heartbeats_until_resumed() -> None:
    sim = Sim(quiet(Fleet(4, seed=1)))
    a = sim.agent("sim-000")
    sim.until(lambda: working(a))
    task = a.task

    answer = sim.command("sim-000", "pause", reason="budget review")
    assert [type(e) for e in answer] == [RunFinished, AgentPaused]
    assert isinstance(answer[0], RunFinished) and answer[0].outcome == "cancelled"
    assert sim.command("sim-000", "pause", reason="budget review") == []  # twice: no change

    paused = sim.tick(20)
    beats = of(paused, "sim-000", Heartbeat)
    assert beats and beats == by(paused, "sim-000")  # nothing but heartbeats
    assert {(e.status, e.task, e.message) for e in beats} == {
        ("idle", task, "paused: budget review")
    }
    assert by(paused, "sim-001", SpendRecorded) or by(paused, "sim-002", SpendRecorded)

    assert [type(e) for e in sim.command("sim-000", "resume")] == [AgentResumed]
    assert sim.command("sim-000", "resume") == []
    resumed = sim.tick()
    assert [e.task for e in of(resumed, "sim-000", RunStarted)] == [task]
    resumed += sim.until(lambda: a.task not in (None, task))  # on to a new task
    assert of(resumed, "sim-000", SpendRecorded) and of(resumed, "sim-000", TaskClaimed)
    assert sim.board.rejections() == []


def test_the_registrys_pause_and_resume_are_obeyed_and_not_published_again() -> None:
    """A pause and a resume a person made in quick succession reach the agent as the
    registry's commands after both were applied: the agent stops and goes on, and publishes no
    agent.paused or agent.resumed of its own (each would change the status back, and the
    registry's command for that change would start it over: a newcomer saw it loop for ever)."""
    sim = Sim(quiet(Fleet(4, seed=1)))
    a = sim.agent("sim-000")
    sim.until(lambda: working(a))
    paused = sim.command("sim-000", "pause", reason="look", actor=REGISTRY)
    assert a.paused and [type(e) for e in paused] == [RunFinished]
    assert sim.command("sim-000", "resume", actor=REGISTRY) == []
    assert not a.paused


def test_a_retired_agent_gives_its_task_back_and_stops_for_good() -> None:
    sim = Sim(quiet(Fleet(4, seed=2)))
    a = sim.agent("sim-001")
    sim.until(lambda: working(a))
    task, epoch = a.task, a.epoch

    answer = sim.command("sim-001", "retire", reason="replaced")
    assert [type(e) for e in answer] == [RunFinished, TaskReleased, AgentRetired]
    assert not sim.fleet.listening("sim-001")
    assert sim.command("sim-001", "resume") == []

    after = sim.until(lambda: sim.board.task(str(task))["claim_epoch"] > epoch)
    after += sim.tick(10)
    assert not by(after, "sim-001")
    assert sim.board.task(str(task))["assignee"] != "sim-001"
    assert sim.board.rejections() == []


def test_a_lost_lease_drops_the_task_and_nothing_names_it_again() -> None:
    sim = Sim(quiet(Fleet(4, seed=3)))
    a = sim.agent("sim-002")
    sim.until(lambda: working(a))
    task, epoch = str(a.task), a.epoch

    assert sim.command("sim-002", "lease_lost", task, epoch=epoch + 1) == []  # another claim's
    assert sim.command("sim-002", "lease_lost", "some-other-task") == []
    assert a.task == task
    sim.board([TaskLeaseExpired(id=new_id(), actor=WATCHDOG, at=sim.now, task=task,
                                agent="sim-002", epoch=epoch)])  # fmt: skip
    answer = sim.command("sim-002", "lease_lost", task, epoch=epoch)
    assert [type(e) for e in answer] == [RunFinished]
    assert all(isinstance(e, RunFinished) and e.task is None for e in answer)
    assert a.task is None

    after = sim.until(lambda: a.task is not None and a.task != task)
    after += sim.tick(10)
    assert not [e for e in by(after, "sim-002") if getattr(e, "task", None) == task]
    assert sim.board.rejections() == []


def test_a_persons_review_reaches_the_agent_through_its_inbox() -> None:
    sim = Sim(quiet(Fleet(3, seed=4)))
    a = sim.agent("sim-000")
    sim.until(lambda: a.in_review)  # submitted, and the simulated reviewer has not judged yet
    task = str(a.task)
    review = TaskReviewed(id=new_id(), actor=OPS, at=sim.now, task=task, agent="sim-000",
                          verdict="reject", feedback="more tests")  # fmt: skip
    sim.board([review])
    assert sim.command("sim-000", "review_feedback", task, verdict="reject", version=1) == []
    assert not a.in_review and a.task == task
    sim.until(lambda: sim.board.task(task)["deliverable_version"] == 2)  # reworked, submitted
    assert sim.board.rejections() == []  # the simulated reviewer did not review it twice


def test_refusals_wakes_and_approvals_change_nothing() -> None:
    sim = Sim(quiet(Fleet(3, seed=6)))
    a = sim.agent("sim-001")
    sim.until(lambda: working(a))
    state = (a.task, a.epoch, a.run, a.progress, a.paused)
    names: tuple[CommandName, ...] = ("refused", "wake", "approval")
    for name in names:
        assert sim.command("sim-001", name, a.task, type="task.progressed") == []
    assert (a.task, a.epoch, a.run, a.progress, a.paused) == state


def test_a_task_assigned_by_an_operator_is_claimed_next() -> None:
    """The board wakes an agent a task is assigned to; the simulated agent claims it next."""
    sim = Sim(quiet(Fleet(3, seed=6)))
    sim.board([
        TaskCreated(id=new_id(), actor=OPS, at=sim.now, task="op-1", project="ops", title="t"),
        TaskAssigned(id=new_id(), actor=OPS, at=sim.now, task="op-1", agent="sim-002"),
    ])  # fmt: skip
    a = sim.agent("sim-002")
    sim.until(lambda: a.task is None or a.in_review)  # done with what it held, if anything
    assert sim.command("sim-002", "wake", "op-1", why="assigned", epoch=0) == []
    sim.until(lambda: sim.board.task("op-1")["status"] == "in_progress")
    assert sim.board.task("op-1")["assignee"] == "sim-002"
    assert sim.board.rejections() == []
