"""The live stream of ``GET /api/v1/events``: changes of the views, as server-sent events.

How: one poller per process reads the projections' checkpoints every ``every`` seconds, and only
when one moved reads the watched rows of agents, tasks and escalations again, compares them with
the last reading and sends what changed to every subscriber. So a change is sent once its
projection has committed it (what a client then reads from the routes agrees with it), the cost
is one small query a second however many dashboards are open, and the API needs no right on
the streams. Following FW_EVENTS instead would tell of an event before the views show it, and
fold every event a second time beside the projector.

The poller also keeps the overview it read last: ``GET /api/v1/overview`` answers with it while
it is younger than ``OVERVIEW_MAX_AGE_S``, and while anyone asked for it in the last
``OVERVIEW_WANTED_S`` the poller reads it again every round, changes or not (some of it moves
with the clock: spend today, tasks done in the last hour). So however many dashboards are open,
the overview's aggregates over every agent and task are read about once a second per process,
not once per page; nobody asking, they are read only when the views change.

Invariants: a subscriber gets the changes after it subscribed and after the poller's first round
(the baseline: ``ready`` is sent only then), in order; a round that fails midway changes nothing
it compares with, so what it found is sent by the next; one that cannot keep up
(``BUFFER`` events waiting) is dropped (its EventSource reconnects, and reads the routes again).
More than ``MAX_ROWS`` changed rows in one round are sent as one ``resync``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import anyio
import asyncpg
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fleetward.schemas import http
from fleetward.services.api import reads
from fleetward.services.db import Conn, q

log = logging.getLogger("fleetward.api")

BUFFER: Final = 1000  # events waiting for one subscriber before it is dropped
MAX_ROWS: Final = 500  # changed rows in one round past which a resync is sent instead
OVERVIEW_MAX_AGE_S: Final = 3.0  # /overview answers from the last reading when it is this young
OVERVIEW_WANTED_S: Final = 10.0  # read every round while it was asked for this recently
Event = tuple[str, bytes]  # (name, JSON data)
Snapshot = dict[str, tuple[Any, ...]]


def sse(name: str, data: bytes) -> bytes:
    """One server-sent event (``data`` is one line of JSON)."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def diff(before: Snapshot, after: Snapshot) -> tuple[list[str], list[str]]:
    """Keys whose rows are new or changed, and keys that are gone."""
    changed = [k for k, row in after.items() if before.get(k) != row]
    return sorted(changed), sorted(k for k in before if k not in after)


