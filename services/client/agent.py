"""The Python client for agents and for the people and services that direct them. NATS only:
importing it needs no Postgres.

``AgentClient`` is what an agent uses: register, heartbeat, claim tasks atomically, report
progress, tool calls and spend, submit deliverables, and read its durable command inbox.
``FleetClient`` is what an operator or service uses: create, assign, review and cancel tasks,
and send commands. Every publish is idempotent (``Nats-Msg-Id`` = event id) and retried on
transient errors. The wire protocol is the same for every language: docs/agents.md.

Claims (DESIGN 3.2): the claimer folds the task's subject from the stream, checks the claim as
the board would, and publishes it with ``Nats-Expected-Last-Subject-Sequence`` set to the last
sequence it read. The first claim wins; any other publish on that subject in between makes the
server answer "wrong last sequence" (10071), and the claimer reads again. A retried publish may
instead come back as a duplicate. Either way the answer is settled by reading the subject.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self

import anyio
import msgspec
import nats
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck
from nats.js.errors import APIError, NotFoundError

from fleetward.projections.tasks import agent_claim_problem, task_claim_problem
from fleetward.schemas import Event, Rejected, admit, deterministic_id, new_id
from fleetward.schemas.events import (
    AgentRegistered,
    CommandIssued,
    CommandName,
    Deliverable,
    DeliverableKind,
    Heartbeat,
    HeartbeatStatus,
    Priority,
    RunFinished,
    RunOutcome,
    RunStarted,
    SpendRecorded,
    TaskAssigned,
    TaskBlocked,
    TaskCancelled,
    TaskClaimed,
    TaskCreated,
    TaskProgressed,
    TaskReleased,
    TaskReviewed,
    TaskSubmitted,
    ToolCalled,
    Verdict,
)
from fleetward.schemas.headers import EXPECTED_LAST_SUBJECT_SEQ, WRONG_LAST_SEQUENCE
from fleetward.schemas.streams import COMMANDS_STREAM, inbox_durable
from fleetward.schemas.subjects import API_TASKS_CLAIMABLE, subject
from fleetward.services.client.taskstate import TaskState, read_task
from fleetward.services.jetstream.consumer import PullConsumer
from fleetward.services.jetstream.publish import publish

INBOX_REDELIVERY_S = 5.0


class ClaimLost(Exception):
    """The claim did not take the task; ``reason`` says why (another agent won, not claimable)."""

    def __init__(self, task: str, reason: str) -> None:
        super().__init__(f"{task}: {reason}")
        self.task, self.reason = task, reason


@dataclass(frozen=True, slots=True)
class Claim:
    """A task this agent holds, in one epoch."""

    task: str
    epoch: int
    lease_s: float


class _Publisher:
    def __init__(self, nc: NatsClient, actor: str) -> None:
        self.nc, self.js, self.actor = nc, nc.jetstream(timeout=10), actor

    def envelope(self, event_id: str | None = None) -> dict[str, Any]:
        return {"id": event_id or new_id(), "actor": self.actor, "at": datetime.now(UTC)}

    async def send(self, event: Event, **headers: str) -> PubAck:
        return await publish(self.js, event, headers=headers or None)

    async def close(self) -> None:
        await self.nc.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class FleetClient(_Publisher):
    """For people and services (actor ``user:<name>`` or ``svc:<name>``)."""

    @classmethod
    async def connect(cls, url: str, actor: str) -> FleetClient:
        return cls(await nats.connect(url, name=actor), actor)

    async def create_task(
        self,
        task: str,
        *,
        project: str,
        title: str,
        description: str = "",
        priority: Priority = "medium",
        depends_on: Sequence[str] = (),
        required_role: str | None = None,
        sla_s: float | None = None,
    ) -> PubAck:
        """Create a task. Dependencies must already exist (so they never form a cycle); the
        board refuses the creation otherwise, and so does this check, at once."""
        if task in depends_on:
            raise ValueError(f"{task} cannot depend on itself (that would be a cycle)")
        missing = [d for d in depends_on if (await read_task(self.nc, self.js, d)).row is None]
        if missing:
            raise ValueError(
                f"{task} depends on unknown task(s) {', '.join(missing)}: create those first "
                "(dependencies must already exist, so they can never form a cycle)"
            )
        return await self.send(
            TaskCreated(
                **self.envelope(),
                task=task,
                project=project,
                title=title,
                description=description,
                priority=priority,
                depends_on=tuple(depends_on),
                required_role=required_role,
                sla_s=sla_s,
            )
        )

    async def assign(self, task: str, agent: str) -> PubAck:
        return await self.send(TaskAssigned(**self.envelope(), task=task, agent=agent))

    async def cancel(self, task: str, reason: str = "") -> PubAck:
        return await self.send(TaskCancelled(**self.envelope(), task=task, reason=reason))

    async def review(self, task: str, verdict: Verdict, feedback: str = "") -> TaskReviewed:
        """Review the task's latest deliverable, and put the verdict with its feedback in the
        author's durable inbox (so an agent that is offline gets it when it returns)."""
        state = await read_task(self.nc, self.js, task)
        if state.row is None or state.row["status"] != "review":
            status = state.row["status"] if state.row else "unknown"
            raise ValueError(f"{task} is not waiting for review (it is {status})")
        author = state.row["assignee"]
        if author == self.actor:
            raise ValueError(f"{self.actor} may not review its own deliverable")
        review = TaskReviewed(
            **self.envelope(), task=task, agent=author, verdict=verdict, feedback=feedback
        )
        await self.send(review)
        # one inbox entry per review, even if this is retried: its id derives from the review's
        await self.command(
            author,
            "review_feedback",
            reason=feedback,
            task=task,
            payload={"verdict": verdict, "version": state.row["deliverable_version"]},
            event_id=deterministic_id(review.id, "inbox"),
        )
        return review

    async def command(
        self,
        agent: str,
        command: CommandName,
        *,
        reason: str = "",
        task: str | None = None,
        payload: dict[str, str | int | float | bool | None] | None = None,
        event_id: str | None = None,
    ) -> PubAck:
        """A durable command: the agent receives it even if it is offline now."""
        return await self.send(
            CommandIssued(
                **self.envelope(event_id),
                agent=agent,
                command=command,
                reason=reason,
                task=task,
                payload=payload or {},
            )
        )

    async def claimable(self, agent: str, roles: Sequence[str], limit: int = 20) -> list[str]:
        """Task ids the task API ranks as claimable for ``agent``: highest priority, oldest
        first (a hint from the projection; the claim itself is decided on the stream)."""
        request = msgspec.json.encode({"agent": agent, "roles": list(roles), "limit": limit})
        reply = await self.nc.request(API_TASKS_CLAIMABLE, request, timeout=5)
        answer: dict[str, list[str]] = msgspec.json.decode(reply.data)
        return answer["tasks"]


