"""Escalations: one row per escalation (subjects ``fw.esc.<id>.>``): tier, reason, what it is
about, and its state: open, acknowledged, resolved.

- A raise creates the row; a later raise of a higher tier escalates it (``tier``,
  ``tier_at``); a raise of a resolved escalation reopens it (a new incident under the same id).
- An acknowledgement of an open escalation records who and when; a resolution closes it (the
  first one counts). Acknowledgements and resolutions of escalations never raised are ignored.
- ``evidence`` is kept as JSON text of the latest raise that set the tier.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Final

import msgspec

from fleetward.projections.base import Key, Meta, Projection, Row, Rows, Table
from fleetward.schemas.events import (
    EscalationAcknowledged,
    EscalationRaised,
    EscalationResolved,
    Event,
)
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import wildcard

ESCALATIONS = Table(
    name="fleetward.escalations",
    key=("escalation_id",),
    key_types=("text",),
    columns=(
        "escalation_id",
        "reason",
        "tier",
        "state",
        "agent",
        "task",
        "message",
        "evidence",
        "raised_by",
        "raised_at",
        "tier_at",
        "acknowledged_by",
        "acknowledged_at",
        "ack_note",
        "resolved_by",
        "resolved_at",
        "resolution",
        "events",
        "updated_at",
        "last_seq",
    ),
)

RANK: Final = {"info": 0, "warning": 1, "critical": 2}
_EVENTS: Final = (EscalationRaised, EscalationAcknowledged, EscalationResolved)


def _raised(event: EscalationRaised, meta: Meta) -> Row:
    return {
        "escalation_id": event.escalation,
        "reason": event.reason,
        "tier": event.tier,
        "state": "open",
        "agent": event.agent,
        "task": event.task,
        "message": event.message,
        "evidence": msgspec.json.encode(event.evidence).decode(),
        "raised_by": event.actor,
        "raised_at": meta.time,
        "tier_at": meta.time,
        "acknowledged_by": None,
        "acknowledged_at": None,
        "ack_note": None,
        "resolved_by": None,
        "resolved_at": None,
        "resolution": None,
        "events": 0,
        "updated_at": meta.time,
        "last_seq": meta.seq,
    }


class EscalationBoard(Projection):
    name: ClassVar[str] = "escalations"
    stream: ClassVar[str] = EVENTS_STREAM
    subjects: ClassVar[tuple[str, ...]] = (wildcard("esc"),)
    tables: ClassVar[tuple[Table, ...]] = (ESCALATIONS,)

    def touches(self, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        if isinstance(event, _EVENTS):
            yield ESCALATIONS, (event.escalation,)

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        if not isinstance(event, _EVENTS):
            return
        old = rows.get(ESCALATIONS, (event.escalation,))
        match event:
            case EscalationRaised() if old is None or old["state"] == "resolved":
                row = _raised(event, meta)
                if old is not None:  # reopened: it keeps its first raise and its history count
                    row.update(raised_at=old["raised_at"], events=old["events"])
            case EscalationRaised() if old is not None:
                row = dict(old)
                if RANK[event.tier] >= RANK[old["tier"]]:
                    row.update(
                        message=event.message,
                        evidence=msgspec.json.encode(event.evidence).decode(),
                    )
                if RANK[event.tier] > RANK[old["tier"]]:
                    row.update(tier=event.tier, tier_at=meta.time)
            case EscalationAcknowledged() if old is not None and old["state"] == "open":
                row = dict(old)
                row.update(
                    state="acknowledged",
                    acknowledged_by=event.actor,
                    acknowledged_at=meta.time,
                    ack_note=event.note,
                )
            case EscalationResolved() if old is not None and old["state"] != "resolved":
                row = dict(old)
                row.update(
                    state="resolved",
                    resolved_by=event.actor,
                    resolved_at=meta.time,
                    resolution=event.resolution,
                )
            case _:
                return
        row.update(events=row["events"] + 1, updated_at=meta.time, last_seq=meta.seq)
        rows.put(ESCALATIONS, row)
