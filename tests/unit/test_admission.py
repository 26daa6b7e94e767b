"""Admission: raw bytes from the bus become a trusted event, or a ``Rejected`` with the reason a
dead letter carries. Every case checks the exact reason, so a misclassification fails."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from fleetward.schemas import admission
from fleetward.schemas.admission import (
    MAX_EVENT_BYTES,
    REASONS,
    Rejected,
    admit,
    bracket_depth,
    nesting,
    sender_of,
)
from fleetward.schemas.bounds import INT4_MAX, MAX_COST_USD, MAX_DEPTH, MAX_TOKENS
from fleetward.schemas.events import (
    BY_TYPE,
    AgentRegistered,
    Deliverable,
    Event,
    Heartbeat,
    TaskClaimed,
    TaskSubmitted,
    type_name,
)
from fleetward.schemas.subjects import boundary, subject, subject_of
from tests.samples import AGENT, SHA256, TASK, sample_events

SAMPLES = sample_events()
SAMPLE_IDS = [type_name(type(e)) for e in SAMPLES]
AT = "2025-03-14T09:26:53.589Z"


def payload(event_type: str, **fields: Any) -> dict[str, Any]:
    """A JSON object for ``event_type`` with an envelope; ``fields`` fill in the rest."""
    return {"type": event_type, "id": "evt-1", "actor": AGENT, "at": AT, **fields}


def heartbeat(**fields: Any) -> dict[str, Any]:
    return payload("agent.heartbeat", agent=AGENT) | fields


def claim(**fields: Any) -> dict[str, Any]:
    return payload("task.claimed", task=TASK, agent=AGENT, epoch=1) | fields


def raw(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


def own(obj: dict[str, Any]) -> str:
    """The v2 subject a payload belongs on: its boundary's, carrying its own actor."""
    cls = BY_TYPE[obj["type"]]
    return subject(cls.SUBJECT_KIND, obj[cls.SUBJECT_KEY], obj["actor"])


def reason_of(subject: str, data: bytes) -> str:
    """The reason ``admit`` rejects ``data`` with; fails the test when it is admitted."""
    with pytest.raises(Rejected) as caught:
        admit(subject, data)
    assert caught.value.reason in REASONS
    return caught.value.reason


HB_SUBJECT = f"fw.hb.{AGENT}"
TASK_SUBJECT = f"fw.task.{TASK}.{AGENT}"  # the agent's own (contract v2)


# ---- accepted ------------------------------------------------------------------------------


@pytest.mark.parametrize("event", SAMPLES, ids=SAMPLE_IDS)
def test_every_sample_is_admitted_on_its_own_subject(event: Event) -> None:
    admitted = admit(subject_of(event), msgspec.json.encode(event))
    assert type(admitted) is type(event)
    assert admitted == event


def test_unknown_fields_are_ignored() -> None:
    data = raw(
        payload(
            "task.submitted",
            task=TASK,
            agent=AGENT,
            epoch=2,
            deliverable={"kind": "code", "sha256": SHA256, "lines": 120, "lang": "python"},
            confidence=0.9,
            labels=["a", "b"],
            nested={"future": {"field": True}},
        )
    )
    event = admit(TASK_SUBJECT, data)
    assert event == TaskSubmitted(
        id="evt-1",
        actor=AGENT,
        at=datetime(2025, 3, 14, 9, 26, 53, 589000, tzinfo=UTC),
        task=TASK,
        agent=AGENT,
        epoch=2,
        deliverable=Deliverable(kind="code", sha256=SHA256),
    )


def test_fields_with_defaults_may_be_omitted() -> None:
    hb = admit(HB_SUBJECT, raw(heartbeat()))
    assert isinstance(hb, Heartbeat)
    assert (hb.status, hb.task, hb.message, hb.v, hb.corr) == ("idle", None, "", 2, None)

    reg = admit(
        f"fw.agent.{AGENT}.{AGENT}",
        raw(payload("agent.registered", agent=AGENT, name="n", owner="o", team="docs")),
    )
    assert isinstance(reg, AgentRegistered)
    assert reg.purpose == ""
    assert reg.risk_class == "medium"
    assert reg.version == "1"
    assert reg.heartbeat_interval_s == 60.0
    assert reg.roles == ()
    assert reg.max_concurrent_tasks == 1


