"""``fleetward tasks ...``: the operator's task commands (create, assign, reassign, revoke, deps,
review, cancel), the board view by status, and one task's story (``show``: read from its
subjects, folded by the task state machine, every event with whether it was applied). Writes
go to the bus through the client, which refuses what the board would refuse (one line, exit
2); the board is read from the projection."""

from __future__ import annotations

import argparse

import msgspec
from rich.console import Console
from rich.table import Table

from fleetward.schemas.bounds import MAX_SLA_S, MIN_PERIOD_S
from fleetward.schemas.events import Event, TaskRevoked, Verdict, type_name
from fleetward.services.cli.args import add_json, add_limit, ident, seconds
from fleetward.services.cli.command import PERSON, Command, console
from fleetward.services.cli.output import (
    Column,
    Listing,
    Page,
    page_of,
    record,
    shown,
    write_json,
)
from fleetward.services.cli.views import TASK_BOARD, cost_line, show_tasks
from fleetward.services.client import FleetClient
from fleetward.services.client.taskstate import read_task
from fleetward.services.config import Settings
from fleetward.services.db import Conn, q
from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.connect import Runtime, open_runtime

STATUSES = ("inbox", "assigned", "in_progress", "blocked", "review", "done", "cancelled")


TASK_ID = ident("task id")
AGENT_ID = ident("agent id")


def add_parsers(tasks: argparse.ArgumentParser) -> None:
    """``tasks`` with no action shows the board; the actions change it."""
    tasks.add_argument("--status", default=None, choices=STATUSES, help="only this status")
    add_limit(tasks, 50)
    tasks.add_argument("--board", action="store_true", help="counts and tasks by status")
    add_json(tasks, "{status, rows, total, truncated} (--board: {statuses: {STATUS: {rows, "
             "total, truncated}}})")  # fmt: skip
    actions = tasks.add_subparsers(dest="action", metavar="ACTION", help="none: show the board")
    show = actions.add_parser("show", help="one task: its state and every event of it, in order")
    show.add_argument("task_id", type=TASK_ID, help="the task's id")
    add_json(show, "{task, cost, history}", nested=True)
    create = actions.add_parser("create", help="create a task")
    create.add_argument("task_id", type=TASK_ID, help="the new task's id")
    create.add_argument("--project", required=True, type=ident("project id"),
                        help="the project it belongs to")  # fmt: skip
    create.add_argument("--title", required=True, help="one line, for people")
    create.add_argument("--description", default="", help="what is to be done")
    create.add_argument("--priority", default="medium", choices=("urgent", "high", "medium", "low"),
                        help="how urgent (default: medium)")  # fmt: skip
    create.add_argument("--depends-on", nargs="*", default=[], metavar="TASK", type=TASK_ID,
                        help="tasks that must be done first (they must exist)")  # fmt: skip
    create.add_argument("--role", default=None, help="role an agent needs to claim it")
    create.add_argument("--sla", type=seconds(MIN_PERIOD_S, MAX_SLA_S), default=None,
                        metavar="SECONDS", help="seconds allowed in progress")  # fmt: skip
    assign = actions.add_parser("assign", help="assign a task to an agent")
    assign.add_argument("task_id", type=TASK_ID, help="the task's id")
    assign.add_argument("agent_id", type=AGENT_ID, help="the agent to do it")
    reassign = actions.add_parser(
        "reassign", help="give a task to another agent (a held one is taken from its holder)"
    )
    reassign.add_argument("task_id", type=TASK_ID, help="the task's id")
    reassign.add_argument("agent_id", type=AGENT_ID, help="the agent to do it now")
    reassign.add_argument("--reason", default="", help="why, for the record and the agents")
    revoke = actions.add_parser("revoke", help="take a held task back from its holder")
    revoke.add_argument("task_id", type=TASK_ID, help="the task's id")
    revoke.add_argument("--reason", default="", help="why, for the record and the holder")
    deps = actions.add_parser("deps", help="change a task's dependencies")
    deps.add_argument("task_id", type=TASK_ID, help="the task's id")
    change = deps.add_mutually_exclusive_group(required=True)
    change.add_argument("--set", nargs="*", metavar="TASK", type=TASK_ID,
                        help="depend on exactly these")  # fmt: skip
    change.add_argument("--drop", nargs="+", metavar="TASK", type=TASK_ID,
                        help="no longer depend on these")  # fmt: skip
    deps.add_argument("--reason", default="", help="why, for the record")
    review = actions.add_parser("review", help="approve or reject the latest deliverable")
    review.add_argument("task_id", type=TASK_ID, help="the task's id")
    verdict = review.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--approve", action="store_true", help="accept it: the task is done")
    verdict.add_argument("--reject", action="store_true", help="send it back to its author")
    review.add_argument("--feedback", default="", help="what the author should know")
    cancel = actions.add_parser("cancel", help="cancel a task")
    cancel.add_argument("task_id", type=TASK_ID, help="the task's id")
    cancel.add_argument("--reason", default="", help="why, for the record")


