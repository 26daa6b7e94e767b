"""Every admitted value fits everywhere it goes (issue 11), against the real projector, nats-server
and Postgres: values that would not fit are dead-lettered between good events, which apply; sums
pass what a bigint holds; spend keeps the team it was spent under. Live = rebuild throughout.

Each payload here stalled the projector on main at cdeb8d3 (a NUL reached a text column, 2^31
an integer column, ...), so every run is bounded by ``fail_after``: a stall fails, never hangs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anyio
import msgspec

from fleetward.projections import ALL
from fleetward.schemas.events import AgentRegistered, Event, Heartbeat, SpendRecorded, TaskCreated
from fleetward.services.db import q
from fleetward.services.jetstream.publish import publish, publish_many
from fleetward.services.projector.rebuild import rebuild
from fleetward.services.projector.runner import ProjectionRunner
from fleetward.services.runtime.connect import Runtime
from tests.helpers import envelope, migrated_before, project_all, run_to_end, snapshot

STALL_S = 60  # far more than any of these runs needs


def register(agent: str, team: str = "t") -> AgentRegistered:
    return AgentRegistered(**envelope(agent), agent=agent, name=agent, owner="o", team=team)


def spend(agent: str, cost: float, tokens_in: int = 10) -> SpendRecorded:
    return SpendRecorded(
        **envelope(agent), agent=agent, model="m", tokens_in=tokens_in, cost_usd=cost
    )


def as_json(event: Event, **changes: Any) -> bytes:
    """``event`` as JSON with fields changed (or added), written by ``json`` as any producer
    might: a NUL becomes the escape \\u0000, big integers stay exact."""
    return json.dumps(msgspec.to_builtins(event) | changes).encode()


def with_number(event: Event, field: str, literal: str) -> bytes:
    """``event`` as JSON with ``field`` set to the number ``literal`` exactly as written."""
    return as_json(event, **{field: 0}).replace(
        f'"{field}": 0'.encode(), f'"{field}": {literal}'.encode()
    )


def nested(event: Event, levels: int) -> bytes:
    data = as_json(event)
    return data[:-1] + b', "x": ' + b"[" * levels + b"]" * levels + b"}"


async def dead_letters(rt: Runtime) -> dict[tuple[str, int], str]:
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch("SELECT projection, seq, reason, detail FROM fleet.dead_letters")
    assert all(r["detail"] for r in rows)
    return {(r["projection"], r["seq"]): r["reason"] for r in rows}


async def test_values_that_do_not_fit_are_dead_lettered_and_good_events_apply(
    rt: Runtime,
) -> None:
    agent = "a1"
    claim: dict[str, Any] = {
        **msgspec.to_builtins(envelope(agent)),
        "type": "task.claimed",
        "task": "t1",
        "agent": agent,
    }
    task = TaskCreated(**envelope("user:op"), task="t1", project="p", title="T")
    escalation = {
        **msgspec.to_builtins(envelope("svc:watchdog")),
        "type": "escalation.raised",
        "escalation": "e1",
        "tier": "warning",
        "reason": "r",
    }
    hb = Heartbeat(**envelope(agent), agent=agent, status="busy", message="ok")
    # (subject, payload, reason): each between good events; the reasons are admission's
    on_agent, reg, paid = "fw.agent.a1.a1", register(agent), spend(agent, 1.0)
    on_task, by_op, on_esc = "fw.task.t1.a1", "fw.task.t1.user:op", "fw.esc.e1.svc:watchdog"
    bad = [
        (on_agent, as_json(reg, name="bad\x00name"), "invalid"),
        (on_agent, with_number(paid, "tokens_in", str(2**63)), "invalid"),
        (on_agent, with_number(reg, "max_concurrent_tasks", str(2**31)), "invalid"),
        (on_agent, with_number(reg, "heartbeat_interval_s", "5e-324"), "invalid"),
        (on_agent, with_number(paid, "cost_usd", "1e308"), "invalid"),
        (on_agent, with_number(paid, "cost_usd", "1e999"), "invalid"),
        (on_agent, nested(paid, 1000), "too_deep"),
        (on_agent, as_json(paid, type="spend\x00recorded"), "unknown_type"),
        (by_op, as_json(task, title="a\x00b"), "invalid"),
        (on_task, json.dumps(claim | {"epoch": 2**31}).encode(), "invalid"),
        (on_esc, json.dumps(escalation | {"message": "\x00"}).encode(), "invalid"),
        ("fw.hb.a1", as_json(hb, message="bad\x00message"), "invalid"),
        ("fw.hb.a1", nested(hb, 1000), "too_deep"),
    ]
    readers = {
        on_agent: ("agents", "tasks", "spend", "approvals"),  # approvals: agents' tool calls
        on_task: ("tasks",),
        by_op: ("tasks",),
        on_esc: ("escalations",),
        "fw.hb.a1": ("utilization",),
    }
    await publish(rt.js, register(agent, team="red"))
    expected: dict[tuple[str, int], str] = {}
    for i, (subject, data, reason) in enumerate(bad):
        ack = await rt.js.publish(subject, data)
        for projection in readers[subject]:
            expected[(projection, ack.seq)] = reason
        if i % 3 == 0:  # good events in between
            busy = Heartbeat(**envelope(agent), agent=agent, status="busy")
            await publish_many(rt.js, [spend(agent, 0.25), busy])
    await publish_many(rt.js, [task, spend(agent, 0.5, tokens_in=5)])
    await publish(rt.js, Heartbeat(**envelope(agent), agent=agent, status="idle"))

    with anyio.fail_after(STALL_S):
        await project_all(rt)

    assert await dead_letters(rt) == expected
    async with rt.pool.acquire() as conn:
        checkpoints = dict(await conn.fetch("SELECT projection, checkpoint FROM fleet.projections"))
        spent = await conn.fetchrow(
            "SELECT sum(cost_usd) AS cost, sum(tokens_in) AS tokens FROM fleet.spend_daily"
        )
        a1 = await conn.fetchrow("SELECT * FROM fleet.agents WHERE agent_id = 'a1'")
        t1 = await conn.fetchrow("SELECT * FROM fleet.tasks WHERE task_id = 't1'")
        util = await conn.fetchrow("SELECT * FROM fleet.utilization WHERE agent_id = 'a1'")
    for stream in ("FW_EVENTS", "FW_HEARTBEATS"):
        last = (await rt.js.stream_info(stream)).state.last_seq
        assert {checkpoints[p.name] for p in ALL if p.stream == stream} == {last}
    good_spends = sum(1 for i in range(len(bad)) if i % 3 == 0)
    assert spent is not None
    assert spent["cost"] == Decimal("0.25") * good_spends + Decimal("0.5")
    assert spent["tokens"] == 10 * good_spends + 5
    assert a1 is not None and a1["name"] == "a1" and a1["team"] == "red"
    assert a1["max_concurrent_tasks"] == 1 and a1["heartbeat_interval_s"] == 60.0
    assert t1 is not None and t1["title"] == "T" and t1["claim_epoch"] == 0
    assert util is not None and util["state"] == "idle"
    assert util["heartbeats"] == good_spends + 1

    live = await snapshot(rt)
    for projection in ALL:
        await rebuild(rt, projection)
    assert await snapshot(rt) == live


async def test_a_days_token_sum_passes_what_a_bigint_holds(rt: Runtime) -> None:
    """A day that already holds 2^63 - 5 tokens (no two admitted spends reach it, but nothing
    bounds how many spends a day holds) takes one more spend: the sum is exact, nothing stalls."""
    await publish_many(rt.js, [register("a1"), spend("a1", 0.5, tokens_in=10)])
    with anyio.fail_after(STALL_S):
        await project_all(rt)
    async with rt.pool.acquire() as conn:
        await conn.execute("UPDATE fleetward.spend_daily SET tokens_in = $1", 2**63 - 5)
    await publish(rt.js, spend("a1", 0.5, tokens_in=10))
    with anyio.fail_after(STALL_S):
        await project_all(rt)
    async with rt.pool.acquire() as conn:
        day = await conn.fetchrow("SELECT * FROM fleet.spend_daily WHERE agent_id = 'a1'")
        team = await conn.fetchrow("SELECT * FROM fleet.spend_team_daily WHERE team = 't'")
        dead = await conn.fetchval("SELECT count(*) FROM fleet.dead_letters")
    assert day is not None and day["tokens_in"] == 2**63 + 5 and day["cost_usd"] == Decimal("1.0")
    assert team is not None and team["tokens_in"] == 2**63 + 5
    assert dead == 0


async def test_spend_keeps_the_team_it_was_spent_under_live_and_rebuilt(rt: Runtime) -> None:
    """Issue 11: re-registered into B, the agent took the day's 5.00 of team A with it."""
    events: list[Event] = [register("a1", team="A"), spend("a1", 5.0), register("a2", team="A")]
    events += [spend("a2", 2.0), register("a1", team="B"), spend("a1", 1.0)]
    events += [register("a1", team="A"), spend("a1", 0.25), register("a1", team="B")]
    await publish_many(rt.js, events)
    spend_projection = next(p for p in ALL if p.name == "spend")
    with anyio.fail_after(STALL_S):
        # live: one event per batch, as near the head of the stream
        await run_to_end(ProjectionRunner(rt, spend_projection, batch_size=1))
        await project_all(rt, tuple(p for p in ALL if p is not spend_projection))

    async def views() -> tuple[dict[str, Decimal], dict[tuple[str, str], Decimal], Any, Any]:
        today = datetime.now(UTC).date()
        async with rt.pool.acquire() as conn:
            teams = await conn.fetch("SELECT team, cost_usd FROM fleet.spend_team_daily")
            rows = await conn.fetch("SELECT agent_id, team, cost_usd FROM fleet.spend_daily")
            listed = await conn.fetch(q("agents_list"), 10)
            gauges = await conn.fetch(q("metrics_team_spend"), today)
        by_team = {r["team"]: r["cost_usd"] for r in teams}
        by_row = {(r["agent_id"], r["team"]): r["cost_usd"] for r in rows}
        return by_team, by_row, sorted(tuple(r.values()) for r in listed), sorted(gauges)

    by_team, by_row, listed, gauges = await views()
    assert by_team == {"A": Decimal("7.25"), "B": Decimal("1.0")}
    assert by_row == {("a1", "A"): Decimal("5.25"), ("a1", "B"): Decimal("1.0"),
                      ("a2", "A"): Decimal("2.0")}  # fmt: skip
    # the registry lists each agent once, with its whole day; the gauges see each team's spend
    costs = {r[0]: r[-1] for r in listed}
    assert costs == {"a1": Decimal("6.25"), "a2": Decimal("2.0")} and len(listed) == 2
    assert {r["team"]: r["today"] for r in gauges} == {"A": 7.25, "B": 1.0}

    live = await snapshot(rt, (spend_projection,))
    await rebuild(rt, spend_projection)
    assert await snapshot(rt, (spend_projection,)) == live
    assert await views() == (by_team, by_row, listed, gauges)


