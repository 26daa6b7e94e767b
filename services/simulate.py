"""A demo fleet: agents that register, heartbeat, claim tasks, call tools, spend, submit
deliverables and get reviewed, with some failures and some silences; each agent obeys the
commands of its durable inbox. Deterministic per seed (and task prefix).

The plan of what happens is pure: ``Fleet.start`` (registrations and a first batch of tasks),
``Fleet.tick`` (about one second of fleet life) and ``Fleet.command`` (one agent's answer to one
command) return the events to publish. ``run`` drives it: it reads what earlier runs left
(``read_board``), publishes the plan tick by tick, and hands each agent the commands that its
``AgentClient.next_command`` reads from its inbox.

A run carries on where the runs before it on the same data stopped (``make run`` twice):

- **Fresh task ids.** Every run names its tasks ``task-<run>-<n>``, with a prefix of its own
  (``run_prefix``: the start time in seconds and 3 random characters, base 36). Chosen over
  numbering on after the highest id on the board because it needs no reading and no
  coordination: the highest id is known only once the projection has caught up (after a crash
  it has not), and another simulator may number at the same moment (``fleetward simulate``
  beside ``make run``). Runs one after the other never share a prefix (they start in different
  seconds, unless the clock is set back); two started in the same second share one only with a
  chance of 1 in 46,656.
- **The agents carry on.** Before it starts, ``run`` waits (a bounded while) until the
  projections ``agents`` and ``tasks`` have caught up with the stream, then reads the public
  views: an agent the registry shows paused starts paused, a retired one stays retired (it
  does not even register again: that would be refused, retirement is final for an agent), an
  offline one claims nothing until the watchdog has seen it alive again (the board refuses
  claims of an offline agent). Every other agent registers again. A task an agent holds, it
  goes on with in the same epoch (a new run); a deliverable of its own waiting for review is
  reviewed; the planner's open tasks that nobody holds are claimed again, at the next epoch.

Commands (``Fleet.command``); each is harmless twice, as inbox delivery is at least once:

- ``pause``: no more claims, runs, tool calls or spend (the run in hand is finished as
  cancelled); the agent keeps its task and heartbeats ``idle`` with the message ``paused: ...``,
  and says so on its subject (``agent.paused``), so the registry shows it and a later run starts
  it paused. ``resume``: ``agent.resumed``, and it carries on (a new run for its task).
- ``retire``: it gives its task back (``task.released``), says ``agent.retired`` and stops for
  good: no heartbeats, no inbox.
- ``lease_lost`` for the task it holds (in the epoch the payload names, if it names one): it
  drops the task and reports nothing more on it. The planner does not offer the task again in
  this run: where it went (the inbox, another agent, cancelled) is the board's to say, and a
  later run reads it there.
- ``review_feedback`` (a person reviewed its deliverable): approved, it is free for new work;
  rejected, it reworks the task.
- ``refused``: ``run`` logs the refusal and its details; ``wake`` naming a task assigned to the
  agent (``payload.epoch``: its current claim epoch) makes it claim that task next;
  ``approval`` changes nothing (a simulated agent asks for no approvals).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import anyio
import asyncpg
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from fleetward.projections.agents import AgentRegistry
from fleetward.projections.tasks import TaskBoard
from fleetward.schemas import Event, new_id
from fleetward.schemas.events import (
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    CommandIssued,
    Deliverable,
    Heartbeat,
    HeartbeatStatus,
    RunFinished,
    RunStarted,
    SpendRecorded,
    TaskClaimed,
    TaskCreated,
    TaskProgressed,
    TaskReleased,
    TaskReviewed,
    TaskSubmitted,
    ToolCalled,
)
from fleetward.schemas.grants import REGISTRY
from fleetward.schemas.roles import ROLE_AUTHORITY
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.services.client import AgentClient, FleetClient
from fleetward.services.db import q
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime, connect_nats, credentials

log = logging.getLogger("fleetward.simulate")

TEAMS = ("research", "support", "platform", "growth")
MODELS = (("small-1", 0.15e-6, 0.6e-6), ("large-2", 3e-6, 15e-6))
TOOLS = ("web.search", "repo.read", "repo.write", "shell", "sql.query", "email.send")
PROJECTS = ("onboarding", "billing", "docs", "infra")
REVIEWER = "user:reviewer"
PLANNER = "user:planner"

CATCH_UP_S = 15.0  # how long a run waits for the projections to show what earlier runs left
REGISTRY_EVERY_S = 2.0  # how often a run reads which of its agents the registry has offline
INBOX_WAIT_S = 1.0  # one pull on an agent's inbox waits this long for a command
REWORK_FROM = 50  # percent done when a task is taken up again (carried on, or sent back)
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def run_prefix(now: float | None = None) -> str:
    """A run's own part of its task ids: the start time in seconds and 3 random characters, in
    base 36 (``tkb1x9q4z``). Prefixes of later runs sort after earlier ones'."""
    n, digits = int(time.time() if now is None else now), ""
    while n:
        n, d = divmod(n, 36)
        digits = _BASE36[d] + digits
    return (digits or "0") + "".join(secrets.choice(_BASE36) for _ in range(3))


