"""``fleetward api``'s HTTP server: the app (services/api/app.py) under uvicorn, in the services'
task group, with the live poller beside it; stops when the services stop, and then closes the
connections it wrote with as people (services/api/write.py) and as agents (the ingress,
services/api/acting.py)."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator

import anyio
import uvicorn
from anyio.abc import TaskStatus

from fleetward.services.api.acting import AgentPool
from fleetward.services.api.app import make_app
from fleetward.services.api.ingress import ingress_routes
from fleetward.services.api.live import Live
from fleetward.services.api.token import load_key
from fleetward.services.api.write import People
from fleetward.services.metrics.health import HealthChecks
from fleetward.services.runtime.connect import Runtime

log = logging.getLogger("fleetward.api")


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the services' own stop them (services/serve.py)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: a free port), so the port is known at once;
    TCP_NODELAY, so a small answer leaves at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: uvicorn writes a response's head and body apart, and with
    # Nagle on the body waited for the client's delayed ACK, 40 ms on every request
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve_api(
    rt: Runtime,
    health: HealthChecks,
    stop: anyio.Event,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API on ``FLEETWARD_API_HOST:FLEETWARD_API_PORT`` (HTTPS when
    ``FLEETWARD_API_TLS_CERT`` and ``_KEY`` are set), reporting the bound port, until ``stop``
    is set. The tokens' key is made in ``FLEETWARD_AUTH_DIR`` if missing; the
    ingress acts for agents with their credentials there (services/api/acting.py)."""
    key = load_key(rt.settings.auth_dir, create=True)
    live = Live(rt.pool)
    health.register("live", lambda: live.ok)
    people = People(rt.nats_url, rt.settings.auth_dir)
    agents = AgentPool(rt.nats_url, rt.settings.auth_dir)  # the ingress's (services/api/acting.py)
    app = make_app(rt.pool, key, live, health, people, more=ingress_routes(agents))
    tls = rt.settings.api_tls  # HTTPS with these PEM files (FLEETWARD_API_TLS_CERT, _KEY)
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2, access_log=False,
        ssl_certfile=str(tls[0]) if tls else None, ssl_keyfile=str(tls[1]) if tls else None,
    )  # fmt: skip
    server = _Server(config)
    sock = bind(rt.settings.api_host, rt.settings.api_port)
    port = int(sock.getsockname()[1])

    async def watch_stop() -> None:
        await stop.wait()
        server.should_exit = True

    try:
        with sock:
            async with anyio.create_task_group() as tg:
                tg.start_soon(live.run, stop.is_set)
                tg.start_soon(watch_stop)
                task_status.started(port)
                await server.serve(sockets=[sock])
                tg.cancel_scope.cancel()
    finally:
        await people.aclose()  # the writers' connections (shielded: closed even if cancelled)
        with anyio.CancelScope(shield=True):
            await agents.aclose()  # the ingress's agents' connections
