"""What the operator CLI shows: reads of the public ``fleet`` views, rendered with rich."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from fleetward.services.db import Conn, q


def age(when: datetime | None, now: datetime | None = None) -> str:
    """'12s ago', '5m ago', '3h ago', 'never'."""
    if when is None:
        return "never"
    seconds = max(0, int(((now or datetime.now(UTC)) - when).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def counts(raw: Any) -> dict[str, int]:
    data = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    return {str(k): int(v) for k, v in data.items()}


def _keep_ids(table: Table, *columns: int) -> None:
    """Ids are what people copy from a table: never cut them short, fold them if need be."""
    for i in columns:
        table.columns[i].overflow = "fold"
        table.columns[i].min_width = 8


def _fmt(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"


def status_line(row: asyncpg.Record) -> str:
    agents, tasks = counts(row["agents"]), counts(row["tasks"])
    return (
        f"agents {sum(agents.values())} ({_fmt(agents)}) | seen in 5m {row['seen_5m']} | "
        f"tasks {sum(tasks.values())} ({_fmt(tasks)}) | spend today ${row['spend_today']:.2f} | "
        f"dead letters {row['dead_letters']} | "
        f"escalations open {row['escalations_open']} (critical {row['escalations_critical']})"
    )


async def fleet_status(conn: Conn) -> str:
    row = await conn.fetchrow(q("fleet_status"))
    assert row is not None  # an aggregate query always returns one row
    return status_line(row)


async def show_status(conn: Conn, console: Console) -> None:
    console.print(await fleet_status(conn))
    table = Table("projection", "stream", "checkpoint", "updated", title="projections")
    for r in await conn.fetch(q("projections_list")):
        table.add_row(r["projection"], r["stream"], str(r["checkpoint"]), age(r["updated_at"]))
    console.print(table)
    await show_projector_processes(conn, console)


async def show_projector_processes(conn: Conn, console: Console) -> None:
    """The projector processes alive, by durable consumer: the one that writes (holds the lease
    of its projections: services/projector/lease.py) and those standing by."""
    rows = await conn.fetch(q("lease_sessions"))
    if not rows:
        console.print("projector processes: none running")
        return
    table = Table(
        "consumer", "projections", "process", "role", "since", title="projector processes"
    )
    table.columns[2].no_wrap = True  # host and pid: what an operator looks for, on one line
    table.columns[3].no_wrap = True
    for r in rows:
        table.add_row(r["durable"], " ".join(r["projections"]), f"{r['host']} pid {r['pid']}",
                      "active" if r["active"] else "standby", age(r["since"]))  # fmt: skip
    console.print(table)


async def show_agents(conn: Conn, console: Console, limit: int) -> None:
    table = Table("agent", "team", "status", "state", "current task", "last seen", "cost today")
    _keep_ids(table, 0, 4)
    for r in await conn.fetch(q("agents_list"), limit):
        table.add_row(
            r["agent_id"],
            r["team"],
            r["status"] + ("" if r["promoted_version"] is None else ", promoted"),
            r["state"] or "-",
            r["current_task"] or "-",
            age(r["last_seen"]),
            f"${r['cost_today']:.4f}",
        )
    console.print(table)


async def show_tasks(conn: Conn, console: Console, status: str | None, limit: int) -> None:
    table = Table(
        "task",
        "project",
        "priority",
        "status",
        "assignee",
        "epoch",
        "deps open",
        "reviews",
        "cost",
        "updated",
        title="task board",
    )
    _keep_ids(table, 0, 4)
    for r in await conn.fetch(q("tasks_list"), status, limit):
        table.add_row(
            r["task_id"],
            r["project"],
            r["priority"],
            r["status"],
            r["assignee"] or "-",
            str(r["claim_epoch"]),
            "yes" if r["waiting_on_dependencies"] else "no",
            str(r["review_rounds"]),
            f"${r['cost_usd']:.4f}",
            age(r["updated_at"]),
        )
    console.print(table)


async def task_cost(conn: Conn, task: str) -> str:
    """One line: what ``task`` has cost so far (fleet.spend_tasks), model and tools apart."""
    r = await conn.fetchrow(q("task_spend"), task)
    if r is None:
        return "cost: nothing spent on it yet (spend and tool calls naming it)"
    return (
        f"cost: ${r['cost_usd']:.4f} (model ${r['model_cost_usd']:.4f}, tools "
        f"${r['tool_cost_usd']:.4f}); tokens {r['tokens_in']} in, {r['tokens_out']} out; "
        f"{r['runs']} runs, {r['tool_calls']} tool calls ({r['tool_errors']} failed)"
    )


async def show_agent(conn: Conn, console: Console, agent_id: str) -> bool:
    r = await conn.fetchrow(q("agent_detail"), agent_id)
    if r is None:
        return False
    doing = (
        f"{r['state']} on {r['current_task']}" if r["current_task"] else (r["state"] or "unknown")
    )
    util = f"{r['utilization']:.0%}" if r["utilization"] is not None else "-"
    lines = [
        f"[bold]{r['agent_id']}[/bold] {r['name']} ({r['team']}, owner {r['owner']}, "
        f"risk {r['risk_class']}, version {r['version']})",
        f"status     {r['status']}" + (f" ({r['status_reason']})" if r["status_reason"] else ""),
        f"doing now  {doing}"
        + (f" - {r['message']}" if r["message"] else "")
        + " (its last heartbeat)",
        f"holds      {', '.join(r['holds']) or 'no task'} (the task board)",
        f"last seen  {age(r['last_seen'])}"
        + (f" ({r['last_seen']:%Y-%m-%d %H:%M:%S} UTC)" if r["last_seen"] else ""),
        f"cost       ${r['cost_today']:.4f} today, ${r['cost_month']:.4f} this month, "
        f"${r['cost_total']:.4f} in all (UTC days); {r['tokens_today']} tokens today",
        f"work       {r['tasks_done'] or 0} tasks done; busy {r['busy_s'] or 0}s, "
        f"idle {r['idle_s'] or 0}s (utilization {util})",
    ]
    for line in lines:
        console.print(line)
    return True


async def show_escalations(conn: Conn, console: Console, everything: bool, limit: int) -> None:
    query = q("escalations_all") if everything else q("escalations_open")
    rows = await conn.fetch(query, limit)
    table = Table(
        "escalation",
        "tier",
        "reason",
        "about",
        "state",
        "raised",
        "message",
        title="escalations" if everything else "open escalations (critical first, oldest first)",
    )
    _keep_ids(table, 0, 3)
    for r in rows:
        about = " / ".join(x for x in (r["agent"], r["task"]) if x) or "-"
        state = r["state"] + (f" by {r['acknowledged_by']}" if r["acknowledged_by"] else "")
        table.add_row(
            r["escalation_id"],
            r["tier"],
            r["reason"],
            about,
            state,
            age(r["raised_at"]),
            r["message"],
        )
    console.print(table)
    if not rows:
        console.print("no open escalations" if not everything else "no escalations")