@dataclass(frozen=True)
class Carried:
    """What earlier runs left, as the registry and the board show it (``read_board``)."""

    status: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # agent: status, reason
    held: Mapping[str, tuple[str, int]] = field(default_factory=dict)  # agent: task, epoch
    review: Sequence[tuple[str, str, int]] = ()  # task, author, epoch: waiting for a verdict
    inbox: Sequence[tuple[str, int]] = ()  # the planner's open tasks nobody holds: task, epoch


@dataclass
class SimAgent:
    agent_id: str
    team: str
    silent_after: int | None  # the tick after which it stops heartbeating (a silence)
    flaky: bool  # fails runs and tools more often
    task: str | None = None  # the task in hand: held, or its deliverable waiting for review
    epoch: int = 0
    run: str | None = None  # the run in progress; None: none yet for the task in hand
    progress: int = 0
    in_review: bool = False  # the deliverable for ``task`` waits for a verdict
    paused: bool = False
    pause_reason: str = ""
    retired: bool = False  # for good
    offline: bool = False  # the registry has it offline: the board would refuse its claims
    assigned: list[str] = field(default_factory=list)  # tasks assigned to it: claimed first


@dataclass
class Fleet:
    size: int
    seed: int = 7
    heartbeat_every: int = 1  # ticks
    prefix: str = "task-"  # task ids are the prefix and a number (``run`` adds a run's own)
    rng: random.Random = field(init=False)
    agents: list[SimAgent] = field(init=False)
    by_id: dict[str, SimAgent] = field(init=False)
    inbox: list[str] = field(default_factory=list)
    epochs: dict[str, int] = field(default_factory=dict)
    review: list[tuple[str, SimAgent]] = field(default_factory=list)
    tick_no: int = 0
    task_no: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.agents = [
            SimAgent(
                agent_id=f"sim-{i:03d}",
                team=TEAMS[i % len(TEAMS)],
                silent_after=self.rng.randint(20, 60) if self.rng.random() < 0.08 else None,
                flaky=self.rng.random() < 0.15,
            )
            for i in range(self.size)
        ]
        self.by_id = {a.agent_id: a for a in self.agents}

    def start(self, now: datetime, carried: Carried | None = None) -> list[Event]:
        """Registrations (again, after earlier runs) and a first batch of tasks; with
        ``carried``, the agents take up what earlier runs left."""
        if carried is not None:
            self._carry_on(carried)
        events: list[Event] = [
            AgentRegistered(
                id=new_id(),
                actor=a.agent_id,
                at=now,
                agent=a.agent_id,
                name=f"Agent {a.agent_id}",
                owner=f"{a.team}-lead@example.com",
                team=a.team,
                purpose=f"{a.team} work",
                risk_class=self.rng.choice(("low", "medium", "high")),
                heartbeat_interval_s=2.0,
                roles=("worker",),
            )
            for a in self.agents
            if not a.retired  # its own registration would be refused (projections/lifecycle.py)
        ]
        events += self._new_tasks(now, max(3, self.size))
        return events

    def _carry_on(self, carried: Carried) -> None:
        for agent_id, (status, reason) in carried.status.items():
            if (a := self.by_id.get(agent_id)) is not None:
                a.retired, a.offline = status == "retired", status == "offline"
                a.paused, a.pause_reason = status == "paused", reason or "before this run"
        for agent_id, (task, epoch) in carried.held.items():
            a = self.by_id.get(agent_id)
            if a is not None and not a.retired:
                a.task, a.epoch, a.progress = task, epoch, REWORK_FROM
                self.epochs[task] = epoch
        for task, author, epoch in carried.review:
            if (a := self.by_id.get(author)) is None:
                continue
            self.epochs[task] = epoch
            self.review.append((task, a))
            if a.task is None and not a.retired:
                a.task, a.epoch, a.in_review = task, epoch, True
        for task, epoch in carried.inbox:
            self.inbox.append(task)
            self.epochs[task] = epoch

    def _new_tasks(self, now: datetime, n: int) -> list[Event]:
        out: list[Event] = []
        for _ in range(n):
            self.task_no += 1
            task = self.task_id(self.task_no)
            self.inbox.append(task)
            out.append(
                TaskCreated(
                    id=new_id(),
                    actor=PLANNER,
                    at=now,
                    task=task,
                    project=self.rng.choice(PROJECTS),
                    title=f"Demo task {self.task_no}",
                    priority=self.rng.choice(("urgent", "high", "medium", "medium", "low")),
                )
            )
        return out

    def task_id(self, n: int) -> str:
        """The id of the ``n``-th task this fleet creates."""
        return f"{self.prefix}{n:05d}"

    def listening(self, agent_id: str) -> bool:
        """Whether the agent reads its inbox: not retired, and not (yet) fallen silent."""
        a = self.by_id[agent_id]
        return not a.retired and not self._silent(a)

    def _silent(self, a: SimAgent) -> bool:
        return a.silent_after is not None and self.tick_no > a.silent_after

    def seen(self, statuses: Mapping[str, str]) -> None:
        """The registry's statuses of the agents: an offline one claims nothing until the
        watchdog has seen it alive again (the board refuses claims of an offline agent)."""
        for agent_id, status in statuses.items():
            if (a := self.by_id.get(agent_id)) is not None:
                a.offline = status == "offline"

    def tick(self, now: datetime) -> list[Event]:
        """The events of one tick (about one second of fleet life)."""
        self.tick_no += 1
        events: list[Event] = []
        if len(self.inbox) < self.size // 3:
            events += self._new_tasks(now, max(1, self.size // 5))
        for agent in self.agents:
            if agent.retired or self._silent(agent):
                continue
            events += self._act(agent, now)
            if self.tick_no % self.heartbeat_every == 0:
                events.append(self._heartbeat(agent, now))
        events += self._reviews(now)
        return events

    def _heartbeat(self, a: SimAgent, now: datetime) -> Heartbeat:
        status: HeartbeatStatus
        if a.paused:  # it keeps its task (the heartbeat renews the lease) but does nothing
            status, message = "idle", f"paused: {a.pause_reason}"[:200]
        else:
            status = "busy" if a.task else "idle"
            message = f"working on {a.task}" if a.task else "waiting for work"
        return Heartbeat(
            id=new_id(),
            actor=a.agent_id,
            at=now,
            agent=a.agent_id,
            status=status,
            task=a.task,
            message=message,
        )

    def _act(self, a: SimAgent, now: datetime) -> list[Event]:
        me, r = a.agent_id, self.rng
        if a.paused:
            return []
        if a.task is None:
            if a.offline or not (self.inbox or a.assigned) or r.random() < 0.5:
                return []
            if a.assigned:
                task = a.assigned.pop(0)
                if task in self.inbox:
                    self.inbox.remove(task)
            else:
                task = self.inbox.pop(0)
            a.task, a.epoch, a.progress = task, self.epochs.get(task, 0) + 1, 0
            self.epochs[task] = a.epoch
            a.run = new_id()[-12:]
            return [
                TaskClaimed(id=new_id(), actor=me, at=now, task=task, agent=me, epoch=a.epoch),
                RunStarted(id=new_id(), actor=me, at=now, agent=me, run=a.run, task=task),
            ]
        if a.in_review:
            return []
        if a.run is None:  # taken up again: after a restart, a resume or a rejected review
            a.run = new_id()[-12:]
            return [
                RunStarted(
                    id=new_id(),
                    actor=me,
                    at=now,
                    agent=me,
                    run=a.run,
                    task=a.task,
                    trigger="rework",
                )
            ]
        model, cin, cout = r.choice(MODELS)
        tin, tout = r.randint(200, 4000), r.randint(50, 1500)
        ok = r.random() > (0.3 if a.flaky else 0.03)
        events: list[Event] = [
            SpendRecorded(
                id=new_id(),
                actor=me,
                at=now,
                agent=me,
                model=model,
                tokens_in=tin,
                tokens_out=tout,
                cost_usd=round(tin * cin + tout * cout, 6),
                run=a.run,
                task=a.task,
            ),
            ToolCalled(
                id=new_id(),
                actor=me,
                at=now,
                agent=me,
                tool=r.choice(TOOLS),
                duration_ms=round(r.uniform(20, 3000), 1),
                ok=ok,
                error=None if ok else "timeout",
                cost_usd=0.001,
                run=a.run,
                task=a.task,
            ),
        ]
        a.progress += r.randint(15, 40)
        if a.progress < 100:
            events.append(
                TaskProgressed(
                    id=new_id(),
                    actor=me,
                    at=now,
                    task=a.task,
                    agent=me,
                    epoch=a.epoch,
                    percent=float(a.progress),
                )
            )
            return events
        failed = a.flaky and r.random() < 0.3
        events.append(
            RunFinished(
                id=new_id(),
                actor=me,
                at=now,
                agent=me,
                run=a.run,
                outcome="failed" if failed else "succeeded",
                latency_ms=round(r.uniform(2000, 60000), 1),
                task=a.task,
            )
        )
        a.run = None
        body = f"# {a.task}\nDone by {me} in epoch {a.epoch}.\n"
        events.append(
            TaskSubmitted(
                id=new_id(),
                actor=me,
                at=now,
                task=a.task,
                agent=me,
                epoch=a.epoch,
                deliverable=Deliverable(
                    kind="markdown", content=body, sha256=hashlib.sha256(body.encode()).hexdigest()
                ),
            )
        )
        a.in_review = True
        self.review.append((a.task, a))
        return events

    def _reviews(self, now: datetime) -> list[Event]:
        events: list[Event] = []
        keep = []
        for task, agent in self.review:
            if self.rng.random() < 0.4:
                keep.append((task, agent))
                continue
            # sent back only to an author that would take it up: not one retired, nor one busy
            # with another task (a deliverable carried over from an earlier run)
            waiting = agent.task == task and agent.in_review and not agent.retired
            approve = self.rng.random() < 0.8 or not waiting
            events.append(
                TaskReviewed(
                    id=new_id(),
                    actor=REVIEWER,
                    at=now,
                    task=task,
                    agent=agent.agent_id,
                    verdict="approve" if approve else "reject",
                    feedback="" if approve else "please add tests",
                )
            )
            if waiting:
                self._verdict(agent, approve)
        self.review = keep
        return events

    def _verdict(self, a: SimAgent, approve: bool) -> None:
        """The author learns the verdict on its deliverable: free for new work, or rework."""
        a.in_review = False
        if approve:
            a.task = None
        else:
            a.run, a.progress = None, REWORK_FROM

    def command(self, agent_id: str, command: CommandIssued, now: datetime) -> list[Event]:
        """What ``agent_id`` does on ``command`` from its inbox: the events it publishes (the
        state it changes applies from its next act on)."""
        a = self.by_id.get(agent_id)
        if a is None or a.retired:
            return []
        me = a.agent_id
        # the registry's pause and resume tell of a status already changed: obeyed, not
        # published again (an agent's own agent.paused would change it back after a quick
        # pause and resume, and the registry's next command would start it over, for ever)
        told = command.actor == REGISTRY
        match command.command:
            case "pause":
                if a.paused:
                    return []
                a.paused, a.pause_reason = True, command.reason or "paused"
                ended = self._end_run(a, now, a.task)
                if told:
                    return ended
                return [
                    *ended,
                    AgentPaused(id=new_id(), actor=me, at=now, agent=me, reason=command.reason),
                ]
            case "resume":
                if not a.paused:
                    return []
                a.paused = False
                if told:
                    return []
                return [
                    AgentResumed(id=new_id(), actor=me, at=now, agent=me, reason=command.reason)
                ]
            case "retire":
                out = self._end_run(a, now, a.task)
                if a.task is not None and not a.in_review:
                    out.append(
                        TaskReleased(
                            id=new_id(),
                            actor=me,
                            at=now,
                            task=a.task,
                            agent=me,
                            epoch=a.epoch,
                            reason="retired",
                        )
                    )
                    self.inbox.append(a.task)  # open again: another agent takes it
                a.task, a.in_review, a.paused, a.retired = None, False, False, True
                out.append(
                    AgentRetired(id=new_id(), actor=me, at=now, agent=me, reason=command.reason)
                )
                return out
            case "lease_lost":
                epoch = command.payload.get("epoch")
                if command.task is None or command.task != a.task:
                    return []
                if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch != a.epoch:
                    return []  # a lease of an earlier claim of the same task
                out = self._end_run(a, now, None)  # nothing more that names the task
                self._forget_review(a)
                a.task, a.in_review = None, False
                return out
            case "wake" if command.task is not None and command.payload.get("why") == "assigned":
                epoch = command.payload.get("epoch")
                if isinstance(epoch, int) and not isinstance(epoch, bool):
                    self.epochs[command.task] = max(self.epochs.get(command.task, 0), epoch)
                if command.task not in a.assigned and command.task != a.task:
                    a.assigned.append(command.task)
                return []
            case "review_feedback":
                if command.task is None or command.task != a.task or not a.in_review:
                    return []
                self._forget_review(a)  # a person has reviewed it: the simulated reviewer won't
                self._verdict(a, command.payload.get("verdict") == "approve")
                return []
        return []

    def _end_run(self, a: SimAgent, now: datetime, task: str | None) -> list[Event]:
        """Finish the run in hand, if any, as cancelled."""
        if a.run is None:
            return []
        run, a.run = a.run, None
        return [
            RunFinished(
                id=new_id(),
                actor=a.agent_id,
                at=now,
                agent=a.agent_id,
                run=run,
                outcome="cancelled",
                latency_ms=round(self.rng.uniform(500, 5000), 1),
                task=task,
            )
        ]

    def _forget_review(self, a: SimAgent) -> None:
        self.review = [(t, x) for t, x in self.review if not (x is a and t == a.task)]


# ---- driving the plan: what earlier runs left, the inboxes, publishing ----------------------


async def read_board(
    pool: asyncpg.Pool, js: JetStreamContext, agents: Sequence[str], *, wait: float = CATCH_UP_S
) -> Carried:
    """What earlier runs left for ``agents``, from the public views, once the projections it
    reads have caught up with the stream (waiting at most ``wait`` seconds: with no projector
    running, it carries on from what they show)."""
    await _caught_up(pool, js, wait)
    async with pool.acquire() as conn:
        registry = await conn.fetch(q("sim_agents"), list(agents))
        tasks = await conn.fetch(q("sim_open_tasks"))
    return carried_from([dict(r) for r in registry], [dict(r) for r in tasks], agents)


def carried_from(
    registry: Iterable[Mapping[str, Any]], tasks: Iterable[Mapping[str, Any]], agents: Sequence[str]
) -> Carried:
    """``Carried`` for ``agents`` from rows of ``fleet.agents`` and of ``fleet.tasks`` (the open
    ones, oldest first). An agent goes on with one task it holds: the board lets it hold no more
    than its limit, one. The planner's tasks that nobody holds are open again if any agent may
    claim them (no role asked for, no dependency waited on)."""
    ours = set(agents)
    held: dict[str, tuple[str, int]] = {}
    review: list[tuple[str, str, int]] = []
    inbox: list[tuple[str, int]] = []
    for row in tasks:
        task, status, epoch = row["task_id"], row["status"], row["claim_epoch"]
        if status == "inbox":
            if (
                row["created_by"] == PLANNER
                and row["required_role"] is None
                and not row.get("waiting_on_dependencies", False)
            ):
                inbox.append((task, epoch))
        elif row["assignee"] not in ours:
            continue
        elif status == "review":
            review.append((task, row["assignee"], epoch))
        elif status in ("in_progress", "blocked"):
            held.setdefault(row["assignee"], (task, epoch))
    return Carried(
        status={
            r["agent_id"]: (r["status"], r["status_reason"] or "")
            for r in registry
            if r["agent_id"] in ours
        },
        held=held,
        review=review,
        inbox=inbox,
    )


async def _caught_up(pool: asyncpg.Pool, js: JetStreamContext, wait: float) -> bool:
    """Wait until the projections ``read_board`` reads have applied the stream up to its last
    message now; False if they have not within ``wait`` seconds."""
    target = (await js.stream_info(EVENTS_STREAM)).state.last_seq
    names = [AgentRegistry.name, TaskBoard.name]
    deadline = anyio.current_time() + wait
    while True:
        async with pool.acquire() as conn:
            rows = await conn.fetch(q("projection_checkpoints"), names)
        marks = {r["projection"]: r["checkpoint"] for r in rows}
        if all(marks.get(name, 0) >= target for name in names):
            return True
        if anyio.current_time() >= deadline:
            log.warning(
                "simulator: the projections %s have not caught up with %s (sequence %d) in %gs; "
                "carrying on from what they show",
                " and ".join(names),
                EVENTS_STREAM,
                target,
                wait,
            )
            return False
        await anyio.sleep(0.2)


async def run(
    rt: Runtime,
    agents: int,
    *,
    seed: int = 7,
    ticks: int | None = None,
    tick_seconds: float = 1.0,
    stopping: Callable[[], bool] = lambda: False,
    catch_up_s: float = CATCH_UP_S,
) -> int:
    """Drive a simulated fleet of ``agents``, one tick per ``tick_seconds``, carrying on from
    earlier runs on the same data. Returns the number of events sent. The simulator has a NATS
    connection of its own (its agents' inboxes end with it)."""
    voices = Voices(rt)
    try:
        fleet = Fleet(agents, seed=seed, prefix=f"task-{run_prefix()}-")
        ids = [a.agent_id for a in fleet.agents]
        for actor in (*ids, PLANNER, REVIEWER, ROLE_AUTHORITY):  # errors come early
            await voices.connection(actor)
        authority = FleetClient(await voices.connection(ROLE_AUTHORITY), ROLE_AUTHORITY)
        for person, role in ((PLANNER, "operator"), (REVIEWER, "reviewer")):
            await authority.ensure_roles(person.removeprefix("user:"), [role], "the simulator")
        carried = await read_board(rt.pool, (await voices.connection(PLANNER)).jetstream(), ids,
                                   wait=catch_up_s)  # fmt: skip
        sent = await voices.publish(fleet.start(datetime.now(UTC), carried))
        log.info(
            "simulator: %d agents (%d paused, %d retired); this run's tasks %s, ...; from "
            "earlier runs %d tasks in hand, %d in review, %d open",
            agents,
            sum(a.paused for a in fleet.agents),
            sum(a.retired for a in fleet.agents),
            fleet.task_id(1),
            len(carried.held),
            len(carried.review),
            len(carried.inbox),
        )
        received: list[tuple[str, CommandIssued]] = []
        async with anyio.create_task_group() as tg:
            for agent in ids:
                client = AgentClient(await voices.connection(agent), agent)
                tg.start_soon(_listen, client, fleet, received)
            tg.start_soon(_watch_registry, rt.pool, fleet, ids)
            n = 0
            while not stopping() and (ticks is None or n < ticks):
                started = anyio.current_time()
                now = datetime.now(UTC)
                sent += await voices.publish(_obey(fleet, received, now) + fleet.tick(now))
                n += 1
                await anyio.sleep(max(0.0, tick_seconds - (anyio.current_time() - started)))
            tg.cancel_scope.cancel()
        # commands read since the last tick were acknowledged: answer them before leaving
        sent += await voices.publish(_obey(fleet, received, datetime.now(UTC)))
        return sent
    finally:
        await voices.aclose()


class Voices:
    """The simulator's connections: one per actor it speaks as (each simulated agent, the
    planner, the reviewer), each with that actor's own credentials, since a credential may
    publish only as its holder (DESIGN 3.7). Needs the signing keys (``FLEETWARD_AUTH_DIR``)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._open: dict[str, NatsClient] = {}

    async def connection(self, actor: str) -> NatsClient:
        """``actor``'s connection, opened on first use. Raises ``FleetwardError`` when no
        credentials can be had for it."""
        if actor not in self._open:
            creds = credentials(replace(self.rt.settings, creds=None), actor)
            self._open[actor] = await connect_nats(self.rt.nats_url, creds=creds)
        return self._open[actor]

    async def publish(self, events: list[Event]) -> int:
        """Publish ``events`` in their order, each on its actor's connection: consecutive
        events of one actor go out together (``publish_many``), and each actor's batch is stored
        before the next actor's begins (a review never overtakes the submission it is about).
        Returns the count."""
        sent = 0
        for actor, batch in itertools.groupby(events, key=lambda e: e.actor):
            js = (await self.connection(actor)).jetstream(timeout=10)
            sent += await publish_many(js, list(batch))
        return sent

    async def aclose(self) -> None:
        for nc in self._open.values():
            with contextlib.suppress(Exception):
                await nc.close()
        self._open.clear()


def _obey(fleet: Fleet, received: list[tuple[str, CommandIssued]], now: datetime) -> list[Event]:
    """The agents' answers to the commands read since the last tick, in the order they came."""
    events: list[Event] = []
    for agent, command in received:
        if command.command == "refused":
            log.warning(
                "simulator: %s was told an event of its was refused%s: %s %s",
                agent,
                f" (task {command.task})" if command.task else "",
                command.reason,
                command.payload,
            )
        elif command.command in ("pause", "resume", "retire", "lease_lost"):
            log.info(
                "simulator: %s got %s%s%s",
                agent,
                command.command,
                f" for {command.task}" if command.task else "",
                f": {command.reason}" if command.reason else "",
            )
        events += fleet.command(agent, command, now)
    received.clear()
    return events


async def _listen(
    client: AgentClient, fleet: Fleet, received: list[tuple[str, CommandIssued]]
) -> None:
    """Read one agent's durable inbox while it listens (not retired, not fallen silent)."""
    while fleet.listening(client.agent):
        try:
            command = await client.next_command(wait=INBOX_WAIT_S)
        except Exception as exc:  # NATS away or slow: the commands wait in the stream
            log.debug("simulator: %s could not read its inbox: %r", client.agent, exc)
            await anyio.sleep(INBOX_WAIT_S)
            continue
        if command is not None:
            received.append((client.agent, command))


async def _watch_registry(pool: asyncpg.Pool, fleet: Fleet, agents: list[str]) -> None:
    """Tell the fleet, every ``REGISTRY_EVERY_S``, which agents the registry has offline."""
    while True:
        await anyio.sleep(REGISTRY_EVERY_S)
        try:
            async with pool.acquire(timeout=REGISTRY_EVERY_S) as conn:
                rows = await conn.fetch(q("sim_agents"), agents)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.debug("simulator: cannot read the registry: %r", exc)
            continue
        fleet.seen({r["agent_id"]: r["status"] for r in rows})
