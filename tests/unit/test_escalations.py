"""The escalations projection's fold (projections/escalations.py), without a database."""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from fleetward.projections.base import Meta, Row, Rows
from fleetward.projections.escalations import ESCALATIONS, EscalationBoard
from fleetward.schemas import new_id
from fleetward.schemas.events import (
    EscalationAcknowledged,
    EscalationRaised,
    EscalationResolved,
    Event,
    Tier,
)
from fleetward.schemas.subjects import subject_of

T0 = datetime(2025, 3, 14, 9, 0, 0, tzinfo=UTC)
ESC = "hb-0123456789abcdef0123"


def env(actor: str) -> dict[str, Any]:
    return {"id": new_id(), "actor": actor, "at": T0}


def raised(tier: Tier, esc: str = ESC, **fields: Any) -> EscalationRaised:
    fields.setdefault("reason", "heartbeat_missed")
    return EscalationRaised(**env("svc:watchdog"), escalation=esc, tier=tier, **fields)


def ack(esc: str = ESC, note: str = "on it") -> EscalationAcknowledged:
    return EscalationAcknowledged(**env("user:alice"), escalation=esc, note=note)


def resolved(esc: str = ESC, actor: str = "user:bob") -> EscalationResolved:
    return EscalationResolved(**env(actor), escalation=esc, resolution="restarted")


class Fold:
    def __init__(self) -> None:
        self.rows, self.seq = Rows(), 0

    def __call__(self, event: Event, seconds: float = 1.0) -> Meta:
        self.seq += 1
        meta = Meta(self.seq, T0 + timedelta(seconds=self.seq * seconds), subject_of(event))
        EscalationBoard().apply(self.rows, event, meta)
        return meta

    def row(self, esc: str = ESC) -> Row:
        row = self.rows.get(ESCALATIONS, (esc,))
        assert row is not None
        return row


def test_a_raise_opens_an_escalation() -> None:
    fold = Fold()
    m = fold(raised("warning", agent="a7", message="silent", evidence={"misses": 2}))
    row = fold.row()
    assert {k: row[k] for k in ("reason", "tier", "state", "agent", "task", "message")} == {
        "reason": "heartbeat_missed", "tier": "warning", "state": "open", "agent": "a7",
        "task": None, "message": "silent"}  # fmt: skip
    assert json.loads(row["evidence"]) == {"misses": 2}
    assert row["raised_at"] == row["tier_at"] == m.time and row["raised_by"] == "svc:watchdog"
    assert (row["events"], row["last_seq"]) == (1, 1)
    assert set(row) == set(ESCALATIONS.columns)


def test_a_higher_tier_escalates_and_a_lower_one_does_not_lower_it() -> None:
    fold = Fold()
    first = fold(raised("warning"))
    crit = fold(raised("critical", message="still silent"))
    fold(raised("info", message="ignored"))
    row = fold.row()
    assert (row["tier"], row["message"]) == ("critical", "still silent")
    assert (row["raised_at"], row["tier_at"]) == (first.time, crit.time)
    assert row["events"] == 3


def test_acknowledge_then_resolve() -> None:
    fold = Fold()
    fold(raised("critical"))
    a = fold(ack())
    r = fold(resolved())
    fold(resolved(actor="svc:watchdog"))  # a second resolution changes nothing
    fold(ack())  # nor a late acknowledgement
    row = fold.row()
    assert (row["state"], row["acknowledged_by"], row["acknowledged_at"], row["ack_note"]) == (
        "resolved", "user:alice", a.time, "on it")  # fmt: skip
    assert (row["resolved_by"], row["resolved_at"], row["resolution"]) == (
        "user:bob", r.time, "restarted")  # fmt: skip
    assert row["last_seq"] == 3


def test_a_raise_after_resolution_reopens_it() -> None:
    fold = Fold()
    first = fold(raised("warning"))
    fold(ack())
    fold(resolved())
    again = fold(raised("warning"))
    row = fold.row()
    assert (row["state"], row["acknowledged_by"], row["resolved_at"]) == ("open", None, None)
    assert (row["raised_at"], row["tier_at"], row["events"]) == (first.time, again.time, 4)


def test_answers_to_unknown_escalations_are_ignored() -> None:
    fold = Fold()
    fold(ack("nope"))
    fold(resolved("nope"))
    assert fold.rows.data.get(ESCALATIONS.name, {}) == {}


def test_batches_fold_to_the_same_rows() -> None:
    rng = random.Random(3)
    ids = [f"esc-{i}" for i in range(15)]
    events: list[Event] = []
    for _ in range(400):
        esc, roll = rng.choice(ids), rng.random()
        if roll < 0.5:
            tier: Tier = rng.choice(("info", "warning", "critical"))
            events.append(raised(tier, esc, agent="a", message=str(rng.random())))
        elif roll < 0.75:
            events.append(ack(esc))
        else:
            events.append(resolved(esc))
    metas = [Meta(i + 1, T0 + timedelta(seconds=i), subject_of(e)) for i, e in enumerate(events)]
    at_once = Rows()
    for e, m in zip(events, metas, strict=True):
        EscalationBoard().apply(at_once, e, m)
    db: dict[Any, Row] = {}
    i = 0
    while i < len(events):
        size = rng.choice((1, 2, 7, 50))
        rows = Rows()
        for e, m in zip(events[i : i + size], metas[i : i + size], strict=True):
            for table, key in EscalationBoard().touches(e, m):
                if key in db:
                    rows.data.setdefault(table.name, {})[key] = copy.deepcopy(db[key])
        for e, m in zip(events[i : i + size], metas[i : i + size], strict=True):
            EscalationBoard().apply(rows, e, m)
        for row in rows.changed(ESCALATIONS):
            db[ESCALATIONS.key_of(row)] = copy.deepcopy(row)
        i += size
    assert db == at_once.data[ESCALATIONS.name]
    assert {r["state"] for r in db.values()} == {"open", "acknowledged", "resolved"}