async def run(settings: Settings, args: argparse.Namespace) -> None:
    """Show the board (no action), or make the change the action names, as the operator."""
    writes = args.action not in (None, "show")
    async with open_runtime(settings, identity=PERSON, prepare=writes, pool_size=2) as rt:
        if args.action == "show":
            await show_task(rt, args.task_id, args.json)
            return
        if args.action is None:
            async with rt.pool.acquire() as conn:
                if args.board:
                    await show_board(conn, console, args.limit, args.json)
                else:
                    await show_tasks(conn, console, args.status, args.limit, args.json)
            return
        line = await _change(FleetClient(rt.nc, rt.actor), args)
    console.print(line)


async def _change(client: FleetClient, args: argparse.Namespace) -> str:
    task = args.task_id
    if args.action == "create":
        await client.create_task(
            task,
            project=args.project,
            title=args.title,
            description=args.description,
            priority=args.priority,
            depends_on=args.depends_on,
            required_role=args.role,
            sla_s=args.sla,
        )
        return f"created {task} ({args.priority}) in {args.project}"
    if args.action == "assign":
        await client.assign(task, args.agent_id)
        return f"assigned {task} to {args.agent_id}"
    if args.action == "reassign":
        moved = await client.reassign(task, args.agent_id, args.reason)
        if isinstance(moved, TaskRevoked):
            return (
                f"reassigned {task} from {moved.agent} (epoch {moved.epoch}) to {moved.assign_to}"
            )
        return f"assigned {task} to {args.agent_id}"
    if args.action == "revoke":
        revoked = await client.revoke(task, args.reason)
        return f"revoked {task} from {revoked.agent} (epoch {revoked.epoch})"
    if args.action == "deps":
        if args.drop:
            changed = await client.drop_dependencies(task, args.drop, args.reason)
        else:
            changed = await client.set_dependencies(task, args.set, args.reason)
        return f"{task} now depends on {', '.join(changed.depends_on) or 'nothing'}"
    if args.action == "review":
        verdict: Verdict = "approve" if args.approve else "reject"
        review = await client.review(task, verdict, args.feedback)
        done = "approved" if verdict == "approve" else "rejected"
        return f"{done} {task} (deliverable of {review.agent}); the verdict is in its inbox"
    await client.cancel(task, args.reason)
    return f"cancelled {task}"


HISTORY = Listing(
    None,
    (Column("seq"), Column("stored", lambda r: f"{r['stored']:%Y-%m-%d %H:%M:%S}"),
     Column("type"), Column("actor"), Column("details"),
     Column("applied", lambda r: "yes" if r["applied"] else shown(("no", "red"),
                                                                   f": {r['refused']}"))),
)  # fmt: skip


