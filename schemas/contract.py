"""The published contract, generated from the code: JSON Schema per event type and per API
request and reply, and AsyncAPI 3; the HTTP API as OpenAPI 3.1 (``schemas/openapi.py``).

``python -m fleetward.schemas.contract`` (``make schemas``) writes ``schemas/jsonschema/*.json``,
``schemas/jsonschema/api/*.json``, ``schemas/asyncapi.json`` and ``schemas/openapi.json``;
``--check`` exits 1 when the committed files differ from the code; ``--markdown`` prints the
subject, event and bounds tables used in ``docs/events.md``.

Everything here is pure except ``write`` and ``main``. Output is deterministic (sorted keys,
2-space indent, trailing newline), so the committed files only change when the code does. The
JSON Schemas use standard 2020-12 keywords only, so a strict validator (ajv in strict mode, see
tests/unit/test_contract_ajv.py) loads them as they are; facts beyond validation (subject,
stream, senders) are in their descriptions and in AsyncAPI's ``x-fleetward``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

from fleetward.schemas.api import ENDPOINTS, Endpoint
from fleetward.schemas.events import EVENT_TYPES, Event, type_name
from fleetward.schemas.headers import (
    EXPECTED_LAST_SUBJECT_SEQ,
    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
    MSG_ID,
)
from fleetward.schemas.openapi import openapi
from fleetward.schemas.streams import all_streams, stream_for_kind
from fleetward.schemas.subjects import ACTORLESS, KINDS, PREFIX

JSONDict = dict[str, Any]

CONTRACT_VERSION: Final = "2.0.0"  # the envelope's `v`: subjects carry their actor
SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE: Final = "https://fleetward.dev/schemas/"
NATS_SERVER: Final = "localhost:4222"

# One line per event type for people. A class docstring, when present, wins; these are the
# fallback until every event class in schemas/events.py carries its own docstring.
SUMMARIES: Final[dict[str, str]] = {
    "agent.version_changed": "The agent now runs a new version.",
    "run.started": "The agent started a run (one unit of work), optionally on a task.",
    "run.finished": "A run ended (succeeded, failed or cancelled), with its latency.",
    "tool.called": "The agent called a tool: duration, success or error, cost.",
    "spend.recorded": "Model usage: tokens in and out and the cost in USD.",
    "agent.heartbeat": "Liveness: the agent is alive, with its status and current task.",
    "task.created": "A new task in a project, with priority, dependencies, required role and SLA.",
    "task.assigned": "A person or service assigned the task to an agent.",
    "task.claimed": "An agent took the task, opening claim epoch `epoch` with a lease of "
    "`lease_s` seconds.",
    "task.progressed": "The claim holder reports progress: a note and/or a percentage.",
    "task.blocked": "The claim holder cannot go on, and says why.",
    "task.released": "The claim holder gives the task back without a deliverable.",
    "task.submitted": "The claim holder submits a deliverable for review.",
    "task.reviewed": "A verdict on the agent's latest deliverable; the reviewer is the actor.",
    "task.cancelled": "A person or service cancelled the task.",
    "task.lease_expired": "A service closed a claim whose lease ran out.",
    "task.claim_refused": "The board's verdict on a claim that broke a rule the task's subject "
    "cannot show (claimer paused, lacking the role, at its limit...): the claim is undone.",
    "task.review_refused": "The board's verdict on a review by an agent lacking the role "
    "reviewer: the review is undone.",
    "task.revoked": "A person or service took a held task back from its holder (to the inbox, "
    "or assigned to another agent).",
    "task.dependencies_changed": "A person or service dropped or replaced the task's dependencies.",
    "escalation.raised": "A service raised an escalation (info, warning or critical), with "
    "evidence.",
    "escalation.acknowledged": "A person or service acknowledged the escalation.",
    "escalation.resolved": "The escalation was resolved.",
    "budget.set": "A person set a spend limit for an agent, a team, a project or the org, per "
    "window.",
    "command.issued": "A durable command to one agent, from a Fleetward service: pause, resume, "
    "retire, wake, review feedback, approval, lease lost, or a refusal of one of its events.",
    "role.granted": "A person (user:<person>) holds a role from this event's position on; "
    "granted by an admin or by the holder of Fleetward's signing keys (svc:auth).",
    "role.revoked": "A person no longer holds a role from this event's position on.",
}

# What each subject kind carries (the key of each subject comes from the event classes).
KIND_DESCRIPTIONS: Final[dict[str, str]] = {
    "agent": "Agent lifecycle and activity of one agent.",
    "task": "Every event of one task, in order: the task's consistency boundary.",
    "esc": "One escalation.",
    "budget": "One budget.",
    "person": "One person's roles (role.granted, role.revoked).",
    "approval": "One approval request and its decision (approval.requested, .granted, .denied).",
    "policy": "One scope's tool policy (policy.set): an agent's, a team's or a risk class's.",
    "audit": "The audit chain's seals (audit.sealed), by the auditor (svc:audit).",
    "hb": "Heartbeats (liveness) of one agent; published here always, stored as "
    "`fw.hb.<p>.<agent>` when FW_HEARTBEATS is partitioned (schemas/partitions.py).",
    "cmd": "Durable commands to one agent, by the actor who sent them; the agent consumes them "
    "(its inbox reads `fw.cmd.<agent>.>`).",
}

SENDER_MEANING: Final[dict[str, str]] = {
    "self": "the agent the event is about (`actor` == `agent`)",
    "agent": "any agent",
    "user": "a person, `user:<name>`",
    "svc": "a Fleetward service, `svc:<name>`",
}

# Senders that make an event something an agent publishes itself.
_AGENT_SENDERS: Final = frozenset({"self", "agent"})


# ---- facts about one event type ----------------------------------------------------------------


def summary(cls: type[Event]) -> str:
    """One line about an event type: its docstring's first paragraph, else ``SUMMARIES``."""
    doc = inspect.getdoc(cls) if cls.__doc__ else None
    if doc:
        return " ".join(doc.split("\n\n", 1)[0].split())
    return SUMMARIES[type_name(cls)]


