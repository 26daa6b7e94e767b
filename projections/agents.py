"""Agent registry: who each agent is and its status: active, paused, offline, retired.

The status follows the agents' state machine (projections/lifecycle.py), which also says who
may change it: an agent lifts only a pause it made itself (``paused_by``), never leaves
retirement on its own, and keeps the roles and task limit of the person or service that
registered it (``registered_by``). An agent's event that would overrule them is refused
(``Rejected("lifecycle_forbidden")``): the projector dead-letters it and tells the agent.
``offline`` comes from the watchdog's ``agent.offline`` (a critical liveness escalation) and is
cleared by ``agent.online``; only an active agent goes offline, and a paused or retired agent
keeps its status.

Every pause, resume and retirement that changes an agent's status, whoever published it (a
person, the watchdog, the agent itself), becomes the agent's durable inbox command (``pause``,
``resume``, ``retire``), emitted through the projector's outbox: one path for every intent about
an agent.

Every version an agent has run is kept (``agent_versions``): what ``agent.version_changed`` says
it is made of (prompt, model, tool set), when it was first and last put in force, and who last
rolled the agent back to it (``rollback``). A registration naming a version not seen yet adds it
with nothing said of it.

``agent.promoted`` puts a tag on the agent that every team sees (``promoted_by``,
``promoted_at``, ``promoted_version``); it changes nothing the agent may do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from fleetward.projections import lifecycle
from fleetward.projections.base import Key, Meta, Projection, Row, Rows, Table
from fleetward.schemas.events import (
    AgentOffline,
    AgentOnline,
    AgentPaused,
    AgentPromoted,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    AgentVersionChanged,
    CommandIssued,
    CommandName,
    Event,
)
from fleetward.schemas.grants import REGISTRY
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
        "paused_by",
        "registered_by",
        "promoted_by",
        "promoted_at",
        "promoted_version",
        "promotion_reason",
    ),
)

AGENT_VERSIONS = Table(
    name="fleetward.agent_versions",
    key=("agent_id", "version"),
    key_types=("text", "text"),
    columns=(
        "agent_id",
        "version",
        "prompt",
        "model",
        "tools",
        "notes",
        "set_by",
        "first_at",
        "changed_at",
        "rolled_back_by",
        "rolled_back_at",
    ),
)

_LIFECYCLE = (*lifecycle.WITH_VERSION, AgentPromoted)


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
        "paused_by": None,
        "registered_by": None,
        "promoted_by": None,
        "promoted_at": None,
        "promoted_version": None,
        "promotion_reason": None,
    }


class AgentRegistry(Projection):
    name: ClassVar[str] = "agents"
    stream: ClassVar[str] = EVENTS_STREAM
    subjects: ClassVar[tuple[str, ...]] = (wildcard("agent"),)
    tables: ClassVar[tuple[Table, ...]] = (AGENTS, AGENT_VERSIONS)

    def touches(self, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        if isinstance(event, _LIFECYCLE):
            yield AGENTS, (event.agent,)
        if isinstance(event, AgentRegistered | AgentVersionChanged):
            yield AGENT_VERSIONS, (event.agent, event.version)

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        """Fold a lifecycle event into the agent's row (creating a placeholder for an agent not
        registered yet), and emit the inbox command of a status change. Raises ``Rejected``
        (``lifecycle_forbidden``) for an agent's own event that ``lifecycle.check`` refuses:
        nothing changes."""
        if not isinstance(event, _LIFECYCLE):
            return
        old = rows.get(AGENTS, (event.agent,))
        life = lifecycle.Life.of(old)
        now, reason = lifecycle.step(life, event)
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
                registered_at=row["registered_at"] or meta.time,
            )
            if lifecycle.sets_limits(life, event):
                row.update(roles=list(event.roles), max_concurrent_tasks=event.max_concurrent_tasks)
            elif (list(event.roles), event.max_concurrent_tasks) != (
                list(row["roles"]),
                row["max_concurrent_tasks"],
            ):  # asked for other roles or another limit: the rest applies, the agent is told
                _tell_limits_kept(rows, meta, event, row)
        elif isinstance(event, AgentVersionChanged):
            row["version"] = event.version
        elif isinstance(event, AgentPromoted):
            _promote(row, event, meta)
        if isinstance(event, AgentRegistered | AgentVersionChanged):
            _keep_version(rows, event, meta)
        was = row["status"]
        row.update(paused_by=now.paused_by, registered_by=now.registered_by)
        if reason is not None:
            row.update(status=now.status, status_reason=reason)
        elif isinstance(event, (AgentPaused, AgentResumed, AgentOffline, AgentOnline)):
            return  # a status change that does not apply (e.g. pausing a retired agent)
        row.update(updated_at=meta.time, last_seq=meta.seq)
        rows.put(AGENTS, row)
        command = _COMMANDS.get(type(event))
        comeback = isinstance(event, AgentRegistered) and was == "retired"
        if comeback:
            command = "resume"  # brought back (lifecycle.after): its processes may work again
        if command is not None and reason is not None and now.status != was:
            said = f"registered again by {event.actor}" if comeback else reason
            told = CommandIssued(
                id=deterministic_id(event.id, "inbox"), actor=REGISTRY, at=event.at,
                agent=event.agent, command=command, reason=said,
                payload={"by": event.actor, "seq": meta.seq},  # seq: ordered (AgentClient)
            )  # fmt: skip
            rows.emit(told, meta)


def _keep_version(rows: Rows, event: AgentRegistered | AgentVersionChanged, meta: Meta) -> None:
    """Record the version ``event`` puts in force: its details from ``agent.version_changed``
    (the latest replace earlier ones), a registration's version with nothing said of it."""
    key = (event.agent, event.version)
    old = rows.get(AGENT_VERSIONS, key)
    row = dict(old) if old else {
        "agent_id": event.agent, "version": event.version, "prompt": "", "model": "",
        "tools": [], "notes": "", "set_by": event.actor, "first_at": meta.time,
        "rolled_back_by": None, "rolled_back_at": None,
    }  # fmt: skip
    if isinstance(event, AgentVersionChanged):
        row.update(prompt=event.prompt, model=event.model, tools=list(event.tools),
                   notes=event.notes, set_by=event.actor)  # fmt: skip
    if isinstance(event, AgentVersionChanged) and event.rollback:
        row.update(rolled_back_by=event.actor, rolled_back_at=meta.time)
    row["changed_at"] = meta.time
    rows.put(AGENT_VERSIONS, row)


