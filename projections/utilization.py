"""Utilization: per agent, its state now, current task, last seen, busy and idle time, per hour.

Time comes from the heartbeat stream's own timestamps. The time between two heartbeats is
credited to the state the first one reported (``busy`` and ``waiting`` count as busy, ``idle`` as
idle, ``error`` as neither), and to the hour in which the second one arrived. A gap longer than
``MAX_GAP`` is silence, credited to nothing. Durations are kept in whole microseconds so that
a rebuild adds up to exactly the same numbers however the events are batched.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import ClassVar, Final

from projections.base import Key, Meta, Projection, Rows, Table
from schemas.events import Event, Heartbeat
from schemas.subjects import wildcard

MAX_GAP: Final = timedelta(minutes=5)
BUSY_STATES: Final = frozenset({"busy", "waiting"})

UTILIZATION = Table(
    name="fleetward.utilization",
    key=("agent_id",),
    key_types=("text",),
    columns=(
        "agent_id",
        "state",
        "current_task",
        "message",
        "first_seen",
        "last_seen",
        "busy_us",
        "idle_us",
        "heartbeats",
        "last_seq",
    ),
)

HOURLY = Table(
    name="fleetward.utilization_hourly",
    key=("agent_id", "hour"),
    key_types=("text", "timestamptz"),
    columns=("agent_id", "hour", "busy_us", "idle_us", "heartbeats"),
)


def _us(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class Utilization(Projection):
    name: ClassVar[str] = "utilization"
    stream: ClassVar[str] = "FW_HEARTBEATS"
    subjects: ClassVar[tuple[str, ...]] = (wildcard("hb"),)
    tables: ClassVar[tuple[Table, ...]] = (UTILIZATION, HOURLY)

    def touches(self, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        if isinstance(event, Heartbeat):
            yield UTILIZATION, (event.agent,)
            yield HOURLY, (event.agent, meta.time.replace(minute=0, second=0, microsecond=0))

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        if not isinstance(event, Heartbeat):
            return
        hour = meta.time.replace(minute=0, second=0, microsecond=0)
        old = rows.get(UTILIZATION, (event.agent,))
        busy = idle = 0
        if old is not None:
            gap = meta.time - old["last_seen"]
            if timedelta(0) < gap <= MAX_GAP:
                if old["state"] in BUSY_STATES:
                    busy = _us(gap)
                elif old["state"] == "idle":
                    idle = _us(gap)
        rows.put(
            UTILIZATION,
            {
                "agent_id": event.agent,
                "state": event.status,
                "current_task": event.task,
                "message": event.message,
                "first_seen": old["first_seen"] if old else meta.time,
                "last_seen": meta.time,
                "busy_us": (old["busy_us"] if old else 0) + busy,
                "idle_us": (old["idle_us"] if old else 0) + idle,
                "heartbeats": (old["heartbeats"] if old else 0) + 1,
                "last_seq": meta.seq,
            },
        )
        bucket = rows.get(HOURLY, (event.agent, hour))
        rows.put(
            HOURLY,
            {
                "agent_id": event.agent,
                "hour": hour,
                "busy_us": (bucket["busy_us"] if bucket else 0) + busy,
                "idle_us": (bucket["idle_us"] if bucket else 0) + idle,
                "heartbeats": (bucket["heartbeats"] if bucket else 0) + 1,
            },
        )
