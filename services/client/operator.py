"""The operator client, ``FleetClient``: what people and services use to direct the fleet.
Create, assign, review and cancel tasks, and send durable commands. NATS only; a task's state
is read from its subject on the stream, so no projection is needed to check a request. What
only a projection knows comes from the task API (``fw.api.*``, schemas/api.py): a request
nobody answers in time, or answered with an error, raises ``ApiError``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec
from msgspec import UNSET
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import PubAck

from fleetward.schemas import deterministic_id
from fleetward.schemas.api import (
    AGENTS_GET,
    TASKS_CLAIMABLE,
    AgentRequest,
    ClaimableRequest,
    Endpoint,
    Rep,
    Req,
)
from fleetward.schemas.events import (
    CommandIssued,
    CommandName,
    Priority,
    TaskAssigned,
    TaskCancelled,
    TaskCreated,
    TaskReviewed,
    Verdict,
)
from fleetward.services.client.publisher import Publisher
from fleetward.services.client.taskstate import read_task
from fleetward.services.errors import ApiError
from fleetward.services.jetstream.connection import connect

API_TIMEOUT_S: Final = 5.0  # how long a request to the task API waits for its reply


class FleetClient(Publisher):
    """For people and services (actor ``user:<name>`` or ``svc:<name>``)."""

    @classmethod
    async def connect(cls, url: str, actor: str) -> FleetClient:
        """A client on its own connection to ``url``, publishing as ``actor``."""
        return cls(await connect(url, name=actor), actor)

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
        """Assign ``task`` to ``agent``."""
        return await self.send(TaskAssigned(**self.envelope(), task=task, agent=agent))

    async def cancel(self, task: str, reason: str = "") -> PubAck:
        """Cancel ``task``, saying why."""
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
        first (a hint from the projection; the claim itself is decided on the stream).
        ``limit``: 1 to 200. ``ApiError`` when the task API does not answer or fails."""
        request = ClaimableRequest(agent=agent, roles=tuple(roles), limit=limit)
        return list((await self.ask(TASKS_CLAIMABLE, request)).tasks)

    async def agent_profile(self, agent_id: str) -> dict[str, Any] | None:
        """The registry's profile of ``agent_id`` (its fields: ``schemas/api.py``
        ``AgentProfile``), or None when it has none. ``ApiError`` when the task API does not
        answer or fails."""
        profile = (await self.ask(AGENTS_GET, AgentRequest(agent=agent_id))).agent
        if profile is None:
            return None
        return {**msgspec.structs.asdict(profile), "roles": list(profile.roles)}  # as on the wire

    async def ask(
        self,
        endpoint: Endpoint[Req, Rep],
        request: Req,
        *,
        timeout: float = API_TIMEOUT_S,  # noqa: ASYNC109 (the NATS request takes it)
    ) -> Rep:
        """One request to the task API and its reply; ``ApiError`` (one line) when nothing
        answers within ``timeout`` seconds or the reply is an error."""
        subject = endpoint.subject
        try:
            msg = await self.nc.request(subject, msgspec.json.encode(request), timeout=timeout)
        except NoRespondersError:
            raise ApiError(
                f"nothing serves {subject}: start the task API (`fleetward projector` or "
                "`fleetward dev`)"
            ) from None
        except NatsTimeout:
            raise ApiError(
                f"no answer on {subject} within {timeout:g} s: is the task API "
                "(`fleetward projector`) running and reachable?"
            ) from None
        try:
            reply = msgspec.json.decode(msg.data, type=endpoint.reply)
        except msgspec.DecodeError as exc:
            raise ApiError(f"{subject} answered something else than its reply: {exc}") from None
        if reply.error is not UNSET:
            raise ApiError(f"{subject}: {reply.error}")
        return reply
