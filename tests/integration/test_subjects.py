"""Subjects Fleetward cannot use, stored by a real nats-server and read by the real projector,
watchdog and agent inbox: each is dead-lettered (or refused) with a readable subject, the good
events around it apply, and no reader stalls (issue 11, item 3).

nats-server stores any subject without white space in it: bytes that are not UTF-8, NUL, other
control characters, tokens of any length and number. Before Fleetward read them through
``FleetwardNats`` (services/jetstream/connection.py), nats-py 2.16 lost its read loop on bytes
that are not UTF-8 (``UnicodeDecodeError`` in ``_build_message``: the connection stayed up and
silent) and reconnected at every delivery of a subject holding a vertical tab or form feed (its
parser splits the control line on them, nats-server does not).
"""

from __future__ import annotations

import logging

import anyio
import msgspec
import pytest
from nats.aio.msg import Msg

from fleetward.schemas import subject_of
from fleetward.schemas.events import AgentRegistered, CommandIssued, Heartbeat, TaskCreated
from fleetward.schemas.streams import COMMANDS_STREAM, EVENTS_STREAM, HEARTBEATS_STREAM
from fleetward.services.client.agent import AgentClient
from fleetward.services.client.operator import FleetClient
from fleetward.services.jetstream.connection import FleetwardNats
from fleetward.services.jetstream.follower import StreamFollower
from fleetward.services.jetstream.publish import encode, publish
from fleetward.services.runtime.connect import Runtime
from fleetward.services.watchdog.service import Watchdog
from tests.helpers import HARNESS, creds, envelope, project_all, wait_for
from tests.raw_nats import Raw, publish_raw

STALL_S = 60.0  # far beyond what these few events take; a stalled reader fails here


def register(agent: str) -> AgentRegistered:
    return AgentRegistered(**envelope(agent), agent=agent, name=agent, owner="o", team="t")


def heartbeat(agent: str) -> Heartbeat:
    return Heartbeat(**envelope(agent), agent=agent, status="busy")


def created(task: str) -> TaskCreated:
    return TaskCreated(**envelope("user:p"), task=task, project="p", title=task)


def raw_json(event: dict[str, object]) -> bytes:
    return msgspec.json.encode(event)


# (subject as stored, the subject as Fleetward shows it, a payload naming another key)
BAD_EVENT_SUBJECTS = [
    (b"fw.agent.\xff\xfe", "fw.agent.\\xff\\xfe", encode(register("x1"))),  # not UTF-8
    (b"fw.agent.\xed\xa0\x80", "fw.agent.\\xed\\xa0\\x80", encode(register("x2"))),  # UTF-16 half
    (b"fw.agent.a1\x00x", "fw.agent.a1\\x00x", encode(register("a1"))),  # NUL
    (b"fw.agent.a\x0bb", "fw.agent.a\\x0bb", encode(register("x3"))),  # vertical tab
    (b"fw.agent.a\x0cb", "fw.agent.a\\x0cb", encode(register("x4"))),  # form feed
    (b"fw.agent.a\x7f", "fw.agent.a\\x7f", encode(register("x5"))),  # DEL
    (b"fw.agent.\xc2\x85", "fw.agent.\\u0085", encode(register("x6"))),  # NEL: UTF-8, unprintable
    (b"fw.agent.a\\xff", "fw.agent.a\\\\xff", encode(register("x7"))),  # a backslash, doubled
    (b"fw.agent.\xc3\xa9", "fw.agent.\u00e9", encode(register("x8"))),  # printable, not safe
    (b"fw.agent." + b"x" * 4000, "fw.agent." + "x" * 4000, encode(register("x9"))),  # too long
    (b"fw.task.t1.extra.tokens", "fw.task.t1.extra.tokens", encode(created("t1"))),
    (b"fw.agent.a1.a1.x", "fw.agent.a1.a1.x", encode(register("a1"))),
]
# events naming the bad subject's own key (so only the key's bounds can refuse them)
SELF_NAMED = [
    (b"fw.agent.\xc3\xa9", raw_json(msgspec.to_builtins(register("y1")) | {"agent": "\u00e9"})),
    (
        b"fw.task.t2.extra.tokens",
        raw_json(msgspec.to_builtins(created("t2")) | {"task": "t2.extra.tokens"}),
    ),
]


async def dead_letters(rt: Runtime) -> dict[int, set[tuple[str, str, bytes]]]:
    """stream sequence -> {(subject, reason, raw)} over every projection of FW_EVENTS."""
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT seq, subject, reason, raw FROM fleet.dead_letters WHERE stream = $1",
            EVENTS_STREAM,
        )
    out: dict[int, set[tuple[str, str, bytes]]] = {}
    for r in rows:
        out.setdefault(r["seq"], set()).add((r["subject"], r["reason"], bytes(r["raw"])))
    return out


