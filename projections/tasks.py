"""Task board: every task's status, holder, claim epoch, reviews and deliverables.

Statuses: inbox, assigned, in_progress, blocked, review, done, cancelled.

The board also follows agent lifecycle events (same stream, so in one order with the task
events) to judge claims: a claim counts only if the task is claimable (inbox, or assigned to the
claimer), its epoch is the next one, every dependency is done, the claimer is registered,
active, holds the required role and is under its limit of concurrent tasks.

Dependencies may only name tasks that already exist, so they always form a DAG: a task that
names itself or an unknown task is refused at creation.
A task event that does not fit the task's state (an old epoch, a claim of a held task, a
submission by someone who does not hold it, an event for an unknown task) is never applied: it is
recorded in ``fleetward.task_rejections`` with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from fleetward.projections.agents import next_status
from fleetward.projections.base import Key, Meta, Projection, Row, Rows, Table
from fleetward.schemas.admission import actor_kind
from fleetward.schemas.events import (
    AgentOffline,
    AgentOnline,
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    Event,
    TaskAssigned,
    TaskBlocked,
    TaskCancelled,
    TaskClaimed,
    TaskCreated,
    TaskLeaseExpired,
    TaskProgressed,
    TaskReleased,
    TaskReviewed,
    TaskSubmitted,
    type_name,
)
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import kind_prefix, wildcard

TASKS = Table(
    name="fleetward.tasks",
    key=("task_id",),
    key_types=("text",),
    columns=(
        "task_id",
        "project",
        "title",
        "description",
        "priority",
        "status",
        "assignee",
        "claim_epoch",
        "lease_s",
        "depends_on",
        "required_role",
        "sla_s",
        "review_rounds",
        "rework_count",
        "deliverable_version",
        "blocked_reason",
        "created_by",
        "created_at",
        "updated_at",
        "claimed_at",
        "submitted_at",
        "done_at",
        "last_seq",
        "last_progress_at",
    ),
)

DELIVERABLES = Table(
    name="fleetward.deliverables",
    key=("task_id", "version"),
    key_types=("text", "bigint"),
    columns=(
        "task_id",
        "version",
        "agent",
        "epoch",
        "kind",
        "sha256",
        "uri",
        "content",
        "submitted_at",
        "seq",
    ),
)

REJECTIONS = Table(
    name="fleetward.task_rejections",
    key=("task_id", "seq"),
    key_types=("text", "bigint"),
    columns=("task_id", "seq", "event_id", "type", "actor", "reason", "at"),
)

TASK_AGENTS = Table(
    name="fleetward.task_agents",
    key=("agent_id",),
    key_types=("text",),
    columns=("agent_id", "roles", "status", "max_concurrent_tasks", "held"),
)

REVIEWER_ROLE = "reviewer"
AGENT_SUBJECTS = kind_prefix("agent")  # agent lifecycle events reach the board on these
OPEN = frozenset({"inbox", "assigned", "in_progress", "blocked", "review"})
HELD = frozenset({"in_progress", "blocked"})
_HOLDER_EVENTS = (TaskProgressed, TaskBlocked, TaskReleased, TaskSubmitted, TaskLeaseExpired)
_LIFECYCLE = (AgentRegistered, AgentPaused, AgentResumed, AgentRetired, AgentOffline, AgentOnline)


class TaskBoard(Projection):
    """The task board. ``local=True`` folds one task subject alone (the agent client): claims
    are judged only by what that subject decides (``task_claim_problem``)."""

    name: ClassVar[str] = "tasks"
    stream: ClassVar[str] = EVENTS_STREAM
    subjects: ClassVar[tuple[str, ...]] = (wildcard("task"), wildcard("agent"))
    tables: ClassVar[tuple[Table, ...]] = (TASKS, DELIVERABLES, REJECTIONS, TASK_AGENTS)

    def __init__(self, *, local: bool = False) -> None:
        self.local = local

    def touches(self, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        if isinstance(event, _LIFECYCLE):
            yield TASK_AGENTS, (event.agent,)
            return
        task = getattr(event, "task", None)
        if task is None or meta.subject.startswith(AGENT_SUBJECTS):
            return  # agent activity (runs, tool calls, spend) names tasks but does not move them
        yield TASKS, (task,)
        agent = getattr(event, "agent", None)
        if agent is not None:
            yield TASK_AGENTS, (agent,)
        if isinstance(event, TaskReviewed) and actor_kind(event.actor) == "agent":
            yield TASK_AGENTS, (event.actor,)
        if isinstance(event, TaskCreated):
            for dep in event.depends_on:
                yield TASKS, (dep,)

    def touches_more(self, rows: Rows, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        if isinstance(event, TaskClaimed):
            row = rows.get(TASKS, (event.task,))
            for dep in row["depends_on"] if row else ():
                yield TASKS, (dep,)
        elif isinstance(event, TaskCancelled):
            row = rows.get(TASKS, (event.task,))
            if row and row["assignee"]:
                yield TASK_AGENTS, (row["assignee"],)

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        if isinstance(event, _LIFECYCLE):
            _agent_lifecycle(rows, event)
            return
        task = getattr(event, "task", None)
        if task is None or meta.subject.startswith(AGENT_SUBJECTS):
            return
        old = rows.get(TASKS, (task,))
        if isinstance(event, TaskCreated):
            problem = "task already exists" if old else None
            problem = problem or (None if self.local else creation_problem(rows, event))
            if problem:
                _reject(rows, task, event, meta, problem)
            else:
                rows.put(TASKS, _created(event, meta))
            return
        if old is None:
            _reject(rows, task, event, meta, "unknown task")
            return
        row = dict(old)
        if isinstance(event, TaskReviewed) and not self.local:
            problem = reviewer_problem(rows.get(TASK_AGENTS, (event.actor,)), event)
        elif isinstance(event, TaskClaimed) and self.local:
            problem = task_claim_problem(row, event)
        elif isinstance(event, TaskClaimed):
            agent = rows.get(TASK_AGENTS, (event.agent,))
            deps = [rows.get(TASKS, (d,)) for d in row["depends_on"]]
            problem = claim_problem(row, agent, deps, event)
        else:
            problem = None
        was_holder = row["assignee"] if row["status"] in HELD else None
        problem = problem or _transition(row, event, meta)
        if problem:
            _reject(rows, task, event, meta, problem)
            return
        row.update(updated_at=meta.time, last_seq=meta.seq)
        rows.put(TASKS, row)
        now_holder = row["assignee"] if row["status"] in HELD else None
        if was_holder != now_holder:
            _count_held(rows, was_holder, -1)
            _count_held(rows, now_holder, +1)
        if isinstance(event, TaskSubmitted):
            d = event.deliverable
            rows.put(
                DELIVERABLES,
                {
                    "task_id": task,
                    "version": row["deliverable_version"],
                    "agent": event.agent,
                    "epoch": event.epoch,
                    "kind": d.kind,
                    "sha256": d.sha256,
                    "uri": d.uri,
                    "content": d.content,
                    "submitted_at": meta.time,
                    "seq": meta.seq,
                },
            )


def creation_problem(rows: Rows, event: TaskCreated) -> str | None:
    """Why a task may not be created with these dependencies, or None."""
    if event.task in event.depends_on:
        return "a task cannot depend on itself (that would be a cycle)"
    unknown = [d for d in event.depends_on if rows.get(TASKS, (d,)) is None]
    if unknown:
        return (
            f"depends on unknown task(s) {', '.join(unknown)}: dependencies must already exist, "
            "so they can never form a cycle"
        )
    return None


def reviewer_problem(reviewer: Row | None, review: TaskReviewed) -> str | None:
    """People and services review; an agent reviews only if it holds the role ``reviewer``.
    (Nobody reviews their own work: admission refuses that before any projection sees it.)"""
    if actor_kind(review.actor) != "agent":
        return None
    if reviewer is None or REVIEWER_ROLE not in reviewer["roles"]:
        return f"{review.actor} lacks the role {REVIEWER_ROLE} needed to review"
    return None


def claim_problem(
    task: Row, agent: Row | None, deps: list[Row | None], claim: TaskClaimed
) -> str | None:
    """Why ``claim`` may not take ``task``, or None: the board's whole judgement."""
    return (
        task_claim_problem(task, claim)
        or agent_claim_problem(task, agent, claim)
        or dependency_problem(task, deps)
    )


