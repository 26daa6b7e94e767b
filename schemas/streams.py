"""The JetStream streams, as data. Pure: services/jetstream/streams.py creates and verifies them.

FW_EVENTS is the audit log: file storage, no deletes, no purges, no rollups.
"""

from __future__ import annotations

from typing import Final

import msgspec

from fleetward.schemas.partitions import transform
from fleetward.schemas.subjects import wildcard

EVENTS_STREAM: Final = "FW_EVENTS"  # the audit log: agents, tasks, escalations, budgets
HEARTBEATS_STREAM: Final = "FW_HEARTBEATS"  # liveness, kept for a day
COMMANDS_STREAM: Final = "FW_COMMANDS"  # durable commands to agents

DAY: Final = 86_400.0
DEFAULT_AUDIT_RETENTION_DAYS: Final = 183  # at least six months (DESIGN 2)


class StreamSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    subjects: tuple[str, ...]
    description: str
    max_age_s: float  # 0 = unlimited
    duplicate_window_s: float = 120.0
    max_msg_size: int = 1024 * 1024
    deny_delete: bool = False
    deny_purge: bool = False
    allow_rollup: bool = False
    allow_direct: bool = False  # direct gets: agents read a task subject in one request
    storage: str = "file"
    # (source, destination) of the stream's subject transform (nats-server >= 2.10), or None:
    # FW_HEARTBEATS' partition token (schemas/partitions.py)
    subject_transform: tuple[str, str] | None = None


def events_stream(retention_days: float = DEFAULT_AUDIT_RETENTION_DAYS) -> StreamSpec:
    """The audit log. ``retention_days == 0`` keeps events forever."""
    return StreamSpec(
        name=EVENTS_STREAM,
        subjects=tuple(
            wildcard(k)
            for k in ("agent", "task", "esc", "budget", "person", "approval", "policy", "audit")
        ),
        description="Fleetward audit log: every agent, task, escalation, budget, role, approval "
        "and policy event, and its seals",
        max_age_s=retention_days * DAY,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
    )


def heartbeats_stream(partitions: int = 1) -> StreamSpec:
    """Liveness, kept for one day. With ``partitions > 1`` a subject transform stores each
    heartbeat as ``fw.hb.<p>.<agent>`` (schemas/partitions.py); agents publish as with one."""
    return StreamSpec(
        name=HEARTBEATS_STREAM,
        subjects=(wildcard("hb"),),
        description="Fleetward heartbeats (liveness), kept for one day",
        max_age_s=1 * DAY,
        subject_transform=transform(partitions),
    )


HEARTBEATS: Final = heartbeats_stream()

COMMANDS: Final = StreamSpec(
    name=COMMANDS_STREAM,
    subjects=(wildcard("cmd"),),
    description="Fleetward durable commands to agents",
    max_age_s=30 * DAY,
    deny_delete=True,
)


def all_streams(
    retention_days: float = DEFAULT_AUDIT_RETENTION_DAYS, heartbeat_partitions: int = 1
) -> tuple[StreamSpec, ...]:
    """Every stream: FW_EVENTS keeping ``retention_days`` (0: forever), FW_HEARTBEATS in
    ``heartbeat_partitions``, FW_COMMANDS."""
    return (events_stream(retention_days), heartbeats_stream(heartbeat_partitions), COMMANDS)


def stream_for_kind(kind: str) -> str:
    """The stream that stores a subject kind."""
    return {"hb": HEARTBEATS_STREAM, "cmd": COMMANDS_STREAM}.get(kind, EVENTS_STREAM)


# ---- consumer names ---------------------------------------------------------------------------
CONSUMER_PREFIX: Final = "fw_"


def projector_durable(projection_names: tuple[str, ...] | list[str], suffix: str = "") -> str:
    """The durable consumer of a projector runner, e.g. ``fw_agents_tasks`` (names sorted)."""
    return CONSUMER_PREFIX + "_".join(sorted(projection_names)) + suffix


def inbox_durable(agent: str) -> str:
    """The durable consumer of an agent's command inbox on FW_COMMANDS."""
    return f"inbox_{agent}"


def follower_prefix(reader: str) -> str:
    """The name prefix of an ordered follower's ephemeral consumers, e.g. ``fw_watchdog_hb``
    (the server appends nothing; the follower adds a unique suffix)."""
    return CONSUMER_PREFIX + reader
