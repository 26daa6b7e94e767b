"""Budget rules, pure: which UTC days a budget window counts, the tightest team budget per
window, how much of it a team has used, and which sums of money a gauge can show."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from fleetward.schemas.events import BudgetSet


@dataclass(frozen=True, slots=True)
class TeamBudget:
    """The tightest team budget of one window, and the team's spend in that window so far."""

    team: str
    window: str
    limit_usd: float
    spent_usd: float

    @property
    def used(self) -> float:
        """Spend over limit; infinite for spend against a zero limit."""
        if self.limit_usd > 0:
            return self.spent_usd / self.limit_usd
        return float("inf") if self.spent_usd > 0 else 0.0


def window_start(window: str, today: date) -> date:
    """The first UTC day a budget window counts (the spend projection keeps UTC days)."""
    if window == "day":
        return today
    if window == "month":
        return today.replace(day=1)
    return date.min


def team_budgets(budgets: dict[str, BudgetSet]) -> dict[tuple[str, str], float]:
    """(team, window) -> the tightest limit among the team budgets set on that window."""
    out: dict[tuple[str, str], float] = {}
    for b in budgets.values():
        if b.scope == "team":
            key = (b.scope_id, b.window)
            out[key] = min(out.get(key, b.limit_usd), b.limit_usd)
    return out


def usd(amount: Decimal | float | int | None) -> float:
    """A sum of money (USD, exact ``numeric`` from Postgres; None for no rows) as a gauge value.
    Raises ``ValueError`` when it is no finite float (e.g. a day of spends past 1.8e308)."""
    value = float(amount or 0)
    if not math.isfinite(value):
        raise ValueError(f"{amount} USD does not fit a gauge (a float)")
    return value
