"""People's roles: one row per person and role ever granted (subjects ``fw.person.<name>.>``),
as the latest ``role.granted`` / ``role.revoked`` left it, with who changed it and when
(stream time). Who may publish what is judged by the runner from the stream itself
(schemas/roles.py), before this fold sees the event: a change its author may not make is
dead-lettered ``role_missing`` and never reaches this table.

It is also the reader that admits every subject under fw.person.>: anything else published
there is dead-lettered under this projection's name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from fleetward.projections.base import Key, Meta, Projection, Rows, Table
from fleetward.schemas.events import Event, RoleGranted, RoleRevoked
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import wildcard

ROLES = Table(
    name="fleetward.roles",
    key=("person", "role"),
    key_types=("text", "text"),
    columns=("person", "role", "held", "changed_by", "changed_at", "reason", "last_seq"),
)


class People(Projection):
    name: ClassVar[str] = "people"
    stream: ClassVar[str] = EVENTS_STREAM
    subjects: ClassVar[tuple[str, ...]] = (wildcard("person"),)
    tables: ClassVar[tuple[Table, ...]] = (ROLES,)

    def touches(self, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        if isinstance(event, RoleGranted | RoleRevoked):
            yield ROLES, (event.person, event.role)

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        if not isinstance(event, RoleGranted | RoleRevoked):
            return
        rows.put(
            ROLES,
            {
                "person": event.person,
                "role": event.role,
                "held": isinstance(event, RoleGranted),
                "changed_by": event.actor,
                "changed_at": meta.time,
                "reason": event.reason,
                "last_seq": meta.seq,
            },
        )
