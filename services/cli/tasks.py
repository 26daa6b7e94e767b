"""``fleetward tasks ...``: the operator's task commands (create, assign, reassign, revoke, deps,
review, cancel), the board view by status, and one task's story (``show``: read from its
subjects, folded by the task state machine, every event with whether it was applied). Writes
go to the bus through the client, which refuses what the board would refuse (one line, exit
2); the board is read from the projection."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from fleetward.schemas.events import Event, TaskRevoked, Verdict, type_name
from fleetward.services.cli.command import PERSON, Command, console
from fleetward.services.cli.views import show_tasks, task_cost
from fleetward.services.client import FleetClient
from fleetward.services.client.taskstate import read_task
from fleetward.services.config import Settings
from fleetward.services.db import Conn, q
from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.connect import Runtime, open_runtime

STATUSES = ("inbox", "assigned", "in_progress", "blocked", "review", "done", "cancelled")


def add_parsers(tasks: argparse.ArgumentParser) -> None:
    """``tasks`` with no action shows the board; the actions change it."""
    tasks.add_argument("--status", default=None, choices=STATUSES, help="only this status")
    tasks.add_argument("--limit", type=int, default=50)
    tasks.add_argument("--board", action="store_true", help="counts and tasks by status")
    actions = tasks.add_subparsers(dest="action", metavar="ACTION")
    show = actions.add_parser("show", help="one task: its state and every event of it, in order")
    show.add_argument("task_id")
    create = actions.add_parser("create", help="create a task")
    create.add_argument("task_id")
    create.add_argument("--project", required=True)
    create.add_argument("--title", required=True)
    create.add_argument("--description", default="")
    create.add_argument("--priority", default="medium", choices=("urgent", "high", "medium", "low"))
    create.add_argument("--depends-on", nargs="*", default=[], metavar="TASK")
    create.add_argument("--role", default=None, help="role an agent needs to claim it")
    create.add_argument("--sla", type=float, default=None, help="seconds allowed in progress")
    assign = actions.add_parser("assign", help="assign a task to an agent")
    assign.add_argument("task_id")
    assign.add_argument("agent_id")
    reassign = actions.add_parser(
        "reassign", help="give a task to another agent (a held one is taken from its holder)"
    )
    reassign.add_argument("task_id")
    reassign.add_argument("agent_id")
    reassign.add_argument("--reason", default="")
    revoke = actions.add_parser("revoke", help="take a held task back from its holder")
    revoke.add_argument("task_id")
    revoke.add_argument("--reason", default="")
    deps = actions.add_parser("deps", help="change a task's dependencies")
    deps.add_argument("task_id")
    change = deps.add_mutually_exclusive_group(required=True)
    change.add_argument("--set", nargs="*", metavar="TASK", help="depend on exactly these")
    change.add_argument("--drop", nargs="+", metavar="TASK", help="no longer depend on these")
    deps.add_argument("--reason", default="")
    review = actions.add_parser("review", help="approve or reject the latest deliverable")
    review.add_argument("task_id")
    verdict = review.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--approve", action="store_true")
    verdict.add_argument("--reject", action="store_true")
    review.add_argument("--feedback", default="")
    cancel = actions.add_parser("cancel", help="cancel a task")
    cancel.add_argument("task_id")
    cancel.add_argument("--reason", default="")


async def run(settings: Settings, args: argparse.Namespace) -> None:
    """Show the board (no action), or make the change the action names, as the operator."""
    writes = args.action not in (None, "show")
    async with open_runtime(settings, identity=PERSON, prepare=writes, pool_size=2) as rt:
        if args.action == "show":
            await show_task(rt, args.task_id)
            return
        if args.action is None:
            async with rt.pool.acquire() as conn:
                if args.board:
                    await show_board(conn, console, args)
                else:
                    await show_tasks(conn, console, args.status, args.limit)
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


async def show_task(rt: Runtime, task: str) -> None:
    """The task as the state machine folds it from its subjects, what it has cost so far (the
    spend views), and every message of its subjects (v1 history too): what it said and whether
    it was applied (``FleetwardError`` for no such task)."""
    state = await read_task(rt.nc, rt.js, task, history=True)
    if not state.history:
        raise FleetwardError(f"no task {task}")
    row = state.row
    if row is None:
        console.print(f"[bold]{task}[/bold]: never created (every event on it was refused)")
    else:
        held = f" by {row['assignee']}" if row["assignee"] else ""
        console.print(
            f"[bold]{task}[/bold] {row['title']!r} ({row['priority']}, project {row['project']}): "
            f"{row['status']}{held}, epoch {row['claim_epoch']}"
        )
        if row["depends_on"]:
            console.print(f"  depends on: {', '.join(row['depends_on'])}")
    async with rt.pool.acquire() as conn:
        console.print(f"  {await task_cost(conn, task)}")
    table = Table(box=None, header_style="bold")
    for column in ("seq", "stored", "event", "sent by", "details", "applied"):
        table.add_column(column)
    for step in state.history:
        event = step.event
        kind = type_name(type(event)) if event is not None else "(unreadable)"
        table.add_row(
            str(step.seq),
            step.time.strftime("%Y-%m-%d %H:%M:%S"),
            kind,
            event.actor if event is not None else "-",
            _details(event),
            "yes" if step.refused is None else f"[red]no[/red]: {step.refused}",
        )
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


async def show_board(conn: Conn, console: Console, args: argparse.Namespace) -> None:
    """One column per status: its count and its most urgent tasks."""
    rows = await conn.fetch(q("tasks_list"), None, 100_000)
    table = Table(*(f"{s} ({sum(1 for r in rows if r['status'] == s)})" for s in STATUSES),
                  title="task board by status")  # fmt: skip
    columns = {s: [r for r in rows if r["status"] == s][: args.limit] for s in STATUSES}
    depth = max((len(c) for c in columns.values()), default=0)
    for i in range(min(depth, 15)):
        cells = []
        for s in STATUSES:
            tasks = columns[s]
            cells.append(
                f"{tasks[i]['task_id']}" + (f" ({tasks[i]['assignee']})" if tasks[i]["assignee"]
                                            else "") if i < len(tasks) else ""
            )  # fmt: skip
        table.add_row(*cells)
    console.print(table)


TASKS = Command(
    "tasks",
    "the task board; create, assign, reassign, revoke, review, cancel tasks, change dependencies",
    add_parsers,
    run,
)
