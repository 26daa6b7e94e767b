"""Spend attributed per model and day, per task and day, and per run (projections/attribution.py,
folded by the projection ``spend``): exact sums against hand-computed decimals, keys known before
a batch is folded, and a batched fold equal to one fold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext
from typing import Any

from fleetward.projections.attribution import (
    SPEND_MODEL_DAILY,
    SPEND_RUNS,
    SPEND_TASK_DAILY,
    keys,
)
from fleetward.projections.base import Meta
from fleetward.projections.spend import SPEND_DAILY, UNASSIGNED, Spend
from fleetward.schemas.events import Event, RunFinished, RunStarted, SpendRecorded, ToolCalled
from fleetward.schemas.subjects import subject_of
from tests.unit.test_projections import AGENT, OTHER, T0, Fold, env, fold_at_once, fold_in_batches


def spend(cost: float, model: str = "small-1", agent: str = AGENT, **fields: Any) -> SpendRecorded:
    return SpendRecorded(**env(agent), agent=agent, model=model, cost_usd=cost, **fields)


def tool(cost: float, agent: str = AGENT, ok: bool = True, **fields: Any) -> ToolCalled:
    return ToolCalled(**env(agent), agent=agent, tool="web.search", duration_ms=3.0, ok=ok,
                      cost_usd=cost, **fields)  # fmt: skip


def started(run: str, agent: str = AGENT, task: str | None = None) -> RunStarted:
    return RunStarted(**env(agent), agent=agent, run=run, task=task)


def finished(run: str, agent: str = AGENT, outcome: Any = "succeeded") -> RunFinished:
    return RunFinished(**env(agent), agent=agent, run=run, outcome=outcome, latency_ms=9.0)


def test_spend_is_attributed_to_its_model_task_and_run_in_exact_sums() -> None:
    fold = Fold(Spend())
    start = fold(started("r1", task="t1"))
    fold(spend(0.1, tokens_in=100, tokens_out=10, run="r1", task="t1"))
    fold(spend(0.2, model="large-2", tokens_in=7, run="r1", task="t1"))
    fold(tool(0.0003, run="r1", task="t1"))
    fold(tool(0.0007, ok=False, run="r1", task="t1"))
    end = fold(finished("r1", outcome="failed"))
    fold(spend(1 / 3, run="r2"))  # a run with no task: no task row
    fold(spend(0.7, agent=OTHER, task="t1"))  # another agent on t1, in no run
    fold(spend(5e-324))  # neither task nor run: its model's day only
    day = T0.date()

    with localcontext(Context(prec=1000)):  # wide enough that the hand sum is exact too
        small_cost = Decimal("0.1") + Decimal("0.3333333333333333") + Decimal("0.7")
        small_cost += Decimal("5E-324")
    assert small_cost != Decimal("0.1") + Decimal("0.3333333333333333") + Decimal("0.7")
    small = fold.row(SPEND_MODEL_DAILY, "small-1", day)
    assert small == {"model": "small-1", "day": day, "cost_usd": small_cost,
                     "tokens_in": 100, "tokens_out": 10, "spend_events": 4}  # fmt: skip
    assert fold.row(SPEND_MODEL_DAILY, "large-2", day)["cost_usd"] == Decimal("0.2")

    task = fold.row(SPEND_TASK_DAILY, "t1", day)
    assert task == {"task_id": "t1", "day": day, "model_cost_usd": Decimal("1.0"),
                    "tool_cost_usd": Decimal("0.0010"), "tokens_in": 107, "tokens_out": 10,
                    "runs": 1, "tool_calls": 2, "tool_errors": 1,
                    "spend_events": 3}  # fmt: skip
    assert set(fold.table(SPEND_TASK_DAILY)) == {("t1", day)}

    run = fold.row(SPEND_RUNS, AGENT, "r1")
    assert run == {"agent_id": AGENT, "run_id": "r1", "task_id": "t1",
                   "started_at": start.time, "finished_at": end.time, "outcome": "failed",
                   "model_cost_usd": Decimal("0.3"), "tool_cost_usd": Decimal("0.0010"),
                   "tokens_in": 107, "tokens_out": 10, "tool_calls": 2, "tool_errors": 1,
                   "spend_events": 2,
                   # the run.finished's latency; two tool calls of 3.0 ms each
                   "latency_ms": Decimal("9.0"), "tool_ms": Decimal("6.0")}  # fmt: skip
    r2 = fold.row(SPEND_RUNS, AGENT, "r2")
    assert (r2["task_id"], r2["started_at"], r2["outcome"]) == (None, None, None)
    assert (r2["latency_ms"], r2["tool_ms"]) == (None, Decimal(0))  # never finished, no tools
    assert set(fold.table(SPEND_RUNS)) == {(AGENT, "r1"), (AGENT, "r2")}

    # the per agent rows hold the same money: attribution is another cut of it, not more
    agents = fold.table(SPEND_DAILY)
    total = sum((r["model_cost_usd"] + r["tool_cost_usd"] for r in agents.values()), Decimal(0))
    models = sum((r["cost_usd"] for r in fold.table(SPEND_MODEL_DAILY).values()), Decimal(0))
    assert total == models + Decimal("0.0010")
    assert fold.row(SPEND_DAILY, OTHER, day, UNASSIGNED)["model_cost_usd"] == Decimal("0.7")


def test_a_run_takes_the_first_task_named_and_keeps_its_start() -> None:
    fold = Fold(Spend())
    fold(spend(1.0, run="r1", task="t9"))  # spend before its run.started: the task is known
    first = fold(started("r1", task="t1"))
    fold(started("r1", task="t2"))  # the id again: the first start and task stay
    fold(finished("r1"))
    again = fold(finished("r1", outcome="cancelled"))
    run = fold.row(SPEND_RUNS, AGENT, "r1")
    assert (run["task_id"], run["started_at"]) == ("t9", first.time)
    assert (run["finished_at"], run["outcome"]) == (again.time, "cancelled")
    # each run.started naming a task counts as a run of it
    assert fold.row(SPEND_TASK_DAILY, "t1", T0.date())["runs"] == 1
    assert fold.row(SPEND_TASK_DAILY, "t2", T0.date())["runs"] == 1


def test_days_are_the_stream_times_utc_days() -> None:
    fold = Fold(Spend())
    late = datetime(2025, 3, 14, 23, 59, 59, tzinfo=UTC)
    fold(spend(1.5, task="t1", run="r1"), at=late)
    fold(spend(2.5, task="t1", run="r1"), at=late + timedelta(seconds=2))
    next_day = (late + timedelta(days=1)).date()
    tasks = fold.table(SPEND_TASK_DAILY)
    assert {k: r["model_cost_usd"] for k, r in tasks.items()} == {
        ("t1", late.date()): Decimal("1.5"),
        ("t1", next_day): Decimal("2.5"),
    }
    assert set(fold.table(SPEND_MODEL_DAILY)) == {("small-1", late.date()), ("small-1", next_day)}
    assert fold.row(SPEND_RUNS, AGENT, "r1")["model_cost_usd"] == Decimal("4.0")


def test_every_attribution_key_is_known_from_the_event_alone() -> None:
    """``keys`` names exactly the rows ``apply`` adds an event to, so the projector loads them
    before folding, whatever else the batch holds."""
    events: list[Event] = [
        started("r1", task="t1"), spend(0.5, run="r1", task="t1"), tool(0.1, run="r1"),
        finished("r1"), spend(0.2), tool(0.3, task="t2"), started("r2"),
    ]  # fmt: skip
    for event in events:
        fold = Fold(Spend())
        meta = fold(event)
        written = {(t.name, k) for t in (SPEND_MODEL_DAILY, SPEND_TASK_DAILY, SPEND_RUNS)
                   for k in fold.table(t)}  # fmt: skip
        assert written == {(t.name, k) for t, k in keys(event, meta)}, event  # type: ignore[arg-type]


def test_batches_fold_to_the_rows_of_one_fold() -> None:
    events: list[Event] = []
    for n in range(40):
        run, task = f"r{n % 7}", f"t{n % 5}"
        events += [started(run, task=task), spend(0.01 * n, run=run, task=task, tokens_in=n),
                   tool(0.001, run=run, task=task, ok=n % 3 > 0), finished(run)]  # fmt: skip
    items = [(e, Meta(i, T0 + timedelta(hours=i), subject_of(e))) for i, e in enumerate(events, 1)]
    whole = fold_at_once(Spend(), items)
    for size in (1, 3, 16, 1000):
        assert fold_in_batches(Spend(), items, lambda s=size: s) == whole, size
    assert len({day for _, day in whole[SPEND_TASK_DAILY.name]}) > 2
