"""Task board: every task's status, holder, claim epoch, reviews and deliverables.

Statuses: inbox, assigned, in_progress, blocked, review, done, cancelled.
A task event that does not fit the task's state (an old epoch, a claim of a held task, a
submission by someone who does not hold it, an event for an unknown task) is never applied: it is
recorded in ``fleetward.task_rejections`` with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from projections.base import Key, Meta, Projection, Row, Rows, Table
from schemas.events import (
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
from schemas.subjects import wildcard

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
    ),
)

DELIVERABLES = Table(
    name="fleetward.deliverables",
    key=("task_id", "version"),
    key_types=("text", "integer"),
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

OPEN = frozenset({"inbox", "assigned", "in_progress", "blocked", "review"})
HELD = frozenset({"in_progress", "blocked"})
_HOLDER_EVENTS = (TaskProgressed, TaskBlocked, TaskReleased, TaskSubmitted, TaskLeaseExpired)


class TaskBoard(Projection):
    name: ClassVar[str] = "tasks"
    stream: ClassVar[str] = "FW_EVENTS"
    subjects: ClassVar[tuple[str, ...]] = (wildcard("task"),)
    tables: ClassVar[tuple[Table, ...]] = (TASKS, DELIVERABLES, REJECTIONS)

    def touches(self, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        task = getattr(event, "task", None)
        if task is not None:
            yield TASKS, (task,)

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        task = getattr(event, "task", None)
        if task is None:
            return
        old = rows.get(TASKS, (task,))
        if isinstance(event, TaskCreated):
            if old is None:
                rows.put(TASKS, _created(event, meta))
            else:
                _reject(rows, task, event, meta, "task already exists")
            return
        if old is None:
            _reject(rows, task, event, meta, "unknown task")
            return
        row = dict(old)
        problem = _transition(row, event, meta)
        if problem:
            _reject(rows, task, event, meta, problem)
            return
        row.update(updated_at=meta.time, last_seq=meta.seq)
        rows.put(TASKS, row)
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
        case TaskClaimed():
            if status not in ("inbox", "assigned"):
                return f"task is {status}"
            if status == "assigned" and row["assignee"] != event.agent:
                return f"task is assigned to {row['assignee']}"
            if event.epoch != row["claim_epoch"] + 1:
                return f"claim epoch {event.epoch}, expected {row['claim_epoch'] + 1}"
            row.update(
                status="in_progress",
                assignee=event.agent,
                claim_epoch=event.epoch,
                lease_s=event.lease_s,
                claimed_at=meta.time,
                blocked_reason=None,
            )
        case TaskProgressed():
            row.update(status="in_progress", blocked_reason=None)
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
                row.update(status="in_progress", rework_count=row["rework_count"] + 1)
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
