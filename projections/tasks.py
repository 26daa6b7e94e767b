"""Task board: every task's status, holder, claim epoch, reviews and deliverables.

Statuses: inbox, assigned, in_progress, blocked, review, done, cancelled.

**One task state machine** (DESIGN 3.3): ``step`` folds one task's own events, and nothing
else, into its row. The board, the agent client (services/client/taskstate.py), the operator
client, the task API (which reads the board) and the watchdog all fold with it, so at every
point of the stream they agree on a task's status, holder, epoch and current claim.

Rules that the task's subject cannot show (the claimer is registered, active, holds the
required role and is under its limit of concurrent tasks; every dependency is done; an agent
reviewer holds the role ``reviewer``; a new task's dependencies exist) are judged by the board,
which folds the agent lifecycle too, in the same stream order. It never leaves a claim that
breaks one standing silently: it *emits* a verdict (``task.claim_refused``,
``task.review_refused``, ``task.cancelled``), which the projector's outbox publishes on the
task's subject (services/projector/outbox.py), and which every reader then folds. A verdict
names the event it voids by id, so it applies exactly once, whenever it is stored.

The board also emits the inbox commands that follow from what it applies: the verdict on a
review to the author (``review_feedback``), ``lease_lost`` to a holder displaced by a lease
expiry, a revocation or a cancellation, ``wake`` to an agent a task is assigned to, and
``refused`` to an agent whose task event did not fit (the event is recorded in
``fleetward.task_rejections`` with its reason and never applied).

Each deliverable records the agent version that produced it and the team it worked in (from the
agent's registration and ``agent.version_changed`` before its submission), and the verdict of its
review once one applies (cleared again when the board voids that review or the approved claim).

Dependencies may only name tasks that already exist (and, when changed, tasks created before
the dependent one), so they always form a DAG.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from fleetward.projections import lifecycle
from fleetward.projections.base import Key, Meta, Projection, Row, Rows, Table
from fleetward.schemas.admission import actor_kind
from fleetward.schemas.events import (
    AgentRegistered,
    AgentRetired,
    AgentVersionChanged,
    CommandIssued,
    CommandName,
    Event,
    Evidence,
    TaskAssigned,
    TaskBlocked,
    TaskCancelled,
    TaskClaimed,
    TaskClaimRefused,
    TaskCreated,
    TaskDependenciesChanged,
    TaskLeaseExpired,
    TaskProgressed,
    TaskReleased,
    TaskReviewed,
    TaskReviewRefused,
    TaskRevoked,
    TaskSubmitted,
    type_name,
)
from fleetward.schemas.ids import deterministic_id
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import kind_prefix, wildcard

BOARD = "svc:board"  # the actor of the board's verdicts and commands

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
        "claim_id",
        "undo_event",
        "undo_status",
        "undo_assignee",
        "undo_verdict",
        "overruled",
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
        "agent_version",
        "team",
        "verdict",
        "reviewed_by",
        "reviewed_at",
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
    columns=(
        "agent_id",
        "roles",
        "status",
        "max_concurrent_tasks",
        "held",
        "held_tasks",
        "assigned_tasks",
        "paused_by",
        "registered_by",
        "registered",
        "team",
        "version",
    ),
)

REVIEWER_ROLE = "reviewer"
AGENT_SUBJECTS = kind_prefix("agent")  # agent lifecycle events reach the board on these
OPEN = frozenset({"inbox", "assigned", "in_progress", "blocked", "review"})
HELD = frozenset({"in_progress", "blocked"})
_HOLDER_EVENTS = (TaskProgressed, TaskBlocked, TaskReleased, TaskSubmitted, TaskLeaseExpired)
_LIFECYCLE = lifecycle.WITH_VERSION


# ---- the task state machine -------------------------------------------------------------------


def step(row: Row | None, event: Event, meta: Meta) -> Row | str:
    """The task state machine: ``row`` (None: no such task yet) after ``event``, as a new row,
    or why the event does not fit the task's state (then it is not applied). Judges only what
    the task's own subject shows; pure, and the only fold of a task there is."""
    if isinstance(event, TaskCreated):
        if row is not None:
            return "task already exists"
        if event.task in event.depends_on:
            return "a task cannot depend on itself (that would be a cycle)"
        return _created(event, meta)
    if row is None:
        return "unknown task"
    new = dict(row)
    problem = _transition(new, event, meta)
    if problem:
        return problem
    new.update(updated_at=meta.time, last_seq=meta.seq)
    return new


