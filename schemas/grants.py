"""Who may publish and subscribe where: the NATS permissions of each identity. Pure.

Identity is proven by the subject (DESIGN 3.7): every subject an actor publishes on carries that
actor as its last token (contract v2: ``fw.task.<task>.<actor>``; heartbeats ``fw.hb.<agent>``
name their agent already), and an identity's credentials allow publishing only on subjects that
carry its own actor tokens. The server refuses anything else (a permissions violation); the
projector's admission refuses a payload whose ``actor`` is not the subject's.

Identities are actors: an agent id, ``user:<name>`` (a person) or ``svc:<name>`` (a Fleetward
service). A service may publish as the actors it speaks for (``SERVICE_ACTORS``): the projector
writes the board's verdicts as ``svc:board`` and the registry's commands as ``svc:registry``.

Replies come back on a per-identity inbox prefix (``inbox_prefix``), so no identity can read
another's replies. JetStream API subjects are nats-server's (ADR-1; ADR-31 direct gets, for services
only: ``_read_events``; the explicit-filter consumer create of nats-server 2.10, which a
permission can pin to one filter).
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from fleetward.schemas.bounds import IDENT_PATTERN
from fleetward.schemas.streams import COMMANDS_STREAM, EVENTS_STREAM, inbox_durable
from fleetward.schemas.subjects import (
    API_AGENTS_GET,
    API_BUDGETS_RELEASE,
    API_BUDGETS_RESERVE,
    API_PREFIX,
    API_TASKS_CLAIMABLE,
    PREFIX,
)

# The kinds of subject that carry their actor as the last token (contract v2).
ACTOR_KINDS: Final = (
    "agent",
    "task",
    "esc",
    "budget",
    "person",
    "approval",
    "policy",
    "audit",
    "cmd",
)
# People publish events only; commands to agents come from services (events.CommandIssued).
PERSON_KINDS: Final = ("agent", "task", "esc", "budget", "person", "approval", "policy")

# The actor of the registry's commands to agents (projections/agents.py): pause, resume,
# retire, and the registration's kept limits. Every process of an agent follows its own
# (``registry_commands``): the durable inbox hands each command to one process only.
REGISTRY: Final = "svc:registry"

# The services, and the actors each may publish as (besides itself).
SERVICE_ACTORS: Final[dict[str, tuple[str, ...]]] = {
    # svc:oversight: approvals' decisions to agents' inboxes, policy violations' escalations
    "svc:projector": ("svc:projector", "svc:board", REGISTRY, "svc:oversight"),
    "svc:watchdog": ("svc:watchdog",),
    "svc:guard": ("svc:guard",),  # budgets: budget.exhausted/restored, pauses, warnings
    "svc:audit": ("svc:audit",),  # the audit chain's seals (audit.sealed); audit exports
}
API_SERVICE: Final = "svc:api"  # answers fw.api.* from the projections; publishes no event

# The request/reply APIs meant for agents (and people; services answer them).
AGENT_APIS: Final = (API_TASKS_CLAIMABLE, API_AGENTS_GET)
# The per-agent APIs: asked on ``<api>.<agent>``, so the subject proves who asks (schemas/api.py).
PER_AGENT_APIS: Final = (API_BUDGETS_RESERVE, API_BUDGETS_RELEASE)
# The request/reply APIs a service answers itself (besides svc:api), in a queue group.
SERVICE_APIS: Final[dict[str, tuple[str, ...]]] = {
    "svc:guard": tuple(f"{api}.*" for api in PER_AGENT_APIS),
}

_NAME: Final = re.compile(r"^(user|svc):[A-Za-z0-9_@-]{1,64}$")
_AGENT: Final = re.compile(IDENT_PATTERN)

# JetStream's administrative verbs that no Fleetward identity needs: the audit log denies them
# too (DenyDelete, DenyPurge), this refuses them at the door.
_JS_DESTRUCTIVE: Final = (
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.ACCOUNT.PURGE.>",
)


class Grants(msgspec.Struct, frozen=True, kw_only=True):
    """The NATS permissions of one credential (the ``pub``/``sub`` of a NATS user JWT).

    ``publish`` and ``subscribe`` are subject patterns (NATS wildcards ``*`` and ``>``);
    ``deny_publish`` wins over ``publish``; ``respond`` lets the holder answer requests sent to
    subjects it subscribes to (a service's ``fw.api.*``)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    deny_publish: tuple[str, ...] = ()
    respond: bool = False


def identity_kind(identity: str) -> str:
    """``agent``, ``user`` or ``svc``. Raises ``ValueError`` for a string that cannot be an
    identity: an agent id (``[A-Za-z0-9_-]{1,64}``) or ``user:``/``svc:`` and a name of
    ``[A-Za-z0-9_@-]{1,64}`` (one subject token: no '.')."""
    if _NAME.match(identity):
        return identity.split(":", 1)[0]
    if _AGENT.match(identity):
        return "agent"
    raise ValueError(
        f"{identity!r} is not an identity: an agent id of [A-Za-z0-9_-] (up to 64), or "
        "'user:<name>' / 'svc:<name>' with a name of [A-Za-z0-9_@-] (up to 64)"
    )


def inbox_prefix(identity: str) -> str:
    """The prefix of the reply subjects of ``identity``'s connections, e.g. ``_INBOX_a-17``.
    Clients pass it to the NATS client (nats-py ``inbox_prefix``, nats.go ``CustomInboxPrefix``,
    ...); the credential may subscribe to nothing else but its own inbox."""
    identity_kind(identity)
    return f"{INBOX_PREFIX}_{identity}"


INBOX_PREFIX: Final = "_INBOX"  # every inbox: nats-py's default ``_INBOX.`` and ``inbox_prefix``


def is_inbox(subject: str) -> bool:
    """Whether ``subject`` is a reply inbox. A service answers a request only there (services/api):
    the server lets a responder publish on whatever reply subject the requester named, so an
    answer aimed at ``fw.*`` would be stored as if its service had published it there, and one
    aimed at ``$JS.API.*`` would call JetStream with the service's rights."""
    return subject.startswith(INBOX_PREFIX)


def own_subjects(actor: str, kinds: tuple[str, ...] = ACTOR_KINDS) -> tuple[str, ...]:
    """The subjects of ``kinds`` that carry ``actor``: ``fw.<kind>.*.<actor>``."""
    return tuple(f"{PREFIX}.{kind}.*.{actor}" for kind in kinds)


def _read_events() -> tuple[str, ...]:
    """Message gets on the audit log (the clients' task and role reads), never direct gets.

    NATS checks the subject a client publishes on, not the reply subject it names, and the
    server publishes its answers on that reply subject with full rights, where a stream that
    captures the subject stores them. A direct get (ADR-31) answers with a stored message's
    bytes themselves, so it would let a credential have any bytes it stored on its own subject
    (refused there) re-published, and stored, on another actor's subject: a forgery that
    admission cannot tell apart. A message get answers with the message wrapped in a JetStream
    API response, which no reader admits as an event. Direct gets are for services
    (services/client/direct.py)."""
    return (f"$JS.API.STREAM.MSG.GET.{EVENTS_STREAM}",)


def _agent(agent: str) -> Grants:
    inbox = inbox_durable(agent)
    consumer = f"{COMMANDS_STREAM}.{inbox}"
    return Grants(
        publish=(
            f"{PREFIX}.agent.{agent}.{agent}",
            f"{PREFIX}.hb.{agent}",
            f"{PREFIX}.task.*.{agent}",
            f"{PREFIX}.approval.*.{agent}",  # its own approval requests
            *_read_events(),
            # its own inbox, pinned to its own commands
            f"$JS.API.CONSUMER.CREATE.{consumer}.{PREFIX}.cmd.{agent}.>",
            f"$JS.API.CONSUMER.INFO.{consumer}",
            f"$JS.API.CONSUMER.MSG.NEXT.{consumer}",
            f"$JS.ACK.{consumer}.>",
            *AGENT_APIS,
            *(f"{api}.{agent}" for api in PER_AGENT_APIS),
        ),
        subscribe=(f"{inbox_prefix(agent)}.>", registry_commands(agent)),
    )


def registry_commands(agent: str) -> str:
    """The subject of the registry's commands to ``agent`` (``fw.cmd.<agent>.svc:registry``).
    Each process of the agent subscribes to it (a plain subscription, besides the durable
    inbox that hands each command to one process), so that a pause reaches every process."""
    return f"{PREFIX}.cmd.{agent}.{REGISTRY}"


def _person(person: str) -> Grants:
    return Grants(
        publish=(
            *own_subjects(person, PERSON_KINDS),
            *_read_events(),
            "$JS.API.STREAM.INFO.*",
            "$JS.API.CONSUMER.INFO.*.*",
            f"{API_PREFIX}>",
        ),
        deny_publish=tuple(f"{api}.>" for api in PER_AGENT_APIS),  # an agent asks for itself
        subscribe=(f"{inbox_prefix(person)}.>",),
    )


def _service(service: str) -> Grants:
    if service == API_SERVICE:
        return Grants(
            publish=(), subscribe=(f"{inbox_prefix(service)}.>", f"{API_PREFIX}>"), respond=True
        )
    actors = SERVICE_ACTORS.get(service, (service,))
    return Grants(
        publish=(
            *(s for actor in actors for s in own_subjects(actor)),
            "$JS.API.>",  # streams, consumers, direct gets, the watchdog's followers
            "$JS.ACK.>",
            *AGENT_APIS,
        ),
        deny_publish=_JS_DESTRUCTIVE,
        subscribe=(f"{inbox_prefix(service)}.>", *SERVICE_APIS.get(service, ())),
        respond=service in SERVICE_APIS,
    )


def grants_for(identity: str) -> Grants:
    """The permissions of ``identity``'s credentials. Raises ``ValueError`` for a string that
    cannot be an identity (``identity_kind``)."""
    kind = identity_kind(identity)
    if kind == "agent":
        return _agent(identity)
    if kind == "user":
        return _person(identity)
    return _service(identity)
