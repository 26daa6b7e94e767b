"""docs/views.md is the public read contract: every view in schema ``fleet`` has a section there,
every section names a view that exists, and each section names every column of its view."""

from __future__ import annotations

import re
from pathlib import Path

from fleetward.services.runtime.connect import Runtime

DOC = Path(__file__).resolve().parents[2] / "docs" / "views.md"


def sections() -> dict[str, str]:
    """``fleet.<view>`` -> the text of its section (up to the next heading)."""
    parts = re.split(r"^## ", DOC.read_text(), flags=re.M)
    found = {}
    for part in parts[1:]:
        heading = re.match(r"`(fleet\.\w+)`", part)
        if heading:
            found[heading.group(1)] = part
    return found


async def test_every_view_and_column_is_documented_in_views_md(rt: Runtime) -> None:
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'fleet' ORDER BY table_name, ordinal_position"
        )
    views: dict[str, list[str]] = {}
    for r in rows:
        views.setdefault(f"fleet.{r['table_name']}", []).append(r["column_name"])
    docs = sections()
    assert sorted(docs) == sorted(views), "views.md and schema fleet differ"
    missing = {
        view: [c for c in columns if not re.search(rf"\b{c}\b", docs[view])]
        for view, columns in views.items()
    }
    assert {v: cs for v, cs in missing.items() if cs} == {}


async def test_the_example_queries_run(rt: Runtime) -> None:
    """The queries under "Example queries" are code people copy: each one runs (on empty views)."""
    block = DOC.read_text().split("## Example queries", 1)[1].split("```sql", 1)[1].split("```")[0]
    queries = [q.strip() for q in re.sub(r"--[^\n]*", "", block).split(";") if q.strip()]
    assert len(queries) >= 6, queries
    async with rt.pool.acquire() as conn:
        for query in queries:
            await conn.fetch(query)
