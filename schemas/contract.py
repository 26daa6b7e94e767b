"""The published contract, generated from the code: JSON Schema per event type and AsyncAPI 3.

``python -m fleetward.schemas.contract`` (``make schemas``) writes ``schemas/jsonschema/*.json`` and
``schemas/asyncapi.json``; ``--check`` exits 1 when the committed files differ from the code;
``--markdown`` prints the subject, event and bounds tables used in ``docs/events.md``.

Everything here is pure except ``write`` and ``main``. Output is deterministic (sorted keys,
2-space indent, trailing newline), so the committed files only change when the code does.
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

from fleetward.schemas.events import EVENT_TYPES, AnyEvent, Event, type_name
from fleetward.schemas.headers import EXPECTED_LAST_SUBJECT_SEQ, MSG_ID
from fleetward.schemas.streams import all_streams, stream_for_kind
from fleetward.schemas.subjects import KINDS, PREFIX

JSONDict = dict[str, Any]

CONTRACT_VERSION: Final = "0.1.0"
SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE: Final = "https://fleetward.dev/schemas/"
NATS_SERVER: Final = "localhost:4222"

# One line per event type for people. A class docstring, when present, wins; these are the
# fallback until every event class in schemas/events.py carries its own docstring.
SUMMARIES: Final[dict[str, str]] = {
    "agent.registered": "An agent announces itself and its profile: name, owner, team, roles, "
    "risk class, heartbeat interval.",
    "agent.version_changed": "The agent now runs a new version.",
    "agent.paused": "The agent was paused: it should take no new work until resumed.",
    "agent.resumed": "The agent was resumed after a pause.",
    "agent.retired": "The agent left the fleet for good.",
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
    "task.revoked": "A person or service took a held task back from its holder (to the inbox, "
    "or assigned to another agent).",
    "task.dependencies_changed": "A person or service dropped or replaced the task's dependencies.",
    "escalation.raised": "A service raised an escalation (info, warning or critical), with "
    "evidence.",
    "escalation.acknowledged": "A person or service acknowledged the escalation.",
    "escalation.resolved": "The escalation was resolved.",
    "budget.set": "A person set a spend limit for an agent, a team or the org, per window.",
    "command.issued": "A durable command to one agent: pause, resume, retire, wake, review "
    "feedback, approval, lease lost, or a refusal of one of its events.",
}

# What each subject kind carries (the key of each subject comes from the event classes).
KIND_DESCRIPTIONS: Final[dict[str, str]] = {
    "agent": "Agent lifecycle and activity of one agent.",
    "task": "Every event of one task, in order: the task's consistency boundary.",
    "esc": "One escalation.",
    "budget": "One budget.",
    "hb": "Heartbeats (liveness) of one agent.",
    "cmd": "Durable commands to one agent; the agent consumes them.",
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


def subject_template(cls: type[Event]) -> str:
    """The subject of an event type with its key as a parameter, e.g. ``fw.task.{task}``."""
    return f"{PREFIX}.{cls.SUBJECT_KIND}.{{{cls.SUBJECT_KEY}}}"


def vendor_info(cls: type[Event]) -> JSONDict:
    """The ``x-fleetward`` extension: where an event type lives and who may publish it."""
    return {
        "subject": subject_template(cls),
        "stream": stream_for_kind(cls.SUBJECT_KIND),
        "senders": sorted(cls.SENDERS),
    }


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


def event_schema(cls: type[Event]) -> JSONDict:
    """The self-contained JSON Schema (2020-12) of one event type."""
    (root_ref,), components = msgspec.json.schema_components([cls], ref_template="#/$defs/{name}")
    name = cls.__name__
    assert root_ref == {"$ref": f"#/$defs/{name}"}, root_ref
    body: JSONDict = components.pop(name)
    # The root is inlined, so nothing may refer back to it (no event type is recursive).
    assert f"#/$defs/{name}" not in _refs(components) | _refs(body), name
    schema: JSONDict = {
        **body,
        "$schema": SCHEMA_DIALECT,
        "$id": _schema_id(type_name(cls)),
        "title": type_name(cls),
        "description": summary(cls),
        "x-fleetward": vendor_info(cls),
    }
    if components:
        schema["$defs"] = components
    return schema


def union_schema() -> JSONDict:
    """``event.json``: any Fleetward event, one of the types, discriminated by ``type``."""
    generated: JSONDict = msgspec.json.schema(AnyEvent)
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": _schema_id("event"),
        "title": "Fleetward event",
        "description": "Any Fleetward event: exactly one of the event types, chosen by `type`. "
        "`discriminator` is an OpenAPI-style annotation for code generators; validators ignore "
        "it.",
        "oneOf": generated["anyOf"],
        "discriminator": generated["discriminator"],
        "$defs": generated["$defs"],
        "x-fleetward": {type_name(cls): vendor_info(cls) for cls in EVENT_TYPES},
    }


def json_schemas() -> dict[str, JSONDict]:
    """One JSON Schema per event type, keyed by its wire name (``task.claimed``)."""
    return {type_name(cls): event_schema(cls) for cls in EVENT_TYPES}


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
            "description": "The stream sequence of the last event on `fw.task.<task>` the "
            "claimer has seen (0 when none). JetStream rejects the publish when another event "
            "landed on the subject since, so two agents can never both claim the same epoch.",
        }
        required.append(EXPECTED_LAST_SUBJECT_SEQ)
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
    return {
        "address": f"{PREFIX}.{kind}.{{{key}}}",
        "title": f"{PREFIX}.{kind}",
        "description": f"{description} Stored in the JetStream stream {stream}.",
        "parameters": {
            key: {
                "description": f"The event's `{key}` field: a subject-safe id "
                "(`[A-Za-z0-9_-]{1,64}`)."
            },
        },
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


def asyncapi() -> JSONDict:
    """The AsyncAPI 3.0.0 document, from the point of view of an agent."""
    (_, components) = msgspec.json.schema_components(
        EVENT_TYPES, ref_template="#/components/schemas/{name}"
    )
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Fleetward",
            "version": CONTRACT_VERSION,
            "description": (
                "The control plane for AI agents. Agents, people and Fleetward services publish "
                "events as JSON on NATS JetStream subjects; each event type lives on one subject "
                "kind. The operations describe an agent: what it publishes and the commands it "
                "consumes. Events only people or services publish are listed on their channels "
                "(see each message's `x-fleetward.senders`). Payloads are also published as "
                "JSON Schema 2020-12 in `schemas/jsonschema/`."
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
        "channels": {kind: _channel(kind) for kind in KINDS},
        "operations": _operations(),
        "components": {
            "schemas": components,
            "messages": {_message_id(cls): _message(cls) for cls in EVENT_TYPES},
        },
    }


# ---- files -------------------------------------------------------------------------------------


def _dump(document: JSONDict) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def render() -> dict[str, bytes]:
    """Every generated file: path relative to ``schemas/`` -> bytes."""
    files = {f"jsonschema/{name}.json": _dump(s) for name, s in sorted(json_schemas().items())}
    files["jsonschema/event.json"] = _dump(union_schema())
    files["asyncapi.json"] = _dump(asyncapi())
    return files


def _stale(root: Path, files: dict[str, bytes]) -> list[str]:
    folder = root / "jsonschema"
    if not folder.is_dir():
        return []
    on_disk = sorted(f"jsonschema/{path.name}" for path in folder.glob("*.json"))
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
        lines.append(f"| `{PREFIX}.{kind}.<{key}>` | {stream_for_kind(kind)} | {description} |")
    return "\n".join(lines) + "\n"


def markdown_events() -> str:
    """The event catalogue table of ``docs/events.md``."""
    lines = ["| Type | Subject | May send | Meaning |", "|---|---|---|---|"]
    for cls in EVENT_TYPES:
        subject = f"{PREFIX}.{cls.SUBJECT_KIND}.<{cls.SUBJECT_KEY}>"
        senders = ", ".join(sorted(cls.SENDERS))
        lines.append(f"| `{type_name(cls)}` | `{subject}` | {senders} | {summary(cls)} |")
    return "\n".join(lines) + "\n"


def _number(x: float) -> str:
    if isinstance(x, int) or (x.is_integer() and abs(x) < 1e16):
        return f"{int(x):,}"
    return f"{x:g}"


def _numeric_bound(t: mi.Type) -> str | None:
    """``1 ≤ integer ≤ 2,147,483,647`` for a bounded int or float type (optional or not)."""
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
