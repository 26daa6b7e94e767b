"""What a projection is: a pure fold from (rows it owns, event) to new rows.

Invariants:
- ``apply`` does no I/O. The projector (services/projector.py) loads the rows an event batch
  touches, calls ``apply`` once per event in stream order, and writes back the rows that changed,
  in the same transaction as the checkpoint.
- Rows are keyed; a projection owns its tables outright (no other writer).
- Everything ``apply`` uses comes from the event and its ``Meta`` (the stream's own sequence and
  time), never the wall clock, so a rebuild from the stream yields the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from schemas.events import Event

Key = tuple[Any, ...]
Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Meta:
    """Where an event sits in its stream: the time and order of record."""

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

    def key_of(self, row: Row) -> Key:
        key = self.key
        if len(key) == 1:
            return (row[key[0]],)
        return tuple([row[k] for k in key])


@dataclass(slots=True)
class Rows:
    """The rows a batch works on, by table and key; remembers which ones changed."""

    data: dict[str, dict[Key, Row]] = field(default_factory=dict)
    dirty: dict[str, set[Key]] = field(default_factory=dict)

    def get(self, table: Table, key: Key) -> Row | None:
        return self.data.setdefault(table.name, {}).get(key)

    def put(self, table: Table, row: Row) -> None:
        key = table.key_of(row)
        self.data.setdefault(table.name, {})[key] = row
        self.dirty.setdefault(table.name, set()).add(key)

    def changed(self, table: Table) -> list[Row]:
        rows = self.data.get(table.name, {})
        return [rows[k] for k in sorted(self.dirty.get(table.name, ()))]  # one lock order


class Projection:
    """A projection: its name, what it reads, the tables it owns and its fold."""

    name: ClassVar[str]
    stream: ClassVar[str]
    subjects: ClassVar[tuple[str, ...]]
    tables: ClassVar[tuple[Table, ...]]

    def touches(self, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        """The rows ``apply`` will read for this event (loaded before the batch is folded)."""
        raise NotImplementedError

    def touches_more(self, rows: Rows, event: Event, meta: Meta) -> Iterable[tuple[Table, Key]]:
        """Rows ``apply`` reads that depend on rows ``touches`` named (e.g. a task's
        dependencies); loaded in a second round. None by default."""
        return ()

    def apply(self, rows: Rows, event: Event, meta: Meta) -> None:
        """Fold one event into ``rows``. Pure."""
        raise NotImplementedError
