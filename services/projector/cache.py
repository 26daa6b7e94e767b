"""The projector's row cache, and loading the rows a batch touches.

A runner is its projection's only writer, so the rows it committed or read stay equal to the
database until another writer commits (a rebuild); then the runner re-positions and empties the
cache. Folding on cached rows makes a batch near the head of the stream cost no reads at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from fleetward.projections import Meta, Projection, Rows
from fleetward.projections.base import Key, Row, Table
from fleetward.schemas import Event
from fleetward.services import db
from fleetward.services.db import Conn

M = TypeVar("M", bound=Meta)


class RowCache:
    """Rows this runner committed or read, by table and key. A runner is its projection's only
    writer, so these equal the database as long as no other writer commits; any re-positioning
    (another writer moved the checkpoint, an error) empties the cache. Rows of write-only tables
    (never read back by the fold) are not kept. At most ``limit`` rows per table: past it, the
    table's rows are dropped and read again as needed."""

    def __init__(self, limit: int = 250_000) -> None:
        self.limit = limit
        self.tables: dict[str, dict[Key, Row]] = {}
        # Tables whose every row is here (the runner started on them empty and has evicted none
        # of their rows): a key missing here has no row, and is not queried.
        self.complete: set[str] = set()
        self.write_only: set[str] = set()

    def clear(self, tables: tuple[Table, ...], *, empty: bool = False) -> None:
        """Forget every row of ``tables`` (the projection's); ``empty``: they have none."""
        self.tables.clear()
        self.write_only = {t.name for t in tables if t.write_only}
        self.complete = {t.name for t in tables if empty and not t.write_only}

    def holds_all(self, tables: tuple[Table, ...]) -> bool:
        """Every row the fold can read is here."""
        return all(t.name in self.complete for t in tables if not t.write_only)

    def remember(self, rows: Rows) -> None:
        """Keep a window's rows (called when its commit starts: the next window folds on them)."""
        for name, bucket in rows.data.items():
            if name in self.write_only:
                continue
            cached = self.tables.setdefault(name, {})
            if len(cached) + len(bucket) > self.limit:
                cached.clear()
                self.complete.discard(name)
            cached.update(bucket)


async def warm(conn: Conn, projection: Projection, cache: RowCache) -> None:
    """Read every row the fold may read (``folds_row``) of each table the cache keeps into the
    cache, which then holds them all (``complete``: no key is queried again); a table with more
    rows than the cache's limit is left to be read as events touch it. Call on an empty cache,
    from a runner that is its projection's only writer (it positions)."""
    for table in projection.tables:
        if table.write_only:
            continue
        found = await conn.fetch(db.all_rows_sql(table), cache.limit + 1)
        if len(found) > cache.limit:
            continue
        key_of, keeps = table.key_of, projection.folds_row
        bucket = cache.tables.setdefault(table.name, {})
        for record in found:
            row = dict(record)
            if keeps(table, row):
                bucket[key_of(row)] = row
        cache.complete.add(table.name)


async def load_rows(
    conn: Conn | None,
    projection: Projection,
    items: list[tuple[Event, M]],
    rows: Rows,
    cache: RowCache | None = None,
) -> None:
    """Make the rows the events touch available in ``rows``: those in ``rows`` or the cache are
    there already (``rows.base`` is the cache); the rest are read in one query per table. Then,
    in a second round, the rows ``touches_more`` names from what the first round found. Nothing
    is read while the cache holds every row the fold can read (``conn`` may be None then)."""
    complete: set[str] = set()
    if cache is not None:
        if cache.holds_all(projection.tables):
            return
        complete = cache.complete
    assert conn is not None, "rows to read, and no connection"
    touched = ((t, k) for e, m in items for t, k in projection.touches(e, m))
    await _load(conn, rows, _missing(rows, touched, complete))
    touched_more = ((t, k) for e, m in items for t, k in projection.touches_more(rows, e, m))
    more = _missing(rows, touched_more, complete)
    if more:
        await _load(conn, rows, more)


def _missing(
    rows: Rows, touched: Iterable[tuple[Table, Key]], complete: set[str]
) -> dict[Table, set[Key]]:
    """The touched keys to read from the database: not in ``rows`` (nor its cache), of tables
    the cache does not hold completely."""
    wanted: dict[Table, set[Key]] = {}
    for table, key in touched:
        if table.name not in complete and rows.get(table, key) is None:
            wanted.setdefault(table, set()).add(key)
    return wanted


async def _load(conn: Conn, rows: Rows, wanted: dict[Table, set[Key]]) -> None:
    for table, keys in wanted.items():
        found = await conn.fetch(db.load_sql(table), *db.key_arrays(table, list(keys)))
        bucket = rows.data.setdefault(table.name, {})
        key_of = table.key_of
        for record in found:
            row = dict(record)
            bucket[key_of(row)] = row
