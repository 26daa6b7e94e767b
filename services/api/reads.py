"""The HTTP API's reads: each route's query parameters (``schemas/http.py``) to a named query
of ``projections/sql/api.sql``, and its rows to the route's answer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import msgspec

from fleetward.schemas import http
from fleetward.services.db import Conn, q

T = TypeVar("T", bound=msgspec.Struct)

SPEND_DAYS = 30  # the default window of /spend
OVERVIEW_BUDGETS = 20  # budgets on the overview, the nearest their limit first


def _rows(records: Sequence[asyncpg.Record], cls: type[T]) -> list[T]:
    return [msgspec.convert(dict(r), cls) for r in records]


def _page(records: Sequence[asyncpg.Record], query: http.Query) -> tuple[list[Any], int | None]:
    """The page's rows (the query fetched one more) and the next page's offset, if any."""
    more = len(records) > query.limit
    return list(records[: query.limit]), query.offset + query.limit if more else None


async def agents(conn: Conn, query: http.AgentsQuery) -> http.AgentsPage:
    found = await conn.fetch(
        q("api_agents"), query.status, query.state, query.team, query.q, query.limit + 1,
        query.offset,
    )  # fmt: skip
    rows, nxt = _page(found, query)
    return http.AgentsPage(items=_rows(rows, http.Agent), next_offset=nxt)


async def agent(conn: Conn, agent_id: str) -> http.AgentDetail | None:
    row = await conn.fetchrow(q("agent_detail"), agent_id)
    return None if row is None else msgspec.convert(dict(row), http.AgentDetail)


async def agent_events(
    conn: Conn, agent_id: str, query: http.AgentEventsQuery
) -> http.AgentEventsPage | None:
    """Agent ``agent_id``'s timeline (named query ``api_agent_events``); None: no such agent."""
    if await conn.fetchval(q("api_agent_known"), agent_id) is None:
        return None
    found = await conn.fetch(q("api_agent_events"), agent_id, query.limit)
    return http.AgentEventsPage(items=_rows(found, http.AgentEvent))


async def agent_rows(conn: Conn, ids: list[str]) -> list[http.Agent]:
    return _rows(await conn.fetch(q("api_agent_rows"), ids), http.Agent)


async def tasks(conn: Conn, query: http.TasksQuery) -> http.TasksPage:
    found = await conn.fetch(
        q("api_tasks"), query.status, query.project, query.priority, query.assignee,
        query.limit + 1, query.offset,
    )  # fmt: skip
    rows, nxt = _page(found, query)
    return http.TasksPage(items=_rows(rows, http.Task), next_offset=nxt)


async def task(conn: Conn, task_id: str) -> http.TaskDetail | None:
    row = await conn.fetchrow(q("api_task"), task_id)
    return None if row is None else msgspec.convert(dict(row), http.TaskDetail)


async def spend(conn: Conn, query: http.SpendQuery, now: datetime) -> http.SpendPage:
    until = query.until or now.astimezone(UTC).date()
    since = query.since or until - timedelta(days=SPEND_DAYS - 1)
    found = await conn.fetch(
        q(f"api_spend_{query.by}"), query.key, since, until, query.limit + 1, query.offset
    )
    rows, nxt = _page(found, query)
    return http.SpendPage(items=_rows(rows, http.Spend), next_offset=nxt)


async def escalations(conn: Conn, query: http.EscalationsQuery) -> http.EscalationsPage:
    found = await conn.fetch(
        q("api_escalations"), query.state, query.tier, query.reason, query.agent_id,
        query.limit + 1, query.offset,
    )  # fmt: skip
    rows, nxt = _page(found, query)
    return http.EscalationsPage(items=_rows(rows, http.Escalation), next_offset=nxt)


async def dead_letters(conn: Conn, query: http.DeadLettersQuery) -> http.DeadLettersPage:
    found = await conn.fetch(
        q("api_dead_letters"), query.projection, query.reason, query.limit + 1, query.offset
    )
    rows, nxt = _page(found, query)
    return http.DeadLettersPage(items=_rows(rows, http.DeadLetter), next_offset=nxt)


async def budgets(conn: Conn, query: http.BudgetsQuery) -> http.BudgetsPage:
    found = await conn.fetch(
        q("api_budgets"), query.state, query.scope, query.limit + 1, query.offset
    )
    rows, nxt = _page(found, query)
    return http.BudgetsPage(items=_rows(rows, http.Budget), next_offset=nxt)


async def overview(conn: Conn) -> http.Overview:
    row = await conn.fetchrow(q("api_overview"))
    assert row is not None  # an aggregate query always returns one row
    top = await budgets(conn, http.BudgetsQuery(limit=OVERVIEW_BUDGETS))
    return http.Overview(
        agents_by_status=json.loads(row["agents_by_status"]),
        agents_by_state=json.loads(row["agents_by_state"]),
        escalations_by_tier=json.loads(row["escalations_by_tier"]),
        tasks_by_status=json.loads(row["tasks_by_status"]),
        tasks_done_today=row["tasks_done_today"],
        tasks_done_last_hour=row["tasks_done_last_hour"],
        spend_today_usd=row["spend_today_usd"],
        budgets=top.items,
        dead_letters=row["dead_letters"],
    )
