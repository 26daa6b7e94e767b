"""A running Fleetward with its HTTP API for the API's tests: every projection, the watchdog
(short intervals) and the API in this process (``run_services``), a viewer's token, and more
tokens (``token_of``: an operator's writes as its person)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import anyio

from fleetward import projections
from fleetward.services.api import token
from fleetward.services.config import WatchdogSettings
from fleetward.services.runtime.connect import Runtime
from fleetward.services.serve import run_services
from tests.helpers import wait_for

INTERVAL = 0.3  # the agents' heartbeat interval: silent for 5 of them, an agent is offline
FAST = WatchdogSettings(
    interval_s=INTERVAL, warn_misses=2, critical_misses=5, grace_s=0.5, stall_s=3600.0,
    default_sla_s=0, error_window_s=60.0, error_threshold=0.5, error_min_calls=10,
)  # fmt: skip


@dataclass(frozen=True)
class Api:
    base: str  # http://127.0.0.1:PORT
    token: str  # a viewer's (user:viewer)
    key: bytes  # the tokens' signing key: ``token_of`` issues more


def token_of(api: Api, person: str, role: token.Role = "operator") -> str:
    """A ``role`` token for ``person``, signed with the API's key."""
    return token.issue(api.key, person, time.time(), role=role)


@asynccontextmanager
async def running_api(rt: Runtime) -> AsyncIterator[Api]:
    """Fleetward running against ``rt``'s servers, until the block ends."""
    fast = replace(rt, settings=replace(rt.settings, watchdog=FAST, api_port=0))
    ports: list[int] = []
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: run_services(fast, projections.ALL, watchdog=True, api=True,
                                 on_api=ports.append, stop=stop)
        )  # fmt: skip

        async def port() -> int:
            return ports[0] if ports else 0

        bound = await wait_for(port, 30, "the API's port")
        key = token.load_key(rt.settings.auth_dir, create=True)
        try:
            viewer = token.issue(key, "user:viewer", time.time())
            yield Api(fast.settings.api_base(bound), viewer, key)
        finally:
            stop.set()  # as SIGTERM: every part finishes and closes its connections
