"""The operator client, ``FleetClient``: what people and services use to direct the fleet.
Create, assign, reassign, revoke, review and cancel tasks, change their dependencies, pause,
resume and retire agents, set budgets, and send durable commands. NATS only.

Invariants (DESIGN 3.12, intents take effect or fail visibly):
- Every write reads the current state first and raises ``IntentRefused`` (with the one-line
  reason) instead of publishing what the board would refuse or what would change nothing.
- A task's state is read from its subjects on the stream (``read_task``): no projection is
  needed, and a task created a moment ago is seen. Task writes are published compare-and-set
  over the task's subjects (``Nats-Expected-Last-Subject-Sequence`` with
  ``Nats-Expected-Last-Subject-Sequence-Subject: fw.task.<task>.>``), so each lands on exactly
  the state it was judged against; when the task changed in between it is read and judged
  again, and an earlier try of ours that did land is recognised by its event id.
- An agent's state is the registry's (the agents projection), asked through the task API
  (``fw.api.agents.get``): it can lag the stream by a moment.
- Every event is admitted as the projections would admit it before it is published.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from msgspec import UNSET
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import PubAck
from nats.js.errors import APIError

from fleetward.projections import gates, lifecycle
from fleetward.schemas import Event, Rejected, admit, new_id, subject_of
from fleetward.schemas.api import (
    AGENTS_GET,
    BUDGETS_RESERVE,
    TASKS_CLAIMABLE,
    AgentProfile,
    AgentRequest,
    ClaimableRequest,
    Endpoint,
    Rep,
    Req,
)
from fleetward.schemas.events import (
    AgentPaused,
    AgentPromoted,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    AgentVersionChanged,
    ApprovalDenied,
    ApprovalGranted,
    BudgetSet,
    CommandIssued,
    CommandName,
    PolicySet,
    Priority,
    RiskClass,
    Role,
    RoleGranted,
    RoleRevoked,
    TaskAssigned,
    TaskCancelled,
    TaskCreated,
    TaskDependenciesChanged,
    TaskReviewed,
    TaskRevoked,
    Verdict,
)
from fleetward.schemas.headers import MSG_ID, WRONG_LAST_SEQUENCES
from fleetward.schemas.ids import policy_id
from fleetward.schemas.policies import Policy, scope_problem
from fleetward.schemas.roles import check_role, role_needed
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import boundary_wildcard
from fleetward.services.auth.store import identity_of
from fleetward.services.client import direct, intents
from fleetward.services.client.approvals import read_gate, read_policy
from fleetward.services.client.budgets import read_budget
from fleetward.services.client.intents import TAKEN, IntentRefused
from fleetward.services.client.publisher import Publisher
from fleetward.services.client.roles import read_roles
from fleetward.services.client.taskstate import TaskState, read_subjects, read_task
from fleetward.services.errors import ApiError, ApiRefused
from fleetward.services.jetstream.connection import connect_as
from fleetward.services.jetstream.publish import encode

ATTEMPTS = 10  # reads and compare-and-set publishes of one task write before giving up
API_TIMEOUT_S = 5.0

E = TypeVar("E", bound=Event)


def refuse(problem: str | None) -> None:
    """Raise ``IntentRefused`` when there is a problem."""
    if problem is not None:
        raise IntentRefused(problem)


class FleetClient(Publisher):
    """For people and services (actor ``user:<name>`` or ``svc:<name>``)."""

    @classmethod
    async def connect(cls, url: str, creds: str | PathLike[str]) -> FleetClient:
        """A client on its own connection to ``url``, acting as the person (or service) that
        ``creds`` was issued to (``fleetward people add NAME``). Raises ``FleetwardError`` when
        ``creds`` is not a credentials file."""
        actor = identity_of(Path(creds))
        return cls(await connect_as(url, Path(creds), actor), actor)

    # ---- people's roles ------------------------------------------------------------------------

    async def grant_role(self, person: str, role: Role, reason: str = "") -> PubAck:
        """Grant ``user:<person>`` ``role`` from now on. Needs ``admin`` (or the signing keys'
        holder, ``svc:auth``). ``IntentRefused`` when it is already held or not allowed."""
        book = await read_roles(self.nc, self.roles)
        if role in book.roles(person, book.last_seq + 1):
            raise IntentRefused(f"user:{person} already holds {role}")
        return await self._publish(
            RoleGranted(**self.envelope(), person=person, role=role, reason=reason)
        )

    async def ensure_roles(self, person: str, roles: Sequence[str], reason: str = "") -> list[str]:
        """Grant ``user:<person>`` those of ``roles`` it does not hold now; returns them."""
        book = await read_roles(self.nc, self.roles)
        missing = [r for r in roles if r not in book.roles(person, book.last_seq + 1)]
        for role in missing:
            await self.grant_role(person, role, reason)  # type: ignore[arg-type]
        return missing

    async def revoke_role(self, person: str, role: Role, reason: str = "") -> PubAck:
        """Take ``role`` from ``user:<person>`` from now on. Needs ``admin``. ``IntentRefused``
        when it is not held (``admin`` implies every role, but is revoked only by name)."""
        book = await read_roles(self.nc, self.roles)
        if role not in book.roles(person, book.last_seq + 1):
            raise IntentRefused(f"user:{person} does not hold {role}")
        return await self._publish(
            RoleRevoked(**self.envelope(), person=person, role=role, reason=reason)
        )

    # ---- tasks ---------------------------------------------------------------------------------

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
        """Create a task. Refused when the id is taken or a dependency does not exist yet
        (dependencies must already exist, so they never form a cycle)."""
        deps = tuple(depends_on)

        async def decide(state: TaskState, event_id: str) -> TaskCreated:
            rows = [await self._task_row(d) for d in deps]
            refuse(intents.creation_problem(task, state.row, deps, rows))
            return TaskCreated(
                **self.envelope(event_id),
                task=task,
                project=project,
                title=title,
                description=description,
                priority=priority,
                depends_on=deps,
                required_role=required_role,
                sla_s=sla_s,
            )

        return (await self._on_task(task, decide))[1]

    async def assign(self, task: str, agent: str) -> PubAck:
        """Assign ``task`` (in the inbox, or assigned to someone else) to ``agent``. Refused for
        an unknown or finished task, a held one (``reassign`` or ``revoke`` it), and an agent
        that is unknown, retired or lacks the task's role."""

        async def decide(state: TaskState, event_id: str) -> TaskAssigned:
            refuse(intents.assign_problem(task, state.row, agent))
            await self._check_agent_for(agent, task, state)
            return TaskAssigned(**self.envelope(event_id), task=task, agent=agent)

        return (await self._on_task(task, decide))[1]

    async def reassign(self, task: str, agent: str, reason: str = "") -> TaskRevoked | TaskAssigned:
        """Give ``task`` to ``agent``: a held task (or one in review) is taken from its holder
        (``task.revoked`` with ``assign_to``), an open one is assigned."""

        async def decide(state: TaskState, event_id: str) -> TaskRevoked | TaskAssigned:
            row = state.row
            refuse(intents.reassign_problem(task, row, agent))
            await self._check_agent_for(agent, task, state)
            assert row is not None
            if row["status"] in TAKEN:
                return TaskRevoked(
                    **self.envelope(event_id),
                    task=task,
                    agent=row["assignee"],
                    epoch=row["claim_epoch"],
                    reason=reason,
                    assign_to=agent,
                )
            return TaskAssigned(**self.envelope(event_id), task=task, agent=agent)

        return (await self._on_task(task, decide))[0]

    async def revoke(self, task: str, reason: str = "") -> TaskRevoked:
        """Take a held task (or one in review) back from its holder, to the inbox."""

        async def decide(state: TaskState, event_id: str) -> TaskRevoked:
            row = state.row
            refuse(intents.revoke_problem(task, row))
            assert row is not None
            return TaskRevoked(
                **self.envelope(event_id),
                task=task,
                agent=row["assignee"],
                epoch=row["claim_epoch"],
                reason=reason,
            )

        return (await self._on_task(task, decide))[0]

    async def set_dependencies(
        self, task: str, depends_on: Sequence[str], reason: str = ""
    ) -> TaskDependenciesChanged:
        """Make ``task`` depend on exactly ``depends_on``. Each new dependency must exist, not
        be cancelled, and have been created before ``task`` (its ``task.created`` earlier in
        the stream), so the graph stays acyclic."""
        wanted = tuple(dict.fromkeys(depends_on))

        async def decide(state: TaskState, event_id: str) -> TaskDependenciesChanged:
            row = state.row
            refuse(intents.task_problem(task, row))
            assert row is not None
            added = {
                d: (await self._task_row(d), await self._created_seq(d))
                for d in wanted
                if d not in row["depends_on"] and d != task
            }
            created = await self._created_seq(task) if added else None
            refuse(intents.dependencies_problem(task, row, wanted, added, created))
            return TaskDependenciesChanged(
                **self.envelope(event_id), task=task, depends_on=wanted, reason=reason
            )

        return (await self._on_task(task, decide))[0]

    async def drop_dependencies(
        self, task: str, drop: Sequence[str], reason: str = ""
    ) -> TaskDependenciesChanged:
        """Drop dependencies of ``task`` (a cancelled one, say); the rest stay."""

        async def decide(state: TaskState, event_id: str) -> TaskDependenciesChanged:
            refuse(intents.drop_problem(task, state.row, drop))
            assert state.row is not None
            kept = tuple(d for d in state.row["depends_on"] if d not in drop)
            return TaskDependenciesChanged(
                **self.envelope(event_id), task=task, depends_on=kept, reason=reason
            )

        return (await self._on_task(task, decide))[0]

    async def cancel(self, task: str, reason: str = "") -> PubAck:
        """Cancel ``task``, saying why. Refused for an unknown or finished task."""

        async def decide(state: TaskState, event_id: str) -> TaskCancelled:
            refuse(intents.cancel_problem(task, state.row))
            return TaskCancelled(**self.envelope(event_id), task=task, reason=reason)

        return (await self._on_task(task, decide))[1]

    async def review(self, task: str, verdict: Verdict, feedback: str = "") -> TaskReviewed:
        """Review the task's latest deliverable. The board puts the verdict with its feedback in
        the author's durable inbox (so an agent that is offline gets it when it returns), for
        every review, whoever sends it. Published compare-and-set, like every task write: a
        review racing a revocation or a cancellation is refused here, not dropped by the board."""

        async def decide(state: TaskState, event_id: str) -> TaskReviewed:
            refuse(intents.review_problem(task, state.row, self.actor))
            assert state.row is not None
            return TaskReviewed(
                **self.envelope(event_id), task=task, agent=state.row["assignee"],
                verdict=verdict, feedback=feedback,
            )  # fmt: skip

        return (await self._on_task(task, decide))[0]

    # ---- agents --------------------------------------------------------------------------------

    async def register_agent(
        self,
        agent: str,
        *,
        name: str | None = None,
        owner: str | None = None,
        team: str | None = None,
        purpose: str | None = None,
        risk_class: RiskClass | None = None,
        version: str | None = None,
        heartbeat_interval_s: float | None = None,
        roles: Sequence[str] | None = None,
        max_concurrent_tasks: int | None = None,
    ) -> PubAck:
        """Register ``agent`` as this person (role ``operator``) or service: its roles and task
        limit are then this registration's, and the agent's own registrations cannot change
        them; a retired agent comes back (active). Each field left None keeps the registry's
        value (a new agent needs ``name``, ``owner`` and ``team``; its roles default to none,
        its limit to 1). Refused for a new agent without a name, owner or team. The rule of who
        may change an agent's lifecycle: projections/lifecycle.py."""
        record = await self.agent_profile(agent)
        now = record or {}
        fields: dict[str, Any] = {
            "name": name, "owner": owner, "team": team, "purpose": purpose,
            "risk_class": risk_class, "version": version,
            "heartbeat_interval_s": heartbeat_interval_s,
            "roles": tuple(roles) if roles is not None else None,
            "max_concurrent_tasks": max_concurrent_tasks,
        }  # fmt: skip
        for field, value in fields.items():
            if value is None and field in now:
                fields[field] = tuple(now[field]) if field == "roles" else now[field]
        missing = [f for f in ("name", "owner", "team") if fields[f] is None]
        if missing:
            refuse(f"no agent {agent} in the registry: give its {', '.join(missing)}")
        event = AgentRegistered(
            **self.envelope(),
            agent=agent,
            **{k: v for k, v in fields.items() if v is not None},
        )
        if not lifecycle.sets_limits(lifecycle.Life.of(record), event):  # an agent, itself
            refuse(intents.own_limits_problem(agent, record, roles, max_concurrent_tasks))
        return await self._on_agent(record, event)

    async def pause_agent(self, agent: str, reason: str = "") -> PubAck:
        """Pause ``agent``: it may claim nothing until resumed. Refused for an unknown agent
        and one already paused or retired."""
        record = await self.agent_now(agent)
        refuse(intents.pause_problem(agent, record))
        return await self._on_agent(
            record, AgentPaused(**self.envelope(), agent=agent, reason=reason)
        )

    async def resume_agent(self, agent: str, reason: str = "") -> PubAck:
        """Resume a paused ``agent``, whoever paused it (a person or a service may lift any
        pause; an agent only its own: projections/lifecycle.py). Refused for an unknown agent
        and one not paused."""
        record = await self.agent_now(agent)
        refuse(intents.resume_problem(agent, record))
        return await self._on_agent(
            record, AgentResumed(**self.envelope(), agent=agent, reason=reason)
        )

    async def retire_agent(self, agent: str, reason: str = "") -> PubAck:
        """Retire ``agent`` for good: it cannot come back on its own; a person with the role
        operator (or a service) brings it back with ``register_agent``. Refused for an unknown
        agent and one already retired."""
        record = await self.agent_now(agent)
        refuse(intents.retire_problem(agent, record))
        return await self._on_agent(
            record, AgentRetired(**self.envelope(), agent=agent, reason=reason)
        )

    async def rollback_agent(
        self, agent: str, to: str, ran: Mapping[str, Any] | None, reason: str = ""
    ) -> PubAck:
        """Put version ``to`` in force again: ``agent.version_changed`` with ``rollback``, with
        the details the version had (``ran``: its row of ``fleet.agent_versions``, None when
        the agent never ran it). Needs the role ``operator`` (checked first). Refused for an
        unknown or retired agent, the version it runs now, and one it never ran."""
        details = ran or {}
        event = AgentVersionChanged(
            **self.envelope(), agent=agent, version=to, rollback=True,
            notes=reason or details.get("notes", ""), prompt=details.get("prompt", ""),
            model=details.get("model", ""), tools=tuple(details.get("tools") or ()),
        )  # fmt: skip
        await self._admit(event)  # the role first: a person without it learns nothing more
        record = await self.agent_profile(agent)
        refuse(intents.rollback_problem(agent, record, to, ran))
        return await self._on_agent(record, event)

    async def promote_agent(
        self, agent: str, reason: str = "", *, promoted: str | None = None, withdraw: bool = False
    ) -> PubAck:
        """Tag ``agent`` at the version it runs now as promoted (``agent.promoted``), or take
        the tag away (``withdraw``); ``promoted`` is the version its tag names now (None: none;
        ``fleet.agents.promoted_version``). Needs the role ``operator`` (checked first). Refused
        for an unknown agent, promoting a retired one or one promoted at its version already,
        and withdrawing a tag it does not have."""
        event = AgentPromoted(
            **self.envelope(), agent=agent, version="", reason=reason, withdrawn=withdraw
        )
        await self._admit(event)
        record = await self.agent_profile(agent)
        refuse(intents.promote_problem(agent, record, promoted, withdraw))
        assert record is not None
        version = (promoted if withdraw else record["version"]) or ""
        return await self._on_agent(record, msgspec.structs.replace(event, version=version))

    async def _on_agent(self, record: dict[str, Any] | None, event: Event) -> PubAck:
        """Publish a lifecycle event about the agent whose registry ``record`` was read,
        judged first as every reader will judge it (projections/lifecycle.py: an agent acting
        on itself may not overrule the people and services who operate it)."""
        refuse(lifecycle.problem(lifecycle.Life.of(record), event))
        return await self._publish(event)

    # ---- budgets -------------------------------------------------------------------------------

    async def set_budget(
        self,
        budget: str,
        *,
        scope: str,
        scope_id: str,
        window: str,
        limit_usd: float,
        limit_tokens: int | None = None,
        warn_at: float = 0.8,
    ) -> BudgetSet:
        """Set budget ``budget`` (or change it): a hard limit of ``limit_usd`` USD (and of
        ``limit_tokens`` tokens in and out together, or none) on what ``scope`` (agent, team,
        project, org) ``scope_id`` spends per ``window`` (day, month: UTC; lifetime); it warns
        at ``warn_at`` (a share in (0, 1]) of a limit. Needs the role budget-admin.
        ``IntentRefused`` (one line) for an unknown scope or window (before anything is read), a
        value out of the contract's bounds, a missing role, and a budget set to exactly this
        already. Returns the event published."""
        refuse(intents.budget_problem(scope, window))
        event = BudgetSet(
            **self.envelope(),
            budget=budget,
            scope=scope,  # type: ignore[arg-type]  # checked by budget_problem
            scope_id=scope_id,
            window=window,  # type: ignore[arg-type]  # likewise
            limit_usd=limit_usd,
            limit_tokens=limit_tokens,
            warn_at=warn_at,
        )
        await self._admit(event)  # the role first: a person without it learns nothing more
        refuse(intents.budget_unchanged(await read_budget(self.nc, budget, self.roles), event))
        await self.send(event)
        return event

    # ---- approvals and tool policies (DESIGN 3.10) ---------------------------------------------

    async def decide(
        self, approval: str, *, grant: bool, reason: str = ""
    ) -> ApprovalGranted | ApprovalDenied:
        """Grant (``grant``) or deny the open request ``approval``, as the person (or service)
        this client acts for; published compare-and-set over the request's subjects, so it
        lands on exactly the state it was judged against. Needs the role ``approver``.
        ``IntentRefused`` (one line) when the role is missing (checked first: a person without
        it learns nothing of the request), the request is unknown or decided already
        (projections/gates.py), or it is the decider's own. Returns the event published."""
        cls = ApprovalGranted if grant else ApprovalDenied
        for _ in range(ATTEMPTS):
            state = await read_gate(self.nc, approval, self.roles)
            agent = state.gate.agent if state.gate is not None else "unknown"
            event = cls(**self.envelope(), approval=approval, agent=agent, reason=reason)
            await self._admit(event)  # the role, and nobody decides their own request
            refuse(gates.problem(state.gate, event))
            try:
                await self.send(event, expect=state.last_seq)
            except APIError as exc:
                if exc.err_code not in WRONG_LAST_SEQUENCES:
                    raise
                continue  # someone wrote on the request meanwhile: read and judge again
            return event
        raise IntentRefused(f"approval {approval} kept changing while it was checked; try again")

    async def set_policy(
        self,
        scope: str,
        scope_id: str,
        *,
        allow: Sequence[str] = (),
        deny: Sequence[str] = (),
        approve: Sequence[str] = (),
        default: str = "allow",
        max_cost_usd: float | None = None,
        reason: str = "",
    ) -> tuple[PolicySet, int]:
        """Set the tool policy of ``scope`` (agent, team, risk) ``scope_id`` (schemas/
        policies.py): tools allowed, denied, needing approval, the ``default`` verdict for the
        rest and a cost cap per call (USD, None: none). Needs the role ``policy-admin``.
        ``IntentRefused`` (one line) for an unknown scope or risk class, a missing role, a value
        out of the contract's bounds, and a policy that is so already. Returns the event
        published and the version it makes."""
        refuse(scope_problem(scope, scope_id))
        refuse(None if default in ("allow", "deny", "approve") else f"no verdict {default!r}")
        event = PolicySet(
            **self.envelope(), policy=policy_id(scope, scope_id),
            scope=scope,  # type: ignore[arg-type]  # checked by scope_problem
            scope_id=scope_id, allow=tuple(allow), deny=tuple(deny), approve=tuple(approve),
            default=default,  # type: ignore[arg-type]  # checked above
            max_cost_usd=max_cost_usd, reason=reason,
        )  # fmt: skip
        await self._admit(event)  # the role first: a person without it learns nothing more
        current = await read_policy(self.nc, event.policy, self.roles)
        if current is not None and current == Policy.of(event, current.version):
            raise IntentRefused(
                f"the policy of {scope} {scope_id} is so already (version {current.version})"
            )
        await self.send(event)
        return event, (current.version if current else 0) + 1

    # ---- commands and the task API -------------------------------------------------------------

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
        return await self._publish(
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
        first (a hint from the projection; the claim itself is decided on the stream).
        ``limit``: 1 to 200. ``ApiError`` when the task API does not answer or fails."""
        request = ClaimableRequest(agent=agent, roles=tuple(roles), limit=limit)
        return list((await self.ask(TASKS_CLAIMABLE, request)).tasks)

    async def agent_profile(self, agent_id: str) -> dict[str, Any] | None:
        """The registry's profile of ``agent_id`` (its fields: ``schemas/api.py``
        ``AgentProfile``; ``status`` is active, paused, offline or retired), or None when it
        has none. ``ApiError`` when the task API does not answer or fails. It can lag the
        stream by a moment (it is the agents projection's): ``agent_now`` does not."""
        return (await self.agent_read(agent_id))[0]

    async def agent_read(
        self,
        agent_id: str,
        *,
        timeout: float = API_TIMEOUT_S,  # noqa: ASYNC109 (the NATS request takes it)
    ) -> tuple[dict[str, Any] | None, int]:
        """``agent_profile`` and the registry's checkpoint when it read it (a FW_EVENTS
        sequence, ``AgentReply.checkpoint``: the agent's lifecycle events up to it are in the
        profile; 0 when not known). ``ApiError`` as ``agent_profile`` (after ``timeout``
        seconds without an answer)."""
        reply = await self.ask(AGENTS_GET, AgentRequest(agent=agent_id), timeout=timeout)
        return _record(reply.agent), reply.checkpoint

    async def agent_now(self, agent_id: str) -> dict[str, Any] | None:
        """``agent_profile`` brought up to the stream: the agent's lifecycle events stored after
        the registry's checkpoint (``AgentReply.checkpoint``), read from
        ``fw.agent.<agent>.>`` and folded by the agents' state machine (projections/lifecycle.py)
        as the registry will fold them, set its ``status``, ``paused_by`` and
        ``registered_by``. So a pause right after another sees the first, before the projector
        applied it. None for an agent neither knows. ``ApiError`` as ``agent_profile``;
        ``StreamUnavailable`` when the stream does not answer."""
        record, checkpoint = await self.agent_read(agent_id)
        life, known = lifecycle.Life.of(record), record is not None
        later = await read_subjects(self.nc, boundary_wildcard("agent", agent_id),
                                    after=checkpoint)  # fmt: skip
        for stored in later:
            event = stored.event
            if not isinstance(event, lifecycle.EVENTS):
                continue  # activity, or refused by admission
            try:
                life, _ = lifecycle.step(life, event)
            except Rejected:
                continue  # the registry refuses it too (dead-lettered)
            known = known or isinstance(event, AgentRegistered)
        if not known:
            return None
        return {**(record or {"agent_id": agent_id}), "status": life.status,
                "paused_by": life.paused_by, "registered_by": life.registered_by}  # fmt: skip

    async def ask(
        self,
        endpoint: Endpoint[Req, Rep],
        request: Req,
        *,
        timeout: float = API_TIMEOUT_S,  # noqa: ASYNC109 (the NATS request takes it)
    ) -> Rep:
        """One request to the task API and its reply; ``ApiError`` (one line) when nothing
        answers within ``timeout`` seconds, ``ApiRefused`` when the reply is an error."""
        subject = endpoint.subject_for(self.actor)
        server = (
            "the guard (`fleetward guard`)"
            if endpoint.source == BUDGETS_RESERVE.source
            else "the task API (`fleetward projector` or `fleetward dev`)"
        )
        try:
            msg = await self.nc.request(subject, msgspec.json.encode(request), timeout=timeout)
        except NoRespondersError:
            raise ApiError(f"nothing serves {subject}: start {server}") from None
        except NatsTimeout:
            raise ApiError(
                f"no answer on {subject} within {timeout:g} s: is {server} running and reachable?"
            ) from None
        try:
            reply = msgspec.json.decode(msg.data, type=endpoint.reply)
        except msgspec.DecodeError as exc:
            raise ApiError(f"{subject} answered something else than its reply: {exc}") from None
        if reply.error is not UNSET:
            raise ApiRefused(f"{subject}: {reply.error}")
        return reply

    # ---- how a write is checked and published --------------------------------------------------

    async def _publish(self, event: Event, *, expect: int | None = None) -> PubAck:
        """Publish ``event`` after admitting it as the projections will (``expect``: see
        ``Publisher.send``), the roles of a person included (as they stand now: the stream
        judges them at the event's position)."""
        await self._admit(event)
        return await self.send(event, expect=expect)

    async def _admit(self, event: Event) -> None:
        """``IntentRefused`` unless the projections would admit ``event`` if it were published
        now: its contract (bounds, sender) and the role a person needs for it."""
        try:
            admit(subject_of(event), encode(event))
            if role_needed(event) is not None:
                self.roles = await read_roles(self.nc, self.roles)
                check_role(event, self.roles.last_seq + 1, self.roles)
        except (Rejected, ValueError) as exc:  # ValueError: an actor no subject can carry
            if isinstance(exc, Rejected) and exc.reason == "role_missing":
                raise IntentRefused(exc.detail, "forbidden") from None
            why = f" ({exc.reason}): {exc.detail}" if isinstance(exc, Rejected) else f": {exc}"
            raise IntentRefused(f"the event would be refused{why}", "invalid") from None

    async def _on_task(
        self, task: str, decide: Callable[[TaskState, str], Awaitable[E]]
    ) -> tuple[E, PubAck]:
        """Publish the event ``decide`` makes of the task's current state (or raises
        ``IntentRefused`` about), compare-and-set over the task's subjects. Every try has the same
        event id, so a try that landed unseen (a timeout) is found, never doubled."""
        event_id = new_id()
        for _ in range(ATTEMPTS):
            state = await read_task(self.nc, self.js, task, roles=self.roles, cache=self.tasks)
            event = await decide(state, event_id)
            try:
                ack = await self._publish(event, expect=state.last_seq)
            except APIError as exc:
                if exc.err_code not in WRONG_LAST_SEQUENCES:
                    raise
                after = direct.read_subjects(
                    self.nc, EVENTS_STREAM, subject_of(event), after=state.last_seq
                )
                async with contextlib.aclosing(after) as stored:
                    async for raw in stored:
                        if raw.headers.get(MSG_ID) == event_id:  # an earlier try landed
                            ack = PubAck(stream=EVENTS_STREAM, seq=raw.seq, duplicate=True)
                            return event, ack
                continue  # the task changed since it was read: read and judge again
            return event, ack
        raise IntentRefused(f"task {task} kept changing while it was checked; try again")

    async def _check_agent_for(self, agent: str, task: str, state: TaskState) -> None:
        assert state.row is not None
        refuse(intents.agent_problem(agent, await self.agent_profile(agent), task, state.row))

    async def _task_row(self, task: str) -> dict[str, Any] | None:
        return (await read_task(self.nc, self.js, task, roles=self.roles, cache=self.tasks)).row

    async def _created_seq(self, task: str) -> int | None:
        """The stream sequence of the task's creation (its first applied ``task.created``),
        or None when it was never created."""
        state = await read_task(self.nc, self.js, task, history=True, roles=self.roles)
        created = (
            s.seq for s in state.history if isinstance(s.event, TaskCreated) and s.refused is None
        )
        return next(created, None)


def _record(profile: AgentProfile | None) -> dict[str, Any] | None:
    """A profile as a row (its fields as on the wire), None for none."""
    if profile is None:
        return None
    return {**msgspec.structs.asdict(profile), "roles": list(profile.roles)}