class Live:
    """The poller and its subscribers (one per open event stream)."""

    def __init__(self, pool: asyncpg.Pool, every: float = 1.0) -> None:
        self.pool = pool
        self.every = every
        self._subscribers: set[MemoryObjectSendStream[Event]] = set()
        self._seen: dict[str, Snapshot] = {}
        self._overview = b""
        self._latest: tuple[float, http.Overview] | None = None  # (monotonic time, overview)
        self._asked = float("-inf")  # monotonic time the overview was last asked for
        self._checkpoints: list[int] | None = None
        self._based = anyio.Event()  # set by the first round that completes (``baseline``)
        self.ok: tuple[bool, str] = (True, "starting")

    def overview(self) -> http.Overview | None:
        """The overview read last, if younger than ``OVERVIEW_MAX_AGE_S`` seconds; else None
        (read it, and ``keep`` it). Asking keeps the poller reading it every round for
        ``OVERVIEW_WANTED_S`` seconds."""
        now = time.monotonic()
        self._asked = now
        if self._latest is not None and now - self._latest[0] <= OVERVIEW_MAX_AGE_S:
            return self._latest[1]
        return None

    def keep(self, overview: http.Overview) -> None:
        """Remember ``overview``, read just now, for ``overview``'s answers."""
        self._latest = (time.monotonic(), overview)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[MemoryObjectReceiveStream[Event]]:
        send, receive = anyio.create_memory_object_stream[Event](BUFFER)
        self._subscribers.add(send)
        try:
            yield receive
        finally:
            self._subscribers.discard(send)
            send.close()
            receive.close()

    def _publish(self, events: list[Event]) -> None:
        for send in list(self._subscribers):
            try:
                for event in events:
                    send.send_nowait(event)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                log.info("a live subscriber fell %d events behind: dropped", BUFFER)
                self._subscribers.discard(send)
                send.close()

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Poll until ``stopping()``; then close every subscriber's stream."""
        try:
            while not stopping():
                try:
                    async with self.pool.acquire() as conn:
                        self._publish(await self.round(conn))
                    self.ok = (True, f"{len(self._subscribers)} live subscribers")
                except (OSError, asyncpg.PostgresError) as exc:
                    self.ok = (False, f"cannot read the views: {exc}")
                await anyio.sleep(self.every)
        finally:
            for send in list(self._subscribers):
                send.close()
            self._subscribers.clear()

    async def baseline(self) -> None:
        """Return once the poller's first round has been read (at once after): every change
        committed after that is sent. The live endpoint says ``ready`` only then, so a client
        that reads the routes after ``ready`` reads no older state than the baseline."""
        await self._based.wait()

    async def round(self, conn: Conn) -> list[Event]:
        """The changes since the last round (none on the first: it is the baseline). Nothing
        is remembered of a round that fails midway (a query raises): the next one compares
        with the last round that completed, so what the failed one found is sent then."""
        at = (await conn.fetchval(q("api_checkpoints"))) or []
        now = time.monotonic()
        moved = at != self._checkpoints
        aged = self._latest is None or now - self._latest[0] >= self.every
        if not moved and not (aged and now - self._asked <= OVERVIEW_WANTED_S):
            return []
        first = self._checkpoints is None
        events: list[Event] = []
        seen = dict(self._seen)
        if moved:
            events += await self._moved(conn, seen)
        read = await reads.overview(conn)
        overview = msgspec.json.encode(read)
        # the whole round is read: only now is it what the next one compares with
        if moved:
            self._checkpoints, self._seen = list(at), seen
        self.keep(read)
        if overview != self._overview:
            self._overview = overview
            events.append(("overview", overview))
        if first:
            self._based.set()
            return []
        if len(events) > MAX_ROWS:
            return [("resync", b"{}")]
        return events

    async def _moved(self, conn: Conn, seen: dict[str, Snapshot]) -> list[Event]:
        """The rows of agents, tasks and escalations that changed since the readings in
        ``seen``, which this updates."""
        agents, gone = await self._changed(conn, seen, "agents", "api_live_agents")
        events = [("agent", msgspec.json.encode(a)) for a in await reads.agent_rows(conn, agents)]
        events += [("agent", msgspec.json.encode({"agent_id": a, "removed": True})) for a in gone]
        events += await self._rows(conn, seen, "task", "api_live_tasks")
        return events + await self._rows(conn, seen, "escalation", "api_live_escalations")

    @staticmethod
    async def _changed(
        conn: Conn, seen: dict[str, Snapshot], kind: str, query: str
    ) -> tuple[list[str], list[str]]:
        records = await conn.fetch(q(query))
        now = {r[0]: tuple(r) for r in records}
        changed, gone = diff(seen.get(kind, {}), now)
        seen[kind] = now
        return changed, gone

    @staticmethod
    async def _rows(conn: Conn, seen: dict[str, Snapshot], name: str, query: str) -> list[Event]:
        """Events for the rows of ``query`` that changed (keyed by the first column)."""
        records = await conn.fetch(q(query))
        now = {r[0]: tuple(r) for r in records}
        changed, _ = diff(seen.get(name, {}), now)
        seen[name] = now
        by_key = {r[0]: r for r in records}
        return [(name, msgspec.json.encode(dict(by_key[k]))) for k in changed]
