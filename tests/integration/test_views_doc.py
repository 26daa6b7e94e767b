"""docs/views.md is the public read contract: every view in schema ``fleet`` has a section there,
every section names a view that exists, and each section names every column of its view."""

from __future__ import annotations

import re
from pathlib import Path

from fleetward.services.runtime.connect import Runtime
from tests.helpers import migrated_before

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


async def test_every_view_names_an_agent_agent_id_and_a_task_task_id(rt: Runtime) -> None:
    """One name for one thing (issue 17; migration 0045): no view of schema ``fleet`` has a
    column called ``agent`` or ``task``."""
    async with rt.pool.acquire() as conn:
        bare = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'fleet' AND column_name IN ('agent', 'task')"
        )
    assert [f"fleet.{r['table_name']}.{r['column_name']}" for r in bare] == []


async def test_migration_0045_renames_in_place(pg_server: str) -> None:
    """Upgrading a database that holds rows, with a downstream view on a renamed one: the rows
    read under the new names, and the downstream view still answers, with its own names (a view
    column renamed is the same column to what reads it; dropping it would have been refused)."""
    async with migrated_before(pg_server, "0045_") as (conn, upgrade):
        await conn.execute(
            """
            INSERT INTO fleetward.escalations (escalation_id, reason, tier, state, agent, task,
              message, evidence, raised_by, raised_at, tier_at, events, updated_at, last_seq)
            VALUES ('e1', 'task_stalled', 'warning', 'open', 'a1', 't1', 'm', '{}', 'svc:w',
              now(), now(), 1, now(), 1);
            CREATE SCHEMA downstream;
            CREATE VIEW downstream.stalled AS
              SELECT agent, task FROM fleet.escalations_open WHERE reason = 'task_stalled';
            """
        )
        await conn.execute(upgrade)
        row = await conn.fetchrow("SELECT agent_id, task_id FROM fleet.escalations_open")
        assert row is not None and tuple(row) == ("a1", "t1")
        theirs = await conn.fetchrow("SELECT agent, task FROM downstream.stalled")
        assert theirs is not None and tuple(theirs) == ("a1", "t1")


async def test_the_example_queries_run(rt: Runtime) -> None:
    """The queries under "Example queries" are code people copy: each one runs (on empty views)."""
    block = DOC.read_text().split("## Example queries", 1)[1].split("```sql", 1)[1].split("```")[0]
    queries = [q.strip() for q in re.sub(r"--[^\n]*", "", block).split(";") if q.strip()]
    assert len(queries) >= 6, queries
    async with rt.pool.acquire() as conn:
        for query in queries:
            await conn.fetch(query)