ACTOR_PARAMETER: Final = (
    "The event's `actor`, verbatim: an agent id, `user:<name>` or `svc:<name>` (one subject "
    "token, so no '.'). NATS permissions let an actor publish only on subjects carrying its own "
    "actor token, and admission refuses an event whose `actor` differs (`actor_mismatch`)."
)


def address(kind: str, key: str, *, v1: bool = False, markers: str = "{}") -> str:
    """A subject kind's subject with its parameters, e.g. ``fw.task.{task}.{actor}`` (``v1``:
    the contract v1 form, without the actor; ``markers``: ``<>`` for ``fw.task.<task>...``)."""
    o, c = markers[0], markers[1]
    actor = "" if v1 or kind in ACTORLESS else f".{o}actor{c}"
    return f"{PREFIX}.{kind}.{o}{key}{c}{actor}"


def subject_template(cls: type[Event]) -> str:
    """The subject of an event type with its parameters, e.g. ``fw.task.{task}.{actor}``."""
    return address(cls.SUBJECT_KIND, cls.SUBJECT_KEY)


def vendor_info(cls: type[Event]) -> JSONDict:
    """The ``x-fleetward`` extension: where an event type lives (and its history: events with
    ``v`` 1, on the subject without the actor) and who may publish it."""
    info: JSONDict = {
        "subject": subject_template(cls),
        "stream": stream_for_kind(cls.SUBJECT_KIND),
        "senders": sorted(cls.SENDERS),
    }
    if cls.SUBJECT_KIND not in ACTORLESS:
        info["v1_subject"] = address(cls.SUBJECT_KIND, cls.SUBJECT_KEY, v1=True)
    return info


def _types_of_kind(kind: str) -> list[type[Event]]:
    return [cls for cls in EVENT_TYPES if kind == cls.SUBJECT_KIND]


def kind_key(kind: str) -> str:
    """The name of the key of a subject kind (``task`` for ``fw.task.<task>``), from the events
    on it; every event type of one kind must name its key the same way."""
    keys = {cls.SUBJECT_KEY for cls in _types_of_kind(kind)}
    if len(keys) != 1:
        raise ValueError(f"subject kind {kind!r} has keys {sorted(keys)}, expected exactly one")
    return keys.pop()


# ---- JSON Schema -------------------------------------------------------------------------------


def _schema_id(name: str) -> str:
    return f"{SCHEMA_BASE}{name}.json"


