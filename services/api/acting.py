"""The agents the HTTPS ingress acts for: one ``AgentClient`` per agent, each on a NATS
connection of its own made with that agent's own credentials (``FLEETWARD_AUTH_DIR/creds``), so
the server's permissions and every reader judge what the ingress publishes exactly as if the
agent had published it (DESIGN 3.7).

Invariants:
- The ingress never issues credentials: an agent whose credentials are missing, revoked or
  expired is refused (``NotActing``), so revoking an agent (``fleetward agents revoke``) stops
  its HTTP traffic too. ``fleetward api token --agent ID`` issues them with the token.
- A client whose connection the server closed because the agent was revoked is closed at the
  agent's next request, which is refused; while NATS is away, requests are 503 at once.
- At most ``size`` clients are kept; the least recently used idle one is closed to make room
  (its commands read ahead and not returned go back to the server). A client whose connection
  closed (revoked, or NATS away past its reconnects) is replaced at its agent's next request.
- One request at a time per agent for everything but heartbeats and plain events (``lock``):
  the SDK's inbox and claims are one agent's, in order.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import anyio

from fleetward.services.auth.store import AuthStore, is_expired
from fleetward.services.client import AgentClient
from fleetward.services.errors import FleetwardError
from fleetward.services.jetstream.connection import connect_as

DEFAULT_SIZE: Final = 1000  # agents with an open connection at once
RECONNECTS: Final = 10  # tries after a dropped connection (0.5 s apart) before it is replaced
CLOSE_S: Final = 5.0
SIGN_IN_S: Final = 3.0  # a request waits this long at most for its agent's first connect (503)


class NotActing(Exception):
    """The ingress cannot act for this agent (no credentials, revoked, expired): one line."""


@dataclass(eq=False)
class Acting:
    """One agent's client, its lock and how many requests use it now."""

    client: AgentClient
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    users: int = 0


class AgentPool:
    """The clients of the agents the ingress acts for (see the module)."""

    def __init__(
        self, nats_url: str, auth_dir: Path, size: int = DEFAULT_SIZE, sign_in_s: float = SIGN_IN_S
    ) -> None:
        self.nats_url, self.store, self.size = nats_url, AuthStore(auth_dir), size
        self.sign_in_s = sign_in_s  # seconds a request waits for its agent's first connect
        self._clients: collections.OrderedDict[str, Acting] = collections.OrderedDict()
        self._opening: dict[str, anyio.Lock] = {}

    @contextlib.asynccontextmanager
    async def acting(self, agent: str) -> AsyncIterator[Acting]:
        """``agent``'s client for the block (opened when missing). Raises ``NotActing`` as the
        module says, ``FleetwardError`` when NATS cannot be reached."""
        acting = await self._get(agent)
        acting.users += 1
        try:
            yield acting
        finally:
            acting.users -= 1

    async def _get(self, agent: str) -> Acting:
        found = self._clients.get(agent)
        if found is not None and not found.client.nc.is_connected:
            await self._down(agent, found)
        if found is not None and not found.client.nc.is_closed:
            self._clients.move_to_end(agent)
            return found
        opening = self._opening.setdefault(agent, anyio.Lock())
        try:
            async with opening:  # one sign-in per agent, however many of its requests wait
                found = self._clients.get(agent)
                if found is not None and not found.client.nc.is_closed:
                    return found
                if found is not None:
                    del self._clients[agent]
                acting = Acting(await self._open(agent))
                self._clients[agent] = acting
        finally:
            if not opening.locked() and not opening.statistics().tasks_waiting:
                self._opening.pop(agent, None)
        await self._make_room(keep=agent)
        return acting

    def _creds(self, agent: str) -> Path:
        """``agent``'s credentials file, or ``NotActing`` saying why there is none to use."""
        creds = self.store.creds_path(agent)
        if not creds.exists():
            raise NotActing(f"agent {agent} has no credentials here: issue its token with "
                            f"'fleetward api token --agent {agent}'")  # fmt: skip
        try:
            unusable = self.store.is_revoked(creds) or is_expired(creds)
        except (OSError, ValueError) as exc:
            raise NotActing(
                f"agent {agent}'s credentials cannot be read ({exc}): an operator "
                f"issues new ones ('fleetward api token --agent {agent}')"
            ) from None
        if unusable:
            raise NotActing(f"agent {agent}'s credentials are revoked or expired: an operator "
                            f"issues new ones ('fleetward api token --agent {agent}')")  # fmt: skip
        return creds

    async def _down(self, agent: str, acting: Acting) -> None:
        """``agent``'s connection is not connected: revoked (the server closed it: closed
        here, ``NotActing``), else NATS is away and nats-py reconnects it (``FleetwardError``,
        at once: a request does not wait for the reconnect)."""
        try:
            self._creds(agent)
        except NotActing:
            if self._clients.get(agent) is acting:
                del self._clients[agent]
            await self._close(acting)
            raise
        if not acting.client.nc.is_closed:
            raise FleetwardError(f"agent {agent}'s NATS connection is down, reconnecting: "
                                 "try again")  # fmt: skip

    async def _open(self, agent: str) -> AgentClient:
        creds = self._creds(agent)
        nc = await connect_as(
            self.nats_url, creds, agent, deadline_s=self.sign_in_s,
            connect_timeout=self.sign_in_s, max_reconnect_attempts=RECONNECTS,
            reconnect_time_wait=0.5,
        )  # fmt: skip
        client = AgentClient(nc, agent)
        await client.take_up_profile()
        return client

    async def _make_room(self, keep: str) -> None:
        """Close the least recently used idle clients past ``size`` (never ``keep``'s)."""
        idle = [
            a for a, c in self._clients.items()
            if a != keep and c.users == 0 and not c.lock.locked()
        ]  # fmt: skip
        for agent in idle[: max(0, len(self._clients) - self.size)]:
            await self._close(self._clients.pop(agent))

    async def _close(self, acting: Acting) -> None:
        with anyio.move_on_after(CLOSE_S, shield=True), contextlib.suppress(Exception):
            await acting.client.close()

    def __len__(self) -> int:
        return len(self._clients)

    async def aclose(self) -> None:
        """Close every client (on the API's shutdown)."""
        while self._clients:
            await self._close(self._clients.popitem()[1])