async def test_migration_0005_keeps_the_rows_it_widens(pg_server: str) -> None:
    """Upgrading a database that holds rows: the widened columns keep their values and take
    what they could not before; every agent with spend gets its teams (in code point order, as
    the fold sorts them), one who never registered too."""
    async with migrated_before(pg_server, "0005_") as (conn, last_sql):
        await conn.execute(
            """
            INSERT INTO fleetward.spend_agents VALUES ('a1', 'B');
            INSERT INTO fleetward.spend_daily VALUES
              ('a1', '2025-03-14', 'b-team', 1.5, 0, 10, 2, 1, 0, 0, 0, 1),
              ('a1', '2025-03-15', 'B', 2.5, 0, 9223372036854775807, 0, 0, 0, 0, 0, 1),
              ('a1', '2025-03-16', 'B', 0.5, 0, 1, 1, 0, 0, 0, 0, 1),
              ('a2', '2025-03-14', 'unassigned', 0.25, 0, 5, 5, 0, 0, 0, 0, 1);
            INSERT INTO fleetward.escalations VALUES ('e1', 'r', 'info', 'open', NULL, NULL,
              '', '{}', 'svc:w', now(), now(), NULL, NULL, NULL, NULL, NULL, NULL, 2147483647,
              now(), 1);
            """
        )
        await conn.execute(last_sql)
        agents = {r["agent_id"]: (r["team"], r["teams"]) for r in
                  await conn.fetch("SELECT * FROM fleetward.spend_agents")}  # fmt: skip
        assert agents == {"a1": ("B", ["B", "b-team"]), "a2": ("unassigned", ["unassigned"])}
        tokens = await conn.fetchval("SELECT sum(tokens_in) FROM fleet.spend_team_daily")
        assert tokens == 2**63 - 1 + 16
        assert await conn.fetchval("SELECT events + 1 FROM fleetward.escalations") == 2**31
        columns = dict(
            await conn.fetch(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'fleet' AND column_name IN ('tokens_in', 'review_rounds',"
                " 'rework_count', 'deliverable_version', 'version', 'claim_epoch', 'epoch')"
            )
        )
        assert columns == {
            "agents.version": "text",
            "spend_daily.tokens_in": "numeric",
            "spend_team_daily.tokens_in": "numeric",
            "tasks.review_rounds": "bigint",
            "tasks.rework_count": "bigint",
            "tasks.deliverable_version": "bigint",
            "tasks.claim_epoch": "integer",
            "deliverables.version": "bigint",
            "deliverables.epoch": "integer",
        }