@dataclass
class ToolCall:
    """What a tool call reports; set ``cost_usd`` (and ``error``) inside the ``with`` block."""

    tool: str
    cost_usd: float = 0.0
    error: str | None = None


@dataclass
class _Profile:
    roles: tuple[str, ...] = ()
    max_concurrent_tasks: int = 1
    heartbeat_interval_s: float = 60.0


class AgentClient(FleetClient):
    """For one agent (actor = its id)."""

    def __init__(self, nc: NatsClient, agent: str) -> None:
        super().__init__(nc, agent)
        self.agent = agent
        self.profile = _Profile()
        self.claims: dict[str, Claim] = {}
        self.status: HeartbeatStatus = "idle"
        self._inbox: PullConsumer | None = None

    @classmethod
    async def connect(cls, url: str, agent: str) -> AgentClient:
        return cls(await nats.connect(url, name=agent, max_reconnect_attempts=-1), agent)

    # ---- who I am and that I am alive ------------------------------------------------------

    async def register(
        self,
        *,
        name: str,
        owner: str,
        team: str,
        purpose: str = "",
        risk_class: Literal["low", "medium", "high", "critical"] = "medium",
        version: str = "1",
        heartbeat_interval_s: float = 60.0,
        roles: Sequence[str] = (),
        max_concurrent_tasks: int = 1,
    ) -> PubAck:
        self.profile = _Profile(tuple(roles), max_concurrent_tasks, heartbeat_interval_s)
        return await self.send(
            AgentRegistered(
                **self.envelope(),
                agent=self.agent,
                name=name,
                owner=owner,
                team=team,
                purpose=purpose,
                risk_class=risk_class,
                version=version,
                heartbeat_interval_s=heartbeat_interval_s,
                roles=tuple(roles),
                max_concurrent_tasks=max_concurrent_tasks,
            )
        )

    async def heartbeat(self, message: str = "") -> PubAck:
        """One heartbeat; it names the task in hand, which renews that task's lease."""
        task = next(iter(self.claims), None)
        status: HeartbeatStatus = "busy" if task else self.status
        return await self.send(
            Heartbeat(
                **self.envelope(), agent=self.agent, status=status, task=task, message=message
            )
        )

    async def heartbeats(self) -> None:
        """Heartbeat at the registered interval until cancelled (run it in a task group)."""
        while True:
            started = time.monotonic()
            with contextlib.suppress(Exception):  # a missed beat is the watchdog's business
                await self.heartbeat()
            await anyio.sleep(
                max(0.0, self.profile.heartbeat_interval_s - (time.monotonic() - started))
            )

    # ---- tasks ---------------------------------------------------------------------------------

    async def claim(self, task: str, *, lease_s: float = 300.0, attempts: int = 3) -> Claim:
        """Take ``task`` for a new epoch, or raise ``ClaimLost`` saying why not."""
        for _ in range(attempts):
            state = await read_task(self.nc, self.js, task)
            claim = await self._claim_event(state, lease_s)
            try:
                ack = await self.send(claim, **{EXPECTED_LAST_SUBJECT_SEQ: str(state.last_seq)})
            except APIError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    raise
                if await self._holds(task, claim.epoch):  # an earlier try of ours did land
                    return self._keep(claim)
                continue  # someone published first: read again and judge again
            if ack.duplicate and not await self._holds(task, claim.epoch):
                raise ClaimLost(task, "the claim was stored before and did not take the task")
            return self._keep(claim)
        raise ClaimLost(task, "other agents kept publishing on the task first")

    async def _claim_event(self, state: TaskState, lease_s: float) -> TaskClaimed:
        if state.row is None:
            raise ClaimLost(state.task, "no such task")
        claim = TaskClaimed(
            **self.envelope(),
            task=state.task,
            agent=self.agent,
            epoch=state.row["claim_epoch"] + 1,
            lease_s=lease_s,
        )
        me = {
            "status": "active",
            "roles": list(self.profile.roles),
            "held": len(self.claims),
            "max_concurrent_tasks": self.profile.max_concurrent_tasks,
        }
        problem = task_claim_problem(state.row, claim) or agent_claim_problem(state.row, me, claim)
        if problem is None:
            for dep in state.row["depends_on"]:
                row = (await read_task(self.nc, self.js, dep)).row
                if row is None or row["status"] != "done":
                    problem = f"waiting on dependencies: {dep}"
                    break
        if problem:
            raise ClaimLost(state.task, problem)
        return claim

    async def _holds(self, task: str, epoch: int) -> bool:
        row = (await read_task(self.nc, self.js, task)).row
        return bool(row and row["assignee"] == self.agent and row["claim_epoch"] == epoch)

    def _keep(self, claim: TaskClaimed) -> Claim:
        held = Claim(claim.task, claim.epoch, claim.lease_s)
        self.claims[claim.task] = held
        return held

    async def claim_next(self, *, lease_s: float = 300.0) -> Claim | None:
        """Claim the highest-priority claimable task for this agent's roles, oldest first; None
        when there is none. Candidates come from the task API; each is claimed on the stream."""
        for task in await self.claimable(self.agent, self.profile.roles):
            try:
                return await self.claim(task, lease_s=lease_s)
            except ClaimLost:
                continue
        return None

    async def progress(self, claim: Claim, note: str = "", percent: float | None = None) -> PubAck:
        """Report progress; this renews the claim's lease."""
        return await self.send(
            TaskProgressed(
                **self.envelope(),
                task=claim.task,
                agent=self.agent,
                epoch=claim.epoch,
                note=note,
                percent=percent,
            )
        )

    async def block(self, claim: Claim, reason: str) -> PubAck:
        return await self.send(
            TaskBlocked(
                **self.envelope(),
                task=claim.task,
                agent=self.agent,
                epoch=claim.epoch,
                reason=reason,
            )
        )

    async def release(self, claim: Claim, reason: str = "") -> PubAck:
        self.claims.pop(claim.task, None)
        return await self.send(
            TaskReleased(
                **self.envelope(),
                task=claim.task,
                agent=self.agent,
                epoch=claim.epoch,
                reason=reason,
            )
        )

    async def submit(
        self,
        claim: Claim,
        *,
        kind: DeliverableKind = "markdown",
        content: str = "",
        uri: str | None = None,
    ) -> PubAck:
        """Hand in a deliverable (versioned by the board). The task leaves this agent's hands
        until a review sends it back."""
        digest = hashlib.sha256((content or uri or "").encode()).hexdigest()
        deliverable = Deliverable(kind=kind, sha256=digest, content=content, uri=uri)
        self.claims.pop(claim.task, None)
        return await self.send(
            TaskSubmitted(
                **self.envelope(),
                task=claim.task,
                agent=self.agent,
                epoch=claim.epoch,
                deliverable=deliverable,
            )
        )

    def rework(self, claim: Claim) -> Claim:
        """Hold a task again after a rejected review sent it back (same epoch)."""
        self.claims[claim.task] = claim
        return claim

    # ---- runs, tools, spend ------------------------------------------------------------------

    async def run_started(self, run: str, task: str | None = None, trigger: str = "") -> PubAck:
        return await self.send(
            RunStarted(**self.envelope(), agent=self.agent, run=run, task=task, trigger=trigger)
        )

    async def run_finished(
        self, run: str, outcome: RunOutcome, latency_ms: float, task: str | None = None
    ) -> PubAck:
        return await self.send(
            RunFinished(
                **self.envelope(),
                agent=self.agent,
                run=run,
                outcome=outcome,
                latency_ms=latency_ms,
                task=task,
            )
        )

    @asynccontextmanager
    async def tool(
        self, name: str, *, run: str | None = None, task: str | None = None
    ) -> AsyncIterator[ToolCall]:
        """Record one tool call: its duration, whether it raised, and its cost.

        ``async with agent.tool("web.search") as call: ...; call.cost_usd = 0.002``"""
        call = ToolCall(name)
        started = time.perf_counter()
        try:
            yield call
        except BaseException as exc:
            call.error = call.error or f"{type(exc).__name__}: {exc}"[:8000]
            raise
        finally:
            await self.send(
                ToolCalled(
                    **self.envelope(),
                    agent=self.agent,
                    tool=name,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    ok=call.error is None,
                    error=call.error,
                    cost_usd=call.cost_usd,
                    run=run,
                    task=task,
                )
            )

    async def spend(
        self,
        *,
        model: str,
        cost_usd: float,
        tokens_in: int = 0,
        tokens_out: int = 0,
        run: str | None = None,
        task: str | None = None,
    ) -> PubAck:
        return await self.send(
            SpendRecorded(
                **self.envelope(),
                agent=self.agent,
                model=model,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                cost_usd=cost_usd,
                run=run,
                task=task,
            )
        )

    # ---- the durable command inbox -----------------------------------------------------------

    async def next_command(self, wait: float = 1.0) -> CommandIssued | None:
        """The next command for this agent, or None after ``wait`` seconds. Commands sent while
        the agent was offline are kept for it (a durable consumer per agent) and come first.
        Delivery is at least once: a command can come again (within ``INBOX_REDELIVERY_S``)
        if the agent vanished while it was on its way."""
        if self._inbox is None:
            self._inbox = await self._open_inbox()
        while True:
            batch = await self._inbox.next_batch(1, wait=wait, linger=0.0)
            if not batch:
                return None
            delivery = batch[0]
            await self._inbox.ack(delivery)
            try:
                event = admit(delivery.subject, delivery.data)
            except Rejected:
                continue  # not a command Fleetward could have sent: skip it
            if isinstance(event, CommandIssued):
                return event

    async def _open_inbox(self) -> PullConsumer:
        durable = inbox_durable(self.agent)
        try:
            await self.js.consumer_info(COMMANDS_STREAM, durable)
        except NotFoundError:
            await self.js.add_consumer(
                COMMANDS_STREAM,
                ConsumerConfig(
                    durable_name=durable,
                    filter_subject=subject("cmd", self.agent),
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    # a command handed to a pull request of a client that just went away is
                    # delivered again after this long
                    ack_wait=INBOX_REDELIVERY_S,
                ),
            )
        inbox = PullConsumer(self.nc, COMMANDS_STREAM, durable, batch=1, expires=1.0)
        await inbox.start()
        return inbox

    async def close(self) -> None:
        if self._inbox is not None:
            await self._inbox.stop()
        await super().close()
