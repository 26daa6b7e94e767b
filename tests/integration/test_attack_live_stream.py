"""The live stream's promise (services/api/live.py, ``GET /api/v1/events``): a client that
reads the routes after ``ready`` misses no change. Two ways it did (found by an attack, fixed):

- a round that fails midway (Postgres away for a moment between its queries: the poller's own
  recovery, ``run`` catches it) has already taken the new checkpoints and the agents' snapshot,
  so the agent changes it found are never sent, to anyone;
- a subscriber that subscribed before the poller's first round (the API just started, or
  restarted and every dashboard reconnected) gets ``ready`` at once; a change committed between
  its reading and the first round is taken as the baseline and never sent.
"""

from __future__ import annotations

from typing import Any

import anyio
import asyncpg
import msgspec
import pytest

from fleetward.schemas.events import AgentPaused
from fleetward.services.api.live import Live
from fleetward.services.db import q
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import envelope, project_all
from tests.integration.test_watchdog import register


class FailsOnce:
    """A connection whose first read of ``query`` fails as a dropped connection does."""

    def __init__(self, conn: Any, query: str) -> None:
        self.conn, self.query, self.failed = conn, q(query), False

    async def fetchval(self, *a: Any) -> Any:
        return await self.conn.fetchval(*a)

    async def fetch(self, sql: str, *a: Any) -> Any:
        if sql == self.query and not self.failed:
            self.failed = True
            raise asyncpg.PostgresConnectionError("connection lost")
        return await self.conn.fetch(sql, *a)


def agent_events(events: list[tuple[str, bytes]], agent: str) -> list[dict[str, Any]]:
    rows = [msgspec.json.decode(d) for n, d in events if n == "agent"]
    return [r for r in rows if r["agent_id"] == agent]


async def test_a_round_that_fails_midway_still_sends_the_changes_it_found_later(
    rt: Runtime,
) -> None:
    """ls-1 is paused; the round that sees it fails on the tasks query (after it read the
    agents). The next rounds must still send ls-1's change (a subscriber's page shows it
    active otherwise, for good). They send nothing."""
    await publish_many(rt.js, [register("ls-1")])
    await project_all(rt)
    live = Live(rt.pool)
    async with rt.pool.acquire() as conn:
        assert await live.round(conn) == []  # the baseline
        await publish_many(rt.js, [AgentPaused(**envelope("user:ops"), agent="ls-1", reason="x")])
        await project_all(rt)
        with pytest.raises(asyncpg.PostgresConnectionError):
            await live.round(FailsOnce(conn, "api_live_tasks"))  # type: ignore[arg-type]
        sent = []
        for _ in range(3):  # Postgres is back: the poller's next rounds
            sent += await live.round(conn)
    paused = [r["status"] for r in agent_events(sent, "ls-1")]
    assert paused == ["paused"], sent


async def test_ready_waits_for_the_first_round_so_a_change_after_the_reading_is_sent(
    rt: Runtime,
) -> None:
    """The endpoint once said ``ready`` as soon as it subscribed, before the poller's first
    round: the page read ls-2 active, ls-2 was paused, the first round took the paused row as
    its baseline and sent nothing (the page showed ls-2 active while it was paused). Now
    ``ready`` waits for that baseline (``Live.baseline``), so the page reads after it and the
    pause is a change the next round sends."""
    await publish_many(rt.js, [register("ls-2")])
    await project_all(rt)
    live = Live(rt.pool)
    async with live.subscribe() as changes:  # the endpoint: subscribed ...
        with anyio.move_on_after(0.3) as waiting:
            await live.baseline()  # ... not ready before the poller's first round
        assert waiting.cancelled_caught
        async with rt.pool.acquire() as conn:
            live._publish(await live.round(conn))  # the baseline
        with anyio.fail_after(5):
            await live.baseline()  # now "ready": the page reads the routes, ls-2 is active
        async with rt.pool.acquire() as conn:
            status = await conn.fetchval("SELECT status FROM fleet.agents WHERE agent_id = 'ls-2'")
        assert status == "active"
        await publish_many(rt.js, [AgentPaused(**envelope("user:ops"), agent="ls-2", reason="x")])
        await project_all(rt)
        async with rt.pool.acquire() as conn:
            for _ in range(3):  # the poller's next rounds
                live._publish(await live.round(conn))
        got: list[tuple[str, bytes]] = []
        while True:
            with anyio.move_on_after(0.2):
                got.append(await changes.receive())
                continue
            break
    assert [r["status"] for r in agent_events(got, "ls-2")] == ["paused"], got
