"""Spend attributed: per model and day, per task and day, per run (part of the projection
``spend``, which folds them beside its per agent, team and day rows). Pure.

- A spend (``spend.recorded``) or tool call (``tool.called``) counts for the task and the run it
  names (its ``task``, ``run``); one that names no task counts for no task, and so for no
  project, one that names no run for no run. A task's project is not kept here: the views join
  the task board's (``fleet.tasks.project``, from the task's ``task.created``), so spend on a task
  the board does not know shows under no project.
- Model rows hold what ``spend.recorded`` reports (tool calls name no model).
- Every key comes from the event and its stream day alone (``keys``), so the rows a batch adds
  to are known before it is folded, however the events are batched. The keys are coarse (a
  model's day, a task's day, a run) so that a batch's many events of one model, task or run
  fold into one row write.
- Days are UTC days of the stream's time of record; money is exact (``money.add_money``).
- A run also keeps its latency (ms, its last ``run.finished``'s) and the time its tool calls
  took (ms, the exact sum of their ``duration_ms``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal

from fleetward.projections.base import Key, Meta, Row, Rows, Table
from fleetward.projections.money import add_exact, money
from fleetward.schemas.events import RunFinished, RunStarted, SpendRecorded, ToolCalled

Activity = SpendRecorded | ToolCalled | RunStarted | RunFinished

SPEND_MODEL_DAILY = Table(
    name="fleetward.spend_model_daily",
    key=("model", "day"),
    key_types=("text", "date"),
    columns=("model", "day", "cost_usd", "tokens_in", "tokens_out", "spend_events"),
)

SPEND_TASK_DAILY = Table(
    name="fleetward.spend_task_daily",
    key=("task_id", "day"),
    key_types=("text", "date"),
    columns=(
        "task_id",
        "day",
        "model_cost_usd",
        "tool_cost_usd",
        "tokens_in",
        "tokens_out",
        "runs",
        "tool_calls",
        "tool_errors",
        "spend_events",
    ),
)

SPEND_RUNS = Table(
    name="fleetward.spend_runs",
    key=("agent_id", "run_id"),
    key_types=("text", "text"),
    columns=(
        "agent_id",
        "run_id",
        "task_id",
        "started_at",
        "finished_at",
        "outcome",
        "model_cost_usd",
        "tool_cost_usd",
        "tokens_in",
        "tokens_out",
        "tool_calls",
        "tool_errors",
        "spend_events",
        "latency_ms",
        "tool_ms",
    ),
)

TABLES = (SPEND_MODEL_DAILY, SPEND_TASK_DAILY, SPEND_RUNS)


def keys(event: Activity, meta: Meta) -> Iterator[tuple[Table, Key]]:
    """The attribution rows ``attribute`` adds ``event`` to."""
    day = meta.time.date()
    if isinstance(event, SpendRecorded):
        yield SPEND_MODEL_DAILY, (event.model, day)
    if event.task is not None and not isinstance(event, RunFinished):
        yield SPEND_TASK_DAILY, (event.task, day)
    if event.run is not None:
        yield SPEND_RUNS, (event.agent, event.run)


def attribute(rows: Rows, event: Activity, meta: Meta, cost: Decimal) -> None:
    """Add ``event`` to its model's day, its task's day and its run; ``cost`` is its
    ``cost_usd`` as ``money`` (0 for a run's start or end)."""
    day = meta.time.date()
    if isinstance(event, SpendRecorded):
        old = rows.get(SPEND_MODEL_DAILY, (event.model, day))
        model = dict(old) if old else _model_day(event.model, day)
        model["cost_usd"] = add_exact(model["cost_usd"], cost)
        model["tokens_in"] += event.tokens_in
        model["tokens_out"] += event.tokens_out
        model["spend_events"] += 1
        rows.put(SPEND_MODEL_DAILY, model)
    if event.task is not None and not isinstance(event, RunFinished):
        old = rows.get(SPEND_TASK_DAILY, (event.task, day))
        task = dict(old) if old else _task_day(event.task, day)
        add_sums(task, event, cost)
        task["runs"] += 1 if isinstance(event, RunStarted) else 0
        rows.put(SPEND_TASK_DAILY, task)
    if event.run is not None:
        old = rows.get(SPEND_RUNS, (event.agent, event.run))
        run = dict(old) if old else _run(event.agent, event.run)
        add_sums(run, event, cost)
        if run["task_id"] is None:
            run["task_id"] = event.task  # the run's task: its start's, else the first named
        if isinstance(event, RunStarted) and run["started_at"] is None:
            run["started_at"] = meta.time
        elif isinstance(event, RunFinished):
            run["finished_at"], run["outcome"] = meta.time, event.outcome
            run["latency_ms"] = money(event.latency_ms)
        elif isinstance(event, ToolCalled):
            run["tool_ms"] = add_exact(run["tool_ms"], money(event.duration_ms))
        rows.put(SPEND_RUNS, run)


def add_sums(row: Row, event: Activity, cost: Decimal) -> None:
    """Add the cost (``cost``: its ``cost_usd`` as ``money``), tokens and calls of a spend or a
    tool call to a row that sums them (an agent's day, a task's day, a run)."""
    match event:
        case SpendRecorded():
            row["model_cost_usd"] = add_exact(row["model_cost_usd"], cost)
            row["tokens_in"] += event.tokens_in
            row["tokens_out"] += event.tokens_out
            row["spend_events"] += 1
        case ToolCalled():
            row["tool_cost_usd"] = add_exact(row["tool_cost_usd"], cost)
            row["tool_calls"] += 1
            row["tool_errors"] += 0 if event.ok else 1


def _sums() -> Row:
    return {
        "model_cost_usd": Decimal(0),
        "tool_cost_usd": Decimal(0),
        "tokens_in": 0,
        "tokens_out": 0,
        "tool_calls": 0,
        "tool_errors": 0,
        "spend_events": 0,
    }


def _model_day(model: str, day: date) -> Row:
    return {"model": model, "day": day, "cost_usd": Decimal(0), "tokens_in": 0, "tokens_out": 0,
            "spend_events": 0}  # fmt: skip


def _task_day(task: str, day: date) -> Row:
    return {"task_id": task, "day": day, "runs": 0, **_sums()}


def _run(agent: str, run: str) -> Row:
    return {"agent_id": agent, "run_id": run, "task_id": None, "started_at": None,
            "finished_at": None, "outcome": None, "latency_ms": None, "tool_ms": Decimal(0),
            **_sums()}  # fmt: skip
