"""The agent SDK, ``AgentClient``: what an agent uses to take part in a fleet. Register,
heartbeat, claim tasks atomically (``client.claims``), report progress, tool calls and spend,
submit deliverables, and read its durable command inbox. Every publish is idempotent
(``Nats-Msg-Id`` = event id) and retried on transient errors. The wire protocol is the same for
every language: docs/agents.md.

The client acts on what its inbox says (``next_command``, and before every claim): ``pause``
and ``retire`` make ``claim`` raise ``AgentPaused`` (until ``resume``); ``lease_lost`` and a
``refused`` claim drop the task from ``claims``. Reports on a held task are fenced
(``client.claims``): once the task is no longer this agent's, they raise ``ClaimLost``.

Before an expensive step, ``async with agent.reserve(usd=2.5, task=t) as r:`` sets the
estimate aside in every budget covering the agent and the budgets of ``t``'s project (the
guard, ``fw.api.budgets.reserve.<agent>``) or raises ``ReservationRefused``; name
``r.reservation`` in the spend it pays for (``spend`` or ``tool`` ``reservation=``): that
settles it. Leaving the block without such a spend gives the reservation back at once
(``fw.api.budgets.release.<agent>``); one the guard never hears back about returns to its
budgets when it expires (``ttl_s``, default 300 seconds). A request that times out is asked
once more with the same idempotency key, so it never holds twice.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import anyio
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy, PubAck
from nats.js.errors import APIError, NotFoundError

from fleetward.projections import lifecycle
from fleetward.schemas import Rejected, admit, new_id, subject_of
from fleetward.schemas.api import BUDGETS_RELEASE, BUDGETS_RESERVE, ReleaseRequest, ReserveRequest
from fleetward.schemas.events import (
    AgentRegistered,
    ApprovalKind,
    ApprovalRequested,
    CommandIssued,
    Deliverable,
    DeliverableKind,
    Event,
    Heartbeat,
    HeartbeatStatus,
    OnExpiry,
    RiskClass,
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
from fleetward.schemas.grants import REGISTRY, identity_kind, registry_commands
from fleetward.schemas.headers import WRONG_LAST_SEQUENCES
from fleetward.schemas.policies import Verdict, verdict
from fleetward.schemas.streams import COMMANDS_STREAM, inbox_durable
from fleetward.schemas.subjects import boundary_wildcard
from fleetward.services.auth.store import identity_of
from fleetward.services.client import intents
from fleetward.services.client.approvals import (
    Approval,
    ApprovalRefused,
    ToolDenied,
    decision_of,
    decision_of_gate,
    read_gate,
    read_policies,
)
from fleetward.services.client.claims import (
    AgentPaused,
    Claim,
    ClaimLost,
    claim_task,
    claimant,
    holder_problem,
)
from fleetward.services.client.intents import IntentRefused
from fleetward.services.client.operator import API_TIMEOUT_S, FleetClient
from fleetward.services.client.taskstate import TaskState, read_task
from fleetward.services.errors import ApiError, ApiRefused, FleetwardError, ReservationRefused
from fleetward.services.jetstream.connection import connect_as
from fleetward.services.jetstream.consumer import Delivery, PullConsumer, create_inbox
from fleetward.services.jetstream.publish import encode
from fleetward.services.jetstream.reads import ride_out

INBOX_REDELIVERY_S = 5.0
INBOX_BATCH = 16  # commands the open pull request on the inbox may bring ahead of reading
SEEN_COMMANDS = 1024  # command ids remembered, so a redelivered command acts once
APPROVAL_READ_S = 10.0  # seconds of a quiet inbox after which a wait reads the request itself
STATUS_READ_S = 1.0  # how long a claim waits for the registry's status when it must ask again
STATUS_RETRY_S = 1.0  # while the status cannot be read, claims ask again at most this often
# the registry's commands a process holds unread at most (``_follow_registry``): past them, or
# these bytes, nats-py drops what comes (a flood aimed at the subject), and the status is read
# from the registry again
REGISTRY_PENDING_MSGS, REGISTRY_PENDING_BYTES = 4096, 8 * 1024 * 1024


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
    team: str | None = None  # None: not registered by this client
    risk_class: str | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    """A granted reservation: its id (name it in the spend it pays for), ``usd`` (USD) set
    aside in each of ``budgets`` (empty: no budget covers the agent), released unsettled at
    ``expires_at`` (UTC)."""

    reservation: str
    usd: float
    budgets: tuple[str, ...]
    expires_at: datetime


class AgentClient(FleetClient):
    """For one agent (actor = its id)."""

    def __init__(self, nc: NatsClient, agent: str) -> None:
        super().__init__(nc, agent)
        self.agent = agent
        self.profile = _Profile()
        self.claims: dict[str, Claim] = {}
        self.status: HeartbeatStatus = "idle"
        self.paused = False  # told to pause (or retired) by its inbox: takes no new work
        self._settled: set[str] = set()  # reservations a spend or tool call of this client named
        self.retired = False
        # FW_EVENTS sequence of the lifecycle event behind ``paused``/``retired``: the
        # registry's commands carry theirs, so a stale one (another process's inbox, a copy
        # read late) changes nothing (``_obey``)
        self._status_seq = 0
        # the status is to be read from the registry (again) before the next claim: its reading
        # failed, was of a registry that had applied nothing (a rebuild), or commands were lost
        self._status_stale = True
        self._status_asked = -math.inf  # time.monotonic() of the last reading
        # the registry's commands as they are published, to every process of the agent, and
        # how many of them were taken (fewer than delivered: nats-py dropped some)
        self._registry: Subscription | None = None
        self._registry_taken = 0
        self._inbox: PullConsumer | None = None
        # read (and acted on), not yet returned by next_command: not acknowledged either
        self._commands: collections.deque[tuple[CommandIssued, Delivery]] = collections.deque()
        self._last_seq = 0  # stream sequence of the last command read (to reopen the inbox)
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._seqs: dict[str, int] = {}  # last sequence known over each held task's subjects
        self._claiming = anyio.Lock()  # one claim at a time: never past the limit
        # decisions on this agent's approval requests, as its inbox told them
        self._decisions: dict[str, Approval | ApprovalRefused] = {}

    @classmethod
    async def connect(cls, url: str, creds: str | PathLike[str]) -> AgentClient:
        """A client for the agent that ``creds`` was issued to (a ``.creds`` file from
        ``fleetward agents credentials ID``), on its own connection to ``url`` (reconnecting
        forever). It may publish only as that agent (DESIGN 3.7). Raises ``FleetwardError``
        when ``creds`` is not an agent's credentials file."""
        agent = identity_of(Path(creds))
        if identity_kind(agent) != "agent":
            raise FleetwardError(f"{creds} holds the credentials of {agent}, not of an agent")
        return cls(await connect_as(url, Path(creds), agent, max_reconnect_attempts=-1), agent)

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
        roles: Sequence[str] | None = None,
        max_concurrent_tasks: int | None = None,
    ) -> PubAck:
        """Register (or re-register) this agent: who it is, its heartbeat interval, and its
        roles and task limit (None: those in force, the registry's; none and 1 for a new
        agent). Opens its inbox and takes what waits there (a pause sent while it was away
        holds).

        Judged first as every reader will judge it (projections/lifecycle.py), against the
        registry's record of this agent (``agent_profile``): ``IntentRefused`` when the agent is
        retired (retirement is final for the agent: a person with the role operator, or a
        service, brings it back by registering it), and when a person or a service registered
        it and it asks for other roles or another task limit than theirs (its own registration
        changes only the rest of its profile). When the task API cannot be asked, the inbox
        decides whether it is retired, and the registry judges the rest (a refusal then comes
        back as ``refused``)."""
        await self.sync_inbox()
        record, known = await self._take_status(API_TIMEOUT_S)  # (asked again: the newest)
        life = lifecycle.Life.of(record) if known else lifecycle.Life(
            "retired" if self.retired else "active"
        )  # fmt: skip
        held, limit = intents.own_limits(record, roles, max_concurrent_tasks)
        event = AgentRegistered(
            **self.envelope(),
            agent=self.agent,
            name=name,
            owner=owner,
            team=team,
            purpose=purpose,
            risk_class=risk_class,
            version=version,
            heartbeat_interval_s=heartbeat_interval_s,
            roles=held,
            max_concurrent_tasks=limit,
        )
        why = lifecycle.problem(life, event)
        why = why or intents.own_limits_problem(self.agent, record, roles, max_concurrent_tasks)
        if why is not None:
            raise IntentRefused(why)
        ack = await self.send(event)
        self.profile = _Profile(held, limit, heartbeat_interval_s, team, risk_class)
        await self.sync_inbox()
        return ack

    async def _take_status(
        self,
        timeout: float = STATUS_READ_S,  # noqa: ASYNC109 (the NATS request takes it)
    ) -> tuple[dict[str, Any] | None, bool]:
        """Take this agent's status (paused, retired) from the registry's record, unless this
        client holds a newer one (``_status_seq``); the record (None when the registry has
        none) and whether the registry could be asked within ``timeout`` seconds
        (``_own_record``; False: the task API is away, and the inbox alone decides). Called once the
        registry's commands are followed (``_follow_registry``): a command published before
        is in the record (the registry publishes it after it applied its cause, so its
        checkpoint is past it), one published after comes by the subscription. Until the
        registry answers with a checkpoint (not 0: a registry being rebuilt has applied
        nothing yet), the status stays to be read again at the next claim."""
        self._status_asked = time.monotonic()
        record, known, checkpoint = await self._own_record(timeout)
        if known and checkpoint >= self._status_seq:
            status = record["status"] if record is not None else "active"
            self.retired, self.paused = status == "retired", status in ("paused", "retired")
            self._status_seq = checkpoint
        self._status_stale = not (known and checkpoint > 0)
        return record, known

    async def _own_record(
        self,
        timeout: float = API_TIMEOUT_S,  # noqa: ASYNC109 (the NATS request takes it)
    ) -> tuple[dict[str, Any] | None, bool, int]:
        """The registry's record of this agent (None: it has none), whether it could be asked
        at all (False when the task API does not answer within ``timeout`` seconds or fails),
        and the registry's checkpoint (``agent_read``; 0 when not asked)."""
        try:
            record, checkpoint = await self.agent_read(self.agent, timeout=timeout)
        except ApiError:
            return None, False, 0
        return record, True, checkpoint

    async def take_up_profile(self) -> bool:
        """Take the registry's record of this agent (``agent_profile``) as its profile (roles,
        task limit, heartbeat interval in seconds, team, risk class), for a client that acts
        for an agent registered by another process (e.g. the HTTPS ingress,
        services/api/ingress.py), so that its claims are judged with the agent's roles and
        limit. True when the registry knows the agent; False (defaults kept) when it does not
        or the task API cannot be asked."""
        record, _known, _ = await self._own_record()
        if record is None:
            return False
        self.profile = _Profile(
            tuple(record.get("roles") or ()), int(record.get("max_concurrent_tasks") or 1),
            float(record.get("heartbeat_interval_s") or 60.0), record.get("team"),
            record.get("risk_class"),
        )  # fmt: skip
        return True

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
        """Take ``task`` for a new epoch, or raise ``ClaimLost`` saying why not (``AgentPaused``
        while this agent is paused or retired). The inbox is read first, so a pause sent before
        the claim is obeyed; claims of one client run one at a time, so concurrent claims never
        take the agent past its limit. The board may still refuse a claim it alone can judge
        (the inbox then says ``refused``, and the task leaves ``claims``)."""
        async with self._claiming:
            claim, seq = await claim_task(
                self, task, agent=self.agent, me=self._claimant, lease_s=lease_s,
                attempts=attempts, gate=partial(self._may_claim, task),
            )  # fmt: skip
            self._seqs[task] = seq
            return self._keep(claim)

    async def _may_claim(self, task: str) -> None:
        """Read the inbox, and the registry's commands to this agent (to every process of it,
        ``_follow_registry``) that the server sent before it answered the claim's read of the
        task; ``AgentPaused`` if they say this agent is paused or retired."""
        await self.sync_inbox()  # (it follows the registry too)
        if self._status_stale and time.monotonic() - self._status_asked >= STATUS_RETRY_S:
            await self._take_status()
        if self.paused:
            state = "retired" if self.retired else "paused"
            raise AgentPaused(task, f"agent {self.agent} is {state}")

    def _claimant(self) -> dict[str, Any]:
        """This agent as the board's claim check sees it now."""
        p = self.profile
        return claimant(p.roles, len(self.claims), p.max_concurrent_tasks)

    def _keep(self, claim: TaskClaimed) -> Claim:
        held = Claim(claim.task, claim.epoch, claim.lease_s, claim.id)
        self.claims[claim.task] = held
        return held

    def _drop(self, task: str) -> None:
        self.claims.pop(task, None)
        self._seqs.pop(task, None)

    async def _holding(self, claim: Claim) -> TaskState:
        """The task as read now, if ``claim`` still holds it; else ``ClaimLost``."""
        state = await read_task(self.nc, self.js, claim.task, roles=self.roles, cache=self.tasks)
        problem = holder_problem(state.row, claim, self.agent)
        if problem is not None:
            self._drop(claim.task)
            raise ClaimLost(claim.task, problem)
        return state

    async def _still_mine(self, claim: Claim) -> int:
        """The task's last sequence, if ``claim`` still holds it; else ``ClaimLost``."""
        return (await self._holding(claim)).last_seq

    async def _report(self, claim: Claim, event: Event, *, attempts: int = 5) -> PubAck:
        """Publish a report on a held task, compare-and-set on the last sequence known of the
        task (``client.claims``). ``ClaimLost`` once the claim is no longer this agent's."""
        task = claim.task
        for _ in range(attempts):
            seq = self._seqs.get(task)
            if seq is None:  # not known here (the inbox said the claim is gone, or a restart)
                seq = await self._still_mine(claim)
            try:
                ack = await self.send(event, expect=seq)
            except APIError as exc:
                if exc.err_code not in WRONG_LAST_SEQUENCES:
                    raise
                self._seqs[task] = await self._still_mine(claim)  # news that leaves it ours
                continue
            self._seqs[task] = max(ack.seq, self._seqs.get(task, 0))
            return ack
        raise ClaimLost(task, "others kept publishing on the task first")

    async def claim_next(self, *, lease_s: float = 300.0) -> Claim | None:
        """Claim the highest-priority claimable task for this agent's roles, oldest first; None
        when there is none. Candidates come from the task API; each is claimed on the stream."""
        for task in await self.claimable(self.agent, self.profile.roles):
            try:
                return await self.claim(task, lease_s=lease_s)
            except AgentPaused:
                raise
            except ClaimLost:
                continue
        return None

    async def progress(self, claim: Claim, note: str = "", percent: float | None = None) -> PubAck:
        """Report progress; this renews the claim's lease. ``ClaimLost`` if the task is no longer
        this agent's."""
        return await self._report(
            claim,
            TaskProgressed(
                **self.envelope(),
                task=claim.task,
                agent=self.agent,
                epoch=claim.epoch,
                note=note,
                percent=percent,
            ),
        )

    async def block(self, claim: Claim, reason: str) -> PubAck:
        """Report the held task blocked, and why (``ClaimLost`` as for ``progress``)."""
        return await self._report(
            claim,
            TaskBlocked(
                **self.envelope(),
                task=claim.task,
                agent=self.agent,
                epoch=claim.epoch,
                reason=reason,
            ),
        )

    async def release(self, claim: Claim, reason: str = "") -> PubAck:
        """Give the held task back, saying why (``ClaimLost`` as for ``progress``)."""
        try:
            return await self._report(
                claim,
                TaskReleased(
                    **self.envelope(),
                    task=claim.task,
                    agent=self.agent,
                    epoch=claim.epoch,
                    reason=reason,
                ),
            )
        finally:
            self._drop(claim.task)

    async def submit(
        self,
        claim: Claim,
        *,
        kind: DeliverableKind = "markdown",
        content: str = "",
        uri: str | None = None,
    ) -> PubAck:
        """Hand in a deliverable (versioned by the board). The task leaves this agent's hands
        until a review sends it back (``ClaimLost`` if it is no longer this agent's)."""
        digest = hashlib.sha256((content or uri or "").encode()).hexdigest()
        deliverable = Deliverable(kind=kind, sha256=digest, content=content, uri=uri)
        try:
            return await self._report(
                claim,
                TaskSubmitted(
                    **self.envelope(),
                    task=claim.task,
                    agent=self.agent,
                    epoch=claim.epoch,
                    deliverable=deliverable,
                ),
            )
        finally:
            self.claims.pop(claim.task, None)  # the sequence stays known, for a rework

    def adopt(self, claim: Claim) -> Claim:
        """Hold ``claim`` as another process of this agent got it (e.g. an HTTP agent through
        the ingress, which sends its epoch and claim id): unless it is the claim this client
        holds, the next report reads the task first and goes on only if ``claim`` still holds
        it (``ClaimLost`` otherwise). Without ``claim.id``, the epoch alone is compared."""
        held = self.claims.get(claim.task)
        same = held is not None and held.epoch == claim.epoch and claim.id in ("", held.id)
        if not same:
            self._drop(claim.task)
            self.claims[claim.task] = claim
        return held if same and held is not None else claim

    async def confirm(self, claim: Claim) -> Claim:
        """``claim`` as the task's folded state has it now (its claim id and lease, which an
        adopted claim may lack), held again by this client; ``ClaimLost`` if it no longer holds
        the task."""
        state = await self._holding(claim)
        row = state.row
        assert row is not None  # holder_problem: "no such task"
        lease_s = row["lease_s"] if row["lease_s"] is not None else claim.lease_s
        held = Claim(claim.task, claim.epoch, float(lease_s), row["claim_id"])
        self.claims[claim.task], self._seqs[claim.task] = held, state.last_seq
        return held

    def rework(self, claim: Claim) -> Claim:
        """Hold a task again after a rejected review sent it back (same epoch and claim)."""
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
        self,
        name: str,
        *,
        run: str | None = None,
        task: str | None = None,
        reservation: str | None = None,
        summary: str = "",
        arguments: dict[str, str | int | float | bool | None] | None = None,
        estimate_usd: float | None = None,
        risk: RiskClass = "medium",
        escalate_after_s: float = 900.0,
        expire_after_s: float = 86_400.0,
    ) -> AsyncIterator[ToolCall]:
        """Record one tool call: its duration, whether it raised, and its cost, once the tool
        policy in force lets it run (``tool_verdict``, schemas/policies.py).

        ``async with agent.tool("web.search") as call: ...; call.cost_usd = 0.002``

        A denied tool, or an ``estimate_usd`` (USD) over the policy's cost cap per call, raises
        ``ToolDenied`` before anything runs or is published. A tool that needs an approval asks
        for one first (``approval``, with ``summary``, ``arguments``, ``risk`` and the
        deadlines in seconds) and waits for the decision: ``ApprovalRefused`` (or
        ``ApprovalExpired``) when denied; once granted, the call names the approval."""
        v = await self.tool_verdict(name)
        if v.verdict == "deny":
            raise ToolDenied(f"tool {name} is denied by policy {v.stamp()}")
        cap = v.max_cost_usd
        if cap is not None and estimate_usd is not None and estimate_usd > cap:
            raise ToolDenied(
                f"tool {name}: an estimate of {estimate_usd:g} USD is over the cap of {cap:g} "
                f"USD per call (policy {v.stamp()})"
            )
        approval: str | None = None
        if v.verdict == "approve":
            granted = await self.approval(
                kind="tool_call", name=name, summary=summary, arguments=arguments, risk=risk,
                escalate_after_s=escalate_after_s, expire_after_s=expire_after_s, task=task,
                run=run,
            )  # fmt: skip
            approval = granted.approval
        call = ToolCall(name)
        started = time.perf_counter()
        try:
            yield call
        except BaseException as exc:
            call.error = call.error or f"{type(exc).__name__}: {exc}"[:8000]
            raise
        finally:
            if reservation is not None:
                self._settled.add(reservation)
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
                    reservation=reservation,
                    approval=approval,
                )
            )

    async def tool_verdict(self, tool: str) -> Verdict:
        """What the tool policies in force for this agent say of ``tool`` now (allow, deny,
        approve; the deciding policy and version; the cost cap per call, USD), read from the
        stream (services/client/approvals.py). The agent's team and risk class are the
        registry's (``agent_profile``); when the task API cannot be asked, those of this
        client's own registration (none before it registered: its own policy alone). The
        projector judges every ``tool.called`` again, whatever the client did."""
        team, risk_class = self.profile.team, self.profile.risk_class
        with contextlib.suppress(ApiError):
            record = await self.agent_profile(self.agent)
            if record is not None:
                team, risk_class = record["team"], record["risk_class"]
        policies = await read_policies(self.nc, self.agent, team, risk_class, self.roles)
        return verdict(tool, policies)

    async def approval(
        self,
        *,
        kind: ApprovalKind,
        name: str,
        summary: str = "",
        arguments: dict[str, str | int | float | bool | None] | None = None,
        risk: RiskClass = "medium",
        escalate_after_s: float = 900.0,
        expire_after_s: float = 86_400.0,
        on_expiry: OnExpiry = "deny",
        task: str | None = None,
        run: str | None = None,
        wait_s: float | None = None,
    ) -> Approval:
        """Ask a person before a gated step (``kind``: tool_call, deliverable, action; ``name``
        says which) and wait for the decision, which reaches this agent's inbox durably
        (command ``approval``). Deadlines in seconds from when the request is stored: the
        watchdog escalates to the approvers after ``escalate_after_s`` and denies it after
        ``expire_after_s`` (unless ``on_expiry`` is ``wait``).

        Returns the ``Approval`` (who granted it, the policy version in force). Raises
        ``ApprovalRefused`` when denied (``ApprovalExpired`` at the second deadline),
        ``TimeoutError`` after ``wait_s`` seconds without a decision (None: wait for it; the
        request stays open), ``IntentRefused`` for a request the contract refuses."""
        event = ApprovalRequested(
            **self.envelope(), approval=new_id(), agent=self.agent, kind=kind, name=name,
            summary=summary, arguments=arguments or {}, risk=risk,
            escalate_after_s=escalate_after_s, expire_after_s=expire_after_s,
            on_expiry=on_expiry, task=task, run=run,
        )  # fmt: skip
        try:
            admit(subject_of(event), encode(event))
        except Rejected as exc:
            raise IntentRefused(
                f"the request would be refused ({exc.reason}): {exc.detail}"
            ) from None
        await self.sync_inbox()
        await self.send(event)
        return await self.decision(event.approval, wait_s=wait_s)

    async def decision(self, approval: str, *, wait_s: float | None = None) -> Approval:
        """Wait for the decision on this agent's request ``approval`` (see ``approval``): read
        from the inbox as it comes; when nothing comes for a while, from the request's own
        subjects too (a decision whose command an earlier process of this agent took)."""
        deadline = None if wait_s is None else time.monotonic() + wait_s
        quiet = 0.0
        while (decided := self._decisions.get(approval)) is None:
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no decision on approval {approval} within {wait_s:g} s")
            taken = await self._take_command(wait=min(left, 1.0))
            if taken is not None:
                self._commands.append(taken)
                continue
            quiet += 1.0
            if quiet >= APPROVAL_READ_S:  # the inbox is quiet: look at the request itself
                quiet = 0.0
                state = await read_gate(self.nc, approval, self.roles)
                if state.gate is not None and (found := decision_of_gate(state.gate)):
                    self._decisions[approval] = found
        if isinstance(decided, ApprovalRefused):
            raise decided
        return decided

    async def spend(
        self,
        *,
        model: str,
        cost_usd: float,
        tokens_in: int = 0,
        tokens_out: int = 0,
        run: str | None = None,
        task: str | None = None,
        reservation: str | None = None,
    ) -> PubAck:
        """Report model spend: tokens and what they cost (USD); ``reservation``: the one it
        settles (``reserve``)."""
        if reservation is not None:
            self._settled.add(reservation)
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
                reservation=reservation,
            )
        )

    @asynccontextmanager
    async def reserve(
        self, *, usd: float, ttl_s: float = 300.0, task: str | None = None
    ) -> AsyncIterator[Reservation]:
        """Set ``usd`` (USD, the step's estimated cost) aside for ``ttl_s`` seconds in every
        budget covering this agent, and in the budgets of ``task``'s project, for the block (see
        the module); leaving the block with no spend naming it gives it back. Raises
        ``ReservationRefused`` when the guard refuses, ``ApiError`` when no guard answers (after
        one more try with the same idempotency key)."""
        request = ReserveRequest(usd=usd, ttl_s=ttl_s, task=task, key=new_id())
        for attempt in range(2):
            try:
                reply = await self.ask(BUDGETS_RESERVE, request)
                break
            except ApiRefused as exc:
                raise ReservationRefused(str(exc)) from None
            except ApiError:  # no answer: once more; the key makes it the same reservation
                if attempt:
                    raise
        assert reply.reservation is not None and reply.expires_at is not None
        reservation = reply.reservation
        try:
            yield Reservation(reservation, usd, reply.budgets, reply.expires_at)
        finally:
            if reservation in self._settled:
                self._settled.discard(reservation)
            else:
                with anyio.CancelScope(shield=True), contextlib.suppress(ApiError):
                    await self.ask(BUDGETS_RELEASE, ReleaseRequest(reservation=reservation))

    # ---- the durable command inbox -----------------------------------------------------------

    async def next_command(self, wait: float = 1.0) -> CommandIssued | None:
        """The next command for this agent, or None after ``wait`` seconds. Commands sent while
        the agent was offline are kept for it (a durable consumer per agent) and come first.
        The client acts on each as soon as it reads it (see the module docstring), and
        acknowledges it only when it returns it here: a command read ahead (by ``claim``) and
        not yet returned comes again to the agent's next process if this one dies. Delivery is
        at least once; a command id seen lately is skipped."""
        if self._commands:
            command, delivery = self._commands.popleft()
        else:
            taken = await self._take_command(wait)
            if taken is None:
                return None
            command, delivery = taken
        assert self._inbox is not None
        await self._inbox.ack(delivery)
        return command

    async def sync_inbox(self) -> None:
        """Take (and act on) the commands waiting for this agent; ``next_command`` still
        returns them, in order. The first time, the inbox is opened and everything the server
        holds for it is read; after that a pull request is always open on it, so the commands
        stored since are already here and taking them costs no round trip."""
        if self._inbox is None:
            self._inbox = await self._open_inbox()
            if self._status_stale:
                await self._take_status()
            info = await self._inbox_info(inbox_durable(self.agent))
            for _ in range((info.num_pending or 0) + (info.num_ack_pending or 0)):
                taken = await self._take_command(wait=0.5)
                if taken is None:
                    break
                self._commands.append(taken)
        else:
            while (taken := await self._take_command(wait=0.0)) is not None:
                self._commands.append(taken)
        assert self._inbox is not None
        await self._inbox.ask()  # keep a request open: commands arrive as they are stored
        await self._follow_registry()

    async def _take_command(self, wait: float) -> tuple[CommandIssued, Delivery] | None:
        """The next new command and its delivery (not acknowledged yet), acted on; None after
        ``wait``. Copies of a command already returned are acknowledged and skipped; a copy of
        one still waiting in ``_commands`` takes its place (its acknowledgement counts)."""
        while True:
            if self._inbox is None or self._inbox.gone:  # deleted under us: open it again
                self._inbox = await self._open_inbox()
            batch = await self._inbox.next_batch(1, wait=wait, linger=0.0)
            if not batch:
                return None
            delivery = batch[0]
            self._last_seq = max(self._last_seq, delivery.seq)
            try:
                event = admit(delivery.subject, delivery.data)
            except Rejected:
                await self._inbox.ack(delivery)
                continue  # not a command Fleetward could have sent: skip it
            if not isinstance(event, CommandIssued):
                await self._inbox.ack(delivery)
                continue
            if event.id in self._seen:
                waiting = [i for i, (c, _) in enumerate(self._commands) if c.id == event.id]
                if waiting:
                    self._commands[waiting[0]] = (self._commands[waiting[0]][0], delivery)
                else:
                    await self._inbox.ack(delivery)
                continue
            self._seen[event.id] = None
            while len(self._seen) > SEEN_COMMANDS:
                self._seen.popitem(last=False)
            self._obey(event)
            return event, delivery

    async def _follow_registry(self) -> None:
        """Act on the registry's commands to this agent received so far (pause, resume,
        retire: ``_obey``). The durable inbox hands each command to one process of the agent;
        this plain subscription (``registry_commands``) gives it to every process, so that one
        that did not read the pause from the inbox still refuses to claim. Received: the server
        writes a message to its subscribers before it acknowledges it to the publisher, and its
        answers to this connection come in order, so after any round trip (a claim's read of
        the task) every command published before it is here, at no cost of its own.
        Credentials issued before the subscription was granted get a permissions violation and
        nothing here: the inbox alone decides, as before. When nats-py dropped messages (a
        flood aimed at the subject filled its ``REGISTRY_PENDING_*``), a command may be among
        them: the status is read from the registry at the next claim (``_take_status``)."""
        sub = self._registry
        if sub is None:
            return
        ours = registry_commands(self.agent)
        while sub.pending_msgs > 0:
            msg = await sub.next_msg(timeout=1)
            self._registry_taken += 1
            # NATS checks the subject a client publishes on, not the reply subject it names:
            # another agent may aim the server's delivery of its own commands here (a pull of
            # its inbox), and they come with their own subject. Only this agent's count.
            if msg.subject != ours:
                continue
            try:
                event = admit(msg.subject, msg.data)  # so: the registry's, to this agent
            except Rejected:
                continue
            if isinstance(event, CommandIssued) and event.actor == REGISTRY:
                assert event.agent == self.agent  # (admission: its subject is ``ours``)
                self._obey(event)
        if sub.delivered > self._registry_taken:  # some were dropped: read it at once
            self._registry_taken = sub.delivered
            self._status_stale, self._status_asked = True, -math.inf

    def _obey(self, command: CommandIssued) -> None:
        """What a command changes in this client's state. A pause, resume or retire with an
        older ``payload.seq`` (the lifecycle event's FW_EVENTS sequence) than the status held
        changes nothing: the registry's commands come by two ways (the inbox, and
        ``_follow_registry``), and a process may read only some of them in its inbox. A
        registry's ``resume`` (with its ``seq``) ends a retirement too: it is sent when a person
        or a service registers a retired agent again."""
        ordered = False
        if command.command in ("pause", "resume", "retire"):
            seq = command.payload.get("seq")
            if type(seq) is int:
                if seq <= self._status_seq:
                    return
                self._status_seq = seq
                ordered = True
        match command.command:
            case "pause":
                self.paused = True
            case "resume" if ordered or not self.retired:
                self.paused = self.retired = False
            case "retire":
                self.paused = self.retired = True
            case "lease_lost" if command.task:
                held = self.claims.get(command.task)
                if held is not None and command.payload.get("epoch") in (None, held.epoch):
                    self._drop(command.task)
            case "approval" if isinstance(command.payload.get("approval"), str):
                decided = decision_of({**command.payload, "reason": command.reason})
                self._decisions[str(command.payload["approval"])] = decided
            case "refused" if command.task and command.payload.get("type") == "task.claimed":
                held = self.claims.get(command.task)
                if held is not None and command.payload.get("event") == held.id:
                    self._drop(command.task)

    async def _open_inbox(self) -> PullConsumer:
        """The inbox's durable consumer, created if missing: from the start of the agent's
        commands, or after the last one this client read (when it was deleted under us). An
        inbox of contract v1 (filter ``fw.cmd.<agent>``) gets the v2 filter: commands left
        pending on the v1 subject are not delivered (commands are transient). The first time,
        the plain subscription to the registry's commands is made too (``_follow_registry``)."""
        if self._registry is None:  # first: a command stored while the inbox opens is seen
            self._registry = await self.nc.subscribe(
                registry_commands(self.agent),
                pending_msgs_limit=REGISTRY_PENDING_MSGS,
                pending_bytes_limit=REGISTRY_PENDING_BYTES,
            )
        durable = inbox_durable(self.agent)
        if self._inbox is not None:
            with contextlib.suppress(Exception):
                await self._inbox.stop()
        try:
            info = await self._inbox_info(durable)
        except NotFoundError:
            start = (
                {
                    "deliver_policy": DeliverPolicy.BY_START_SEQUENCE,
                    "opt_start_seq": self._last_seq + 1,
                }
                if self._last_seq
                else {"deliver_policy": DeliverPolicy.ALL}
            )
            # a command handed to a pull request of a client that just went away is delivered
            # again after ack_wait
            config = ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, ack_wait=INBOX_REDELIVERY_S, **start
            )
            await create_inbox(self.nc, self.agent, config)
        else:
            if info.config.filter_subject != boundary_wildcard("cmd", self.agent):
                await create_inbox(self.nc, self.agent, info.config)
        inbox = PullConsumer(self.nc, COMMANDS_STREAM, durable, batch=INBOX_BATCH, expires=5.0)
        await inbox.start()
        return inbox

    async def _inbox_info(self, durable: str) -> ConsumerInfo:
        """The inbox's consumer info (``NotFoundError``: there is none), riding out an election
        (services/jetstream/reads.py)."""

        async def info(try_s: float) -> ConsumerInfo:
            found: ConsumerInfo = await self.js.consumer_info(COMMANDS_STREAM, durable, try_s)
            return found

        return await ride_out(info, f"reading the inbox {durable}")

    async def close(self) -> None:
        """Hand back the commands read ahead and not returned (so the agent's next process
        gets them at once), stop reading the inbox and close the connection."""
        for _, delivery in self._commands:
            with contextlib.suppress(Exception):  # a command not handed back comes again later
                await self.nc.publish(delivery.reply, b"-NAK")
        self._commands.clear()
        if self._inbox is not None:
            await self._inbox.stop()
        await super().close()
