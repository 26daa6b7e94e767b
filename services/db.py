"""Postgres: migrations, named queries from projections/sql, and the statements that load and
write a projection's keyed tables."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

import asyncpg

from projections.base import Table

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
"""A connection, or one lent by a pool."""

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_MIGRATION_LOCK = 0x46_57_4D  # an advisory lock key: one migrator at a time


@cache
def queries() -> dict[str, str]:
    """The named queries of projections/sql/queries.sql."""
    text = resources.files("projections").joinpath("sql/queries.sql").read_text()
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def q(name: str) -> str:
    return queries()[name]


def migrations() -> list[tuple[str, str]]:
    folder = resources.files("projections").joinpath("sql/migrations")
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
def upsert_sql(table: Table) -> str:
    """Insert one row of ``table``, or replace the row with the same key."""
    cols = ", ".join(table.columns)
    params = ", ".join(f"${i}" for i in range(1, len(table.columns) + 1))
    rest = [c for c in table.columns if c not in table.key]
    update = ", ".join(f"{c} = EXCLUDED.{c}" for c in rest)
    action = f"DO UPDATE SET {update}" if rest else "DO NOTHING"
    return (
        f"INSERT INTO {table.name} ({cols}) VALUES ({params}) "
        f"ON CONFLICT ({', '.join(table.key)}) {action}"
    )


def key_arrays(table: Table, keys: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [[k[i] for k in keys] for i in range(len(table.key))]
