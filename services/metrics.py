"""Prometheus metrics of the pipeline, and a small HTTP server for /metrics and /healthz.

Label values are bounded: projection names, event type names, reasons. Never an id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import anyio
from anyio.abc import SocketStream
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REGISTRY = CollectorRegistry()

EVENTS = Counter(
    "fleetward_events_processed",
    "Events applied to a projection, by event type.",
    ["projection", "type"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "fleetward_dead_letters",
    "Events a projection refused and recorded as dead letters.",
    ["projection", "reason"],
    registry=REGISTRY,
)
SKIPPED = Counter(
    "fleetward_events_skipped",
    "Deliveries at or below the checkpoint, or duplicate ids in a batch "
    "(redeliveries): acknowledged, not applied.",
    ["projection"],
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "fleetward_batch_size",
    "Events per committed batch.",
    ["projection"],
    registry=REGISTRY,
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
BATCH_SECONDS = Histogram(
    "fleetward_batch_seconds",
    "Time to apply and commit one batch.",
    ["projection"],
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CHECKPOINT = Gauge(
    "fleetward_projection_checkpoint",
    "Last stream sequence applied.",
    ["projection"],
    registry=REGISTRY,
)
LAG_EVENTS = Gauge(
    "fleetward_projection_lag_events",
    "Events in the stream not yet applied by the projection.",
    ["projection"],
    registry=REGISTRY,
)
LAG_SECONDS = Gauge(
    "fleetward_projection_lag_seconds",
    "Age (by the stream's clock) of the last event applied, when more are pending; else 0.",
    ["projection"],
    registry=REGISTRY,
)
RESYNCS = Counter(
    "fleetward_projection_resyncs",
    "Times a projection re-positioned its consumer "
    "(another writer moved the checkpoint, or an error).",
    ["projection"],
    registry=REGISTRY,
)


def render() -> bytes:
    return generate_latest(REGISTRY)


async def serve_http(
    host: str, port: int, health: Callable[[], bool], *, task_status: anyio.abc.TaskStatus[int]
) -> None:
    """Serve GET /metrics and GET /healthz until cancelled; reports the bound port."""

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
            elif path == b"/healthz":
                ok = health()
                status = b"200 OK" if ok else b"503 Service Unavailable"
                ctype, body = b"application/json", b'{"ok":%s}' % (b"true" if ok else b"false")
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


# ---- the watchdog -----------------------------------------------------------------------------

WATCHDOG_AGENTS_TRACKED = Gauge(
    "fleetward_watchdog_agents_tracked",
    "Agents this watchdog replica keeps a clock for (its partition).",
    registry=REGISTRY,
)
WATCHDOG_AGENTS = Gauge(
    "fleetward_watchdog_agents",
    "Tracked agents by liveness state: alive, warning, critical, dismissed (a person resolved "
    "the escalation; judged again from the next heartbeat), offline, paused, retired.",
    ["state"],
    registry=REGISTRY,
)
WATCHDOG_GRACE = Gauge(
    "fleetward_watchdog_in_grace",
    "1 while the watchdog judges no one (after its start, a reconnect or a NATS outage).",
    registry=REGISTRY,
)
ESCALATIONS_RAISED = Counter(
    "fleetward_escalations_raised",
    "Escalations (and tier raises) this replica stored; another replica's are not counted.",
    ["tier", "reason"],
    registry=REGISTRY,
)
DETECTION_DELAY = Histogram(
    "fleetward_watchdog_detection_delay_seconds",
    "From the moment a condition fell due (a deadline; a triggering event) to the escalation "
    "being stored, by the watchdog host's clock.",
    ["reason"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
WATCHDOG_PUBLISHED = Counter(
    "fleetward_watchdog_publish_outcomes",
    "Steps of the watchdog's plans by outcome: stored, duplicate (another replica or an earlier "
    "run did it), closed (the escalation was resolved meanwhile), failed.",
    ["outcome"],
    registry=REGISTRY,
)
WATCHDOG_REJECTED = Counter(
    "fleetward_watchdog_rejected",
    "Events the watchdog could not use (see fleet.dead_letters for the projector's view).",
    ["stream"],
    registry=REGISTRY,
)
