"""Budgets: one row per budget (subjects ``fw.budget.<id>.>``) as its latest ``budget.set`` has it:
scope (agent, team, org) and scope id, window (day, month, lifetime), limit, warning share, who
set it and when (stream time). Spent and reserved come with the guard (DESIGN 3.9).

It is also the reader that admits every subject under fw.budget.>: an event there that
admission refuses (not JSON, a budget set by an agent, another type's event) is dead-lettered
under this projection's name and counted, like on every other Fleetward subject.

The limit is kept as ``Decimal`` from the shortest decimal form of the published figure (as
spend is), so limits and spend compare exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from fleetward.projections.base import Key, Meta, Projection, Rows, Table
from fleetward.projections.money import money
from fleetward.schemas.events import BudgetSet, Event
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
        "warn_at",
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
        if isinstance(event, BudgetSet):
            yield BUDGETS, (event.budget,)

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
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
                "warn_at": event.warn_at,
                "set_by": event.actor,
                "set_at": meta.time,
                "created_at": old["created_at"] if old else meta.time,
                "last_seq": meta.seq,
            },
        )