def task_claim_problem(task: Row, claim: TaskClaimed) -> str | None:
    """What the task's own subject decides: it is claimable and the epoch is a new one.

    Epochs only need to grow, not to be consecutive, so that a reader of the task subject alone
    (an agent) agrees with the board even after a claim the board refused for agent reasons."""
    status = task["status"]
    if status not in ("inbox", "assigned"):
        return f"task is {status}"
    if status == "assigned" and task["assignee"] != claim.agent:
        return f"task is assigned to {task['assignee']}"
    if claim.epoch <= task["claim_epoch"]:
        return f"claim epoch {claim.epoch} is not after the current epoch {task['claim_epoch']}"
    return None


def agent_claim_problem(task: Row, agent: Row | None, claim: TaskClaimed) -> str | None:
    """What the claimer's own state decides: registered, active, the role, the limit."""
    if agent is None:
        return f"agent {claim.agent} is not registered"
    if agent["status"] != "active":
        return f"agent {claim.agent} is {agent['status']}"
    role = task["required_role"]
    if role and role not in agent["roles"]:
        return f"agent {claim.agent} lacks the role {role}"
    if agent["held"] >= agent["max_concurrent_tasks"]:
        return f"agent {claim.agent} already holds {agent['held']} task(s), its limit"
    return None


