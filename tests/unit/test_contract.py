"""The published contract (JSON Schema, AsyncAPI, docs) follows the code and agrees with admission.

The schema files are read from disk, as an agent in another language would read them; the drift
test fails when the code changed and ``make schemas`` was not run.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from jsonschema import Draft7Validator, Draft202012Validator, FormatChecker

from fleetward.schemas import bounds, contract
from fleetward.schemas.admission import Rejected, admit, decode
from fleetward.schemas.api import ENDPOINTS, MAX_ERROR, Endpoint, bad_request
from fleetward.schemas.events import BY_TYPE, EVENT_TYPES, AnyEvent, Event, type_name
from fleetward.schemas.streams import stream_for_kind
from fleetward.schemas.subjects import ACTORLESS, KINDS, subject_of
from tests.samples import sample_events
from tests.samples_api import PROFILE, sample_api

SCHEMAS_DIR = Path(contract.__file__).resolve().parent
DOCS = SCHEMAS_DIR.parent / "docs" / "events.md"
AGENTS_DOC = SCHEMAS_DIR.parent / "docs" / "agents.md"
SAMPLES = sample_events()
SAMPLE_IDS = [type_name(type(e)) for e in SAMPLES]
DELETE = object()  # a marker: remove the field instead of setting it
PARTS = ("request", "reply")  # the messages of an API endpoint

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _format_checker() -> FormatChecker:
    """jsonschema only checks ``date-time`` when rfc3339-validator is installed; without it,
    check RFC 3339 here, so a timestamp without an offset fails in every environment."""
    checker = FormatChecker()
    if "date-time" not in checker.checkers:

        @checker.checks("date-time", raises=ValueError)
        def _is_datetime(instance: object) -> bool:
            if not isinstance(instance, str):
                return True
            if not _RFC3339.fullmatch(instance):
                return False
            text = re.sub(r"(\.\d{6})\d+", r"\1", instance.upper().replace("Z", "+00:00"))
            datetime.fromisoformat(text)  # raises ValueError on month 13, hour 25, ...
            return True

    return checker


FORMATS = _format_checker()


@functools.cache
def _on_disk(rel: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMAS_DIR / rel).read_bytes())
    return data


def _validator(name: str) -> Draft202012Validator:
    """The validator of ``jsonschema/<name>.json`` on disk (an event type, ``event``, or an API
    message such as ``api/agents.get.reply``)."""
    return Draft202012Validator(_on_disk(f"jsonschema/{name}.json"), format_checker=FORMATS)


def _errors(validator: Draft202012Validator | Draft7Validator, instance: object) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def _sample_payload(name: str) -> dict[str, Any]:
    """The sample of one type as a fresh JSON object."""
    (event,) = (e for e in SAMPLES if type_name(type(e)) == name)
    payload: dict[str, Any] = json.loads(msgspec.json.encode(event))
    return payload


def _patched(name: str, path: tuple[str, ...], value: object) -> dict[str, Any]:
    payload = _sample_payload(name)
    node = payload
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return payload


def _refs(node: Any, where: str = "#") -> Iterator[tuple[str, str]]:
    """(location, target) of every ``$ref`` below ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield where, value
            else:
                yield from _refs(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _refs(item, f"{where}/{i}")


def _resolve(document: dict[str, Any], ref: str) -> Any:
    """Follow a local JSON pointer (``#/a/b``); KeyError when it leads nowhere."""
    assert ref.startswith("#/"), f"{ref!r} is not a local reference"
    node: Any = document
    for token in ref[2:].split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


# ---- the samples ---------------------------------------------------------------------------------


def test_samples_cover_every_event_type_once() -> None:
    assert [type_name(cls) for cls in EVENT_TYPES] == SAMPLE_IDS
    assert len(SAMPLES) == len(BY_TYPE) == 43


@pytest.mark.parametrize("event", SAMPLES, ids=SAMPLE_IDS)
def test_event_round_trips_through_json(event: Event) -> None:
    data = msgspec.json.encode(event)
    decoded = msgspec.json.decode(data, type=AnyEvent)
    assert type(decoded) is type(event)
    assert decoded == event
    assert msgspec.json.encode(decoded) == data
    assert json.loads(data)["type"] == type_name(type(event))


@pytest.mark.parametrize("event", SAMPLES, ids=SAMPLE_IDS)
def test_sample_is_admitted_on_its_subject(event: Event) -> None:
    assert admit(subject_of(event), msgspec.json.encode(event)) == event


# ---- JSON Schema ---------------------------------------------------------------------------------


@pytest.mark.parametrize("event", SAMPLES, ids=SAMPLE_IDS)
def test_sample_validates_against_its_schema_on_disk(event: Event) -> None:
    name = type_name(type(event))
    instance = json.loads(msgspec.json.encode(event))
    assert _errors(_validator(name), instance) == []
    assert _errors(_validator("event"), instance) == []
    # ... and against no other type's schema: `type` tells them apart.
    others = [n for n in BY_TYPE if n != name and _validator(n).is_valid(instance)]
    assert others == []


@pytest.mark.parametrize("event", SAMPLES, ids=SAMPLE_IDS)
def test_schema_names_subject_stream_and_senders(event: Event) -> None:
    cls = type(event)
    schema = _on_disk(f"jsonschema/{type_name(cls)}.json")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://fleetward.dev/schemas/{type_name(cls)}.json"
    assert schema["title"] == type_name(cls)
    assert schema["properties"]["type"] == {"enum": [type_name(cls)]}
    # for people, in the description; for programs, in AsyncAPI (JSON Schema has no standard
    # keyword for them, and a strict validator refuses one it does not know)
    assert schema["description"] == f"{contract.summary(cls)} {contract.where(cls)}"
    info = _asyncapi()["components"]["messages"][type_name(cls)]["x-fleetward"]
    params = {cls.SUBJECT_KEY: getattr(event, cls.SUBJECT_KEY), "actor": event.actor}
    assert info["subject"].format(**params) == subject_of(event)
    if cls.SUBJECT_KIND in ACTORLESS:
        assert "v1_subject" not in info
    else:  # history: events with v 1 on the subject without the actor
        v1 = msgspec.structs.replace(event, v=1)
        assert info["v1_subject"].format(**params) == subject_of(v1) != subject_of(event)
    assert f"`{info['subject']}`" in schema["description"]
    assert info["stream"] == stream_for_kind(cls.SUBJECT_KIND)
    assert info["stream"] in schema["description"]
    assert info["senders"] == sorted(cls.SENDERS)


def test_schemas_are_valid_and_self_contained() -> None:
    folder = SCHEMAS_DIR / "jsonschema"
    files = sorted(path.relative_to(SCHEMAS_DIR).as_posix() for path in folder.rglob("*.json"))
    assert len(files) == len(BY_TYPE) + 1 + len(contract.api_schemas())
    total = 0
    for rel in files:
        schema = _on_disk(rel)
        Draft202012Validator.check_schema(schema)
        assert schema["$id"] == f"{contract.SCHEMA_BASE}{rel.removeprefix('jsonschema/')}"
        for where, ref in _refs(schema):
            assert ref.startswith("#/$defs/"), f"{rel} {where}: {ref} is not local"
            _resolve(schema, ref)
            total += 1
    assert total > len(BY_TYPE)  # event.json alone refers to every type


def test_event_json_is_a_union_discriminated_by_type() -> None:
    union = _on_disk("jsonschema/event.json")
    assert union["properties"]["type"] == {"enum": list(BY_TYPE)}
    assert union["required"] == ["type"]
    branches = union["allOf"]
    assert [b["if"]["properties"]["type"]["const"] for b in branches] == list(BY_TYPE)
    for branch in branches:
        name = branch["if"]["properties"]["type"]["const"]
        assert branch["if"]["required"] == ["type"]
        assert _resolve(union, branch["then"]["$ref"])["properties"]["type"] == {"enum": [name]}


@pytest.mark.parametrize("event", SAMPLES, ids=SAMPLE_IDS)
def test_bad_event_is_judged_by_its_own_type_only(event: Event) -> None:
    """An event with one bad field gets that field's error from event.json, not one error per
    event type (which is what a ``oneOf`` of every type reports)."""
    key = type(event).SUBJECT_KEY
    payload = {**json.loads(msgspec.json.encode(event)), key: 42}
    assert _errors(_validator("event"), payload) == [f"{key}: 42 is not of type 'string'"]


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"type": "agent.exploded"}, "type: 'agent.exploded' is not one of"),
        ({"agent": "agent-7"}, "$: 'type' is a required property"),
        ("agent.heartbeat", "$: 'agent.heartbeat' is not of type 'object'"),
    ],
    ids=["unknown-type", "no-type", "not-an-object"],
)
def test_event_without_a_known_type_gets_one_error(payload: object, error: str) -> None:
    (found,) = _errors(_validator("event"), payload)
    assert found.startswith(error)


