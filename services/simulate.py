"""A demo fleet: agents that register, heartbeat, claim tasks, call tools, spend, submit
deliverables and get reviewed, with some failures and some silences. Deterministic per seed.

The plan of what happens is pure (``Fleet.tick`` returns the events of one tick); ``run`` only
publishes them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio
from nats.js import JetStreamContext

from fleetward.schemas import Event, new_id
from fleetward.schemas.events import (
    AgentRegistered,
    Deliverable,
    Heartbeat,
    RunFinished,
    RunStarted,
    SpendRecorded,
    TaskClaimed,
    TaskCreated,
    TaskProgressed,
    TaskReviewed,
    TaskSubmitted,
    ToolCalled,
)
from fleetward.services.jetstream.publish import publish_many

TEAMS = ("research", "support", "platform", "growth")
MODELS = (("small-1", 0.15e-6, 0.6e-6), ("large-2", 3e-6, 15e-6))
TOOLS = ("web.search", "repo.read", "repo.write", "shell", "sql.query", "email.send")
PROJECTS = ("onboarding", "billing", "docs", "infra")
REVIEWER = "user:reviewer"
PLANNER = "user:planner"


@dataclass
class SimAgent:
    agent_id: str
    team: str
    silent_after: int | None  # the tick after which it stops heartbeating (a silence)
    flaky: bool  # fails runs and tools more often
    task: str | None = None
    epoch: int = 0
    run: str | None = None
    progress: int = 0


@dataclass
class Fleet:
    size: int
    seed: int = 7
    heartbeat_every: int = 1  # ticks
    rng: random.Random = field(init=False)
    agents: list[SimAgent] = field(init=False)
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

    def start(self, now: datetime) -> list[Event]:
        """Registrations and a first batch of tasks."""
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
        ]
        events += self._new_tasks(now, max(3, self.size))
        return events

    def _new_tasks(self, now: datetime, n: int) -> list[Event]:
        out: list[Event] = []
        for _ in range(n):
            self.task_no += 1
            task = f"task-{self.task_no:05d}"
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

    def tick(self, now: datetime) -> list[Event]:
        """The events of one tick (about one second of fleet life)."""
        self.tick_no += 1
        events: list[Event] = []
        if len(self.inbox) < self.size // 3:
            events += self._new_tasks(now, max(1, self.size // 5))
        for agent in self.agents:
            if agent.silent_after is not None and self.tick_no > agent.silent_after:
                continue
            events += self._act(agent, now)
            if self.tick_no % self.heartbeat_every == 0:
                events.append(
                    Heartbeat(
                        id=new_id(),
                        actor=agent.agent_id,
                        at=now,
                        agent=agent.agent_id,
                        status="busy" if agent.task else "idle",
                        task=agent.task,
                        message=f"working on {agent.task}" if agent.task else "waiting for work",
                    )
                )
        events += self._reviews(now)
        return events

    def _act(self, a: SimAgent, now: datetime) -> list[Event]:
        me, r = a.agent_id, self.rng
        if a.task is None:
            if not self.inbox or r.random() < 0.5:
                return []
            task = self.inbox.pop(0)
            a.task, a.epoch, a.progress = task, self.epochs.get(task, 0) + 1, 0
            self.epochs[task] = a.epoch
            a.run = new_id()[-12:]
            return [
                TaskClaimed(id=new_id(), actor=me, at=now, task=task, agent=me, epoch=a.epoch),
                RunStarted(id=new_id(), actor=me, at=now, agent=me, run=a.run, task=task),
            ]
        if a.run is None:
            return []
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
        self.review.append((a.task, a))
        return events

    def _reviews(self, now: datetime) -> list[Event]:
        events: list[Event] = []
        keep = []
        for task, agent in self.review:
            if self.rng.random() < 0.4:
                keep.append((task, agent))
                continue
            approve = self.rng.random() < 0.8
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
            if approve:
                agent.task = None
            else:
                agent.run = new_id()[-12:]
                agent.progress = 50
        self.review = keep
        return events


async def run(
    js: JetStreamContext,
    agents: int,
    *,
    seed: int = 7,
    ticks: int | None = None,
    tick_seconds: float = 1.0,
    stopping: Callable[[], bool] = lambda: False,
) -> int:
    """Publish a simulated fleet's events, one tick per ``tick_seconds``. Returns events sent."""
    fleet = Fleet(agents, seed=seed)
    sent = await publish_many(js, fleet.start(datetime.now(UTC)))
    n = 0
    while not stopping() and (ticks is None or n < ticks):
        started = anyio.current_time()
        sent += await publish_many(js, fleet.tick(datetime.now(UTC)))
        n += 1
        await anyio.sleep(max(0.0, tick_seconds - (anyio.current_time() - started)))
    return sent
