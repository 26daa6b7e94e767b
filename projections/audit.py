"""The audit chain's seals: one row per ``audit.sealed`` stored (subjects ``fw.audit.<stream>.>``),
keyed by the stream sequence of the seal itself, with the head it commits to. A list to look
seals up by; ``fleetward audit verify`` reads them from the stream itself.

It is also the reader that admits every subject under fw.audit.>: anything else published
there is dead-lettered under this projection's name. Seals by any service are admitted (the
contract's senders are kinds, not names) and shown with their actor; the auditor's readers
trust those of ``svc:audit`` only (services/audit).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from fleetward.projections.base import Key, Meta, Projection, Rows, Table
from fleetward.schemas.events import AuditSealed, Event
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import wildcard

SEALS = Table(
    name="fleetward.audit_seals",
    key=("stored_seq",),
    key_types=("bigint",),
    columns=(
        "stored_seq", "stream", "seq", "head", "anchor", "period_start", "period_s",
        "sealed_by", "sealed_at",
    ),
    write_only=True,
)  # fmt: skip


class AuditSeals(Projection):
    name: ClassVar[str] = "audit"
    stream: ClassVar[str] = EVENTS_STREAM
    subjects: ClassVar[tuple[str, ...]] = (wildcard("audit"),)
    tables: ClassVar[tuple[Table, ...]] = (SEALS,)

    def touches(self, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        return ()

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        if not isinstance(event, AuditSealed):
            return
        rows.put(
            SEALS,
            {
                "stored_seq": meta.seq,
                "stream": event.stream,
                "seq": event.seq,
                "head": event.head,
                "anchor": event.anchor,
                "period_start": event.period_start,
                "period_s": event.period_s,
                "sealed_by": event.actor,
                "sealed_at": meta.time,
            },
        )
