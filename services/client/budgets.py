"""A budget's latest setting read straight from the stream, for people who set budgets: the
``budget.set`` the budgets projection would show, without waiting for it.

The budget's messages are those of its v2 subjects (``fw.budget.<budget>.>``, every actor's)
and of its v1 subject (``fw.budget.<budget>``, history), in stream order. The latest one that
admission takes, whose author held the role it needs at its position (schemas/roles.py), and
that is no copy of an earlier event (its id seen before) is the budget's setting, as the
projection folds it.
"""

from __future__ import annotations

from nats.aio.client import Client as NatsClient

from fleetward.schemas import Rejected
from fleetward.schemas.events import BudgetSet
from fleetward.schemas.roles import RoleBook, check_role
from fleetward.schemas.subjects import boundary, boundary_wildcard
from fleetward.services.client.roles import read_roles
from fleetward.services.client.taskstate import read_subjects


async def read_budget(
    nc: NatsClient, budget: str, roles: RoleBook | None = None
) -> BudgetSet | None:
    """The latest ``budget.set`` of ``budget`` that counts (see above), or None when it was
    never set. ``roles``: the caller's book of role changes, brought up to date here."""
    v2 = await read_subjects(nc, boundary_wildcard("budget", budget))
    v1 = await read_subjects(nc, boundary("budget", budget))
    book = await read_roles(nc, roles)
    latest: BudgetSet | None = None
    seen: set[str] = set()
    for m in sorted(v1 + v2, key=lambda m: m.seq):
        if not isinstance(m.event, BudgetSet) or m.event.id in seen:
            continue
        seen.add(m.event.id)
        try:
            check_role(m.event, m.seq, book)
        except Rejected:
            continue
        latest = m.event
    return latest