# (case, type of the sample to start from, path of the field, new value or DELETE, reason)
INVALID = [
    ("missing-field", "agent.heartbeat", ("agent",), DELETE, "invalid"),
    ("missing-envelope-field", "task.claimed", ("at",), DELETE, "invalid"),
    ("string-for-int", "task.claimed", ("epoch",), "1", "invalid"),
    ("string-for-bool", "tool.called", ("ok",), "yes", "invalid"),
    ("below-minimum", "task.claimed", ("epoch",), 0, "invalid"),
    ("not-above-exclusive-minimum", "task.claimed", ("lease_s",), 0, "invalid"),
    ("above-maximum", "task.progressed", ("percent",), 100.5, "invalid"),
    ("not-in-enum", "agent.heartbeat", ("status",), "sleeping", "invalid"),
    ("dot-in-subject-key", "agent.heartbeat", ("agent",), "agent.7", "invalid"),
    ("space-in-id", "task.created", ("depends_on",), ["task 41"], "invalid"),
    ("too-long", "task.created", ("title",), "x" * 201, "invalid"),
    ("bad-actor", "agent.heartbeat", ("actor",), "robot:r2", "invalid"),
    ("null-not-allowed", "task.created", ("title",), None, "invalid"),
    ("nested-pattern", "task.submitted", ("deliverable", "sha256"), "XYZ", "invalid"),
    ("nested-missing", "task.submitted", ("deliverable", "kind"), DELETE, "invalid"),
    ("list-in-evidence", "escalation.raised", ("evidence",), {"k": [1, 2]}, "invalid"),
    ("string-for-list", "agent.registered", ("roles",), "writer", "invalid"),
    ("timestamp-without-offset", "agent.heartbeat", ("at",), "2025-03-14T09:26:54", "invalid"),
    ("not-a-timestamp", "agent.heartbeat", ("at",), "yesterday", "invalid"),
    ("unknown-type", "agent.heartbeat", ("type",), "agent.exploded", "unknown_type"),
    ("missing-type", "agent.heartbeat", ("type",), DELETE, "unknown_type"),
    # bounds (issue 11): what would not fit a column, a sum or a metric
    ("nul-in-text", "agent.heartbeat", ("message",), "a\x00b", "invalid"),
    ("nul-in-name", "agent.registered", ("name",), "\x00", "invalid"),
    ("nul-in-nested-text", "task.submitted", ("deliverable", "content"), "\x00", "invalid"),
    ("nul-in-evidence", "escalation.raised", ("evidence",), {"k": "\x00"}, "invalid"),
    ("nul-in-evidence-key", "escalation.raised", ("evidence",), {"\x00": 1}, "invalid"),
    ("nul-in-type", "spend.recorded", ("type",), "spend\x00recorded", "unknown_type"),
    ("int-past-bigint", "spend.recorded", ("tokens_in",), 2**63, "invalid"),
    ("int-past-integer", "agent.registered", ("max_concurrent_tasks",), 2**31, "invalid"),
    ("epoch-past-integer", "task.claimed", ("epoch",), 2**31, "invalid"),
    ("denormal-interval", "agent.registered", ("heartbeat_interval_s",), 5e-324, "invalid"),
    ("huge-cost", "spend.recorded", ("cost_usd",), 1e308, "invalid"),
]


