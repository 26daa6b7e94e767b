"""The agent SDK, ``AgentClient``: what an agent uses to take part in a fleet. Register,
heartbeat, claim tasks atomically (``client.claims``), report progress, tool calls and spend,
submit deliverables, and read its durable command inbox. Every publish is idempotent
(``Nats-Msg-Id`` = event id) and retried on transient errors. The wire protocol is the same for
every language: docs/agents.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck
from nats.js.errors import NotFoundError

from fleetward.schemas import Rejected, admit
from fleetward.schemas.events import (
    AgentRegistered,
    CommandIssued,
    Deliverable,
    DeliverableKind,
    Heartbeat,
    HeartbeatStatus,
    RunFinished,
    RunOutcome,
    RunStarted,
    SpendRecorded,
    TaskBlocked,
    TaskClaimed,
    TaskProgressed,
    TaskReleased,
    TaskSubmitted,
    ToolCalled,
)
from fleetward.schemas.streams import COMMANDS_STREAM, inbox_durable
from fleetward.schemas.subjects import subject
from fleetward.services.client.claims import Claim, ClaimLost, claim_task, claimant
from fleetward.services.client.operator import FleetClient
from fleetward.services.jetstream.connection import connect
from fleetward.services.jetstream.consumer import PullConsumer

INBOX_REDELIVERY_S = 5.0


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
        """A client for ``agent`` on its own connection to ``url`` (reconnecting forever)."""
        return cls(await connect(url, name=agent, max_reconnect_attempts=-1), agent)

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
        """Register (or re-register) this agent: who it is, its roles and heartbeat interval."""
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
        claim = await claim_task(
            self, task, agent=self.agent, me=self._claimant, lease_s=lease_s, attempts=attempts
        )
        return self._keep(claim)

    def _claimant(self) -> dict[str, Any]:
        """This agent as the board's claim check sees it now."""
        p = self.profile
        return claimant(p.roles, len(self.claims), p.max_concurrent_tasks)

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
        """Report the held task blocked, and why."""
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
        """Give the held task back, saying why."""
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
        """Report the start of a run (one wake-up of the agent)."""
        return await self.send(
            RunStarted(**self.envelope(), agent=self.agent, run=run, task=task, trigger=trigger)
        )

    async def run_finished(
        self, run: str, outcome: RunOutcome, latency_ms: float, task: str | None = None
    ) -> PubAck:
        """Report the end of a run, its outcome and how long it took."""
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
        """Report model spend: tokens and what they cost."""
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
        """Stop reading the inbox and close the connection."""
        if self._inbox is not None:
            await self._inbox.stop()
        await super().close()