def _refs(node: Any) -> set[str]:
    """Every ``$ref`` value below ``node``."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value)
            else:
                found |= _refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= _refs(item)
    return found


def _doc(cls: type[Any]) -> str:
    """A class docstring as one line."""
    return " ".join((inspect.getdoc(cls) or "").split())


def _inlined(cls: type[msgspec.Struct]) -> tuple[JSONDict, JSONDict]:
    """The schema of a struct type with its root inlined, and the definitions it refers to."""
    (root_ref,), components = msgspec.json.schema_components([cls], ref_template="#/$defs/{name}")
    name = cls.__name__
    assert root_ref == {"$ref": f"#/$defs/{name}"}, root_ref
    body: JSONDict = components.pop(name)
    # The root is inlined, so nothing may refer back to it (no contract type is recursive).
    assert f"#/$defs/{name}" not in _refs(components) | _refs(body), name
    return body, components


def _document(cls: type[msgspec.Struct], name: str, title: str, description: str) -> JSONDict:
    """The self-contained JSON Schema (2020-12) of one struct type, published as ``name``."""
    body, components = _inlined(cls)
    schema: JSONDict = {
        **body,
        "$schema": SCHEMA_DIALECT,
        "$id": _schema_id(name),
        "title": title,
        "description": description,
    }
    if components:
        schema["$defs"] = components
    return schema


def where(cls: type[Event]) -> str:
    """Where an event type lives and who may send it, for people: ``Subject ... senders ...``."""
    info = vendor_info(cls)
    senders = "; or ".join(SENDER_MEANING[sender] for sender in info["senders"])
    return f"Subject `{info['subject']}`, stream {info['stream']}. Sent by {senders}."


def event_schema(cls: type[Event]) -> JSONDict:
    """The self-contained JSON Schema (2020-12) of one event type."""
    name = type_name(cls)
    return _document(cls, name, name, f"{summary(cls)} {where(cls)}")


def union_schema() -> JSONDict:
    """``event.json``: any Fleetward event, discriminated by ``type``.

    ``type`` must name an event type; one ``if``/``then`` per type applies that type's schema
    when ``type`` names it, so an invalid event is reported against its own type only (a
    ``oneOf`` would report it against every type). Any validator of 2020-12 understands it,
    with no option (ajv's ``discriminator`` needs one)."""
    (_, defs) = msgspec.json.schema_components(EVENT_TYPES, ref_template="#/$defs/{name}")
    names = [type_name(cls) for cls in EVENT_TYPES]
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": _schema_id("event"),
        "title": "Fleetward event",
        "description": "Any Fleetward event: `type` names one of the event types, and the "
        "event must match that type's schema (one `if`/`then` per type in `allOf`).",
        "type": "object",
        "properties": {"type": {"enum": names}},
        "required": ["type"],
        "allOf": [
            {
                "if": {
                    "type": "object",
                    "properties": {"type": {"const": type_name(cls)}},
                    "required": ["type"],
                },
                "then": {"$ref": f"#/$defs/{cls.__name__}"},
            }
            for cls in EVENT_TYPES
        ],
        "$defs": defs,
    }


def json_schemas() -> dict[str, JSONDict]:
    """One JSON Schema per event type, keyed by its wire name (``task.claimed``)."""
    return {type_name(cls): event_schema(cls) for cls in EVENT_TYPES}


def api_schemas() -> dict[str, JSONDict]:
    """The JSON Schemas of the API, keyed ``api/<endpoint>.request`` and ``.reply``
    (e.g. ``api/agents.get.reply``)."""
    schemas: dict[str, JSONDict] = {}
    for ep in ENDPOINTS:
        for part, cls in (("request", ep.request), ("reply", ep.reply)):
            name = f"api/{ep.name}.{part}"
            description = f"{_doc(cls)} The {part} of `{ep.subject}` (NATS request/reply)."
            schemas[name] = _document(cls, name, f"{ep.subject} {part}", description)
    return schemas


# ---- AsyncAPI ----------------------------------------------------------------------------------


def _message_id(cls: type[Event]) -> str:
    return type_name(cls)


