"""Budgets: one row per budget (subjects ``fw.budget.<id>.>``) as its latest ``budget.set`` has it:
scope (agent, team, project, org) and scope id, window (day, month, lifetime), limits (USD, and
tokens or none), warning share, who set it and when (stream time).

What a budget has spent is not kept here: the view ``fleet.budgets`` sums the spend
projection's rows of its scope over its current window (agent and team: per agent, team and
day; project: per task and day, by the task board's project; org: everything), so the money
has one copy. ``reserved_usd`` (USD) is the sum of the budget's open reservations: each
``budget.reserved`` adds its ``usd``, its ``budget.released`` (settled, expired or refused: the
guard stores one per reservation and budget) takes it back (DESIGN 3.9); a later
``budget.set`` keeps it. A reservation on a budget this projection has no row for is ignored.

It is also the reader that admits every subject under fw.budget.>: an event there that
admission refuses (not JSON, a budget set by an agent, another type's event) is dead-lettered
under this projection's name and counted, like on every other Fleetward subject.

The limit is kept as ``Decimal`` from the shortest decimal form of the published figure (as
spend is), so limits and spend compare exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import ClassVar

from fleetward.projections.base import Key, Meta, Projection, Rows, Table
from fleetward.projections.money import money
from fleetward.schemas.events import BudgetReleased, BudgetReserved, BudgetSet, Event
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import wildcard

BUDGETS = Table(
    name="fleetward.budgets",
    key=("budget_id",),
    key_types=("text",),
    columns=(
        "budget_id",
        "scope",
        "scope_id",
        "budget_window",  # the event's ``window``: a reserved word in SQL
        "limit_usd",
        "limit_tokens",  # None: no token limit
        "warn_at",
        "reserved_usd",
        "set_by",
        "set_at",
        "created_at",
        "last_seq",
    ),
)


class Budgets(Projection):
    name: ClassVar[str] = "budgets"
    stream: ClassVar[str] = EVENTS_STREAM
    subjects: ClassVar[tuple[str, ...]] = (wildcard("budget"),)
    tables: ClassVar[tuple[Table, ...]] = (BUDGETS,)

    def touches(self, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        if isinstance(event, BudgetSet | BudgetReserved | BudgetReleased):
            yield BUDGETS, (event.budget,)

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        if isinstance(event, BudgetReserved | BudgetReleased):
            row = rows.get(BUDGETS, (event.budget,))
            if row is not None:
                usd = money(event.usd) * (1 if isinstance(event, BudgetReserved) else -1)
                rows.put(BUDGETS, {**row, "reserved_usd": row["reserved_usd"] + usd})
            return
        if not isinstance(event, BudgetSet):
            return
        old = rows.get(BUDGETS, (event.budget,))
        rows.put(
            BUDGETS,
            {
                "budget_id": event.budget,
                "scope": event.scope,
                "scope_id": event.scope_id,
                "budget_window": event.window,
                "limit_usd": money(event.limit_usd),
                "limit_tokens": event.limit_tokens,
                "warn_at": event.warn_at,
                "reserved_usd": old["reserved_usd"] if old else Decimal(0),
                "set_by": event.actor,
                "set_at": meta.time,
                "created_at": old["created_at"] if old else meta.time,
                "last_seq": meta.seq,
            },
        )
