"""What every client does to publish: one NATS connection, one actor, an envelope per event,
and an idempotent publish (``Nats-Msg-Id`` = event id, retried on transient errors)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from nats.aio.client import Client as NatsClient
from nats.js.api import PubAck

from fleetward.schemas import Event, new_id
from fleetward.schemas.roles import RoleBook
from fleetward.services.client.taskstate import TaskCache
from fleetward.services.jetstream.publish import publish


class Publisher:
    """Publishes events as ``actor`` on ``nc``; closing it closes the connection."""

    def __init__(self, nc: NatsClient, actor: str) -> None:
        self.nc, self.js, self.actor = nc, nc.jetstream(timeout=10), actor
        # people's role changes read so far: task reads judge people's events with them
        self.roles = RoleBook()
        self.tasks = TaskCache()  # the tasks read lately, folded: read on from there

    def envelope(self, event_id: str | None = None) -> dict[str, Any]:
        """The envelope fields of a new event: its id (fresh unless given), actor and time."""
        return {"id": event_id or new_id(), "actor": self.actor, "at": datetime.now(UTC)}

    async def send(self, event: Event, *, expect: int | None = None) -> PubAck:
        """Publish ``event``; with ``expect``, compare-and-set over its boundary (the last
        sequence over the boundary's subjects must be ``expect``: ``jetstream.publish``)."""
        return await publish(self.js, event, expect=expect)

    async def close(self) -> None:
        """Close the connection."""
        await self.nc.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