def _headers(cls: type[Event]) -> JSONDict:
    stream = next(s for s in all_streams() if s.name == stream_for_kind(cls.SUBJECT_KIND))
    properties: JSONDict = {
        MSG_ID: {
            "type": "string",
            "description": "The event's `id`. JetStream drops a second message with the same id "
            f"within the stream's duplicate window ({stream.duplicate_window_s:g} s on "
            f"{stream.name}), so a publisher may retry safely with the same bytes.",
        },
    }
    required = [MSG_ID]
    if type_name(cls) == "task.claimed":
        properties[EXPECTED_LAST_SUBJECT_SEQ] = {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "The stream sequence of the last event over the task's subjects "
            f"(`{EXPECTED_LAST_SUBJECT_SEQ_SUBJECT}`) the claimer has seen (0 when none). "
            "JetStream rejects the publish when any actor's event landed on the task since, so "
            "two agents can never both claim the same epoch.",
        }
        properties[EXPECTED_LAST_SUBJECT_SEQ_SUBJECT] = {
            "type": "string",
            "pattern": r"^fw\.task\.[A-Za-z0-9_-]{1,64}\.>$",
            "description": "`fw.task.<task>.>` with the task's id: the compare-and-set of "
            f"`{EXPECTED_LAST_SUBJECT_SEQ}` is over every actor's subject of the task, not only "
            "the claimer's own.",
        }
        required += [EXPECTED_LAST_SUBJECT_SEQ, EXPECTED_LAST_SUBJECT_SEQ_SUBJECT]
    return {"type": "object", "properties": properties, "required": required}


def _message(cls: type[Event]) -> JSONDict:
    return {
        "name": type_name(cls),
        "title": cls.__name__,
        "summary": summary(cls),
        "contentType": "application/json",
        "headers": _headers(cls),
        "payload": {"$ref": f"#/components/schemas/{cls.__name__}"},
        "x-fleetward": vendor_info(cls),
    }


def _channel(kind: str) -> JSONDict:
    key, description = kind_key(kind), KIND_DESCRIPTIONS[kind]
    stream = stream_for_kind(kind)
    safe = "a subject-safe id (`[A-Za-z0-9_-]{1,64}`)"
    parameters: JSONDict = {key: {"description": f"The event's `{key}` field: {safe}."}}
    if kind not in ACTORLESS:
        parameters["actor"] = {"description": ACTOR_PARAMETER}
        description += (
            f" Events with `v` 1 (contract v1, history) were published on "
            f"`{address(kind, key, v1=True)}`."
        )
    return {
        "address": address(kind, key),
        "title": f"{PREFIX}.{kind}",
        "description": f"{description} Stored in the JetStream stream {stream}.",
        "parameters": parameters,
        "messages": {
            _message_id(cls): {"$ref": f"#/components/messages/{_message_id(cls)}"}
            for cls in _types_of_kind(kind)
        },
        "x-fleetward": {"stream": stream},
    }


def _operations() -> JSONDict:
    operations: JSONDict = {}
    for kind in KINDS:
        if kind == "cmd":
            action, messages = "receive", _types_of_kind(kind)
        else:
            action = "send"
            messages = [c for c in _types_of_kind(kind) if c.SENDERS & _AGENT_SENDERS]
        if not messages:
            continue
        op_id = f"{action}{kind.capitalize()}"
        verb = "publishes" if action == "send" else "consumes"
        operations[op_id] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{kind}"},
            "summary": f"An agent {verb} {', '.join(type_name(c) for c in messages)}.",
            "messages": [
                {"$ref": f"#/channels/{kind}/messages/{_message_id(c)}"} for c in messages
            ],
        }
    return operations


def api_channel_id(ep: Endpoint[Any, Any], part: str = "request") -> str:
    """The AsyncAPI channel of an endpoint's requests (``api.agents.get``) or of its replies
    (``api.agents.get.reply``)."""
    return f"api.{ep.name}" if part == "request" else f"api.{ep.name}.reply"


def _api_message_id(ep: Endpoint[Any, Any], part: str) -> str:
    return f"api.{ep.name}.{part}"


def _api_channels() -> JSONDict:
    channels: JSONDict = {}
    for ep in ENDPOINTS:
        channels[api_channel_id(ep)] = {
            "address": ep.subject,
            "title": ep.subject,
            "description": f"{ep.summary} Core NATS request/reply, nothing stored: every "
            "request gets one reply, with `error` when it failed.",
            "messages": {
                "request": {"$ref": f"#/components/messages/{_api_message_id(ep, 'request')}"}
            },
        }
        channels[api_channel_id(ep, "reply")] = {
            "address": None,  # the requester's inbox: the reply subject of its request
            "title": f"{ep.subject} reply",
            "description": f"Replies to `{ep.subject}`, on the reply subject of each request.",
            "messages": {
                "reply": {"$ref": f"#/components/messages/{_api_message_id(ep, 'reply')}"}
            },
        }
    return channels


