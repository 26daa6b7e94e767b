"""The permanent fuzz test (DESIGN 3.5, 3.6): no single event can stall, kill or skew Fleetward.

Each example takes valid events of every kind from the contract (tests/samples.py, renamed to
ids of its own), mutates some of them (bytes, types, bounds, nesting, subjects, reused ids),
publishes them between good events to a real nats-server, runs the real projector to the head
of both streams while a real watchdog judges, and asserts:

- every message is applied or dead-lettered: a message admission refuses is a dead letter of
  every projection that reads its subject, with admission's reason; one admission accepts is
  applied, or dead-lettered as ``projection_error`` when its rows could not be written;
- the good events' effects are exact (an agent's spend, its registry row, a task);
- the projector reaches the head of every stream (it never stalls) and the watchdog keeps
  judging (it never dies);
- after each example, a rebuild of every projection equals what was built live.

``make test`` runs a bounded number of examples; ``make fuzz`` runs many more
(``FLEETWARD_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetward.projections import ALL
from fleetward.schemas import Rejected, admit, decode, new_id
from fleetward.schemas.events import AgentRegistered, Event, SpendRecorded, TaskCreated
from fleetward.schemas.subjects import subject_of
from fleetward.services.jetstream.escape import subject_text
from fleetward.services.projector.consumers import reads_subject
from fleetward.services.projector.rebuild import rebuild, stream_last_seq
from fleetward.services.runtime.connect import Runtime
from fleetward.services.watchdog.service import Watchdog
from tests.helpers import HARNESS, creds, project_all, snapshot
from tests.integration.test_watchdog import FAST
from tests.raw_nats import Raw, publish_raw
from tests.samples import AGENT, APPROVAL, BUDGET, ESCALATION, RUN, TASK, sample_events

EXAMPLES = int(os.environ.get("FLEETWARD_FUZZ_EXAMPLES", "10"))
PROJECTION_ERROR = "projection_error"
# refused by a projection's rules on its own state (not by admission): an accepted mutant
# may meet them, e.g. a decision on an approval request that was never stored
JUDGED = ("approval_forbidden", "lifecycle_forbidden")
_EXAMPLE = itertools.count(1)  # ids of their own for every example (Hypothesis repeats draws)
DEPTH = 1000  # far deeper than any event: JSON decoders recurse per level
RAW = "raw:"  # a subject given as hex bytes, published over a plain socket (tests/raw_nats.py)


@dataclass
class Sent:
    """One message as published, and what admission says of it (None: admitted)."""

    subject: str
    data: bytes
    seq: int
    refused: str | None
    what: str


def _rename(value: Any, names: dict[str, str]) -> Any:
    """``value`` with every string equal to a key of ``names`` replaced, recursively."""
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, list):
        return [_rename(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _rename(v, names) for k, v in value.items()}
    return value


def good_events(n: int, who: str = "") -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every sample event as a JSON object with ids of example ``n`` and fresh event ids;
    ``who`` tells the good events (``""``) from the ones mutated (``"m"``), so what a mutant
    does (admission may accept it) never touches the good events' rows."""
    names = {
        AGENT: f"fz{n:07d}{who}-agent",
        TASK: f"fz{n:07d}{who}-task",
        RUN: f"fz{n:07d}{who}-run",
        ESCALATION: f"fz{n:07d}{who}-esc",
        BUDGET: f"fz{n:07d}{who}-budget",
        APPROVAL: f"fz{n:07d}{who}-appr",
    }
    out = []
    for event in sample_events():
        raw = _rename(msgspec.json.decode(msgspec.json.encode(event)), names)
        if raw["type"] == "approval.denied":  # the samples decide their one request twice:
            continue  # the grant is the good decision; a second is refused (approval_forbidden)
        raw["id"] = new_id()
        if raw["type"] == "task.created":
            raw["depends_on"] = []  # the sample's dependency is not in this stream
        out.append(raw)
    return out, names


