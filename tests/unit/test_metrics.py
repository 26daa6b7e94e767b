"""The pure parts of services/metrics: budget use, which budgets get series, and which errors
count as Postgres errors."""

from __future__ import annotations

import socket
from decimal import Decimal

import asyncpg
import nats.errors
import pytest

from fleetward.services.metrics import budgets, is_postgres_error
from fleetward.services.metrics.budgets import BudgetReading, with_series


def reading(budget: str, limit: float, spent: float, tokens: tuple[int | None, int] = (None, 0)
            ) -> BudgetReading:  # fmt: skip
    return BudgetReading(budget, "team", "day", limit, spent, tokens[0], tokens[1], "ok")


def test_budget_use_is_spent_over_limit_and_a_zero_limit_is_exhausted_by_any_spend() -> None:
    assert reading("b", 4.0, 3.0).used == 0.75
    assert reading("b", 0.0, 0.0).used == 0.0
    assert reading("b", 0.0, 0.01).used == float("inf")


def test_budget_use_is_the_greater_of_dollars_and_tokens() -> None:
    assert reading("b", 4.0, 1.0, (1000, 900)).used == 0.9
    assert reading("b", 4.0, 3.0, (1000, 100)).used == 0.75
    assert reading("b", 4.0, 0.0, (0, 0)).used == 0.0
    assert reading("b", 4.0, 0.0, (0, 1)).used == float("inf")


def test_a_budget_reads_from_its_view_row_and_a_sum_past_a_float_is_refused() -> None:
    row = {"budget_id": "b", "scope": "org", "budget_window": "month", "limit_usd": Decimal("2.5"),
           "spent_usd": Decimal("0.1"), "limit_tokens": None, "spent_tokens": Decimal(7),
           "state": "ok"}  # fmt: skip
    assert BudgetReading.of(row) == BudgetReading("b", "org", "month", 2.5, 0.1, None, 7.0, "ok")
    with pytest.raises(ValueError, match="does not fit a gauge"):
        BudgetReading.of(row | {"spent_usd": Decimal("2e308")})


def test_at_most_so_many_budgets_get_series_the_most_used_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(budgets, "MAX_BUDGET_SERIES", 3)
    many = [reading(f"b{i}", 10.0, float(i)) for i in range(6)]
    assert [b.budget for b in with_series(many)] == ["b3", "b4", "b5"]
    assert [b.budget for b in with_series(many[:2])] == ["b0", "b1"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once the socket is closed


def _raised_here() -> OSError:
    try:
        raise ConnectionRefusedError(111, "refused")
    except OSError as exc:
        return exc


async def test_postgres_errors_are_the_drivers_and_os_errors_raised_inside_it() -> None:
    try:
        await asyncpg.connect(f"postgresql://x@127.0.0.1:{_closed_port()}/x", timeout=5)
    except OSError as exc:
        refused: OSError = exc
    else:
        raise AssertionError("a connection to a closed port succeeded")
    assert is_postgres_error(refused)
    assert is_postgres_error(asyncpg.exceptions.AdminShutdownError("terminating connection"))
    assert is_postgres_error(asyncpg.ConnectionDoesNotExistError("connection was closed"))
    assert is_postgres_error(asyncpg.InterfaceError("pool is closing"))
    assert not is_postgres_error(_raised_here())  # e.g. from NATS: not Postgres's
    assert not is_postgres_error(nats.errors.TimeoutError())
    assert not is_postgres_error(ValueError("a bug"))