async def test_events_on_subjects_fleetward_cannot_use_are_dead_lettered_between_good_ones(
    rt: Runtime, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "fleetward.nats")
    good = [register(f"g{i}") for i in range(len(BAD_EVENT_SUBJECTS) + 1)]
    messages = [Raw(subject_of(good[0]).encode(), encode(good[0]))]
    for (subject, _, data), event in zip(BAD_EVENT_SUBJECTS, good[1:], strict=True):
        messages += [Raw(subject, data), Raw(subject_of(event).encode(), encode(event))]
    messages += [Raw(s, d) for s, d in SELF_NAMED]
    acks = await publish_raw(nats_url, creds=creds(rt, HARNESS), messages=messages)
    assert all("seq" in a for a in acks), acks  # nats-server stored every one
    bad_seqs = [a["seq"] for a in acks[1 : 2 * len(BAD_EVENT_SUBJECTS) : 2]]
    self_named_seqs = [a["seq"] for a in acks[-len(SELF_NAMED) :]]
    last = (await rt.js.stream_info(EVENTS_STREAM)).state.last_seq

    with anyio.fail_after(STALL_S):
        await project_all(rt)

    async with rt.pool.acquire() as conn:
        agents = {r["agent_id"] for r in await conn.fetch("SELECT agent_id FROM fleet.agents")}
        tasks = await conn.fetchval("SELECT count(*) FROM fleet.tasks")
        checkpoints = await conn.fetch(
            "SELECT projection, checkpoint FROM fleet.projections WHERE stream = $1", EVENTS_STREAM
        )
    assert agents == {e.agent for e in good}  # every good one applied, no bad one
    assert tasks == 0
    assert checkpoints and all(r["checkpoint"] == last for r in checkpoints), checkpoints
    found = await dead_letters(rt)
    for seq, (_, shown, data) in zip(bad_seqs, BAD_EVENT_SUBJECTS, strict=True):
        assert found.get(seq) == {(shown, "wrong_subject", data)}, (shown[:40], found.get(seq))
    for seq in self_named_seqs:  # refused by the bounds of the key the payload names
        assert {reason for _, reason, _ in found[seq]} <= {"wrong_subject", "invalid"}
    assert set(found) == {*bad_seqs, *self_named_seqs}
    assert "fw.agent.\\xff\\xfe" in caplog.text  # the first one (then at most one a second)
    assert isinstance(rt.nc, FleetwardNats)
    assert rt.nc.unreadable == sum("\\" in shown for _, shown, _ in BAD_EVENT_SUBJECTS) == 8


