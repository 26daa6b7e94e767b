"""Subject names: one subject per consistency boundary. Pure.

- ``fw.agent.<agent>``  agent lifecycle and activity   (stream FW_EVENTS)
- ``fw.task.<task>``    every event of one task         (stream FW_EVENTS)
- ``fw.esc.<id>``       one escalation                  (stream FW_EVENTS)
- ``fw.budget.<id>``    one budget                      (stream FW_EVENTS)
- ``fw.hb.<agent>``     heartbeats                      (stream FW_HEARTBEATS)
- ``fw.cmd.<agent>``    durable commands to one agent   (stream FW_COMMANDS)
- ``fw.api.<name>``     request/reply answers of the services (no stream)
"""

from __future__ import annotations

from fleetward.schemas.events import Event

PREFIX = "fw"
KINDS = ("agent", "task", "esc", "budget", "hb", "cmd")

# request/reply (core NATS, not stored); the shapes are in ``schemas/api.py``
API_PREFIX = f"{PREFIX}.api."
API_TASKS_CLAIMABLE = f"{API_PREFIX}tasks.claimable"
API_AGENTS_GET = f"{API_PREFIX}agents.get"


def subject(kind: str, key: str) -> str:
    """The subject of one consistency boundary, e.g. ``subject("task", "t-1") == "fw.task.t-1"``."""
    return f"{PREFIX}.{kind}.{key}"


def subject_of(event: Event) -> str:
    """The one subject an event belongs on."""
    return subject(event.SUBJECT_KIND, getattr(event, event.SUBJECT_KEY))


def kind_prefix(kind: str) -> str:
    """The start of every subject of one kind, e.g. ``fw.hb.``."""
    return f"{PREFIX}.{kind}."


def wildcard(kind: str) -> str:
    """All subjects of one kind, e.g. ``fw.task.>``."""
    return f"{PREFIX}.{kind}.>"


def parse(subj: str) -> tuple[str, str] | None:
    """``(kind, key)`` of a Fleetward subject, or None when it is not one."""
    parts = subj.split(".", 2)
    if len(parts) != 3 or parts[0] != PREFIX or parts[1] not in KINDS or not parts[2]:
        return None
    return parts[1], parts[2]