def test_event_of_exactly_max_bytes_is_admitted() -> None:
    data = raw(heartbeat())
    padded = data + b" " * (MAX_EVENT_BYTES - len(data))  # trailing white space is valid JSON
    assert len(padded) == MAX_EVENT_BYTES
    assert isinstance(admit(HB_SUBJECT, padded), Heartbeat)


# ---- rejected: bytes -----------------------------------------------------------------------


def test_oversized_payload() -> None:
    data = raw(heartbeat())
    data += b" " * (MAX_EVENT_BYTES + 1 - len(data))
    assert reason_of(HB_SUBJECT, data) == "oversized"


def test_oversized_is_decided_before_parsing() -> None:
    assert reason_of(HB_SUBJECT, b"{" * (MAX_EVENT_BYTES + 1)) == "oversized"


@pytest.mark.parametrize("data", [b"{not json", b"", b'{"type": "agent.heartbeat",', b"\xff\xfe"])
def test_not_json(data: bytes) -> None:
    assert reason_of(HB_SUBJECT, data) == "not_json"


# ---- rejected: type ------------------------------------------------------------------------


def test_unknown_type() -> None:
    assert reason_of(HB_SUBJECT, raw(heartbeat() | {"type": "agent.exploded"})) == "unknown_type"


def test_missing_type() -> None:
    data = heartbeat()
    del data["type"]
    assert reason_of(HB_SUBJECT, raw(data)) == "unknown_type"


def test_type_that_is_not_a_string() -> None:
    assert reason_of(HB_SUBJECT, raw(heartbeat() | {"type": 7})) == "unknown_type"


# ---- rejected: invalid fields --------------------------------------------------------------


def test_missing_required_field() -> None:
    data = heartbeat()
    del data["agent"]
    assert reason_of(HB_SUBJECT, raw(data)) == "invalid"


def test_missing_envelope_field() -> None:
    data = claim()
    del data["id"]
    assert reason_of(TASK_SUBJECT, raw(data)) == "invalid"


@pytest.mark.parametrize(
    ("field", "value"),
    [("epoch", "1"), ("lease_s", "long"), ("agent", 7), ("at", 1741944413)],
    ids=["str-for-int", "str-for-float", "int-for-str", "int-for-datetime"],
)
def test_mistyped_field(field: str, value: object) -> None:
    assert reason_of(TASK_SUBJECT, raw(claim(**{field: value}))) == "invalid"


@pytest.mark.parametrize(
    ("field", "value"),
    [("epoch", 0), ("lease_s", 0), ("lease_s", -1.5), ("agent", "a.b"), ("agent", "x" * 65)],
    ids=["epoch-0", "lease-0", "lease-negative", "dot-in-ident", "ident-too-long"],
)
def test_out_of_range_value(field: str, value: object) -> None:
    assert reason_of(TASK_SUBJECT, raw(claim(**{field: value}))) == "invalid"


def test_percent_over_100_is_invalid() -> None:
    data = payload("task.progressed", task=TASK, agent=AGENT, epoch=1, percent=100.5)
    assert reason_of(TASK_SUBJECT, raw(data)) == "invalid"


def test_enum_value_outside_the_catalogue_is_invalid() -> None:
    assert reason_of(HB_SUBJECT, raw(heartbeat(status="sleepy"))) == "invalid"


def test_timestamp_without_offset_is_invalid() -> None:
    assert reason_of(HB_SUBJECT, raw(heartbeat(at="2025-03-14T09:26:53"))) == "invalid"


def test_invalid_nested_field() -> None:
    data = payload(
        "task.submitted",
        task=TASK,
        agent=AGENT,
        epoch=1,
        deliverable={"kind": "code", "sha256": "not-a-hash"},
    )
    assert reason_of(TASK_SUBJECT, raw(data)) == "invalid"


def test_json_that_is_not_an_object_is_invalid() -> None:
    assert reason_of(HB_SUBJECT, b"[1, 2]") == "invalid"