def holder(row: Row | None) -> str | None:
    """The agent that holds the task (in progress or blocked), or None."""
    return row["assignee"] if row is not None and row["status"] in HELD else None


def task_claim_problem(task: Row, claim: TaskClaimed) -> str | None:
    """What the task's own subject decides about a claim: the task is claimable (inbox, or
    assigned to the claimer) and the epoch is the next one. Every reader folds the same epochs
    (a claim the board overrules keeps its epoch), so the next one is known to all; a claim
    may not skip ahead (one at the contract's largest epoch would leave no epoch after it)."""
    status = task["status"]
    if status not in ("inbox", "assigned"):
        held_by = f", held by {task['assignee']}" if status in HELD else ""
        return f"task is {status}{held_by}"
    if status == "assigned" and task["assignee"] != claim.agent:
        return f"task is assigned to {task['assignee']}"
    if claim.epoch != task["claim_epoch"] + 1:
        return f"claim epoch {claim.epoch} is not the next one ({task['claim_epoch'] + 1})"
    return None


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
            problem = task_claim_problem(row, event)
            if problem:
                return problem
            row.update(undo_status=row["status"], undo_assignee=row["assignee"])
            row.update(
                status="in_progress",
                assignee=event.agent,
                claim_epoch=event.epoch,
                claim_id=event.id,
                lease_s=event.lease_s,
                claimed_at=meta.time,
                last_progress_at=meta.time,
                blocked_reason=None,
            )
        case TaskProgressed():
            row.update(status="in_progress", blocked_reason=None, last_progress_at=meta.time)
        case TaskBlocked():  # a report of the holder, as progress is: it renews the lease
            row.update(status="blocked", blocked_reason=event.reason, last_progress_at=meta.time)
        case TaskReleased() | TaskLeaseExpired():
            _end_claim(row, "inbox", None)
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
            if actor_kind(event.actor) == "agent":  # the board may still refuse it (the role)
                row.update(undo_event=event.id, undo_verdict=event.verdict)
            row["review_rounds"] += 1
            if event.verdict == "approve":
                row.update(status="done", done_at=meta.time)
                if actor_kind(event.actor) != "agent":  # a person's approval is final: the
                    row.update(undo_status=None, undo_assignee=None)  # claim stays done
            else:
                row.update(
                    status="in_progress",
                    rework_count=row["rework_count"] + 1,
                    last_progress_at=meta.time,
                )
        case TaskCancelled():
            if status not in OPEN:
                return f"task is {status}"
            _end_claim(row, "cancelled", row["assignee"])
        case TaskClaimRefused() | TaskReviewRefused():
            return _void(row, event)
        case TaskRevoked():
            if status not in (*HELD, "review", "assigned"):
                return f"task is {status}"
            if (event.agent, event.epoch) != (row["assignee"], row["claim_epoch"]):
                return f"epoch {event.epoch} of {event.agent} is not the current claim"
            if event.assign_to:
                _end_claim(row, "assigned", event.assign_to)
            else:
                _end_claim(row, "inbox", None)
        case TaskDependenciesChanged():
            if status not in OPEN:
                return f"task is {status}"
            if row["task_id"] in event.depends_on:
                return "a task cannot depend on itself (that would be a cycle)"
            row["depends_on"] = list(event.depends_on)
    return None


def _void(row: Row, verdict: TaskClaimRefused | TaskReviewRefused) -> str | None:
    """Undo the claim or agent review a verdict names, if it is still undoable: a claim until
    it ends (released, expired, revoked, cancelled), a review until the next one or the claim's
    end. Undoing a claim restores the status and assignee from before it."""
    if isinstance(verdict, TaskClaimRefused):
        if row["claim_id"] != verdict.claim or row["undo_status"] is None:
            return f"claim {verdict.claim} is not the task's current claim"
        _end_claim(row, row["undo_status"], row["undo_assignee"])
        row["done_at"] = None
        return None
    if row["undo_event"] != verdict.review:
        return f"review {verdict.review} is not the task's last review"
    rework = row["undo_verdict"] == "reject"
    row.update(
        status="review",
        done_at=None,
        review_rounds=row["review_rounds"] - 1,
        rework_count=row["rework_count"] - rework,
        undo_event=None,
        undo_verdict=None,
    )
    return None