def _api_operations() -> JSONDict:
    operations: JSONDict = {}
    for ep in ENDPOINTS:
        request, reply = api_channel_id(ep), api_channel_id(ep, "reply")
        op_id = "ask" + "".join(word.capitalize() for word in ep.name.split("."))
        operations[op_id] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{request}"},
            "summary": f"An agent asks `{ep.subject}`: {ep.summary[0].lower()}{ep.summary[1:]}",
            "messages": [{"$ref": f"#/channels/{request}/messages/request"}],
            "reply": {
                "channel": {"$ref": f"#/channels/{reply}"},
                "messages": [{"$ref": f"#/channels/{reply}/messages/reply"}],
            },
        }
    return operations


def _api_messages() -> JSONDict:
    messages: JSONDict = {}
    for ep in ENDPOINTS:
        for part, cls in (("request", ep.request), ("reply", ep.reply)):
            messages[_api_message_id(ep, part)] = {
                "name": _api_message_id(ep, part),
                "title": cls.__name__,
                "summary": _doc(cls),
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{cls.__name__}"},
            }
    return messages


def asyncapi() -> JSONDict:
    """The AsyncAPI 3.0.0 document, from the point of view of an agent."""
    api_types = [cls for ep in ENDPOINTS for cls in (ep.request, ep.reply)]
    (_, components) = msgspec.json.schema_components(
        (*EVENT_TYPES, *api_types), ref_template="#/components/schemas/{name}"
    )
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Fleetward",
            "version": CONTRACT_VERSION,
            "description": (
                "The control plane for AI agents. Agents, people and Fleetward services publish "
                "events as JSON on NATS JetStream subjects; each event type lives on one subject "
                "kind. The operations describe an agent: what it publishes, the commands it "
                "consumes and what it asks the services' API (`fw.api.*`, core NATS "
                "request/reply). Events only people or services publish are listed on their "
                "channels (see each message's `x-fleetward.senders`). Payloads are also "
                "published as JSON Schema 2020-12 in `schemas/jsonschema/` (the API's in "
                "`schemas/jsonschema/api/`)."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": NATS_SERVER,
                "protocol": "nats",
                "description": "any NATS 2.11+ server with JetStream",
            },
        },
        "channels": {**{kind: _channel(kind) for kind in KINDS}, **_api_channels()},
        "operations": {**_operations(), **_api_operations()},
        "components": {
            "schemas": components,
            "messages": {
                **{_message_id(cls): _message(cls) for cls in EVENT_TYPES},
                **_api_messages(),
            },
        },
    }


# ---- files -------------------------------------------------------------------------------------


def _dump(document: JSONDict) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def render() -> dict[str, bytes]:
    """Every generated file: path relative to ``schemas/`` -> bytes."""
    files = {f"jsonschema/{name}.json": _dump(s) for name, s in sorted(json_schemas().items())}
    files |= {f"jsonschema/{name}.json": _dump(s) for name, s in sorted(api_schemas().items())}
    files["jsonschema/event.json"] = _dump(union_schema())
    files["asyncapi.json"] = _dump(asyncapi())
    files["openapi.json"] = _dump(openapi())
    return files


def _stale(root: Path, files: dict[str, bytes]) -> list[str]:
    folder = root / "jsonschema"
    if not folder.is_dir():
        return []
    on_disk = sorted(path.relative_to(root).as_posix() for path in folder.rglob("*.json"))
    return [rel for rel in on_disk if rel not in files]


def drift(root: Path) -> list[str]:
    """Paths under ``root`` that differ from ``render()``: changed, missing or stale."""
    files = render()
    changed = [
        rel
        for rel, data in files.items()
        if not (root / rel).is_file() or (root / rel).read_bytes() != data
    ]
    return sorted(changed + _stale(root, files))