def _promote(row: Row, event: AgentPromoted, meta: Meta) -> None:
    """Put the promotion tag on the agent's ``row``, or take it away (``withdrawn``)."""
    if event.withdrawn:
        row.update(promoted_by=None, promoted_at=None, promoted_version=None,
                   promotion_reason=None)  # fmt: skip
    else:
        row.update(promoted_by=event.actor, promoted_at=meta.time,
                   promoted_version=event.version, promotion_reason=event.reason)  # fmt: skip


def _tell_limits_kept(rows: Rows, meta: Meta, event: AgentRegistered, row: Row) -> None:
    """Tell an agent that its own registration asked for roles or a task limit other than
    those of the person or service that registered it (lifecycle.sets_limits): the rest of it
    applied, those stay. A ``refused`` command in its inbox, naming the registration."""
    roles, limit = list(row["roles"]), row["max_concurrent_tasks"]
    rows.emit(
        CommandIssued(
            id=deterministic_id(event.id, "limits"),
            actor=REGISTRY,
            at=event.at,
            agent=event.agent,
            command="refused",
            reason=(
                f"roles and task limit are {row['registered_by']}'s: kept {roles} and {limit}; "
                "the rest of the registration applied"
            ),
            payload={
                "seq": meta.seq,
                "type": "agent.registered",
                "roles": ",".join(roles),
                "max_concurrent_tasks": limit,
            },
        ),
        meta,
    )


_COMMANDS: dict[type[Event], CommandName] = {
    AgentPaused: "pause",
    AgentResumed: "resume",
    AgentRetired: "retire",
}
