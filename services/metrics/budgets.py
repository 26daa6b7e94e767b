"""Budget gauges, pure: a budget as the fleet gauges show it (a row of ``fleet.budgets`` in
floats), how much of it is used, which budgets get series of their own, and which sums a gauge
can show.

Label cardinality stays bounded: the per-budget gauges are labelled by budget id, scope kind
(agent, team, project, org) and window, never by the scope's id (an agent id would be a label
per agent), and at most ``MAX_BUDGET_SERIES`` budgets get them, the most used first. Budgets
are set by people with the role budget-admin, so they are few; the cap only keeps a mistake
(a script setting a budget per agent) from flooding Prometheus. ``fleetward_budgets{scope,
state}`` counts every budget, capped or not."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Protocol

MAX_BUDGET_SERIES: Final = 1000


class Row(Protocol):
    """A row read from Postgres (an ``asyncpg.Record``), by column name."""

    def __getitem__(self, column: str, /) -> Any: ...


@dataclass(frozen=True, slots=True)
class BudgetReading:
    """One budget of ``fleet.budgets``: limits and what its scope spent in the current window
    (USD; tokens in and out), and its state (ok, warning, exhausted)."""

    budget: str
    scope: str
    window: str
    limit_usd: float
    spent_usd: float
    limit_tokens: int | None  # None: no token limit
    spent_tokens: float
    state: str

    @property
    def used(self) -> float:
        """The greater of spent over limit in USD and (with a token limit) in tokens: the share
        the state follows. Infinite for spend against a zero limit, 0 for none."""
        used = _ratio(self.spent_usd, self.limit_usd)
        if self.limit_tokens is not None:
            used = max(used, _ratio(self.spent_tokens, self.limit_tokens))
        return used

    @classmethod
    def of(cls, row: Row) -> BudgetReading:
        """From a row of ``fleet.budgets``. ``ValueError`` when a sum is no finite float."""
        return cls(
            budget=row["budget_id"],
            scope=row["scope"],
            window=row["budget_window"],
            limit_usd=gauge_value(row["limit_usd"]),
            spent_usd=gauge_value(row["spent_usd"]),
            limit_tokens=row["limit_tokens"],
            spent_tokens=gauge_value(row["spent_tokens"]),
            state=row["state"],
        )


def _ratio(spent: float, limit: float) -> float:
    if limit > 0:
        return spent / limit
    return math.inf if spent > 0 else 0.0


def with_series(budgets: Iterable[BudgetReading]) -> list[BudgetReading]:
    """The budgets that get series of their own: at most ``MAX_BUDGET_SERIES``, the most used
    first (then by id), in budget id order."""
    ranked = sorted(budgets, key=lambda b: (-b.used, b.budget))[:MAX_BUDGET_SERIES]
    return sorted(ranked, key=lambda b: b.budget)


def gauge_value(amount: Decimal | float | int | None) -> float:
    """A sum (of USD or tokens, exact ``numeric`` from Postgres; None for no rows) as a gauge
    value. Raises ``ValueError`` when it is no finite float (e.g. a day of spends past 1.8e308)."""
    value = float(amount or 0)
    if not math.isfinite(value):
        raise ValueError(f"{amount} does not fit a gauge (a float)")
    return value
