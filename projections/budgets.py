"""Budgets: one row per budget (subjects ``fw.budget.<id>.>``) as its latest ``budget.set`` has it:
scope (agent, team, project, org) and scope id, window (day, month, lifetime), limits (USD, and
tokens or none), warning share, who set it and when (stream time).

What a budget has spent is not kept here: the view ``fleet.budgets`` sums the spend
projection's rows of its scope over its current window (agent and team: per agent, team and
day; project: per task and day, by the task board's project; org: everything), so the money
has one copy. ``reserved_usd`` (USD) is the sum of the budget's open reservations: each
``budget.reserved`` adds its ``usd``, its ``budget.released`` (settled, expired, refused or
returned: the guard stores one per reservation and budget) takes it back (DESIGN 3.9); a later
``budget.set`` keeps it. A reservation on a budget this projection has no row for is ignored,
and so is a second ``budget.reserved`` or ``budget.released`` of one reservation on one budget.

``fleetward.reservations``: one row per reservation and budget (agent, USD, expiry, when it was
reserved, and once released: why and when). The open ones are what the guard holds at start.

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
from fleetward.projections.money import add_exact, money, sub_exact
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

RESERVATIONS = Table(
    name="fleetward.reservations",
    key=("budget_id", "reservation"),
    key_types=("text", "text"),
    columns=(
        "budget_id",
        "reservation",
        "agent_id",
        "usd",
        "expires_at",
        "reserved_at",
        "released_reason",  # None while open
        "released_at",
        "last_seq",
    ),
)


class Budgets(Projection):
    name: ClassVar[str] = "budgets"
    stream: ClassVar[str] = EVENTS_STREAM
    subjects: ClassVar[tuple[str, ...]] = (wildcard("budget"),)
    tables: ClassVar[tuple[Table, ...]] = (BUDGETS, RESERVATIONS)

    def touches(self, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        if isinstance(event, BudgetSet | BudgetReserved | BudgetReleased):
            yield BUDGETS, (event.budget,)
        if isinstance(event, BudgetReserved | BudgetReleased):
            yield RESERVATIONS, (event.budget, event.reservation)

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        if isinstance(event, BudgetReserved | BudgetReleased):
            self._reservation(rows, event, meta)
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

    def _reservation(self, rows: Rows, event: BudgetReserved | BudgetReleased, meta: Meta) -> None:
        row = rows.get(BUDGETS, (event.budget,))
        if row is None:
            return
        key = (event.budget, event.reservation)
        held = rows.get(RESERVATIONS, key)
        if isinstance(event, BudgetReserved):
            if held is not None:
                return
            usd = money(event.usd)
            rows.put(RESERVATIONS, {
                "budget_id": event.budget, "reservation": event.reservation,
                "agent_id": event.agent, "usd": usd, "expires_at": event.expires_at,
                "reserved_at": meta.time, "released_reason": None, "released_at": None,
                "last_seq": meta.seq,
            })  # fmt: skip
            rows.put(BUDGETS, {**row, "reserved_usd": add_exact(row["reserved_usd"], usd)})
            return
        if held is None or held["released_reason"] is not None:
            return
        rows.put(RESERVATIONS, {**held, "released_reason": event.reason,
                                "released_at": meta.time, "last_seq": meta.seq})  # fmt: skip
        rows.put(BUDGETS, {**row, "reserved_usd": sub_exact(row["reserved_usd"], held["usd"])})
