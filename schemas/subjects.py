"""Subject names. Pure.

Every stored event belongs to one consistency boundary: a kind and a key, named
``fw.<kind>.<key>`` (``boundary``), e.g. ``fw.task.t-1``. Contract v2 (DESIGN 2, 3.7): *subjects
carry their actor*. NATS does not stamp a publisher on a message, so an event's subject names
its actor as one more token, which NATS permissions check (an actor may publish only on subjects
carrying its own actor token) and admission compares with the payload's ``actor``:

- ``fw.agent.<agent>.<actor>``  agent lifecycle and activity       (stream FW_EVENTS)
- ``fw.task.<task>.<actor>``    every event of one task             (stream FW_EVENTS)
- ``fw.esc.<id>.<actor>``       one escalation                      (stream FW_EVENTS)
- ``fw.budget.<id>.<actor>``    one budget                          (stream FW_EVENTS)
- ``fw.person.<name>.<actor>``  one person's roles (schemas/roles.py) (stream FW_EVENTS)
- ``fw.approval.<id>.<actor>``  one approval request and its decision (stream FW_EVENTS)
- ``fw.policy.<id>.<actor>``    one scope's tool policy (schemas/policies.py) (stream FW_EVENTS)
- ``fw.audit.<stream>.<actor>`` the audit chain's seals, ``audit.sealed`` (stream FW_EVENTS)
- ``fw.cmd.<agent>.<actor>``    durable commands to one agent, from ``<actor>`` (FW_COMMANDS)
- ``fw.hb.<agent>``             heartbeats: only the agent publishes them, its subject names it
                                already (stream FW_HEARTBEATS)
- ``fw.api.<name>``             request/reply answers of the services (no stream)

The actor token is the actor verbatim (``a-17``, ``user:<name>``, ``svc:<name>``; ':' is legal
in a NATS token), so a v2 actor holds no '.'. Events with ``v == 1`` are contract v1 history:
they live on the boundary's own name (``fw.task.t-1``), which the stream subjects
``fw.<kind>.>`` cover as well. A boundary's v2 subjects are ``boundary_wildcard``
(``fw.task.t-1.>``): compare-and-set over a whole boundary uses it
(``headers.EXPECTED_LAST_SUBJECT_SEQ_SUBJECT``).
"""

from __future__ import annotations

from typing import NamedTuple

from fleetward.schemas.events import Event

PREFIX = "fw"
KINDS = ("agent", "task", "esc", "budget", "person", "approval", "policy", "audit", "hb", "cmd")
ACTORLESS = frozenset({"hb"})  # kinds whose subject names no actor (the key is the publisher)
FIRST_V2 = 2  # the first envelope version whose subjects carry the actor

# request/reply (core NATS, not stored); the shapes are in ``schemas/api.py``
API_PREFIX = f"{PREFIX}.api."
API_TASKS_CLAIMABLE = f"{API_PREFIX}tasks.claimable"
API_AGENTS_GET = f"{API_PREFIX}agents.get"
# per agent: an agent asks on ``<endpoint>.<its id>``, which only its credentials may publish on
API_BUDGETS_RESERVE = f"{API_PREFIX}budgets.reserve"
API_BUDGETS_RELEASE = f"{API_PREFIX}budgets.release"


class Parsed(NamedTuple):
    """A Fleetward subject taken apart."""

    kind: str
    key: str
    actor: str | None  # the actor token; None on a v1 subject and on ``fw.hb.<agent>``


def boundary(kind: str, key: str) -> str:
    """The name of one consistency boundary, e.g. ``fw.task.t-1``; also the subject its v1
    events (history) were published on."""
    return f"{PREFIX}.{kind}.{key}"


def key_of(event: Event) -> str:
    """The key of the boundary an event belongs to (its ``SUBJECT_KEY`` field)."""
    key: str = getattr(event, event.SUBJECT_KEY)
    return key


def boundary_of(event: Event) -> str:
    """The boundary an event belongs to."""
    return boundary(event.SUBJECT_KIND, key_of(event))


def boundary_wildcard(kind: str, key: str) -> str:
    """Every v2 subject of one boundary, e.g. ``fw.task.t-1.>`` (not its v1 subject)."""
    return f"{boundary(kind, key)}.>"


def subject(kind: str, key: str, actor: str) -> str:
    """The v2 subject of ``actor``'s events in one boundary, e.g. ``fw.task.t-1.a-17``
    (``fw.hb.<agent>`` for heartbeats). ``ValueError`` when ``actor`` is not one subject token."""
    if kind in ACTORLESS:
        return boundary(kind, key)
    if "." in actor:
        raise ValueError(f"actor {actor!r} holds '.': it cannot be a subject token (contract v2)")
    return f"{boundary(kind, key)}.{actor}"


def subject_of(event: Event) -> str:
    """The one subject an event belongs on: its v2 subject, or for a v1 event (``v == 1``) its
    boundary. ``ValueError`` for a v2 event whose actor holds '.' (it can be published nowhere)."""
    if event.v < FIRST_V2:
        return boundary_of(event)
    return subject(event.SUBJECT_KIND, key_of(event), event.actor)


def kind_prefix(kind: str) -> str:
    """The start of every subject of one kind, e.g. ``fw.hb.``."""
    return f"{PREFIX}.{kind}."


def wildcard(kind: str) -> str:
    """All subjects of one kind, both forms, e.g. ``fw.task.>``."""
    return f"{PREFIX}.{kind}.>"


def parse(subj: str) -> Parsed | None:
    """Kind, key and actor token of a Fleetward subject (v2: ``fw.<kind>.<key>.<actor>``; v1 and
    heartbeats: ``fw.<kind>.<key>``, actor None), or None when it is not one."""
    parts = subj.split(".")
    if len(parts) not in (3, 4) or parts[0] != PREFIX or parts[1] not in KINDS:
        return None
    if not all(parts[2:]) or (len(parts) == 4 and parts[1] in ACTORLESS):
        return None
    return Parsed(parts[1], parts[2], parts[3] if len(parts) == 4 else None)
