"""Postgres: migrations, named queries from projections/sql, and the statements that load and
write a projection's keyed tables."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from operator import itemgetter
from typing import Any

import asyncpg

from fleetward.projections.base import Table

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
"""A connection, or one lent by a pool."""

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_MIGRATION_LOCK = 0x46_57_4D  # an advisory lock key: one migrator at a time


def named_queries(text: str, found: dict[str, str] | None = None) -> dict[str, str]:
    """The queries of one .sql file, each after a ``-- name: NAME`` line, added to ``found``.
    Raises ``ValueError`` on a name given twice."""
    found = {} if found is None else found
    parts = _NAME.split(text)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"two queries named {name}")
        found[name] = body.strip()
    return found


@cache
def queries() -> dict[str, str]:
    """The named queries of every .sql file in projections/sql (migrations apart)."""
    found: dict[str, str] = {}
    folder = resources.files("fleetward.projections").joinpath("sql")
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.endswith(".sql"):
            named_queries(path.read_text(), found)
    return found


def q(name: str) -> str:
    return queries()[name]


def migrations() -> list[tuple[str, str]]:
    folder = resources.files("fleetward.projections").joinpath("sql/migrations")
    files = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name, folder.joinpath(name).read_text()) for name in files]


async def migrate(conn: Conn) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction. Returns their names."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS public.fleetward_migrations "
            "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM public.fleetward_migrations")}
        for name, sql in migrations():
            if name in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO public.fleetward_migrations (name) VALUES ($1)", name)
            applied.append(name)
    return applied


@cache
def load_sql(table: Table) -> str:
    """Select the rows of ``table`` whose keys are in the given arrays (one per key column)."""
    cols = ", ".join(table.columns)
    if len(table.key) == 1:
        key, sql_type = table.key[0], table.key_types[0]
        return f"SELECT {cols} FROM {table.name} WHERE {key} = ANY($1::{sql_type}[])"
    arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(table.key_types, 1))
    keys = ", ".join(table.key)
    return f"SELECT {cols} FROM {table.name} WHERE ({keys}) IN (SELECT * FROM unnest({arrays}))"


@cache
def all_rows_sql(table: Table) -> str:
    """Select every row of ``table``, at most $1 of them."""
    return f"SELECT {', '.join(table.columns)} FROM {table.name} LIMIT $1"


@cache
def truncate_sql(table: Table) -> str:
    return f"TRUNCATE {table.name}"


@cache
def any_row_sql(table: Table) -> str:
    """True when ``table`` has a row."""
    return f"SELECT EXISTS (SELECT 1 FROM {table.name})"


def stage_name(table: Table) -> str:
    return "stage_" + table.name.replace(".", "_")


@cache
def stage_sql(table: Table) -> str:
    """A session-private staging table shaped like ``table``, emptied at every commit."""
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {stage_name(table)} "
        f"(LIKE {table.name}) ON COMMIT DELETE ROWS"
    )


@cache
def clear_stage_sql(table: Table) -> str:
    """Empty ``table``'s staging table before the transaction ends (for several writes of the
    same rows in one transaction, as bisection does)."""
    return f"DELETE FROM {stage_name(table)}"


@cache
def merge_sql(table: Table) -> str:
    """Upsert every staged row into ``table`` (rows with the same key replace the old one)."""
    cols = ", ".join(table.columns)
    rest = [c for c in table.columns if c not in table.key]
    update = ", ".join(f"{c} = EXCLUDED.{c}" for c in rest)
    action = f"DO UPDATE SET {update}" if rest else "DO NOTHING"
    return (
        f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM {stage_name(table)} "
        f"ON CONFLICT ({', '.join(table.key)}) {action}"
    )


async def write_rows(conn: Conn, table: Table, rows: list[dict[str, Any]]) -> None:
    """Write changed rows of ``table``: COPY them into the staging table, then one upsert.
    Must run inside a transaction (the staging table empties at commit)."""
    await conn.execute(stage_sql(table))
    await stage_rows(conn, table, rows)
    await conn.execute(merge_sql(table))


async def stage_rows(conn: Conn, table: Table, rows: list[dict[str, Any]]) -> None:
    """COPY rows of ``table`` into its staging table (``stage_sql``, which must exist), for
    ``merge_sql`` to upsert in the same transaction."""
    values = itemgetter(*table.columns)  # columns are many, so this returns a tuple
    records = [values(r) for r in rows]
    await conn.copy_records_to_table(stage_name(table), records=records, columns=table.columns)


def key_arrays(table: Table, keys: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [[k[i] for k in keys] for i in range(len(table.key))]
