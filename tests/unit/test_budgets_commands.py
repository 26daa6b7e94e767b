"""The budgets and commands projections' folds, and the invariant they complete: every subject
of every stream is read by a projection, so nothing published on a Fleetward subject escapes
the dead letters (issue 11, item 6)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from fleetward.projections import ALL
from fleetward.projections.budgets import BUDGETS, Budgets
from fleetward.projections.commands import COMMANDS, Commands
from fleetward.schemas.events import BudgetSet, CommandIssued, CommandName
from fleetward.schemas.streams import StreamSpec, all_streams
from tests.unit.test_projections import SVC, T0, USER, Fold, env


def budget_set(limit: float, budget: str = "b1", **fields: Any) -> BudgetSet:
    defaults: dict[str, Any] = {"scope": "team", "scope_id": "docs", "window": "month"}
    return BudgetSet(**env(USER), budget=budget, limit_usd=limit, **(defaults | fields))


def test_a_budget_is_its_latest_set_and_keeps_when_it_was_first_set() -> None:
    fold = Fold(Budgets())
    first = fold(budget_set(10.1))
    assert fold.row(BUDGETS, "b1")["reserved_usd"] == 0  # until reservations exist
    fold.rows.put(BUDGETS, fold.row(BUDGETS, "b1") | {"reserved_usd": Decimal("2.5")})
    later = fold(budget_set(1e308, scope="org", scope_id="acme", window="day", warn_at=0.5,
                            limit_tokens=10**15))  # fmt: skip
    fold(budget_set(3.0, budget="b2", scope="project", scope_id="alpha"))
    row = fold.row(BUDGETS, "b1")
    assert row == {
        "budget_id": "b1", "scope": "org", "scope_id": "acme", "budget_window": "day",
        "limit_usd": Decimal("1e308"), "limit_tokens": 10**15, "warn_at": 0.5,
        "reserved_usd": Decimal("2.5"),  # what a reservation holds outlives a new limit
        "set_by": USER, "set_at": later.time, "created_at": first.time, "last_seq": later.seq,
    }  # fmt: skip
    b2 = fold.row(BUDGETS, "b2")
    assert (b2["scope"], b2["limit_usd"], b2["limit_tokens"]) == ("project", Decimal("3.0"), None)
    assert b2["created_at"] > T0


def command(name: CommandName = "pause", agent: str = "agent-7") -> CommandIssued:
    return CommandIssued(**env(SVC), agent=agent, command=name, reason="r", task="t1",
                         payload={"escalation": "e1", "n": 2**63})  # fmt: skip


def test_each_command_is_kept_once_as_first_delivered() -> None:
    fold = Fold(Commands())
    pause = command("pause")
    first = fold(pause)
    fold(pause)  # the same event again (republished after the duplicate window)
    fold(command("resume"))
    rows = fold.table(COMMANDS)
    assert len(rows) == 2
    row = rows[(pause.id,)]
    assert row == {
        "command_id": pause.id, "agent": "agent-7", "command": "pause", "reason": "r",
        "task": "t1", "payload": '{"escalation":"e1","n":9223372036854775808}',
        "issued_by": SVC, "issued_at": first.time, "seq": first.seq,
    }  # fmt: skip


@pytest.mark.parametrize("stream", all_streams(), ids=lambda s: s.name)
def test_every_subject_of_every_stream_is_read_by_a_projection(stream: StreamSpec) -> None:
    """The projector reads, admits and dead-letters only what a projection reads: a subject
    no projection reads would keep whatever is published there out of the dead letters."""
    for subject in stream.subjects:
        readers = [p.name for p in ALL if p.stream == stream.name and subject in p.subjects]
        assert readers, f"no projection reads {subject} of {stream.name}"
