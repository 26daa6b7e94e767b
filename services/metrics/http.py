"""The HTTP server of every service process: GET /metrics (the registry, in the Prometheus text
format); GET /healthz and GET /readyz (the same answer: 200 while the service does its work, else
503; with ``HealthChecks``, every named check's verdict and reason in the body, and the failing
ones' reasons as ``problems``: services/metrics/health.py); GET /livez (200 while the process
answers at all: for liveness probes, which must not restart a service that only waits for
Postgres or NATS to come back)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import anyio
from anyio.abc import SocketStream
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fleetward.services.metrics import REGISTRY
from fleetward.services.metrics.health import HealthChecks

HEALTH_PATHS = (b"/healthz", b"/readyz")


def render() -> bytes:
    """The registry's metrics in the Prometheus text format."""
    return generate_latest(REGISTRY)


async def serve_http(
    host: str, port: int, health: Callable[[], bool], *, task_status: anyio.abc.TaskStatus[int]
) -> None:
    """Serve GET /metrics, /healthz, /readyz and /livez until cancelled; reports the bound
    port."""

    async def handle(stream: SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(5):
                    request = await stream.receive(4096)
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError):
                return
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b"/"
            if path == b"/metrics":
                status, ctype, body = b"200 OK", CONTENT_TYPE_LATEST.encode(), render()
            elif path in HEALTH_PATHS:
                if isinstance(health, HealthChecks):
                    report = health.report()
                    ok, body = report.ok, report.json()
                else:
                    ok = health()
                    body = b'{"ok":%s}' % (b"true" if ok else b"false")
                status = b"200 OK" if ok else b"503 Service Unavailable"
                ctype = b"application/json"
            elif path == b"/livez":
                status, ctype, body = b"200 OK", b"application/json", b'{"ok":true}'
            else:
                status, ctype, body = b"404 Not Found", b"text/plain", b"not found\n"
            head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
                status,
                ctype,
                len(body),
            )
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(head + b"Connection: close\r\n\r\n" + body)

    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    bound = listener.extra(anyio.abc.SocketAttribute.local_port)
    task_status.started(bound)
    async with listener:  # closed when cancelled
        await listener.serve(handle)