@pytest.mark.parametrize(
    ("base", "path", "value", "reason"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_payload_is_rejected_by_schema_and_admission(
    base: str, path: tuple[str, ...], value: object, reason: str
) -> None:
    assert _validator(base).is_valid(_sample_payload(base))  # the change alone breaks it
    payload = _patched(base, path, value)
    assert _errors(_validator(base), payload) != [], "the type's JSON Schema accepted it"
    assert _errors(_validator("event"), payload) != [], "event.json accepted it"
    with pytest.raises(Rejected) as rejected:
        decode(json.dumps(payload).encode())
    assert rejected.value.reason == reason


# (case, type of the sample, path, new value or DELETE): accepted by both
VALID_VARIANTS = [
    ("unknown-field-ignored", "agent.heartbeat", ("mood",), "curious"),
    ("default-omitted", "task.claimed", ("lease_s",), DELETE),
    ("version-omitted", "task.claimed", ("v",), DELETE),
    ("optional-null", "task.progressed", ("percent",), None),
    ("offset-timestamp", "agent.heartbeat", ("at",), "2025-03-14T10:26:54.589+01:00"),
    ("integer-for-float", "run.finished", ("latency_ms",), 5230),
    ("user-actor", "task.created", ("actor",), "user:bob.smith@example.com"),
]


@pytest.mark.parametrize(
    ("base", "path", "value"), [c[1:] for c in VALID_VARIANTS], ids=[c[0] for c in VALID_VARIANTS]
)
def test_valid_variant_is_accepted_by_schema_and_admission(
    base: str, path: tuple[str, ...], value: object
) -> None:
    payload = _patched(base, path, value)
    assert _errors(_validator(base), payload) == []
    assert _errors(_validator("event"), payload) == []
    assert type_name(type(decode(json.dumps(payload).encode()))) == base


def _leaves(t: mi.Type, where: str, schema: Any = None) -> Iterator[tuple[str, mi.Type, Any]]:
    """Every scalar type below ``t`` (struct fields, optional values, items, keys and values),
    with the JSON Schema extras of its ``Meta`` (``schema``)."""
    if isinstance(t, mi.Metadata):
        yield from _leaves(t.type, where, t.extra_json_schema)
    elif isinstance(t, mi.StructType):
        for field in t.fields:
            yield from _leaves(field.type, f"{where}.{field.name}")
    elif isinstance(t, mi.UnionType):
        for member in t.types:
            yield from _leaves(member, where)
    elif isinstance(t, mi.VarTupleType | mi.ListType):
        yield from _leaves(t.item_type, f"{where}[]")
    elif isinstance(t, mi.DictType):
        yield from _leaves(t.key_type, f"{where}{{key}}")
        yield from _leaves(t.value_type, f"{where}{{value}}")
    else:
        yield where, t, schema or {}


API_TYPES = [cls for ep in ENDPOINTS for cls in (ep.request, ep.reply)]


@pytest.mark.parametrize(
    "cls", [*EVENT_TYPES, *API_TYPES], ids=[c.__name__ for c in [*EVENT_TYPES, *API_TYPES]]
)
def test_every_value_is_bounded(cls: type[msgspec.Struct]) -> None:
    """The bounds policy (schemas/bounds.py), for fields added later too: text has a pattern that
    refuses NUL, every number a finite range, every integer a range within bigint."""
    ids = {bounds.IDENT_PATTERN, bounds.ACTOR_PATTERN, bounds.SHA256_PATTERN, bounds.PERSON_PATTERN}
    for where, t, schema in _leaves(mi.type_info(cls), cls.__name__):
        if isinstance(t, mi.StrType):
            pattern = t.pattern or schema.get("pattern")  # NO_NUL: published, checked once
            assert pattern in ids | {bounds.NO_NUL}, f"{where}: text may hold NUL"
            assert not re.search(pattern, "a\x00b"), where
        elif isinstance(t, mi.IntType | mi.FloatType):
            low, high = (t.ge if t.ge is not None else t.gt), (t.le if t.le is not None else t.lt)
            assert low is not None and high is not None, f"{where}: unbounded number"
            if isinstance(t, mi.IntType):
                assert low >= bounds.INT8_MIN and high <= bounds.INT8_MAX, f"{where}: past bigint"
            else:
                assert math.isfinite(low) and math.isfinite(high), f"{where}: may be infinite"
        else:
            allowed = mi.LiteralType | mi.BoolType | mi.NoneType | mi.DateTimeType
            assert isinstance(t, allowed), f"{where}: {t} has no bounds policy yet"


def test_ids_with_a_trailing_newline_are_rejected() -> None:
    """Python's `$` also matches before a final newline; the patterns must not (ECMA does not)."""
    for field in (("agent",), ("actor",), ("id",)):
        payload = _patched("agent.heartbeat", field, "agent-7\n")
        with pytest.raises(Rejected):
            decode(json.dumps(payload).encode())
        assert _errors(_validator("agent.heartbeat"), payload) != []


# ---- the API (fw.api.*) --------------------------------------------------------------------------

API_SAMPLES = sample_api()
API_IDS = [f"{name}-{i}" for i, (name, _) in enumerate(API_SAMPLES)]


def _endpoint(schema_name: str) -> tuple[Endpoint[Any, Any], str]:
    """The endpoint and part of ``api/<endpoint>.<part>``."""
    name, part = schema_name.removeprefix("api/").rsplit(".", 1)
    (endpoint,) = (ep for ep in ENDPOINTS if ep.name == name)
    return endpoint, part


def test_api_samples_cover_every_request_and_reply() -> None:
    assert {name for name, _ in API_SAMPLES} == set(contract.api_schemas())
    assert all(ep.subject == f"fw.api.{ep.name}" for ep in ENDPOINTS)


@pytest.mark.parametrize(("schema", "message"), API_SAMPLES, ids=API_IDS)
def test_api_sample_validates_on_disk_and_round_trips(schema: str, message: msgspec.Struct) -> None:
    endpoint, part = _endpoint(schema)
    cls = endpoint.request if part == "request" else endpoint.reply
    assert type(message) is cls
    data = msgspec.json.encode(message)
    assert msgspec.json.decode(data, type=cls) == message
    assert _errors(_validator(schema), json.loads(data)) == []
    # the AsyncAPI message of the endpoint, as AsyncAPI (draft-07) tools read it
    doc = _asyncapi()
    channel = doc["channels"][contract.api_channel_id(endpoint, part)]
    message_doc = _resolve(doc, channel["messages"][part]["$ref"])
    payload = {"$ref": message_doc["payload"]["$ref"], "components": doc["components"]}
    assert _errors(Draft7Validator(payload, format_checker=FORMATS), json.loads(data)) == []


# (case, schema, JSON that breaks it): refused by the schema on disk and by the decoder alike
API_INVALID = [
    ("agent-not-a-string", "api/agents.get.request", {"agent": 42}),
    ("agent-missing", "api/agents.get.request", {}),
    ("agent-with-a-dot", "api/agents.get.request", {"agent": "agent.7"}),
    ("limit-zero", "api/tasks.claimable.request", {"agent": "a", "limit": 0}),
    ("limit-too-large", "api/tasks.claimable.request", {"agent": "a", "limit": 201}),
    ("role-not-an-id", "api/tasks.claimable.request", {"agent": "a", "roles": ["a b"]}),
    ("tasks-missing", "api/tasks.claimable.reply", {"error": "x"}),
    ("agent-missing", "api/agents.get.reply", {}),
    ("unknown-status", "api/agents.get.reply",
     {"agent": {**msgspec.to_builtins(PROFILE), "status": "asleep"}}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("schema", "payload"), [c[1:] for c in API_INVALID], ids=[f"{c[1]}-{c[0]}" for c in API_INVALID]
)
def test_invalid_api_message_is_rejected_by_schema_and_decoder(
    schema: str, payload: dict[str, Any]
) -> None:
    endpoint, part = _endpoint(schema)
    assert _errors(_validator(schema), payload) != []
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(
            json.dumps(payload), type=endpoint.request if part == "request" else endpoint.reply
        )


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[ep.name for ep in ENDPOINTS])
def test_a_failed_reply_is_the_empty_answer_with_an_error(endpoint: Endpoint[Any, Any]) -> None:
    failed = json.loads(msgspec.json.encode(endpoint.failed("bad request: a\x00b" + "x" * 2000)))
    empty = json.loads(msgspec.json.encode(endpoint.empty))
    assert "error" not in empty
    assert {k: v for k, v in failed.items() if k != "error"} == empty
    assert failed["error"].startswith("bad request: a\\x00b")  # no NUL on the wire
    assert len(failed["error"]) == MAX_ERROR
    assert _errors(_validator(f"api/{endpoint.name}.reply"), failed) == []


def test_asyncapi_api_operations_are_request_reply() -> None:
    doc = _asyncapi()
    for ep in ENDPOINTS:
        request = doc["channels"][contract.api_channel_id(ep)]
        assert request["address"] == ep.subject
        assert doc["channels"][contract.api_channel_id(ep, "reply")]["address"] is None
        (operation,) = (
            op
            for op in doc["operations"].values()
            if op["channel"]["$ref"] == f"#/channels/{contract.api_channel_id(ep)}"
        )
        assert operation["action"] == "send"
        assert operation["reply"]["channel"]["$ref"] == (
            f"#/channels/{contract.api_channel_id(ep, 'reply')}"
        )


def _doc_examples() -> list[tuple[str, str, Any]]:
    """(subject, "request" or "reply", JSON) of each example of section 7 of docs/agents.md, in
    order: lines ``request  <subject>  <json>`` and ``reply    <json>`` (continued on indented
    lines); a reply belongs to the request above it."""
    section = AGENTS_DOC.read_text().split("## 7. Ask the task API", 1)[1]
    blocks = re.findall(r"^```\n(.*?)^```", section, flags=re.M | re.S)
    entries: list[list[str]] = []
    for line in "\n".join(blocks).splitlines():
        if line.startswith(("request ", "reply ")):
            entries.append(line.split(maxsplit=1))
        elif line.startswith(" "):
            entries[-1][1] += line.strip()
    examples: list[tuple[str, str, Any]] = []
    subject = ""
    for part, text in entries:
        body = text
        if part == "request":
            subject, body = text.split(maxsplit=1)
        examples.append((subject, part, json.loads(body)))
    return examples


def test_agents_md_api_examples_are_what_the_api_says() -> None:
    """docs/agents.md shows other languages the API: every example matches its schema, and each
    error shown is the error the task API replies to the request shown above it."""
    examples = _doc_examples()
    by_subject = {ep.subject_for("agent-7"): ep for ep in ENDPOINTS}  # per actor: agent-7's
    assert {subject for subject, _, _ in examples} == set(by_subject)
    request: bytes = b""
    for subject, part, payload in examples:
        endpoint = by_subject[subject]
        if part == "request":
            request = json.dumps(payload).encode()
            continue
        assert _errors(_validator(f"api/{endpoint.name}.reply"), payload) == [], payload
        if "error" in payload:
            with pytest.raises(msgspec.ValidationError) as bad:
                msgspec.json.decode(request, type=endpoint.request)
            expected = endpoint.failed(bad_request(str(bad.value)))
            assert payload == json.loads(msgspec.json.encode(expected))
        else:
            msgspec.json.decode(request, type=endpoint.request)  # a valid request
            assert _errors(_validator(f"api/{endpoint.name}.request"), json.loads(request)) == []


# ---- the generated files -------------------------------------------------------------------------


def test_committed_files_match_the_code() -> None:
    drifted = contract.drift(SCHEMAS_DIR)
    assert drifted == [], (
        f"schemas/{{{', '.join(drifted)}}} differ from schemas/events.py: run `make schemas` "
        "(python -m fleetward.schemas.contract) and commit the result"
    )


def test_render_is_deterministic_and_complete() -> None:
    files = contract.render()
    assert files == contract.render()
    expected = {f"jsonschema/{name}.json" for name in BY_TYPE}
    api = {f"jsonschema/api/{ep.name}.{part}.json" for ep in ENDPOINTS for part in PARTS}
    assert set(files) == expected | api | {"jsonschema/event.json", "asyncapi.json", "openapi.json"}
    for rel, data in files.items():
        assert data.endswith(b"}\n"), rel
        canonical = json.dumps(json.loads(data), indent=2, sort_keys=True, ensure_ascii=False)
        assert (canonical + "\n").encode() == data, rel


def test_write_updates_changed_and_stale_files_only(tmp_path: Path) -> None:
    assert contract.write(tmp_path) == sorted(contract.render())
    assert contract.write(tmp_path) == []
    assert contract.drift(tmp_path) == []
    (tmp_path / "jsonschema" / "task.claimed.json").write_text("{}\n")
    (tmp_path / "jsonschema" / "task.renamed.json").write_text("{}\n")
    (tmp_path / "jsonschema" / "api" / "agents.get.reply.json").write_text("{}\n")
    (tmp_path / "jsonschema" / "api" / "agents.renamed.reply.json").write_text("{}\n")
    (tmp_path / "asyncapi.json").unlink()
    changed = [
        "asyncapi.json",
        "jsonschema/api/agents.get.reply.json",
        "jsonschema/api/agents.renamed.reply.json",
        "jsonschema/task.claimed.json",
        "jsonschema/task.renamed.json",
    ]
    assert contract.drift(tmp_path) == changed
    assert contract.write(tmp_path) == changed
    assert not (tmp_path / "jsonschema" / "task.renamed.json").exists()
    assert not (tmp_path / "jsonschema" / "api" / "agents.renamed.reply.json").exists()
    assert contract.drift(tmp_path) == []


def test_check_command_passes_on_committed_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert contract.main(["--check"]) == 0
    assert capsys.readouterr().err == ""


def test_every_type_has_a_summary_and_no_summary_is_stale() -> None:
    assert set(contract.SUMMARIES) <= set(BY_TYPE)
    for cls in EVENT_TYPES:
        assert contract.summary(cls)
        assert "\n" not in contract.summary(cls)


@pytest.mark.parametrize(
    "table",
    [contract.markdown_subjects, contract.markdown_events, contract.markdown_bounds],
    ids=["subjects", "events", "bounds"],
)
def test_docs_tables_match_the_code(table: Callable[[], str]) -> None:
    assert table() in DOCS.read_text(), (
        "docs/events.md is out of date: paste its tables from "
        "`python -m fleetward.schemas.contract --markdown`"
    )


# ---- AsyncAPI ------------------------------------------------------------------------------------

EXT = re.compile(r"^x-[\w\d.\-_]+$")
COMPONENT_NAME = re.compile(r"^[\w\d.\-_]+$")
ALLOWED_KEYS = {
    "document": {
        "asyncapi",
        "id",
        "info",
        "servers",
        "defaultContentType",
        "channels",
        "operations",
        "components",
    },
    "info": {
        "title",
        "version",
        "description",
        "termsOfService",
        "contact",
        "license",
        "tags",
        "externalDocs",
    },
    "server": {
        "host",
        "protocol",
        "protocolVersion",
        "pathname",
        "description",
        "title",
        "summary",
        "variables",
        "security",
        "tags",
        "externalDocs",
        "bindings",
    },
    "channel": {
        "address",
        "messages",
        "title",
        "summary",
        "description",
        "servers",
        "parameters",
        "tags",
        "externalDocs",
        "bindings",
    },
    "parameter": {"enum", "default", "description", "examples", "location"},
    "operation": {
        "action",
        "channel",
        "title",
        "summary",
        "description",
        "security",
        "tags",
        "externalDocs",
        "bindings",
        "traits",
        "messages",
        "reply",
    },
    "reply": {"address", "channel", "messages"},
    "message": {
        "headers",
        "payload",
        "correlationId",
        "contentType",
        "name",
        "title",
        "summary",
        "description",
        "tags",
        "externalDocs",
        "bindings",
        "examples",
        "traits",
        "deprecated",
    },
    "components": {
        "schemas",
        "servers",
        "channels",
        "operations",
        "messages",
        "securitySchemes",
        "serverVariables",
        "parameters",
        "correlationIds",
        "replies",
        "replyAddresses",
        "externalDocs",
        "tags",
        "operationTraits",
        "messageTraits",
        "serverBindings",
        "channelBindings",
        "operationBindings",
        "messageBindings",
    },
}


def _asyncapi() -> dict[str, Any]:
    return _on_disk("asyncapi.json")


def _assert_keys(kind: str, obj: dict[str, Any], where: str) -> None:
    unknown = {k for k in obj if k not in ALLOWED_KEYS[kind] and not EXT.match(k)}
    assert not unknown, f"{where}: {sorted(unknown)} are not fields of an AsyncAPI 3 {kind}"


def test_asyncapi_has_the_shape_of_an_asyncapi_3_document() -> None:
    doc = _asyncapi()
    _assert_keys("document", doc, "#")
    assert doc["asyncapi"] == "3.0.0"
    _assert_keys("info", doc["info"], "#/info")
    assert doc["info"]["title"] == "Fleetward"
    assert doc["info"]["version"] == contract.CONTRACT_VERSION
    for name, server in doc["servers"].items():
        _assert_keys("server", server, f"#/servers/{name}")
        assert server["protocol"] == "nats"
        assert server["host"] == "localhost:4222"
    _assert_keys("components", doc["components"], "#/components")
    for section, entries in doc["components"].items():
        bad = [k for k in entries if not COMPONENT_NAME.match(k)]
        assert not bad, f"#/components/{section}: invalid names {bad}"
    for name, message in doc["components"]["messages"].items():
        _assert_keys("message", message, f"#/components/messages/{name}")


def test_asyncapi_channels_are_the_subject_kinds_and_the_api() -> None:
    channels = _asyncapi()["channels"]
    api = {contract.api_channel_id(ep, part) for ep in ENDPOINTS for part in PARTS}
    assert set(channels) == set(KINDS) | api
    channels = {kind: channels[kind] for kind in KINDS}
    for kind, channel in channels.items():
        _assert_keys("channel", channel, f"#/channels/{kind}")
        params = set(re.findall(r"\{([^}]+)\}", channel["address"]))
        actor = set() if kind in ACTORLESS else {"actor"}  # contract v2: the subject's actor
        assert params == set(channel["parameters"]) == {contract.kind_key(kind)} | actor
        for name, parameter in channel["parameters"].items():
            _assert_keys("parameter", parameter, f"#/channels/{kind}/parameters/{name}")
    listed = [name for channel in channels.values() for name in channel["messages"]]
    assert sorted(listed) == sorted(BY_TYPE), "every event type on exactly one channel"


def test_asyncapi_operations_reference_their_channels_messages() -> None:
    doc = _asyncapi()
    assert doc["operations"]
    for op_id, operation in doc["operations"].items():
        _assert_keys("operation", operation, f"#/operations/{op_id}")
        assert operation["action"] in {"send", "receive"}
        answers = [operation["reply"]] if "reply" in operation else []
        for part in (operation, *answers):
            channel_ref = part["channel"]["$ref"]
            assert re.fullmatch(r"#/channels/[^/]+", channel_ref), channel_ref
            _resolve(doc, channel_ref)
            assert part["messages"]
            for message in part["messages"]:
                assert message["$ref"].startswith(f"{channel_ref}/messages/"), (op_id, message)
                _resolve(doc, message["$ref"])
        for reply in answers:
            _assert_keys("reply", reply, f"#/operations/{op_id}/reply")


def test_asyncapi_operations_follow_senders() -> None:
    doc = _asyncapi()
    sent: set[str] = set()
    received: set[str] = set()
    events = [op for op in doc["operations"].values() if "reply" not in op]
    for operation in events:
        names = {ref["$ref"].rsplit("/", 1)[1] for ref in operation["messages"]}
        (sent if operation["action"] == "send" else received).update(names)
    by_agents = {type_name(c) for c in EVENT_TYPES if c.SENDERS & {"self", "agent"}}
    assert sent == by_agents - {"command.issued"}
    assert received == {"command.issued"}
    assert "task.claimed" in sent
    assert "escalation.raised" not in sent


def test_every_asyncapi_ref_resolves() -> None:
    doc = _asyncapi()
    refs = list(_refs(doc))
    assert len(refs) > 2 * len(BY_TYPE)  # channel messages, payloads, operations
    for where, ref in refs:
        try:
            _resolve(doc, ref)
        except (KeyError, IndexError, TypeError):
            pytest.fail(f"{where}: $ref {ref} does not resolve inside asyncapi.json")


@pytest.mark.parametrize("event", SAMPLES, ids=SAMPLE_IDS)
def test_event_type_is_an_asyncapi_message_on_its_subject(event: Event) -> None:
    doc = _asyncapi()
    cls = type(event)
    name = type_name(cls)
    channel = doc["channels"][cls.SUBJECT_KIND]
    actor = "" if cls.SUBJECT_KIND in ACTORLESS else ".{actor}"
    assert channel["address"] == f"fw.{cls.SUBJECT_KIND}.{{{cls.SUBJECT_KEY}}}{actor}"
    address = channel["address"]
    for param in channel["parameters"]:
        address = address.replace(f"{{{param}}}", getattr(event, param))
    assert address == subject_of(event)

    message = _resolve(doc, channel["messages"][name]["$ref"])
    assert message is doc["components"]["messages"][name]
    assert message["name"] == name
    headers = message["headers"]
    assert "Nats-Msg-Id" in headers["required"]
    cas = {"Nats-Expected-Last-Subject-Sequence", "Nats-Expected-Last-Subject-Sequence-Subject"}
    assert (cas <= set(headers["required"])) == (name == "task.claimed")
    # The payload schema, as AsyncAPI (JSON Schema draft-07) tools read it, accepts the sample
    # and nothing of another type.
    payload = {"$ref": message["payload"]["$ref"], "components": doc["components"]}
    validator = Draft7Validator(payload, format_checker=FORMATS)
    instance = json.loads(msgspec.json.encode(event))
    assert _errors(validator, instance) == []
    assert not validator.is_valid({**instance, "type": "agent.exploded"})