def reopenable(row: Row) -> bool:
    """A done task that a verdict of the board may still send back: one an agent approved
    (the verdict on that review, or on the claim whose work it approved). A person's or a
    service's approval is final."""
    return bool(
        row["status"] == "done"
        and (row["undo_status"] is not None or row["undo_event"] is not None)
    )


def _end_claim(row: Row, status: str, assignee: str | None) -> None:
    """The claim ends: nothing of it can be undone any more."""
    row.update(
        status=status,
        assignee=assignee,
        blocked_reason=None,
        undo_event=None,
        undo_status=None,
        undo_assignee=None,
        undo_verdict=None,
    )


# ---- what only the board can judge -------------------------------------------------------------


def creation_problem(rows: Rows, event: TaskCreated) -> str | None:
    """Why a task may not be created with these dependencies (some do not exist), or None."""
    unknown = [d for d in event.depends_on if rows.get(TASKS, (d,)) is None]
    if unknown:
        return (
            f"depends on unknown task(s) {', '.join(unknown)}: dependencies must already exist, "
            "so they can never form a cycle"
        )
    return None


def dependencies_problem(task: Row, deps: list[Row | None], new: tuple[str, ...]) -> str | None:
    """Why ``task`` may not depend on ``new`` instead: each must exist and have been created
    before ``task`` (stream time), so the graph stays acyclic."""
    for dep, row in zip(new, deps, strict=True):
        if row is None:
            return f"dependency {dep} does not exist"
        if row["created_at"] >= task["created_at"]:
            return (
                f"dependency {dep} was created after {task['task_id']}: a task may only depend "
                "on older ones (so the graph stays acyclic)"
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


def agent_claim_problem(task: Row, agent: Row | None, claim: TaskClaimed) -> str | None:
    """What the claimer's own state decides: registered, active, the role, the limit. ``agent``
    is the claimer as ``TASK_AGENTS`` has it, counting the tasks it held *before* this claim."""
    if agent is None or not agent["registered"]:
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
    """Why the task's dependencies keep it from being claimed (not all done), or None. A
    dependency done by a review the board has overruled (its verdict not stored yet) is not
    done."""
    waiting = [
        d
        for d, row in zip(task["depends_on"], deps, strict=True)
        if row is None or row["status"] != "done" or row["overruled"]
    ]
    return f"waiting on dependencies: {', '.join(waiting)}" if waiting else None


# ---- the board ---------------------------------------------------------------------------------


class TaskBoard(Projection):
    """The task board: ``step`` for every task, the board's own judgements as verdicts, and
    the inbox commands that follow (see the module's docstring)."""

    name: ClassVar[str] = "tasks"
    stream: ClassVar[str] = EVENTS_STREAM
    subjects: ClassVar[tuple[str, ...]] = (wildcard("task"), wildcard("agent"))
    tables: ClassVar[tuple[Table, ...]] = (TASKS, DELIVERABLES, REJECTIONS, TASK_AGENTS)

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
        if isinstance(event, TaskCreated | TaskDependenciesChanged):
            for dep in event.depends_on:
                yield TASKS, (dep,)

    def touches_more(self, rows: Rows, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        if isinstance(event, TaskReviewed | TaskReviewRefused | TaskClaimRefused):
            row = rows.get(TASKS, (event.task,))
            if row is not None and row["deliverable_version"] > 0:
                yield DELIVERABLES, (event.task, row["deliverable_version"])
        if isinstance(event, TaskClaimed):
            row = rows.get(TASKS, (event.task,))
            for dep in row["depends_on"] if row else ():
                yield TASKS, (dep,)
        elif isinstance(event, TaskCancelled | TaskRevoked | TaskAssigned | TaskClaimRefused):
            row = rows.get(TASKS, (event.task,))
            for agent in {row["assignee"], row["undo_assignee"]} if row else ():
                if agent:
                    yield TASK_AGENTS, (agent,)
        elif isinstance(event, AgentRetired):
            agent = rows.get(TASK_AGENTS, (event.agent,))
            for task in [*agent["held_tasks"], *agent["assigned_tasks"]] if agent else ():
                yield TASKS, (task,)

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        if isinstance(event, _LIFECYCLE):
            _agent_lifecycle(rows, event, meta)
            return
        task = getattr(event, "task", None)
        if task is None or meta.subject.startswith(AGENT_SUBJECTS):
            return
        old = rows.get(TASKS, (task,))
        new = step(old, event, meta)
        if isinstance(new, str):
            _reject(rows, task, event, meta, new)
            return
        if new["overruled"] not in (_undoable_claim(new), new["undo_event"]):
            new["overruled"] = None  # its verdict landed, or what it overruled ended anyway
        rows.put(TASKS, new)
        was, now = holder(old), holder(new)
        if was != now:
            _count_held(rows, was, task, -1)
            _count_held(rows, now, task, +1)
        was, now = _assigned(old), _assigned(new)
        if was != now:
            _track(rows, was, task, "assigned_tasks", add=False)
            _track(rows, now, task, "assigned_tasks", add=True)
        _void_verdict(rows, old, new, event, meta)
        _judge(rows, old, new, event, meta)


def _judge(rows: Rows, old: Row | None, new: Row, event: Event, meta: Meta) -> None:
    """The board's verdicts on what ``step`` applied, and the inbox commands that follow."""
    task = new["task_id"]
    match event:
        case TaskCreated():
            problem = creation_problem(rows, event)
            if problem:
                cancel = TaskCancelled(**_verdict(event), task=task, reason=_short(problem))
                rows.emit(cancel, meta)
        case TaskClaimed():
            agent = rows.get(TASK_AGENTS, (event.agent,))
            if agent is not None and agent["held"] > 0 and task in agent["held_tasks"]:
                agent = {**agent, "held": agent["held"] - 1}  # counted before this claim
            deps = [rows.get(TASKS, (d,)) for d in new["depends_on"]]
            problem = agent_claim_problem(new, agent, event) or dependency_problem(new, deps)
            if problem:
                refused = TaskClaimRefused(
                    **_verdict(event), task=task, agent=event.agent, epoch=event.epoch,
                    claim=event.id, reason=_short(problem),
                )  # fmt: skip
                rows.emit(refused, meta)
                new["overruled"] = event.id  # until the verdict lands (see dependency_problem)
        case TaskSubmitted():
            d = event.deliverable
            author = rows.get(TASK_AGENTS, (event.agent,))
            rows.put(DELIVERABLES, {
                "task_id": task, "version": new["deliverable_version"], "agent": event.agent,
                "epoch": event.epoch, "kind": d.kind, "sha256": d.sha256, "uri": d.uri,
                "content": d.content, "submitted_at": meta.time, "seq": meta.seq,
                "agent_version": author["version"] if author else "",
                "team": author["team"] if author else "unassigned",
                "verdict": None, "reviewed_by": None, "reviewed_at": None,
            })  # fmt: skip
        case TaskReviewed():
            _set_verdict(rows, new, event.verdict, event.actor, meta)
            _judge_review(rows, new, event, meta)
        case TaskDependenciesChanged() if old is not None:
            _judge_dependencies(rows, old, event, meta)
        case TaskAssigned():
            payload = {"why": "assigned", "by": event.actor, "epoch": new["claim_epoch"]}
            _tell(
                rows,
                meta,
                event,
                event.agent,
                "wake",
                reason=f"task {task} is assigned to you",
                payload=payload,
            )
        case TaskClaimRefused():
            payload = {"event": event.claim, "type": "task.claimed", "epoch": event.epoch}
            _tell(
                rows,
                meta,
                event,
                event.agent,
                "refused",
                reason=event.reason,
                payload=payload,
            )
        case TaskReviewRefused() if actor_kind(event.reviewer) == "agent":
            payload = {"event": event.review, "type": "task.reviewed"}
            _tell(
                rows,
                meta,
                event,
                event.reviewer,
                "refused",
                reason=event.reason,
                payload=payload,
            )
        case TaskLeaseExpired():
            payload = {"epoch": event.epoch, "by": event.actor}
            _tell(
                rows,
                meta,
                event,
                event.agent,
                "lease_lost",
                reason="the lease expired",
                payload=payload,
            )
        case TaskRevoked():
            payload = {"epoch": event.epoch, "by": event.actor, "assign_to": event.assign_to}
            reason = event.reason or f"revoked by {event.actor}"
            if event.assign_to:
                woken: Evidence = {"why": "assigned", "by": event.actor, "epoch": event.epoch}
                _tell(rows, meta, event, event.assign_to, "wake", key="assign_to",
                      reason=f"task {task} is assigned to you", payload=woken)  # fmt: skip
            _tell(
                rows,
                meta,
                event,
                event.agent,
                "lease_lost",
                reason=reason,
                payload=payload,
            )
        case TaskCancelled() if (
            old is not None
            and old["assignee"]
            and old["status"]
            in (
                *HELD,
                "review",
            )
        ):
            payload = {"epoch": old["claim_epoch"], "by": event.actor}
            reason = f"the task was cancelled{': ' + event.reason if event.reason else ''}"
            _tell(
                rows,
                meta,
                event,
                old["assignee"],
                "lease_lost",
                reason=reason,
                payload=payload,
            )


def _set_verdict(
    rows: Rows, task: Row, verdict: str | None, reviewer: str | None, meta: Meta
) -> None:
    """Record on the task's latest deliverable the verdict of its review (None: the review or
    the claim it approved was voided, so it waits for another)."""
    key = (task["task_id"], task["deliverable_version"])
    old = rows.get(DELIVERABLES, key)
    if old is None:
        return  # a review before any deliverable cannot apply; kept for rows before 0025
    at = meta.time if verdict else None
    rows.put(DELIVERABLES, {**old, "verdict": verdict, "reviewed_by": reviewer, "reviewed_at": at})


def _void_verdict(rows: Rows, old: Row | None, new: Row, event: Event, meta: Meta) -> None:
    """A voided review, or the voided claim whose work was approved, clears the verdict."""
    if isinstance(event, TaskReviewRefused) or (
        isinstance(event, TaskClaimRefused) and old is not None and old["status"] == "done"
    ):
        _set_verdict(rows, new, None, None, meta)


def _judge_dependencies(rows: Rows, old: Row, event: TaskDependenciesChanged, meta: Meta) -> None:
    """New dependencies must exist and be older than the task; otherwise the board puts back
    the ones the task had (they were acyclic), for every reader."""
    deps = [rows.get(TASKS, (d,)) for d in event.depends_on]
    problem = dependencies_problem(old, deps, event.depends_on)
    if problem:
        back = TaskDependenciesChanged(
            **_verdict(event), task=event.task, depends_on=tuple(old["depends_on"]),
            reason=_short(problem),
        )  # fmt: skip
        rows.emit(back, meta)


def _judge_review(rows: Rows, new: Row, event: TaskReviewed, meta: Meta) -> None:
    """An agent's review without the role is overruled; any other review reaches the author
    (``review_feedback``), and a rejection owed by a retired author goes back to the inbox."""
    task = new["task_id"]
    problem = reviewer_problem(rows.get(TASK_AGENTS, (event.actor,)), event)
    if problem:
        refused_review = TaskReviewRefused(
            **_verdict(event), task=task, agent=event.agent, reviewer=event.actor,
            review=event.id, reason=_short(problem),
        )  # fmt: skip
        rows.emit(refused_review, meta)
        new["overruled"] = event.id
        return
    author = rows.get(TASK_AGENTS, (event.agent,))
    if event.verdict == "reject" and author is not None and author["status"] == "retired":
        gone = TaskRevoked(
            **_verdict(event), task=task, agent=event.agent, epoch=new["claim_epoch"],
            reason=f"the rework is owed by {event.agent}, which is retired",
        )  # fmt: skip
        rows.emit(gone, meta)
    payload: Evidence = {
        "verdict": event.verdict, "version": new["deliverable_version"],
        "reviewer": event.actor,
    }  # fmt: skip
    _tell(
        rows,
        meta,
        event,
        event.agent,
        "review_feedback",
        reason=event.feedback,
        payload=payload,
    )


REASON_CHARS = 1000  # a verdict's or a command's reason is cut here (the contract allows 8000)


def _short(text: str) -> str:
    """``text`` cut to ``REASON_CHARS`` (a reason listing many dependency ids could outgrow
    what the contract allows, and a verdict the contract refuses would never land)."""
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


def _verdict(event: Event) -> dict[str, Any]:
    """The envelope of the board's verdict on ``event``: one id per event, whoever emits it."""
    return {"id": deterministic_id(event.id, "verdict"), "actor": BOARD, "at": event.at}


def _tell(
    rows: Rows,
    meta: Meta,
    about: Event,
    agent: str,
    command: CommandName,
    *,
    reason: str,
    payload: Evidence,
    key: str = "inbox",
) -> None:
    """Emit a durable inbox command to ``agent`` about ``about`` and its task: one per event and
    ``key`` (its id derives from both; the outbox then salts it, commit.py ``rekeyed``)."""
    rows.emit(
        CommandIssued(
            id=deterministic_id(about.id, key),
            actor=BOARD,
            at=about.at,
            agent=agent,
            command=command,
            reason=_short(reason),
            task=getattr(about, "task", None),
            payload=payload,
        ),
        meta,
    )


def _agent_lifecycle(rows: Rows, event: Event, meta: Meta) -> None:
    """What the board keeps of an agent (status, roles, limit), by the agents' state machine
    (projections/lifecycle.py), from its first lifecycle event on, as the registry does: an
    agent paused or retired before it registered is still paused or retired once it registers.
    It may claim only once registered (``registered``). Raises ``Rejected``
    (``lifecycle_forbidden``) for an agent's own event the state machine refuses, as every
    reader does: nothing changes."""
    agent = getattr(event, "agent")  # noqa: B009  # every lifecycle event has one
    old = rows.get(TASK_AGENTS, (agent,))
    life = lifecycle.Life.of(old)
    now, _ = lifecycle.step(life, event)
    row = dict(old) if old else {"agent_id": agent, "roles": [], "status": "active",
                                  "max_concurrent_tasks": 1, "held": 0, "held_tasks": [],
                                  "assigned_tasks": [], "paused_by": None,
                                  "registered_by": None, "registered": False,
                                  "team": "unassigned", "version": ""}  # fmt: skip
    if isinstance(event, AgentRegistered | AgentVersionChanged):
        row["version"] = event.version
    if isinstance(event, AgentRegistered):
        row.update(registered=True, team=event.team)
        if lifecycle.sets_limits(life, event):
            row.update(roles=list(event.roles), max_concurrent_tasks=event.max_concurrent_tasks)
    row.update(status=now.status, paused_by=now.paused_by, registered_by=now.registered_by)
    rows.put(TASK_AGENTS, row)
    if isinstance(event, AgentRetired):  # retiring ends its leases and its assignments
        for task in [*row["held_tasks"], *row["assigned_tasks"]]:
            held = rows.get(TASKS, (task,))
            if held is not None and agent in (holder(held), _assigned(held)):
                revoked = TaskRevoked(
                    **_verdict_for(event, task), task=task, agent=agent,
                    epoch=held["claim_epoch"], reason=f"agent {agent} retired",
                )  # fmt: skip
                rows.emit(revoked, meta)


def _verdict_for(event: Event, task: str) -> dict[str, Any]:
    return {"id": deterministic_id(event.id, "revoke", task), "actor": BOARD, "at": event.at}


def _count_held(rows: Rows, agent: str | None, task: str, delta: int) -> None:
    _track(rows, agent, task, "held_tasks", add=delta > 0)


def _undoable_claim(row: Row) -> str | None:
    """The current claim's event id while a verdict could still undo it, else None."""
    return row["claim_id"] if row["undo_status"] is not None else None


def _assigned(row: Row | None) -> str | None:
    """The agent a task is assigned to and not yet claimed by, or None."""
    return row["assignee"] if row is not None and row["status"] == "assigned" else None


def _track(rows: Rows, agent: str | None, task: str, column: str, *, add: bool) -> None:
    """Add ``task`` to (or take it from) ``agent``'s list ``column`` in ``TASK_AGENTS``;
    ``held`` counts ``held_tasks``."""
    if agent is None:
        return
    row = rows.get(TASK_AGENTS, (agent,))
    if row is None:
        return
    tasks = [t for t in row[column] if t != task]
    if add:
        tasks.append(task)
    changed = {**row, column: tasks}
    if column == "held_tasks":
        changed["held"] = len(tasks)
    rows.put(TASK_AGENTS, changed)


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
        "claim_id": None,
        "undo_event": None,
        "undo_status": None,
        "undo_assignee": None,
        "undo_verdict": None,
        "overruled": None,
    }


def _reject(rows: Rows, task: str, event: Event, meta: Meta, reason: str) -> None:
    """Record a task event that does not fit, and tell its sender if it is an agent."""
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
    if actor_kind(event.actor) == "agent":
        payload: Evidence = {"event": event.id, "type": type_name(type(event)), "seq": meta.seq}
        _tell(rows, meta, event, event.actor, "refused", reason=reason, payload=payload)
