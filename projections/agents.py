"""Agent registry: who each agent is and its status: active, paused, offline, retired.

``offline`` comes from the watchdog's ``agent.offline`` (a critical liveness escalation) and is
cleared by ``agent.online``; only an active agent goes offline, and a paused or retired agent
keeps its status.

Every pause, resume and retirement that changes an agent's status, whoever published it (a
person, the watchdog, the agent itself), becomes the agent's durable inbox command (``pause``,
``resume``, ``retire``), emitted through the projector's outbox: one path for every intent about
an agent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from fleetward.projections.base import Key, Meta, Projection, Row, Rows, Table
from fleetward.schemas.events import (
    AgentOffline,
    AgentOnline,
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    AgentVersionChanged,
    CommandIssued,
    CommandName,
    Event,
)
from fleetward.schemas.ids import deterministic_id
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import wildcard

AGENTS = Table(
    name="fleetward.agents",
    key=("agent_id",),
    key_types=("text",),
    columns=(
        "agent_id",
        "name",
        "owner",
        "team",
        "purpose",
        "risk_class",
        "version",
        "status",
        "status_reason",
        "heartbeat_interval_s",
        "roles",
        "max_concurrent_tasks",
        "registered_at",
        "updated_at",
        "last_seq",
    ),
)

_LIFECYCLE = (
    AgentRegistered,
    AgentVersionChanged,
    AgentPaused,
    AgentResumed,
    AgentRetired,
    AgentOffline,
    AgentOnline,
)


def _placeholder(agent: str, meta: Meta) -> Row:
    """An agent heard of before its registration: kept, so no lifecycle event is lost."""
    return {
        "agent_id": agent,
        "name": agent,
        "owner": "",
        "team": "unassigned",
        "purpose": "",
        "risk_class": "medium",
        "version": "",
        "status": "active",
        "status_reason": "",
        "heartbeat_interval_s": 60.0,
        "roles": [],
        "max_concurrent_tasks": 1,
        "registered_at": None,
        "updated_at": meta.time,
        "last_seq": meta.seq,
    }


def next_status(status: str, event: Event) -> tuple[str, str | None]:
    """An agent's status after a lifecycle event, and the reason to record (None: unchanged).

    Registering again brings a retired agent back; a retired agent ignores pause and resume;
    only an active agent goes offline, and only an offline one comes back online."""
    match event:
        case AgentRegistered() if status == "retired":
            return "active", ""
        case AgentPaused() if status != "retired":
            return "paused", event.reason
        case AgentResumed() if status != "retired":
            return "active", event.reason
        case AgentRetired():
            return "retired", event.reason
        case AgentOffline() if status == "active":
            return "offline", f"escalation {event.escalation}"
        case AgentOnline() if status == "offline":
            return "active", ""
    return status, None


class AgentRegistry(Projection):
    name: ClassVar[str] = "agents"
    stream: ClassVar[str] = EVENTS_STREAM
    subjects: ClassVar[tuple[str, ...]] = (wildcard("agent"),)
    tables: ClassVar[tuple[Table, ...]] = (AGENTS,)

    def touches(self, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        if isinstance(event, _LIFECYCLE):
            yield AGENTS, (event.agent,)

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        if not isinstance(event, _LIFECYCLE):
            return
        old = rows.get(AGENTS, (event.agent,))
        row = dict(old) if old else _placeholder(event.agent, meta)
        if isinstance(event, AgentRegistered):
            row.update(
                name=event.name,
                owner=event.owner,
                team=event.team,
                purpose=event.purpose,
                risk_class=event.risk_class,
                version=event.version,
                heartbeat_interval_s=event.heartbeat_interval_s,
                roles=list(event.roles),
                max_concurrent_tasks=event.max_concurrent_tasks,
                registered_at=row["registered_at"] or meta.time,
            )
        elif isinstance(event, AgentVersionChanged):
            row["version"] = event.version
        was = row["status"]
        status, reason = next_status(was, event)
        if reason is not None:
            row.update(status=status, status_reason=reason)
        elif isinstance(event, (AgentPaused, AgentResumed, AgentOffline, AgentOnline)):
            return  # a status change that does not apply (e.g. pausing a retired agent)
        row.update(updated_at=meta.time, last_seq=meta.seq)
        rows.put(AGENTS, row)
        command = _COMMANDS.get(type(event))
        if command is not None and reason is not None and status != was:
            told = CommandIssued(
                id=deterministic_id(event.id, "inbox"), actor="svc:registry", at=event.at,
                agent=event.agent, command=command, reason=reason,
                payload={"by": event.actor},
            )  # fmt: skip
            rows.emit(told, meta)


_COMMANDS: dict[type[Event], CommandName] = {
    AgentPaused: "pause",
    AgentResumed: "resume",
    AgentRetired: "retire",
}
