"""The HTTP server of every service process: GET /metrics (the registry, in the Prometheus text
format); GET /healthz and GET /readyz (the same answer: 200 ``{"ok": true}`` while the service
does its work, else 503 ``{"ok": false, "problems": [...]}`` naming why, from the service's own
check); GET /livez (200 while the process answers at all: for liveness probes, which must not
restart a service that only waits for Postgres or NATS to come back)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

import anyio
from anyio.abc import SocketStream
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fleetward.services.metrics import REGISTRY


def render() -> bytes:
    """The registry's metrics in the Prometheus text format."""
    return generate_latest(REGISTRY)


HEALTH_PATHS = (b"/healthz", b"/readyz")


def health_answer(problems: list[str]) -> tuple[bytes, bytes]:
    """The status line and JSON body of /healthz for ``problems`` (none: healthy)."""
    if not problems:
        return b"200 OK", b'{"ok":true}'
    body = json.dumps({"ok": False, "problems": problems}, ensure_ascii=True).encode()
    return b"503 Service Unavailable", body


async def serve_http(
    host: str,
    port: int,
    problems: Callable[[], list[str]],
    *,
    task_status: anyio.abc.TaskStatus[int],
) -> None:
    """Serve GET /metrics, /healthz, /readyz and /livez until cancelled; reports the bound
    port. ``problems`` says why the service is not doing its work ([] when it is)."""

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
                status, body = health_answer(problems())
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
    await listener.serve(handle)
