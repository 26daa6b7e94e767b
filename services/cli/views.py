"""What the operator CLI shows of the fleet: reads of the public ``fleet`` views, as tables or
JSON (``output.py``)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
from rich.console import Console
from rich.text import Text

from fleetward.services.cli.output import (
    Column,
    Listing,
    Row,
    fetch_page,
    page_of,
    record,
    show,
    show_one,
    shown,
    write_json,
)
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
    """The one-line fleet summary ``make run`` prints every few seconds."""
    row = await conn.fetchrow(q("fleet_status"))
    assert row is not None  # an aggregate query always returns one row
    return status_line(row)


PROJECTIONS = Listing(
    "projections",
    (Column("projection"), Column("stream"), Column("checkpoint"),
     Column("updated_at", lambda r: age(r["updated_at"]))),
)  # fmt: skip
PROCESSES = Listing(
    "projector processes",
    (Column("durable"), Column("projections", lambda r: " ".join(r["projections"])),
     Column("process", lambda r: f"{r['host']} pid {r['pid']}"),
     Column("active", lambda r: "active" if r["active"] else "standby"),
     Column("since", lambda r: age(r["since"]))),
    empty="no projector process running",
    fields=("durable", "projections", "host", "pid", "active", "since"),
)  # fmt: skip


async def show_status(conn: Conn, console: Console, as_json: bool) -> None:
    """The fleet summary, each projection's checkpoint, and the projector processes alive, by
    durable consumer: the one that writes (holds the lease of its projections:
    services/projector/lease.py) and those standing by. JSON: ``{summary, projections,
    processes}``."""
    summary = await conn.fetchrow(q("fleet_status"))
    assert summary is not None  # an aggregate query always returns one row
    checkpoints = page_of(await conn.fetch(q("projections_list")))
    processes = page_of(await conn.fetch(q("lease_sessions")))
    if as_json:
        fields = {**dict(summary.items()), "agents": counts(summary["agents"]),
                  "tasks": counts(summary["tasks"])}  # fmt: skip
        write_json({"summary": record(fields),
                    "projections": PROJECTIONS.json(checkpoints)["rows"],
                    "processes": PROCESSES.json(processes)["rows"]})  # fmt: skip
        return
    console.print(status_line(summary))
    show(console, PROJECTIONS, checkpoints, False)
    table = PROCESSES.table(processes)
    table.columns[2].no_wrap = True  # host and pid: what an operator looks for, on one line
    console.print(table if processes.rows else "projector processes: none running")


async def show_projections(conn: Conn, console: Console, as_json: bool) -> None:
    """Each projection's checkpoint (``fleet.projections``)."""
    show(console, PROJECTIONS, page_of(await conn.fetch(q("projections_list"))), as_json)


AGENTS = Listing(
    "agents (by cost today)",
    (Column("agent_id", whole=True), Column("team"),
     Column("status", lambda r: r["status"] + ("" if r["promoted_version"] is None
                                              else ", promoted")),
     Column("state"), Column("current_task", whole=True),
     Column("last_seen", lambda r: age(r["last_seen"])),
     Column("cost_today", lambda r: f"${r['cost_today']:.4f}")),
    empty="no agents in the registry",
)  # fmt: skip


async def show_agents(conn: Conn, console: Console, limit: int, as_json: bool) -> None:
    """The registry (``fleet.agents`` with ``fleet.utilization`` and today's spend), the most
    spent today first, at most ``limit`` rows."""
    show(console, AGENTS, await fetch_page(conn, "agents_list", limit=limit), as_json)


TASK_BOARD = Listing(
    "task board",
    (Column("task_id", whole=True), Column("project"), Column("priority"), Column("status"),
     Column("assignee", whole=True), Column("claim_epoch"),
     Column("waiting_on_dependencies", lambda r: "yes" if r["waiting_on_dependencies"]
            else "no"),
     Column("review_rounds"), Column("cost_usd", lambda r: f"${r['cost_usd']:.4f}"),
     Column("updated_at", lambda r: age(r["updated_at"]))),
    empty="no tasks",
)  # fmt: skip


async def show_tasks(
    conn: Conn, console: Console, status: str | None, limit: int, as_json: bool
) -> None:
    """The task board (``fleet.tasks``), open tasks first by priority then age, of one
    ``status`` (None: all), at most ``limit`` rows."""
    page = await fetch_page(conn, "tasks_list", status, limit=limit)
    show(console, TASK_BOARD, page, as_json, {"status": status})


def cost_line(r: Row | None) -> str:
    """One line: what a task has cost so far (its ``task_spend`` row), model and tools apart."""
    if r is None:
        return "cost: nothing spent on it yet (spend and tool calls naming it)"
    return (
        f"cost: ${r['cost_usd']:.4f} (model ${r['model_cost_usd']:.4f}, tools "
        f"${r['tool_cost_usd']:.4f}); tokens {r['tokens_in']} in, {r['tokens_out']} out; "
        f"{r['runs']} runs, {r['tool_calls']} tool calls ({r['tool_errors']} failed)"
    )


async def show_agent(conn: Conn, console: Console, agent_id: str, as_json: bool) -> bool:
    """One agent in full (``agent_detail``: ``fleet.agents``, its utilization and spend);
    False when the registry has no such agent."""
    r = await conn.fetchrow(q("agent_detail"), agent_id)
    if r is None:
        return False
    doing = (
        f"{r['state']} on {r['current_task']}" if r["current_task"] else (r["state"] or "unknown")
    )
    util = f"{r['utilization']:.0%}" if r["utilization"] is not None else "-"
    lines: list[str | Text] = [
        shown(
            (r["agent_id"], "bold"),
            f" {r['name']} ({r['team']}, owner {r['owner']}, "
            f"risk {r['risk_class']}, version {r['version']})",
        ),
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
    show_one(console, r, lines, as_json)
    return True


def _escalation_state(r: Row) -> str:
    return str(r["state"]) + (f" by {r['acknowledged_by']}" if r["acknowledged_by"] else "")


ESCALATIONS = Listing(
    "open escalations (critical first, oldest first)",
    (Column("escalation_id", whole=True), Column("tier"), Column("reason"),
     Column("agent_id", whole=True), Column("task_id", whole=True),
     Column("state", _escalation_state), Column("raised_at", lambda r: age(r["raised_at"])),
     Column("message")),
    empty="no open escalations",
)  # fmt: skip
EVERY_ESCALATION = replace(ESCALATIONS, title="escalations", empty="no escalations")


async def show_escalations(
    conn: Conn, console: Console, everything: bool, limit: int, as_json: bool
) -> None:
    """The open escalations (``fleet.escalations_open``), or ``everything`` (resolved too), at
    most ``limit`` rows."""
    query = "escalations_all" if everything else "escalations_open"
    page = await fetch_page(conn, query, limit=limit)
    show(console, EVERY_ESCALATION if everything else ESCALATIONS, page, as_json)