def _paths(value: Any, kind: type | tuple[type, ...], at: tuple[Any, ...] = ()) -> list[Any]:
    """The paths (key tuples) of every leaf of ``kind`` in a JSON value (bools are not ints)."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, kind, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, kind, (*at, i))
    elif isinstance(value, kind) and not isinstance(value, bool):
        found.append(at)
    return found


def _set(value: dict[str, Any], path: tuple[Any, ...], new: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(value))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return copy


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def mutation(draw: st.DrawFn, event: dict[str, Any], subject: str) -> tuple[str, bytes, str]:
    """A mutated form of ``event``: (subject, bytes, what was done)."""
    how = draw(
        st.sampled_from(
            [
                "nul", "surrogate", "int_bound", "float_bound", "type_swap", "deep",
                "garbage", "truncate", "unknown_type", "type_nul", "wrong_subject",
                "odd_subject", "drop_field", "huge_text", "bytes_subject", "actor_mismatch",
            ]
        )
    )  # fmt: skip
    strings = [p for p in _paths(event, str) if p != ("type",)]
    ints = _paths(event, int)
    floats = _paths(event, float)
    if how == "nul" and strings:
        path = draw(st.sampled_from(strings))
        return subject, _dump(_set(event, path, "bad\u0000" + str(path[-1]))), f"nul at {path}"
    if how == "surrogate" and strings:
        path = draw(st.sampled_from(strings))
        return subject, _dump(_set(event, path, "x\ud800y")), f"lone surrogate at {path}"
    if how == "int_bound" and ints:
        path = draw(st.sampled_from(ints))
        big = draw(st.sampled_from([2**31, 2**31 - 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -1]))
        return subject, _dump(_set(event, path, big)), f"int {big} at {path}"
    if how == "float_bound" and floats:
        path = draw(st.sampled_from(floats))
        text = draw(st.sampled_from(["1e308", "5e-324", "-0.0", "1e999", "-1e999", "1e-300"]))
        marker = "__FLOAT__"
        data = _dump(_set(event, path, marker)).replace(f'"{marker}"'.encode(), text.encode())
        return subject, data, f"float {text} at {path}"
    if how == "type_swap" and (strings or ints or floats):
        path = draw(st.sampled_from(strings + ints + floats))
        new = draw(st.sampled_from([None, [], {}, True, "7", 7, 7.5]))
        return subject, _dump(_set(event, path, new)), f"{new!r} at {path}"
    if how == "deep":
        data = _dump(event)[:-1] + b', "x": ' + b"[" * DEPTH + b"]" * DEPTH + b"}"
        return subject, data, "unknown field nested deep"
    if how == "garbage":
        return subject, draw(st.binary(max_size=64)), "random bytes"
    if how == "truncate":
        data = _dump(event)
        return subject, data[: draw(st.integers(0, len(data) - 1))], "truncated"
    if how == "unknown_type":
        return subject, _dump({**event, "type": draw(st.text(max_size=20))}), "unknown type"
    if how == "type_nul":
        return subject, _dump({**event, "type": event["type"] + "\u0000"}), "NUL in type"
    if how == "wrong_subject":
        other = draw(st.sampled_from(["fw.agent.someone-else.a1", "fw.task.other", "fw.esc.x.y"]))
        return other, _dump(event), "valid event on another subject"
    if how == "actor_mismatch" and len(subject.split(".")) == 4:  # contract v2: a forgery
        actor = draw(st.sampled_from(["mallory", "user:eve", "svc:fake"]))
        forged = f"{subject.rsplit('.', 1)[0]}.{actor}"
        return forged, _dump(event), f"valid event on its boundary's subject of {actor}"
    if how == "odd_subject":
        kind = subject.split(".")[1]
        token = draw(st.sampled_from(["a" * 300, "ü-agent", "x.y.z", "%41", "a\\b"]))
        return f"fw.{kind}.{token}", _dump(event), f"subject token {token!r}"
    if how == "bytes_subject":  # what nats-py cannot publish or decode: sent over a raw socket
        kind = subject.split(".")[1]
        token = draw(st.sampled_from([b"\xff\xfe", b"a1\x00x", b"a\x0bb", b"\xed\xa0\x80"]))
        return RAW + f"fw.{kind}.".encode().hex() + token.hex(), _dump(event), f"bytes {token!r}"
    if how == "drop_field":
        keys = [k for k in event if k != "type"]
        key = draw(st.sampled_from(keys))
        return subject, _dump({k: v for k, v in event.items() if k != key}), f"without {key}"
    if how == "huge_text" and strings:
        path = draw(st.sampled_from(strings))
        return subject, _dump(_set(event, path, "w" * 300_000)), f"huge text at {path}"
    return subject, _dump({**event, "type": "no.such.type"}), "fallback: unknown type"


def _oracle(subject: str, data: bytes) -> str | None:
    try:
        admit(subject, data)
    except Rejected as exc:
        return exc.reason
    return None


async def _publish(rt: Runtime, subject: str, data: bytes, what: str) -> Sent:
    if subject.startswith(RAW):
        raw = bytes.fromhex(subject.removeprefix(RAW))
        assert rt.settings.nats_url
        (ack,) = await publish_raw(
            rt.settings.nats_url, creds=creds(rt, HARNESS), messages=[Raw(raw, data)]
        )
        seen = subject_text(raw)  # the subject as Fleetward's connection hands it over
        return Sent(seen, data, ack["seq"], _oracle(seen, data), what)
    ack = await rt.js.publish(subject, data, headers={"Nats-Msg-Id": new_id()})
    return Sent(subject, data, ack.seq, _oracle(subject, data), what)


async def _dead_letters(rt: Runtime, stream: str, seqs: list[int]) -> dict[tuple[str, int], str]:
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT projection, seq, reason FROM fleet.dead_letters "
            "WHERE stream = $1 AND seq = ANY($2::bigint[])",
            stream,
            seqs,
        )
    return {(r["projection"], r["seq"]): r["reason"] for r in rows}


async def _check_every_message(rt: Runtime, sent: list[Sent]) -> None:
    """Each message is applied or dead-lettered by every projection that reads its subject."""
    for projection in ALL:
        matches = reads_subject(projection, ())
        mine = [s for s in sent if s.subject and (matches is None or matches(s.subject))]
        mine = [s for s in mine if s.subject.split(".")[1] in _kinds(projection)]
        if not mine:
            continue
        dead = await _dead_letters(rt, projection.stream, [s.seq for s in mine])
        for s in mine:
            got = dead.get((projection.name, s.seq))
            if s.refused is not None:
                assert got == s.refused, (projection.name, s.what, s.refused, got)
            elif s.what.startswith("good"):
                assert got in (None, PROJECTION_ERROR), (projection.name, s.what, got)
            else:  # a mutant admission accepts may still break a projection's own rules
                assert got in (None, PROJECTION_ERROR, *JUDGED), (projection.name, s.what, got)


def _kinds(projection: Any) -> set[str]:
    return {subject.split(".")[1] for subject in projection.subjects}


async def _check_good_effects(rt: Runtime, goods: list[Event], names: dict[str, str]) -> None:
    agent = names[AGENT]
    spends = [e for e in goods if isinstance(e, SpendRecorded) and e.agent == agent]
    registered = [e for e in goods if isinstance(e, AgentRegistered) and e.agent == agent]
    tasks = [e for e in goods if isinstance(e, TaskCreated)]
    async with rt.pool.acquire() as conn:
        cost = await conn.fetchval(
            "SELECT coalesce(sum(model_cost_usd), 0) FROM fleet.spend_daily WHERE agent_id = $1",
            agent,
        )
        name = await conn.fetchval("SELECT name FROM fleet.agents WHERE agent_id = $1", agent)
        titles = await conn.fetch(
            "SELECT title FROM fleet.tasks WHERE task_id = ANY($1::text[])",
            [t.task for t in tasks],
        )
    assert cost == sum((Decimal(str(s.cost_usd)) for s in spends), Decimal(0))
    assert name == registered[-1].name
    assert sorted(r["title"] for r in titles) == sorted(t.title for t in tasks)


async def _heads(rt: Runtime) -> dict[str, int]:
    """The last sequence of every stream a projection reads, now."""
    return {stream: await stream_last_seq(rt, stream) for stream in {p.stream for p in ALL}}


@contextlib.asynccontextmanager
async def _within(rt: Runtime, seconds: float, what: str) -> AsyncIterator[None]:
    """Fail with ``what`` and every checkpoint against its stream's head when the block takes
    longer than ``seconds`` (a stalled projector fails here instead of hanging)."""
    try:
        with anyio.fail_after(seconds):
            yield
    except TimeoutError:
        at = {r["projection"]: (r["checkpoint"], r["stream"]) for r in await _checkpoints(rt)}
        raise TimeoutError(f"{what}: not done in {seconds}s; checkpoints {at}, heads "
                           f"{await _heads(rt)}") from None  # fmt: skip


async def _checkpoints(rt: Runtime) -> list[Any]:
    """Every projection's row of fleet.projections: its stream and checkpoint."""
    async with rt.pool.acquire() as conn:
        return await conn.fetch("SELECT projection, stream, checkpoint FROM fleet.projections")