@pytest.mark.parametrize("bad", ["`type`", "not `type` at all"])
def test_reason_depends_on_the_field_not_on_the_bad_value(bad: str) -> None:
    """A bad value of a known type's field is ``invalid``, whatever text the value holds."""
    reason = reason_of(HB_SUBJECT, raw(heartbeat(status=bad)))
    assert reason == "invalid", (
        f"heartbeat with status={bad!r} was classified {reason!r}: schemas/admission.py decode() "
        "looks for '`type`' anywhere in msgspec's message, which quotes the bad value"
    )


# ---- rejected: values that would not fit where they go (issue 11) ---------------------------

AGENT_SUBJECT = f"fw.agent.{AGENT}.{AGENT}"
ESC_SUBJECT = "fw.esc.esc-1.svc:watchdog"


def registration(**fields: Any) -> dict[str, Any]:
    return payload("agent.registered", agent=AGENT, name="n", owner="o", team="docs") | fields


def spend(**fields: Any) -> dict[str, Any]:
    return payload("spend.recorded", agent=AGENT, model="m", cost_usd=0.5) | fields


def escalation(**fields: Any) -> dict[str, Any]:
    return (
        payload(
            "escalation.raised",
            actor="svc:watchdog",
            escalation="esc-1",
            tier="warning",
            reason="r",
        )
        | fields
    )


# (case, subject, payload): each one stalled the projector on main at cdeb8d3, or worse
NUL_IN_TEXT = [
    ("registered-name", AGENT_SUBJECT, registration(name="bad\x00name")),
    ("heartbeat-message", HB_SUBJECT, heartbeat(message="bad\x00message")),
    ("task-title", TASK_SUBJECT, payload("task.created", task=TASK, project="p", title="a\x00")),
    ("escalation-message", ESC_SUBJECT, escalation(message="\x00")),
    ("evidence-value", ESC_SUBJECT, escalation(evidence={"k": "v\x00"})),
    ("evidence-key", ESC_SUBJECT, escalation(evidence={"k\x00": "v"})),
    ("corr", HB_SUBJECT, heartbeat(corr="c\x00")),
    ("deliverable-content", TASK_SUBJECT, payload(
        "task.submitted", task=TASK, agent=AGENT, epoch=1,
        deliverable={"kind": "code", "sha256": SHA256, "content": "x\x00y"},
    )),
]  # fmt: skip


@pytest.mark.parametrize(
    ("subject", "data"), [c[1:] for c in NUL_IN_TEXT], ids=[c[0] for c in NUL_IN_TEXT]
)
def test_nul_in_text_is_invalid(subject: str, data: dict[str, Any]) -> None:
    """Postgres text and jsonb cannot hold U+0000 (json.dumps writes it as the escape \\u0000)."""
    assert b"\\u0000" in raw(data)
    assert reason_of(subject, raw(data)) == "invalid"


def test_nul_in_an_unknown_field_is_ignored_like_the_field() -> None:
    assert isinstance(admit(HB_SUBJECT, raw(heartbeat(mood="\x00"))), Heartbeat)


def test_nul_in_type_is_an_unknown_type_with_a_storable_detail() -> None:
    """msgspec quotes the bad tag verbatim; the detail must still fit a Postgres text column."""
    with pytest.raises(Rejected) as caught:
        admit(AGENT_SUBJECT, raw(spend(type="spend\x00recorded")))
    assert caught.value.reason == "unknown_type"
    assert "\x00" not in caught.value.detail and "\x00" not in str(caught.value)
    assert "spend\\x00recorded" in caught.value.detail


def test_a_subject_with_nul_is_quoted_storably() -> None:
    with pytest.raises(Rejected) as caught:
        admit(f"fw.hb.{AGENT}\x00x", raw(heartbeat()))
    assert caught.value.reason == "wrong_subject"
    assert "\x00" not in caught.value.detail


