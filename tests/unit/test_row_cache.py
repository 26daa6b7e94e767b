"""The projector's row cache: what it keeps, and when it knows it holds every row."""

from __future__ import annotations

from fleetward.projections.base import Rows, Table
from fleetward.services.projector.cache import RowCache

CURRENT = Table("t.current", ("k",), ("text",), ("k", "v"))
FINISHED = Table("t.finished", ("k",), ("text",), ("k", "v"), write_only=True)
TABLES = (CURRENT, FINISHED)


def rows(n: int, start: int = 0) -> Rows:
    out = Rows()
    for i in range(start, start + n):
        out.put(CURRENT, {"k": f"c{i}", "v": i})
        out.put(FINISHED, {"k": f"f{i}", "v": i})
    return out


def test_write_only_rows_are_not_kept_and_do_not_count_against_completeness() -> None:
    cache = RowCache(limit=10)
    cache.clear(TABLES, empty=True)
    assert cache.holds_all(TABLES)
    cache.remember(rows(8))
    assert set(cache.tables) == {CURRENT.name}
    assert cache.holds_all(TABLES)  # the finished rows are never read back


def test_an_overflowing_table_is_no_longer_complete() -> None:
    cache = RowCache(limit=10)
    cache.clear(TABLES, empty=True)
    cache.remember(rows(8))
    cache.remember(rows(8, start=8))  # 16 rows > 10: the table is emptied and may miss rows
    assert not cache.holds_all(TABLES)
    assert len(cache.tables[CURRENT.name]) == 8


def test_tables_not_known_empty_are_never_complete() -> None:
    cache = RowCache()
    cache.clear(TABLES, empty=False)
    cache.remember(rows(3))
    assert not cache.holds_all(TABLES)
