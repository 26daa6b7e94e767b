"""``fleetward tasks ...``: the operator's task commands (create, assign, review, cancel) and the
board view by status. Writes go to the bus through the client; the board is read from the
projection."""

from __future__ import annotations

import argparse
import getpass
import os

from rich.console import Console
from rich.table import Table

from fleetward.schemas.events import Verdict
from fleetward.services.cli.command import Command, console
from fleetward.services.cli.views import show_tasks
from fleetward.services.client import FleetClient
from fleetward.services.config import Settings
from fleetward.services.db import Conn, q
from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.connect import open_runtime

STATUSES = ("inbox", "assigned", "in_progress", "blocked", "review", "done", "cancelled")


def operator() -> str:
    """The actor for a person at the CLI: ``user:<FLEETWARD_USER or login name>``."""
    name = os.environ.get("FLEETWARD_USER") or getpass.getuser() or "operator"
    return f"user:{name}"


def add_parsers(tasks: argparse.ArgumentParser) -> None:
    """``tasks`` with no action shows the board; the actions change it."""
    tasks.add_argument("--status", default=None, choices=STATUSES, help="only this status")
    tasks.add_argument("--limit", type=int, default=50)
    tasks.add_argument("--board", action="store_true", help="counts and tasks by status")
    actions = tasks.add_subparsers(dest="action", metavar="ACTION")
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
    async with open_runtime(settings, prepare=args.action is not None, pool_size=2) as rt:
        if args.action is None:
            async with rt.pool.acquire() as conn:
                if args.board:
                    await show_board(conn, console, args)
                else:
                    await show_tasks(conn, console, args.status, args.limit)
            return
        client = FleetClient(rt.nc, operator())
        try:
            line = await _change(client, args)
        except ValueError as exc:
            raise FleetwardError(str(exc)) from None
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
    if args.action == "review":
        verdict: Verdict = "approve" if args.approve else "reject"
        review = await client.review(task, verdict, args.feedback)
        done = "approved" if verdict == "approve" else "rejected"
        return f"{done} {task} (deliverable of {review.agent}); the verdict is in its inbox"
    await client.cancel(task, args.reason)
    return f"cancelled {task}"


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


TASKS = Command("tasks", "the task board; create, assign, review, cancel tasks", add_parsers, run)
