"""The pure parts of services/metrics: budget windows and ratios, and which errors count as
Postgres errors."""

from __future__ import annotations

import socket
from datetime import date

import asyncpg
import nats.errors

from fleetward.schemas import new_id, subject_of
from fleetward.schemas.events import BudgetSet
from fleetward.services.metrics import is_postgres_error
from fleetward.services.metrics.budgets import TeamBudget, team_budgets, window_start
from tests.helpers import now


def test_budget_windows_start_on_utc_days() -> None:
    today = date(2026, 11, 21)
    assert window_start("day", today) == today
    assert window_start("month", today) == date(2026, 11, 1)
    assert window_start("lifetime", today) == date.min


def test_the_tightest_team_budget_counts_and_other_scopes_are_not_exposed() -> None:
    def set_(budget: str, scope: str, scope_id: str, window: str, limit: float) -> BudgetSet:
        return BudgetSet(id=new_id(), actor="user:sre", at=now(), budget=budget, scope=scope,
                         scope_id=scope_id, window=window, limit_usd=limit)  # fmt: skip

    budgets = {
        b.budget: b
        for b in [
            set_("b1", "team", "docs", "day", 2.0),
            set_("b2", "team", "docs", "day", 5.0),  # set later, but not the tightest
            set_("b3", "team", "docs", "month", 50.0),
            set_("b4", "agent", "a1", "day", 1.0),
            set_("b5", "org", "acme", "day", 100.0),
        ]
    }
    assert team_budgets(budgets) == {("docs", "day"): 2.0, ("docs", "month"): 50.0}


def test_budget_use_is_spend_over_limit_and_a_zero_limit_is_exhausted_by_any_spend() -> None:
    assert TeamBudget("docs", "day", 4.0, 3.0).used == 0.75
    assert TeamBudget("docs", "day", 0.0, 0.0).used == 0.0
    assert TeamBudget("docs", "day", 0.0, 0.01).used == float("inf")


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


async def test_a_budget_set_stored_again_late_is_not_taken_for_the_last() -> None:
    """The fleet gauges keep each budget's last ``budget.set`` from the stream; a copy of an
    older one (another Nats-Msg-Id, or past the duplicate window) must not bring its limit back,
    as the budgets projection (its id ledger) does not."""
    from fleetward.services.jetstream.publish import encode  # noqa: PLC0415
    from fleetward.services.metrics.fleet import FleetMetrics  # noqa: PLC0415

    def budget(limit: float) -> BudgetSet:
        return BudgetSet(id=new_id(), actor="user:ann", at=now(), budget="b1", scope="team",
                         scope_id="docs", window="month", limit_usd=limit)  # fmt: skip

    first, second = budget(100.0), budget(200.0)
    gauges = FleetMetrics()
    for seq, event in enumerate((first, second, first), start=1):
        gauges.on_budget(subject_of(event), encode(event), seq, 0)
    assert gauges.budgets["b1"].limit_usd == 200.0