async def _check_at_head(rt: Runtime, heads: dict[str, int]) -> None:
    """Every projection reached ``heads`` (each stream's last sequence before it ran). The
    watchdog judges meanwhile and may store escalations after that: those are not waited for."""
    for row in await _checkpoints(rt):
        assert row["checkpoint"] >= heads[row["stream"]], (dict(row), heads)


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("FLEETWARD_FUZZ_RANDOM") is None,  # CI: the same examples
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_no_single_event_stalls_kills_or_skews_fleetward(
    rt: Runtime, data: st.DataObject
) -> None:
    n = next(_EXAMPLE)
    events, names = good_events(n)
    mutants, _ = good_events(n, "m")
    goods: list[Event] = []
    sent: list[Sent] = []
    stop = anyio.Event()
    dog = Watchdog(rt, FAST, name=f"wd_fuzz_{n}")
    async with anyio.create_task_group() as tg:
        tg.start_soon(dog.run, stop.is_set)
        for raw, mutant in zip(events, mutants, strict=True):
            subject = subject_for(raw)
            if data.draw(st.booleans(), label=f"mutate {raw['type']}"):
                subj, payload, what = data.draw(
                    mutation(mutant, subject_for(mutant)), label="mutation"
                )
                sent.append(await _publish(rt, subj, payload, what))
            good = admit(subject, _dump(raw))
            goods.append(good)
            sent.append(await _publish(rt, subject, _dump(raw), f"good {raw['type']}"))
            if isinstance(good, SpendRecorded):
                replay = data.draw(st.sampled_from(["none", "same", "other"]), label="replay")
                if replay == "same":  # the same event again, a new message id: it counts once
                    sent.append(await _publish(rt, subject, _dump(raw), "replayed spend"))
                elif replay == "other":  # another spend under a used event id: never counted
                    other = _dump({**raw, "cost_usd": 999.0, "tokens_in": 1})
                    sent.append(await _publish(rt, subject, other, "spend reusing an event id"))
        heads = await _heads(rt)
        async with _within(rt, 120, "the projector reaching the head"):  # never stalls
            await project_all(rt)
        await _check_at_head(rt, heads)
        await _check_every_message(rt, sent)
        await _check_good_effects(rt, goods, names)
        # the watchdog read everything and judged after it (each wait says which one timed out)
        await dog.signals.wait_for(dog.caught_up, 60, "the watchdog to catch up")
        judged = dog.signals.judged.count
        await dog.signals.wait_for(lambda: dog.signals.judged.count > judged, 60, "a judgement")
        stop.set()
    # live equals rebuild, over everything published so far (every example's bad input), the
    # watchdog's last judgements too (published after the projection above)
    async with _within(rt, 120, "the projector reaching the head after the watchdog stopped"):
        await project_all(rt)
    live = await snapshot(rt)
    for projection in ALL:
        async with _within(rt, 120, f"a rebuild of {projection.name}"):
            await rebuild(rt, projection)
    rebuilt = await snapshot(rt)
    differ = sorted(t for t in set(live) | set(rebuilt) if live.get(t) != rebuilt.get(t))
    assert differ == [], {t: (live.get(t), rebuilt.get(t)) for t in differ}


def subject_for(raw: dict[str, Any]) -> str:
    """The subject a raw good event belongs on."""
    return subject_of(decode(_dump(raw)))