async def show_task(rt: Runtime, task: str, as_json: bool = False) -> None:
    """The task as the state machine folds it from its subjects, what it has cost so far (the
    spend views), and every message of its subjects (v1 history too): what it said and whether
    it was applied (``FleetwardError`` for no such task). JSON: ``{task (its fleet.tasks row, or
    null when never created), cost (its fleet.spend_tasks row, or null), history: [{seq,
    stored, type, actor, details, applied, refused, event}]}``."""
    state = await read_task(rt.nc, rt.js, task, history=True)
    if not state.history:
        raise FleetwardError(f"no task {task}")
    async with rt.pool.acquire() as conn:
        spent = await conn.fetchrow(q("task_spend"), task)
    history = [
        {
            "seq": step.seq,
            "stored": step.time,
            "type": type_name(type(step.event)) if step.event is not None else None,
            "actor": step.event.actor if step.event is not None else None,
            "details": _details(step.event),
            "applied": step.refused is None,
            "refused": step.refused,
            "event": msgspec.to_builtins(step.event) if step.event is not None else None,
        }
        for step in state.history
    ]
    row = state.row
    if as_json:
        write_json({"task": None if row is None else record(row),
                    "cost": None if spent is None else record(spent),
                    "history": [record(h) for h in history]})  # fmt: skip
        return
    if row is None:
        console.print(shown((task, "bold"), ": never created (every event on it was refused)"))
    else:
        held = f" by {row['assignee']}" if row["assignee"] else ""
        console.print(shown(
            (task, "bold"),
            f" {row['title']!r} ({row['priority']}, project {row['project']}): "
            f"{row['status']}{held}, epoch {row['claim_epoch']}",
        ))  # fmt: skip
        if row["depends_on"]:
            console.print(shown(f"  depends on: {', '.join(row['depends_on'])}"))
    console.print(f"  {cost_line(spent)}")
    table = HISTORY.table(page_of(history))
    table.box, table.header_style = None, "bold"
    console.print(table)


def _details(event: Event | None) -> str:
    """The fields of a task event worth a glance (agent, epoch, reasons, verdicts)."""
    if event is None:
        return ""
    parts = []
    for name in ("agent", "epoch", "assign_to", "verdict", "reason", "feedback", "note"):
        value = getattr(event, name, None)
        if value not in (None, ""):
            parts.append(f"{name}={value}")
    deps = getattr(event, "depends_on", None)
    if deps:
        parts.append(f"depends_on={','.join(deps)}")
    return " ".join(parts)[:120]


BOARD_DEPTH = 15  # tasks a status shows at most in the board's table (--json: --limit)


async def show_board(conn: Conn, console: Console, limit: int, as_json: bool) -> None:
    """One column per status: its count and its most urgent tasks (at most ``limit``, and
    ``BOARD_DEPTH`` in a table). JSON: ``{statuses: {STATUS: {rows, total, truncated}}}``."""
    rows = await conn.fetch(q("tasks_list"), None, None)
    depth = limit if as_json else min(limit, BOARD_DEPTH)
    pages = {s: Page(found[:depth], len(found), depth) for s in STATUSES
             for found in [[r for r in rows if r["status"] == s]]}  # fmt: skip
    if as_json:
        write_json({"statuses": {s: TASK_BOARD.json(p) for s, p in pages.items()}})
        return
    table = Table(*(f"{s} ({p.total})" for s, p in pages.items()), title="task board by status")
    for i in range(max(len(p.rows) for p in pages.values())):
        cells = []
        for p in pages.values():
            task = p.rows[i] if i < len(p.rows) else None
            held = f" ({task['assignee']})" if task is not None and task["assignee"] else ""
            cells.append(shown("" if task is None else f"{task['task_id']}{held}"))
        table.add_row(*cells)
    console.print(table)
    if any(p.truncated for p in pages.values()):
        console.print(f"showing the first {depth} of each status (--limit N, at most "
                      f"{BOARD_DEPTH} here; --json for more)")  # fmt: skip


TASKS = Command(
    "tasks",
    "the task board; create, assign, reassign, revoke, review, cancel tasks, change dependencies",
    add_parsers,
    run,
)
