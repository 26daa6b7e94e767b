"""Utilization: per agent, its state now, current task, last seen, busy and idle time, per hour.

Time comes from the heartbeat stream's own timestamps. The time between two heartbeats is
credited to the state the first one reported (``busy`` and ``waiting`` count as busy, ``idle`` as
idle, ``error`` as neither), and to the hour in which the second one arrived. A gap longer than
``MAX_GAP`` is silence, credited to nothing. Durations are kept in whole microseconds so that
a rebuild adds up to exactly the same numbers however the events are batched.

An agent's current hour is kept on its own row (``hour``, ``hour_busy_us``, ...); when a
heartbeat arrives in a later hour, the finished hour moves to the hourly table, where it never
changes again. So a heartbeat writes one row, not two; the view ``fleet.utilization_hourly``
shows both (a closed hour is never also an agent's current one).

A heartbeat counts once: only if its id sorts after the last one counted for its agent
(``idempotence.newer_heartbeat``, kept in ``last_id``); a copy stored again, or an older
heartbeat arriving late, changes nothing.

Partitions (schemas/partitions.py): ``partition(i, n)`` is the same fold over the agents of
heartbeat partition ``i`` of ``n`` only, named ``utilization_p<i>of<n>``, reading ``fw.hb.<i>.>``
with a checkpoint and a lease of its own. Rows are per agent and an agent is in one partition,
so the partitions together write exactly the rows one ``Utilization`` writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Final

from fleetward.projections.base import Key, Meta, Projection, Row, Rows, Table
from fleetward.projections.idempotence import newer_heartbeat
from fleetward.schemas.events import Event, Heartbeat
from fleetward.schemas.partitions import partition_filter, partition_of
from fleetward.schemas.streams import HEARTBEATS_STREAM
from fleetward.schemas.subjects import wildcard

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
        "hour",
        "hour_busy_us",
        "hour_idle_us",
        "hour_heartbeats",
        "last_id",
    ),
)

HOURLY = Table(
    name="fleetward.utilization_hourly",
    key=("agent_id", "hour"),
    key_types=("text", "timestamptz"),
    columns=("agent_id", "hour", "busy_us", "idle_us", "heartbeats"),
    write_only=True,  # finished hours never change again
)


_MICROSECOND: Final = timedelta(microseconds=1)


def _us(delta: timedelta) -> int:
    """``delta`` in whole microseconds (exact: timedelta // timedelta is integer arithmetic)."""
    return delta // _MICROSECOND


_ZERO: Final = timedelta(0)
_HOUR: Final = timedelta(hours=1)


class Utilization(Projection):
    name: ClassVar[str] = "utilization"
    stream: ClassVar[str] = HEARTBEATS_STREAM
    subjects: ClassVar[tuple[str, ...]] = (wildcard("hb"),)
    tables: ClassVar[tuple[Table, ...]] = (UTILIZATION, HOURLY)
    id_ledger: ClassVar[bool] = False  # too many heartbeats for one: newer_heartbeat instead
    partition: ClassVar[tuple[int, int]] = (0, 1)  # (i, n): the agents it folds (all: (0, 1))
    warm_start: ClassVar[bool] = True  # every agent heartbeats within seconds: read them at once

    def __init__(self) -> None:
        # the hour of the last event folded: most events fall in the same hour as the one before
        self._hour = datetime.min.replace(tzinfo=UTC)

    def hour_of(self, t: datetime) -> datetime:
        hour = self._hour
        if not hour <= t < hour + _HOUR:
            hour = self._hour = t.replace(minute=0, second=0, microsecond=0)
        return hour

    def owns(self, agent: str) -> bool:
        """Whether ``agent``'s heartbeats are this fold's (its partition's; all with one)."""
        part, parts = self.partition
        return parts == 1 or partition_of(agent, parts) == part

    def folds_row(self, table: Table, row: Row) -> bool:
        return table is not UTILIZATION or self.owns(row["agent_id"])

    def touches(self, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        if isinstance(event, Heartbeat) and self.owns(event.agent):
            yield UTILIZATION, (event.agent,)  # the closed hours it may write are never read

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        # a heartbeat of another partition (stored under an old token after the stream was
        # re-partitioned) is that partition's to fold
        if not isinstance(event, Heartbeat) or not self.owns(event.agent):
            return
        at = meta.time
        hour = self.hour_of(at)
        agent = event.agent
        old = rows.get(UTILIZATION, (agent,))
        if old is None:
            first, busy_us, idle_us, beats, h_busy, h_idle, h_beats = at, 0, 0, 0, 0, 0, 0
        else:
            if not newer_heartbeat(old["last_id"], event.id):
                return  # a copy of a heartbeat counted already, or an older one: no change
            first, busy_us, idle_us, beats = (
                old["first_seen"], old["busy_us"], old["idle_us"], old["heartbeats"])  # fmt: skip
            gap = at - old["last_seen"]
            if _ZERO < gap <= MAX_GAP:
                state = old["state"]
                if state in BUSY_STATES:
                    busy_us += _us(gap)
                elif state == "idle":
                    idle_us += _us(gap)
            if old["hour"] == hour:
                h_busy, h_idle, h_beats = (
                    old["hour_busy_us"], old["hour_idle_us"], old["hour_heartbeats"])  # fmt: skip
            else:  # the agent's last hour is over: it moves to the hourly table as it is
                rows.put(HOURLY, {
                    "agent_id": agent,
                    "hour": old["hour"],
                    "busy_us": old["hour_busy_us"],
                    "idle_us": old["hour_idle_us"],
                    "heartbeats": old["hour_heartbeats"],
                })  # fmt: skip
                h_busy, h_idle, h_beats = 0, 0, 0
            # this gap belongs to this event's hour
            h_busy += busy_us - old["busy_us"]
            h_idle += idle_us - old["idle_us"]
        rows.put(UTILIZATION, {
            "agent_id": agent,
            "state": event.status,
            "current_task": event.task,
            "message": event.message,
            "first_seen": first,
            "last_seen": at,
            "busy_us": busy_us,
            "idle_us": idle_us,
            "heartbeats": beats + 1,
            "last_seq": meta.seq,
            "hour": hour,
            "hour_busy_us": h_busy,
            "hour_idle_us": h_idle,
            "hour_heartbeats": h_beats + 1,
            "last_id": event.id,
        })  # fmt: skip


def partition(part: int, parts: int) -> Utilization:
    """Utilization over heartbeat partition ``part`` of ``parts`` (``parts > 1``): the projection
    ``utilization_p<part>of<parts>``, reading ``fw.hb.<part>.>`` in a runner of its own."""
    assert 0 <= part < parts and parts > 1, "a partition of two or more"
    cls = type(
        f"UtilizationP{part}of{parts}",
        (Utilization,),
        {
            "name": f"{Utilization.name}_p{part}of{parts}",
            "subjects": (partition_filter(part),),
            "partition": (part, parts),
            "alone": True,
        },
    )
    made: Utilization = cls()
    return made
