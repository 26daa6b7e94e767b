"""Idempotence by event id where a ledger of ids would be too large: heartbeats (DESIGN 3.1).
Pure.

An event applies once, however late a copy of it is stored (another Nats-Msg-Id, or after the
stream's duplicate window). FW_EVENTS keeps a ledger of the first sequence of every event id
(services/projector/ledger.py). FW_HEARTBEATS cannot: 100,000 agents send 8,640 heartbeats a
day each. So a heartbeat counts only if its id sorts after the id of the last heartbeat counted
for its agent. Event ids are UUIDv7 or ULID (the contract, schemas/events.py): they sort by the
time the agent made them, so a copy of a heartbeat, or one older than the last counted, never
counts, however late it is stored. The rule reads only the agent's own last id, so it gives the
same verdicts live and in a rebuild.

What it asks of agents (docs/events.md, docs/agents.md): heartbeat ids must grow. An agent whose
ids do not sort by time (its own scheme, or a clock set back) has its heartbeats ignored until
its ids pass the last one counted.

Every reader of heartbeats that must count each one once (the utilization projection; the
watchdog, to judge liveness) uses this one function.
"""

from __future__ import annotations


def newer_heartbeat(last_id: str | None, event_id: str) -> bool:
    """Whether a heartbeat with id ``event_id`` counts, given ``last_id``, the id of the last
    heartbeat counted for the same agent (None: none yet). Ids compare as strings (UUIDv7 and
    ULID text sorts by time); an equal id is a copy of the last one and does not count."""
    return last_id is None or event_id > last_id