@pytest.mark.parametrize(
    "text", ["\\ud800", "\\udfff", "a\\ud800b", "\\ud800\\u0041", "\\udc00\\ud800"]
)
def test_a_lone_surrogate_is_not_json(text: str) -> None:
    """Not valid Unicode, so not encodable as UTF-8 for Postgres: the decoder refuses it."""
    data = raw(heartbeat(message="")).replace(b'"message": ""', f'"message": "{text}"'.encode())
    assert reason_of(HB_SUBJECT, data) == "not_json"


def test_a_surrogate_pair_is_text() -> None:
    data = raw(heartbeat(message="")).replace(b'"message": ""', b'"message": "\\ud83d\\ude00"')
    hb = admit(HB_SUBJECT, data)
    assert isinstance(hb, Heartbeat) and hb.message == "\U0001f600"


def deep(levels: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * levels + closer * levels


@pytest.mark.parametrize("first", [False, True], ids=["after-type", "before-type"])
def test_an_unknown_field_nested_1000_deep_is_too_deep(first: bool) -> None:
    """It made msgspec raise RecursionError, which is no rejection."""
    data = raw(heartbeat())
    field = b'"x": ' + deep(1000)
    data = b"{" + field + b", " + data[1:] if first else data[:-1] + b", " + field + b"}"
    assert reason_of(HB_SUBJECT, data) == "too_deep"


def test_the_limit_counts_the_event_object_and_both_kinds_of_brackets() -> None:
    base = raw(heartbeat())[:-1]
    ok = base + b', "x": ' + b'{"a": ' * (MAX_DEPTH - 2) + b"[1]" + b"}" * (MAX_DEPTH - 2) + b"}"
    assert nesting(json.loads(ok)) == bracket_depth(ok) == MAX_DEPTH
    assert isinstance(admit(HB_SUBJECT, ok), Heartbeat)
    over = base + b', "x": ' + deep(MAX_DEPTH) + b"}"
    assert nesting(json.loads(over)) == bracket_depth(over) == MAX_DEPTH + 1
    assert reason_of(HB_SUBJECT, over) == "too_deep"


def test_brackets_inside_text_do_not_nest() -> None:
    text = "[{" * 2000 + '\\"[' * 100 + "\\\\"
    data = raw(heartbeat(message=text[:200]) | {"note": text})
    assert nesting(json.loads(data)) == bracket_depth(data) == 1
    assert isinstance(admit(HB_SUBJECT, data), Heartbeat)


def test_escapes_are_not_brackets() -> None:
    """Backslashes share the one pass over the bytes with the brackets; they do not count."""
    data = raw(heartbeat(message="line\n" * 30) | {"note": "\t" * 500})
    assert len(admission.watched(data)) > MAX_DEPTH
    assert not admission.too_deep(data)
    assert isinstance(admit(HB_SUBJECT, data), Heartbeat)


@pytest.mark.parametrize(
    ("data", "depth"),
    [
        (b"", 0),
        (b"7", 0),
        (b"{}", 1),
        (b'{"a": [1, {"b": "]]]"}]}', 3),
        (b'["\\\\", [["\\"]"]]]', 3),  # an escaped backslash, then an escaped quote
        (b'[["unterminated [[[', 2),
        (b'[["ends in a backslash \\', 2),
        (b"]]]]" + deep(40), 36),  # a running total: what follows a stray closer still counts
    ],
)
def test_bracket_depth_ignores_strings(data: bytes, depth: int) -> None:
    """How bytes that do not parse are measured: brackets outside strings, as a running count."""
    assert bracket_depth(data) == depth


@pytest.mark.parametrize("broken", [b'"x": [1}', b'"x": "unterminated'], ids=["bracket", "string"])
def test_json_too_deep_before_it_breaks_is_too_deep(broken: bytes) -> None:
    """The verdict depends on the bytes alone: a parser meets the deep part before the break."""
    data = raw(heartbeat())[:-1] + b', "y": ' + deep(40) + b", " + broken + b"}"
    assert reason_of(HB_SUBJECT, data) == "too_deep"


def test_broken_json_with_many_brackets_but_shallow_is_not_json() -> None:
    data = raw(heartbeat())[:-1] + b', "y": ' + b"[], " * 40 + b'"x": [1}}'
    assert reason_of(HB_SUBJECT, data) == "not_json"


def test_nesting_counts_no_further_than_the_limit() -> None:
    value: Any = []
    for _ in range(5000):
        value = [value]
    assert nesting(value) == MAX_DEPTH + 1
    assert nesting({"a": [{"b": 1}], "c": "[[[["}) == 3


def test_recursion_in_the_decoder_is_a_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the decoder still exhaust the stack, the event is rejected, not the consumer."""

    class Exhausted:
        def decode(self, data: bytes) -> Any:
            raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(admission, "_decoder", Exhausted())
    assert reason_of(HB_SUBJECT, raw(heartbeat())) == "too_deep"


def number(data: dict[str, Any], field: str, literal: str) -> bytes:
    """``data`` with ``field`` set to the JSON number ``literal`` exactly as written."""
    return raw(data | {field: 0}).replace(
        f'"{field}": 0'.encode(), f'"{field}": {literal}'.encode()
    )


OUT_OF_RANGE = [
    ("tokens-past-bigint", AGENT_SUBJECT, spend(), "tokens_in", "9223372036854775808"),
    ("tokens-past-uint64", AGENT_SUBJECT, spend(), "tokens_out", "18446744073709551616"),
    ("tokens-over-the-bound", AGENT_SUBJECT, spend(), "tokens_in", str(MAX_TOKENS + 1)),
    ("limit-past-int4", AGENT_SUBJECT, registration(), "max_concurrent_tasks", "2147483648"),
    ("epoch-past-int4", TASK_SUBJECT, claim(), "epoch", "2147483648"),
    ("interval-denormal", AGENT_SUBJECT, registration(), "heartbeat_interval_s", "5e-324"),
    ("interval-below-0.1", AGENT_SUBJECT, registration(), "heartbeat_interval_s", "0.09"),
    ("interval-over-a-week", AGENT_SUBJECT, registration(), "heartbeat_interval_s", "604801"),
    ("interval-infinite", AGENT_SUBJECT, registration(), "heartbeat_interval_s", "1e999"),
    ("cost-1e308", AGENT_SUBJECT, spend(), "cost_usd", "1e308"),
    ("cost-infinite", AGENT_SUBJECT, spend(), "cost_usd", "1e999"),
    ("cost-over-the-bound", AGENT_SUBJECT, spend(), "cost_usd", "1000000.01"),
    ("lease-denormal", TASK_SUBJECT, claim(), "lease_s", "5e-324"),
    ("lease-infinite", TASK_SUBJECT, claim(), "lease_s", "1e999"),
    ("version-past-int4", HB_SUBJECT, heartbeat(), "v", "2147483648"),
]


@pytest.mark.parametrize(
    ("subject", "data", "field", "literal"),
    [c[1:] for c in OUT_OF_RANGE],
    ids=[c[0] for c in OUT_OF_RANGE],
)
def test_numbers_out_of_range_are_invalid(
    subject: str, data: dict[str, Any], field: str, literal: str
) -> None:
    assert reason_of(subject, number(data, field, literal)) == "invalid"


@pytest.mark.parametrize("literal", ["-1e999", "9223372036854775808", "1" + "0" * 5000])
def test_evidence_numbers_out_of_range_are_invalid(literal: str) -> None:
    """Evidence lands in jsonb and is encoded again by the escalations fold: no infinities, and
    integers within bigint (JSON Schema lets 2^63 pass as a number; only services send it)."""
    data = raw(escalation(evidence={"k": 0})).replace(b'"k": 0', f'"k": {literal}'.encode())
    assert reason_of(ESC_SUBJECT, data) == "invalid"


@pytest.mark.parametrize(
    ("subject", "data", "field", "literal"),
    [
        (AGENT_SUBJECT, spend(), "tokens_in", str(MAX_TOKENS)),
        (AGENT_SUBJECT, spend(), "cost_usd", repr(MAX_COST_USD)),
        (AGENT_SUBJECT, registration(), "max_concurrent_tasks", str(INT4_MAX)),
        (TASK_SUBJECT, claim(), "epoch", str(INT4_MAX)),
        (AGENT_SUBJECT, registration(), "heartbeat_interval_s", "0.1"),
        (AGENT_SUBJECT, registration(), "heartbeat_interval_s", "604800"),
    ],
    ids=["tokens", "cost", "task-limit", "epoch", "shortest-interval", "longest-interval"],
)
def test_the_bounds_themselves_are_admitted(
    subject: str, data: dict[str, Any], field: str, literal: str
) -> None:
    event = admit(subject, number(data, field, literal))
    assert getattr(event, field) == float(literal)


# ---- rejected: subject ---------------------------------------------------------------------


def test_heartbeat_on_the_agent_subject() -> None:
    assert reason_of(f"fw.agent.{AGENT}", raw(heartbeat())) == "wrong_subject"


def test_event_on_another_keys_subject() -> None:
    assert reason_of(f"fw.task.task-other.{AGENT}", raw(claim())) == "wrong_subject"
    assert reason_of("fw.hb.agent-8", raw(heartbeat())) == "wrong_subject"


def test_event_on_a_non_fleetward_subject() -> None:
    assert reason_of(f"other.hb.{AGENT}", raw(heartbeat())) == "wrong_subject"


# ---- rejected: actor -----------------------------------------------------------------------


def test_heartbeat_about_another_agent() -> None:
    assert reason_of(HB_SUBJECT, raw(heartbeat(actor="agent-8"))) == "actor_forbidden"


@pytest.mark.parametrize("actor", ["user:bob", "svc:supervisor"])
def test_heartbeat_from_a_person_or_service(actor: str) -> None:
    assert reason_of(HB_SUBJECT, raw(heartbeat(actor=actor))) == "actor_forbidden"


def test_claim_on_behalf_of_another_agent() -> None:
    data = claim(actor="agent-8")
    assert reason_of(own(data), raw(data)) == "actor_forbidden"


@pytest.mark.parametrize("actor", [AGENT, "agent-8"])
def test_task_assigned_by_an_agent(actor: str) -> None:
    data = payload("task.assigned", actor=actor, task=TASK, agent=AGENT)
    assert reason_of(own(data), raw(data)) == "actor_forbidden"


def test_task_assigned_by_a_service_is_admitted() -> None:
    data = payload("task.assigned", actor="svc:dispatcher", task=TASK, agent=AGENT)
    assert type_name(type(admit(own(data), raw(data)))) == "task.assigned"


@pytest.mark.parametrize("actor", ["user:alice", AGENT])
def test_lease_expired_not_from_a_service(actor: str) -> None:
    data = payload("task.lease_expired", actor=actor, task=TASK, agent=AGENT, epoch=1)
    assert reason_of(own(data), raw(data)) == "actor_forbidden"


def test_agent_reviewing_its_own_deliverable() -> None:
    data = payload("task.reviewed", actor=AGENT, task=TASK, agent=AGENT, verdict="approve")
    assert reason_of(own(data), raw(data)) == "actor_forbidden"


def test_agent_reviewing_another_agents_deliverable_is_admitted() -> None:
    data = payload("task.reviewed", actor="agent-8", task=TASK, agent=AGENT, verdict="approve")
    assert type_name(type(admit(own(data), raw(data)))) == "task.reviewed"


# ---- contract v2: the subject carries the actor --------------------------------------------


@pytest.mark.parametrize("actor", ["agent-8", "user:alice", "svc:watchdog"])
def test_a_v2_event_on_its_boundary_under_another_actor_is_an_actor_mismatch(actor: str) -> None:
    """NATS lets ``actor`` publish on ``fw.task.<task>.<actor>`` only: a payload naming another
    actor there is a forgery, whatever it says it is."""
    with pytest.raises(Rejected) as caught:
        admit(f"fw.task.{TASK}.{actor}", raw(claim()))
    assert caught.value.reason == "actor_mismatch"
    assert actor in caught.value.detail and AGENT in caught.value.detail
    assert "actor_mismatch" in REASONS


def test_a_v2_event_is_admitted_only_on_its_v2_subject() -> None:
    data = claim(v=2)
    assert isinstance(admit(TASK_SUBJECT, raw(data)), TaskClaimed)
    assert reason_of(boundary("task", TASK), raw(data)) == "wrong_subject"
    assert reason_of(f"fw.task.{TASK}.{AGENT}.x", raw(data)) == "wrong_subject"


def test_a_v1_event_is_history_admitted_only_on_its_v1_subject() -> None:
    data = claim(v=1)
    event = admit(boundary("task", TASK), raw(data))
    assert isinstance(event, TaskClaimed) and event.v == 1
    assert reason_of(TASK_SUBJECT, raw(data)) == "wrong_subject"
    # v1 judged its actor by the payload alone, as history still is
    assert reason_of(boundary("task", TASK), raw(claim(v=1, actor="agent-8"))) == (
        "actor_forbidden"
    )


def test_an_event_without_v_is_v1_on_a_v1_subject_and_v2_on_a_v2_one() -> None:
    """v1's default was 1: history written without ``v`` (as docs/agents.md showed it) still
    reads as v1 on its subject; from v2 on the default is 2."""
    data = claim()
    assert "v" not in data
    assert admit(boundary("task", TASK), raw(data)).v == 1
    assert admit(TASK_SUBJECT, raw(data)).v == 2
    assert admit(HB_SUBJECT, raw(heartbeat())).v == 2  # heartbeats: one subject for both


def test_a_v2_actor_with_a_dot_cannot_be_a_subject_token() -> None:
    data = payload("task.cancelled", actor="user:ana.lopez", task=TASK)
    with pytest.raises(Rejected) as caught:
        admit(f"fw.task.{TASK}.user:ana.lopez", raw(data))
    assert caught.value.reason == "invalid" and "$.actor" in caught.value.detail
    assert reason_of(f"fw.task.{TASK}.user:ana", raw(data)) == "invalid"
    with pytest.raises(ValueError, match="subject token"):
        subject_of(msgspec.json.decode(raw(data), type=BY_TYPE["task.cancelled"]))
    # v1 history allowed it, and still does
    assert admit(boundary("task", TASK), raw(data | {"v": 1})).actor == "user:ana.lopez"


def test_subject_is_checked_before_actor() -> None:
    """An event that is wrong twice is dead-lettered for its subject."""
    assert reason_of("fw.hb.agent-8", raw(heartbeat(actor="agent-8"))) == "wrong_subject"


@pytest.mark.parametrize(
    ("subject", "data", "sender"),
    [
        ("fw.agent.a1", b"\x00 not json", "a1"),  # not JSON: the subject's agent
        ("fw.hb.a1", b"[1, 2", "a1"),
        ("fw.agent.victim", b'{"actor": "mallory", "type": "agent.paused"}', "mallory"),
        ("fw.task.t1", b'{"actor": "a2", "type": "task.progressed"}', "a2"),
        ("fw.task.t1", b'{"actor": "user:bob"}', None),  # a person: no inbox
        ("fw.agent.victim", b'{"actor": "svc:x"}', None),
        ("fw.task.t1", b"not json", None),
        ("fw.cmd.a1", b'{"actor": "a1"}', None),  # commands name their recipient
        ("fw.task.t1", b'{"actor": "bad id with spaces"}', None),
        ("fw.agent.a1", b"[" * 100_000, "a1"),  # too deep to decode: the subject's agent
        # v2: the subject's actor token is proof (NATS permissions), the payload is not
        ("fw.task.t1.a2", b'{"actor": "a3", "type": "task.progressed"}', "a2"),
        ("fw.agent.victim.mallory", b'{"actor": "victim"}', "mallory"),
        ("fw.task.t1.a2", b"not json", "a2"),
        ("fw.cmd.a1.a2", b'{"actor": "svc:x"}', "a2"),  # an agent sent a command: it is told
        ("fw.cmd.a1.svc:x", b'{"actor": "a1"}', None),
        ("fw.task.t1.user:bob", b'{"actor": "a2"}', None),  # a person: no inbox
    ],
)
def test_a_refusal_goes_to_the_agent_that_sent_the_event(
    subject: str, data: bytes, sender: str | None
) -> None:
    assert sender_of(subject, data) == sender