def write(root: Path) -> list[str]:
    """Write ``render()`` under ``root`` and delete stale schema files; return changed paths."""
    files = render()
    changed: list[str] = []
    for rel, data in files.items():
        path = root / rel
        if path.is_file() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        changed.append(rel)
    for rel in _stale(root, files):
        (root / rel).unlink()
        changed.append(rel)
    return sorted(changed)


# ---- markdown ----------------------------------------------------------------------------------


def markdown_subjects() -> str:
    """The subjects table of ``docs/events.md``."""
    lines = ["| Subject | Stream | Carries |", "|---|---|---|"]
    for kind in KINDS:
        key, description = kind_key(kind), KIND_DESCRIPTIONS[kind]
        subject = address(kind, key, markers="<>")
        lines.append(f"| `{subject}` | {stream_for_kind(kind)} | {description} |")
    return "\n".join(lines) + "\n"


def markdown_events() -> str:
    """The event catalogue table of ``docs/events.md``."""
    lines = ["| Type | Subject | May send | Meaning |", "|---|---|---|---|"]
    for cls in EVENT_TYPES:
        subject = address(cls.SUBJECT_KIND, cls.SUBJECT_KEY, markers="<>")
        senders = ", ".join(sorted(cls.SENDERS))
        lines.append(f"| `{type_name(cls)}` | `{subject}` | {senders} | {summary(cls)} |")
    return "\n".join(lines) + "\n"


def _number(x: float) -> str:
    if isinstance(x, int) or (x.is_integer() and abs(x) < 1e16):
        return f"{int(x):,}"
    return f"{x:g}"


def _numeric_bound(t: mi.Type) -> str | None:
    """``1 ≤ integer ≤ 2,147,483,647`` for a bounded int or float type (optional or not)."""
    if isinstance(t, mi.Metadata):  # a description around an optional type
        t = t.type
    if isinstance(t, mi.UnionType):
        numeric = [u for u in t.types if not isinstance(u, mi.NoneType)]
        if len(numeric) != 1:
            return None
        t = numeric[0]
    if isinstance(t, mi.Metadata):
        t = t.type
    if not isinstance(t, mi.IntType | mi.FloatType):
        return None
    kind = "integer" if isinstance(t, mi.IntType) else "number"
    low = high = ""
    if t.ge is not None or t.gt is not None:
        low = f"{_number(t.ge)} ≤ " if t.ge is not None else f"{_number(t.gt or 0)} < "
    if t.le is not None or t.lt is not None:
        high = f" ≤ {_number(t.le)}" if t.le is not None else f" < {_number(t.lt or 0)}"
    return f"{low}{kind}{high}"


def numeric_bounds() -> dict[tuple[str, str], list[str]]:
    """(field, bound) -> the event types with that field, for every numeric field."""
    found: dict[tuple[str, str], list[str]] = {}
    for cls in EVENT_TYPES:
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        for field in info.fields:
            bound = _numeric_bound(field.type)
            if bound is not None:
                found.setdefault((field.name, bound), []).append(type_name(cls))
    return found


def markdown_bounds() -> str:
    """The table of numeric bounds in ``docs/events.md``: each numeric field and its range."""
    lines = ["| Field | Range | Events |", "|---|---|---|"]
    for (name, bound), types in numeric_bounds().items():
        where = (
            "every event" if len(types) == len(EVENT_TYPES) else ", ".join(f"`{t}`" for t in types)
        )
        lines.append(f"| `{name}` | {bound} | {where} |")
    return "\n".join(lines) + "\n"


def markdown() -> str:
    """The tables of ``docs/events.md``, separated by a blank line."""
    return markdown_subjects() + "\n" + markdown_events() + "\n" + markdown_bounds()


# ---- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fleetward.schemas.contract",
        description="Generate schemas/jsonschema/*.json and schemas/asyncapi.json from the code.",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--check", action="store_true", help="exit 1 when the committed files differ from the code"
    )
    group.add_argument(
        "--markdown",
        action="store_true",
        help="print the subject, event and bounds tables for docs/events.md",
    )
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent
    if args.markdown:
        sys.stdout.write(markdown())
        return 0
    if args.check:
        drifted = drift(root)
        if drifted:
            print(
                f"schemas out of date ({', '.join(drifted)}): run `make schemas`", file=sys.stderr
            )
            return 1
        return 0
    for rel in write(root):
        print(f"updated schemas/{rel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
