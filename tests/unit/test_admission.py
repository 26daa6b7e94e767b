"""Admission: raw bytes from the bus become a trusted event, or a ``Rejected`` with the reason a
dead letter carries. Every case checks the exact reason, so a misclassification fails."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from fleetward.schemas.admission import MAX_EVENT_BYTES, REASONS, Rejected, admit
from fleetward.schemas.events import (
    AgentRegistered,
    Deliverable,
    Event,
    Heartbeat,
    TaskSubmitted,
    type_name,
)
from fleetward.schemas.subjects import subject_of
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


def reason_of(subject: str, data: bytes) -> str:
    """The reason ``admit`` rejects ``data`` with; fails the test when it is admitted."""
    with pytest.raises(Rejected) as caught:
        admit(subject, data)
    assert caught.value.reason in REASONS
    return caught.value.reason


HB_SUBJECT = f"fw.hb.{AGENT}"
TASK_SUBJECT = f"fw.task.{TASK}"


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
    assert (hb.status, hb.task, hb.message, hb.v, hb.corr) == ("idle", None, "", 1, None)

    reg = admit(
        f"fw.agent.{AGENT}",
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


# ---- rejected: subject ---------------------------------------------------------------------


def test_heartbeat_on_the_agent_subject() -> None:
    assert reason_of(f"fw.agent.{AGENT}", raw(heartbeat())) == "wrong_subject"


def test_event_on_another_keys_subject() -> None:
    assert reason_of("fw.task.task-other", raw(claim())) == "wrong_subject"
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
    assert reason_of(TASK_SUBJECT, raw(claim(actor="agent-8"))) == "actor_forbidden"


@pytest.mark.parametrize("actor", [AGENT, "agent-8"])
def test_task_assigned_by_an_agent(actor: str) -> None:
    data = payload("task.assigned", actor=actor, task=TASK, agent=AGENT)
    assert reason_of(TASK_SUBJECT, raw(data)) == "actor_forbidden"


def test_task_assigned_by_a_service_is_admitted() -> None:
    data = payload("task.assigned", actor="svc:dispatcher", task=TASK, agent=AGENT)
    assert type_name(type(admit(TASK_SUBJECT, raw(data)))) == "task.assigned"


@pytest.mark.parametrize("actor", ["user:alice", AGENT])
def test_lease_expired_not_from_a_service(actor: str) -> None:
    data = payload("task.lease_expired", actor=actor, task=TASK, agent=AGENT, epoch=1)
    assert reason_of(TASK_SUBJECT, raw(data)) == "actor_forbidden"


def test_agent_reviewing_its_own_deliverable() -> None:
    data = payload("task.reviewed", actor=AGENT, task=TASK, agent=AGENT, verdict="approve")
    assert reason_of(TASK_SUBJECT, raw(data)) == "actor_forbidden"


def test_agent_reviewing_another_agents_deliverable_is_admitted() -> None:
    data = payload("task.reviewed", actor="agent-8", task=TASK, agent=AGENT, verdict="approve")
    assert type_name(type(admit(TASK_SUBJECT, raw(data)))) == "task.reviewed"


def test_subject_is_checked_before_actor() -> None:
    """An event that is wrong twice is dead-lettered for its subject."""
    assert reason_of("fw.hb.agent-8", raw(heartbeat(actor="agent-8"))) == "wrong_subject"