def dependency_problem(task: Row, deps: list[Row | None]) -> str | None:
    waiting = [
        d
        for d, row in zip(task["depends_on"], deps, strict=True)
        if row is None or row["status"] != "done"
    ]
    return f"waiting on dependencies: {', '.join(waiting)}" if waiting else None


def _agent_lifecycle(rows: Rows, event: Event) -> None:
    agent = getattr(event, "agent")  # noqa: B009  # every lifecycle event has one
    old = rows.get(TASK_AGENTS, (agent,))
    row = dict(old) if old else {"agent_id": agent, "roles": [], "status": "active",
                                  "max_concurrent_tasks": 1, "held": 0}  # fmt: skip
    if isinstance(event, AgentRegistered):
        row.update(roles=list(event.roles), max_concurrent_tasks=event.max_concurrent_tasks)
    elif old is None:
        return  # lifecycle of an agent never registered: claims by it are refused anyway
    row["status"], _ = next_status(row["status"], event)
    rows.put(TASK_AGENTS, row)


def _count_held(rows: Rows, agent: str | None, delta: int) -> None:
    if agent is None:
        return
    row = rows.get(TASK_AGENTS, (agent,))
    if row is not None:
        rows.put(TASK_AGENTS, {**row, "held": max(0, row["held"] + delta)})


def _created(event: TaskCreated, meta: Meta) -> Row:
    return {
        "task_id": event.task,
        "project": event.project,
        "title": event.title,
        "description": event.description,
        "priority": event.priority,
        "status": "inbox",
        "assignee": None,
        "claim_epoch": 0,
        "lease_s": None,
        "depends_on": list(event.depends_on),
        "required_role": event.required_role,
        "sla_s": event.sla_s,
        "review_rounds": 0,
        "rework_count": 0,
        "deliverable_version": 0,
        "blocked_reason": None,
        "created_by": event.actor,
        "created_at": meta.time,
        "updated_at": meta.time,
        "claimed_at": None,
        "submitted_at": None,
        "done_at": None,
        "last_seq": meta.seq,
        "last_progress_at": None,
    }


def _transition(row: Row, event: Event, meta: Meta) -> str | None:
    """Apply ``event`` to ``row`` in place; return why it does not fit, or None."""
    status = row["status"]
    if isinstance(event, _HOLDER_EVENTS):
        if event.epoch != row["claim_epoch"] or event.agent != row["assignee"]:
            return f"epoch {event.epoch} of {event.agent} is not the current claim"
        if status not in HELD:
            return f"task is {status}"
    match event:
        case TaskAssigned():
            if status not in ("inbox", "assigned"):
                return f"task is {status}"
            row.update(status="assigned", assignee=event.agent)
        case TaskClaimed():  # claim_problem has judged it
            row.update(
                status="in_progress",
                assignee=event.agent,
                claim_epoch=event.epoch,
                lease_s=event.lease_s,
                claimed_at=meta.time,
                last_progress_at=meta.time,
                blocked_reason=None,
            )
        case TaskProgressed():
            row.update(status="in_progress", blocked_reason=None, last_progress_at=meta.time)
        case TaskBlocked():
            row.update(status="blocked", blocked_reason=event.reason)
        case TaskReleased() | TaskLeaseExpired():
            row.update(status="inbox", assignee=None, blocked_reason=None)
        case TaskSubmitted():
            row.update(
                status="review",
                submitted_at=meta.time,
                deliverable_version=row["deliverable_version"] + 1,
            )
        case TaskReviewed():
            if status != "review":
                return f"task is {status}"
            if event.agent != row["assignee"]:
                return f"the deliverable under review is {row['assignee']}'s"
            row["review_rounds"] += 1
            if event.verdict == "approve":
                row.update(status="done", done_at=meta.time)
            else:
                row.update(
                    status="in_progress",
                    rework_count=row["rework_count"] + 1,
                    last_progress_at=meta.time,
                )
        case TaskCancelled():
            if status not in OPEN:
                return f"task is {status}"
            row.update(status="cancelled")
    return None


def _reject(rows: Rows, task: str, event: Event, meta: Meta, reason: str) -> None:
    rows.put(
        REJECTIONS,
        {
            "task_id": task,
            "seq": meta.seq,
            "event_id": event.id,
            "type": type_name(type(event)),
            "actor": event.actor,
            "reason": reason,
            "at": meta.time,
        },
    )
