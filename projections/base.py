"""What a projection is: a pure fold from (rows it owns, event) to new rows.

Invariants:
- ``apply`` does no I/O. The projector (services/projector/) loads the rows an event batch
  touches, calls ``apply`` once per event in stream order, and writes back the rows that
  changed, in the same transaction as the checkpoint.
- Rows are keyed; a projection owns its tables outright (no other writer).
- Everything ``apply`` uses comes from the event and its ``Meta`` (the stream's own sequence and
  time), never the wall clock, so a rebuild from the stream yields the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any, ClassVar, cast

from fleetward.schemas.events import Event

Key = tuple[Any, ...]
Row = dict[str, Any]


@dataclass(slots=True)
class Meta:
    """Where an event sits in its stream: the time and order of record. Treat as read-only (not
    frozen: a frozen dataclass costs twice as much to build, and one is built per event)."""

    seq: int
    time: datetime
    subject: str


@dataclass(frozen=True, slots=True)
class Table:
    """A keyed table a projection owns. ``columns`` starts with the ``key`` columns."""

    name: str
    key: tuple[str, ...]
    key_types: tuple[str, ...]  # SQL types of the key columns, for loading by key
    columns: tuple[str, ...]
    # the fold writes rows of this table but never reads them back (``touches`` never names
    # it), e.g. finished hours: the projector does not keep them in its row cache
    write_only: bool = False
    key_of: Callable[[Row], Key] = field(init=False, repr=False, compare=False)
    """The key of a row (built once: it runs for every row written)."""

    def __post_init__(self) -> None:
        key_of: Callable[[Row], Key]
        if len(self.key) == 1:
            only = self.key[0]

            def key_of(row: Row) -> Key:
                return (row[only],)
        else:
            key_of = cast(Callable[[Row], Key], itemgetter(*self.key))  # several: a tuple
        object.__setattr__(self, "key_of", key_of)


@dataclass(slots=True)
class Rows:
    """The rows a batch works on, by table and key; remembers which ones changed.

    ``base`` holds rows known to be current beyond this batch (the projector's row cache):
    ``get`` falls back to it, and never copies from it, so only rows the batch loads or writes
    land in ``data``. ``base`` is read-only here."""

    data: dict[str, dict[Key, Row]] = field(default_factory=dict)
    dirty: dict[str, set[Key]] = field(default_factory=dict)
    base: dict[str, dict[Key, Row]] = field(default_factory=dict)
    # events the fold asks to be published (verdicts, inbox commands), with the sequence of the
    # event that caused each: the projector stores them with the rows, in the same
    # transaction, and its outbox publishes them (services/projector/outbox.py)
    outbox: list[tuple[Event, int]] = field(default_factory=list)

    def emit(self, event: Event, meta: Meta) -> None:
        """Ask for ``event`` to be published because of the event at ``meta`` (its id must be
        deterministic: a rebuild emits it again, and the outbox keeps the first)."""
        self.outbox.append((event, meta.seq))

    def get(self, table: Table, key: Key) -> Row | None:
        name = table.name
        bucket = self.data.get(name)
        if bucket is not None:
            row = bucket.get(key)
            if row is not None:
                return row
        known = self.base.get(name)
        return None if known is None else known.get(key)

    def put(self, table: Table, row: Row) -> None:
        key = table.key_of(row)
        name = table.name
        try:
            self.data[name][key] = row
            self.dirty[name].add(key)
        except KeyError:  # the table's first row in this batch
            self.data.setdefault(name, {})[key] = row
            self.dirty.setdefault(name, set()).add(key)

    def changed(self, table: Table) -> list[Row]:
        """The rows ``put`` wrote, in no particular order (a projection's writes never run
        concurrently: each commit first locks the projection's checkpoint)."""
        rows = self.data.get(table.name, {})
        return [rows[k] for k in self.dirty.get(table.name, ())]


class Projection:
    """A projection: its name, what it reads, the tables it owns and its fold."""

    name: ClassVar[str]
    stream: ClassVar[str]
    subjects: ClassVar[tuple[str, ...]]
    tables: ClassVar[tuple[Table, ...]]
    # Each event id applies once, however late a copy of it is stored: the projector keeps a
    # ledger of the first sequence of every id (fleetward.event_ids) and skips the copies. A
    # projection whose stream is too large for one (heartbeats) says False and makes its fold
    # ignore copies itself (idempotence.py).
    id_ledger: ClassVar[bool] = True
    # The projector reads every row of its tables (up to its row cache's limit) when it
    # positions, rather than each row as an event first touches it: for a projection whose
    # events touch nearly every row within seconds (heartbeats), one read at the start instead
    # of a read per batch for as long as the rows keep coming (services/projector/cache.py).
    warm_start: ClassVar[bool] = False
    # Runs in a runner (a durable consumer) of its own, never grouped with the other projections
    # of its stream: one heartbeat partition of utilization (projections/utilization.py).
    alone: ClassVar[bool] = False

    def touches(self, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        """The rows ``apply`` will read for this event (loaded before the batch is folded)."""
        raise NotImplementedError

    def folds_row(self, table: Table, row: Row) -> bool:
        """Whether ``apply`` may read ``row`` of ``table`` (a partition reads only its own
        agents' rows): what a warm start keeps. All by default."""
        return True

    def touches_more(self, rows: Rows, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        """Rows ``apply`` reads that depend on rows ``touches`` named (e.g. a task's
        dependencies); loaded in a second round. None by default."""
        return ()

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        """Fold one event into ``rows``. Pure."""
        raise NotImplementedError