async def test_heartbeats_on_bad_subjects_are_dead_lettered_and_the_watchdog_follows_on(
    rt: Runtime, nats_url: str
) -> None:
    """FW_HEARTBEATS through the projector (utilization) and the watchdog's followers: both read
    past the bad subjects, and the connection never reconnects."""
    await publish(rt.js, register("a1"))
    dog = Watchdog(rt)
    stop = anyio.Event()
    acks = await publish_raw(nats_url, creds=creds(rt, HARNESS), messages=[
        Raw(b"fw.hb.a1", encode(heartbeat("a1"))),
        Raw(b"fw.hb.\xff", encode(heartbeat("a1"))),
        Raw(b"fw.hb.a\x0bb", encode(heartbeat("a1"))),
        Raw(b"fw.hb.a1\x00", encode(heartbeat("a1"))),
        Raw(b"fw.agent.\xff", encode(register("a2"))),
        Raw(b"fw.hb.a1", encode(heartbeat("a1"))),
    ])  # fmt: skip
    assert all("seq" in a for a in acks), acks

    async def followed_to_the_end() -> bool:
        if not dog.followers:
            return False
        heartbeats, agents_and_tasks = dog.followers[:2]  # the third reads escalations
        ends = [(await rt.js.stream_info(s)).state.last_seq
                for s in (HEARTBEATS_STREAM, EVENTS_STREAM)]  # fmt: skip
        return [heartbeats.last_seq, agents_and_tasks.last_seq] == ends

    with anyio.fail_after(STALL_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(dog.run, stop.is_set)
            await wait_for(followed_to_the_end, STALL_S, "the watchdog past the bad subjects")
            stop.set()
        await project_all(rt)
    assert dog.rejected == 4  # three heartbeats and one registration, all on bad subjects
    assert sum(f.failures for f in dog.followers) == 0
    assert rt.nc.stats["reconnects"] == 0
    async with rt.pool.acquire() as conn:
        util = await conn.fetchrow("SELECT * FROM fleet.utilization WHERE agent_id = 'a1'")
        dead = await conn.fetch(
            "SELECT seq, subject, reason FROM fleet.dead_letters WHERE stream = $1 ORDER BY seq",
            HEARTBEATS_STREAM,
        )
    assert util is not None and util["heartbeats"] == 2
    assert [(r["subject"], r["reason"]) for r in dead] == [
        ("fw.hb.\\xff", "wrong_subject"),
        ("fw.hb.a\\x0bb", "wrong_subject"),
        ("fw.hb.a1\\x00", "wrong_subject"),
    ]


async def test_a_follower_hands_over_bad_subjects_escaped_in_stream_order(
    rt: Runtime, nats_url: str
) -> None:
    seen: list[tuple[str, int]] = []
    follower = StreamFollower(
        rt.nc, rt.js, HEARTBEATS_STREAM, ("fw.hb.>",),
        lambda subject, _data, seq, _ns: seen.append((subject, seq)), start_seq=1,
    )  # fmt: skip
    await publish_raw(
        nats_url,
        creds=creds(rt, HARNESS),
        messages=[Raw(b"fw.hb.a"), Raw(b"fw.hb.\xfe\x00"), Raw(b"fw.hb.b")],
    )
    stop = anyio.Event()

    async def all_three() -> bool:
        return len(seen) >= 3

    with anyio.fail_after(STALL_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower.run, stop.is_set)
            await wait_for(all_three, STALL_S, "three messages")
            stop.set()
    assert seen == [("fw.hb.a", 1), ("fw.hb.\\xfe\\x00", 2), ("fw.hb.b", 3)]
    assert follower.restarts == 0


async def test_an_agents_command_inbox_reads_past_bad_bytes(rt: Runtime, nats_url: str) -> None:
    """Commands stored with headers nats-py cannot read, a payload that is not JSON, and
    commands on other agents' bad subjects: the agent still gets its good command."""
    assert rt.settings.nats_url
    agent = await AgentClient.connect(rt.settings.nats_url, creds(rt, "a1"))
    operator = await FleetClient.connect(rt.settings.nats_url, creds(rt, "svc:op"))
    try:
        pause = CommandIssued(**envelope("svc:op"), agent="a1", command="pause")
        acks = await publish_raw(nats_url, creds=creds(rt, HARNESS), messages=[
            Raw(b"fw.cmd.a1.svc:op", b"\xff\xfe not json",
                headers=b"NATS/1.0\r\nX-\xff: \xfe\r\nNats-\xc3: b\r\n\r\n"),
            Raw(b"fw.cmd.a1.svc:op", encode(pause),
                headers=b"NATS/1.0 \xff\xfe\r\nA: \xff\r\n\r\n"),
            Raw(b"fw.cmd.\xff.svc:op", encode(pause)),
            Raw(b"fw.cmd.a1\x0b.svc:op", encode(pause)),
        ])  # fmt: skip
        assert all("seq" in a for a in acks), acks
        await operator.command("a1", "resume", reason="good")
        with anyio.fail_after(STALL_S):
            first = await agent.next_command(wait=STALL_S)
            second = await agent.next_command(wait=STALL_S)
        assert first is not None and first.command == "pause"  # its headers did not matter
        assert second is not None and (second.command, second.reason) == ("resume", "good")
        assert agent.nc.stats["reconnects"] == 0
        last = (await rt.js.stream_info(COMMANDS_STREAM)).state.last_seq
        assert last == 5
    finally:
        await agent.close()
        await operator.close()


async def test_a_core_message_with_an_unreadable_status_line_does_not_end_the_connection(
    rt: Runtime, nats_url: str
) -> None:
    """Core NATS passes headers on as they are (JetStream stores them without the status line):
    a status line that is not UTF-8 made nats-py's read loop end. The message arrives without
    headers instead, and so does everything after it."""
    got: list[tuple[str, dict[str, str] | None, bytes]] = []

    async def take(msg: Msg) -> None:
        got.append((msg.subject, msg.headers, msg.data))

    sub = await rt.nc.subscribe("probe.>", cb=take)
    await rt.nc.flush()
    await publish_raw(nats_url, creds=creds(rt, HARNESS), messages=[
        Raw(b"probe.1", b"a", headers=b"NATS/1.0 \xff\xfe\r\n\r\n"),
        Raw(b"probe.2", b"b", headers=b"NATS/1.0 409 \xff\r\nA: b\r\n\r\n"),
        Raw(b"probe.\xff", b"c"),
        Raw(b"probe.4", b"d", headers=b"NATS/1.0\r\nA: b\r\n\r\n"),
    ], stored=False)  # fmt: skip

    async def four() -> bool:
        return len(got) >= 4

    try:
        await wait_for(four, 10, "the four messages")
    finally:
        await sub.unsubscribe()
    assert got == [
        ("probe.1", None, b"a"),
        ("probe.2", None, b"b"),
        ("probe.\\xff", None, b"c"),
        ("probe.4", {"A": "b"}, b"d"),
    ]
    assert rt.nc.stats["reconnects"] == 0
