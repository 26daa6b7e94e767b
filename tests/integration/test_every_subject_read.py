"""Every Fleetward subject has a reader that admits it (issue 11, item 6), against real servers:
what is published on fw.budget.> and on FW_COMMANDS (random bytes, a budget or a command from
an agent, another type's event) is dead-lettered with its reason and counted, and the good
events beside them are applied to fleet.budgets and fleet.commands."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from fleetward.schemas.events import BudgetSet, CommandIssued
from fleetward.services import metrics
from fleetward.services.jetstream.publish import encode, publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import envelope, project_all
from tests.integration.test_watchdog import register


def dead(projection: str, reason: str) -> float:
    labels = {"projection": projection, "reason": reason}
    return metrics.REGISTRY.get_sample_value("fleetward_dead_letters_total", labels) or 0.0


async def dead_lettered_and_counted(
    rt: Runtime, projection: str, bad: dict[str, tuple[str, bytes]]
) -> dict[int, tuple[str, str]]:
    """Publish each bad (subject, bytes) under the reason it should be refused for, project,
    and check that ``projection`` dead-lettered each once, with that reason, and counted it.
    Returns their stream sequences -> (reason, subject)."""
    before = {reason: dead(projection, reason) for reason in bad}
    published = {}
    for reason, (subject, data) in bad.items():
        ack = await rt.js.publish(subject, data)
        published[ack.seq] = (reason, subject)
    await project_all(rt)
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch("SELECT seq, reason, subject, detail FROM fleet.dead_letters"
                                " WHERE projection = $1", projection)  # fmt: skip
    assert all(r["detail"] for r in rows)
    assert {r["seq"]: (r["reason"], r["subject"]) for r in rows} == published
    counted = {reason: dead(projection, reason) - before[reason] for reason in bad}
    assert counted == dict.fromkeys(bad, 1)
    return published


def as_dict(event: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(encode(event))
    return decoded


async def test_bad_events_on_budget_subjects_are_dead_lettered_and_good_ones_applied(
    rt: Runtime,
) -> None:
    good = BudgetSet(**envelope("user:ops"), budget="b1", scope="team", scope_id="docs",
                     window="month", limit_usd=12.5)  # fmt: skip
    await publish_many(rt.js, [good])
    from_agent = as_dict(good) | {"actor": "a1", "budget": "b2"}
    bad = {
        "not_json": ("fw.budget.b3.user:ops", b"\x00\x9c not json at all \xff"),
        "actor_forbidden": ("fw.budget.b2.a1", msgspec.json.encode(from_agent)),
        "wrong_subject": ("fw.budget.b4.a1", encode(register("a1"))),
        "unknown_type": ("fw.budget.b5.user:ops", b'{"type": "budget.spent"}'),
        "actor_mismatch": ("fw.budget.b1.user:eve", encode(good)),
    }
    await dead_lettered_and_counted(rt, "budgets", bad)
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM fleet.budgets")
    assert [(r["budget_id"], r["scope"], r["scope_id"], r["budget_window"], r["limit_usd"],
             r["set_by"]) for r in rows] == [
        ("b1", "team", "docs", "month", Decimal("12.5"), "user:ops")]  # fmt: skip


async def test_bad_events_on_command_subjects_are_dead_lettered_and_good_ones_applied(
    rt: Runtime,
) -> None:
    good = CommandIssued(**envelope("svc:ops"), agent="a1", command="pause", reason="why",
                         payload={"escalation": "e1"})  # fmt: skip
    await publish_many(rt.js, [good])
    bad = {
        "not_json": ("fw.cmd.a1.svc:ops", b"\x00\x01 not json"),
        "actor_forbidden": ("fw.cmd.a2.a2", msgspec.json.encode(as_dict(good) | {"actor": "a2",
                                                                                 "agent": "a2"})),
        "wrong_subject": ("fw.cmd.a3.svc:ops", encode(good)),
        "actor_mismatch": ("fw.cmd.a1.svc:x", encode(good)),
    }  # fmt: skip
    published = await dead_lettered_and_counted(rt, "commands", bad)
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM fleet.commands")
        checkpoint = await conn.fetchval(
            "SELECT checkpoint FROM fleet.projections WHERE projection = 'commands'"
        )
    found = [(r["command_id"], r["agent_id"], r["command"], r["payload"], r["issued_by"])
             for r in rows if r["issued_by"] == "svc:ops"]  # fmt: skip
    assert found == [(good.id, "a1", "pause", '{"escalation": "e1"}', "svc:ops")]
    # the agent that published a command on its own subject (v2: the subject names the
    # sender) is told; its refusal is the only other command
    told = [(r["agent_id"], r["command"]) for r in rows if r["issued_by"] != "svc:ops"]
    assert told == [("a2", "refused")]
    assert checkpoint > max(published)
