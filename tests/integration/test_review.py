"""The lifecycle review (issue 16, part 4) as an operator uses it: ``fleetward review`` lists an
idle agent as a candidate to retire with its evidence, and the command it prints retires it (its
leases end, it claims nothing more); ``agents rollback`` and ``agents promote`` are events with
the person who took them, seen in ``fleet.agents`` and ``fleet.agent_versions``, and refused at
once (exit 2, one line, nothing published) for a person without the role ``operator``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetward.schemas.events import AgentPromoted, AgentRetired, AgentVersionChanged, RunFinished
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.services.client import ClaimLost, FleetClient, IntentRefused
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import agent, envelope, project_all, task_api
from tests.integration.test_attack_intents import board_row, status_of
from tests.integration.test_cli_budgets import run_as
from tests.integration.test_cli_tasks import last, ok, refused


async def _age(rt: Runtime, agent_id: str, days: int) -> None:
    """The stream's time cannot be set in a test: the registry's row of ``agent_id`` says it
    registered ``days`` + 10 days ago and last ran ``days`` days ago (its rollup row)."""
    async with rt.pool.acquire() as conn:
        await conn.execute(
            "UPDATE fleetward.agents SET registered_at = now() - make_interval(days => $2 + 10)"
            " WHERE agent_id = $1",
            agent_id, days,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO fleetward.kpi_daily VALUES ($1,"
            " (now() AT TIME ZONE 'UTC')::date - $2::int, 't', '1', 1, 1, 1, 0, 100, 0.01, 0, 0,"
            " 0, 0)", agent_id, days,
        )  # fmt: skip


@pytest.mark.slow
async def test_the_review_lists_an_idle_agent_and_its_retire_command_ends_its_leases(
    rt: Runtime, env: dict[str, str], ops: FleetClient, tmp_path: Path
) -> None:
    idle, busy = await agent(rt, "rv-idle", version="1"), await agent(rt, "rv-busy", version="1")
    try:
        async with task_api(rt):
            await ops.create_task("rv-held", project="p", title="held by the idle agent")
            await ops.create_task("rv-next", project="p", title="for whoever claims it")
            await project_all(rt)
            await idle.claim("rv-held")
            await publish_many(rt.js, [RunFinished(**envelope("rv-busy"), agent="rv-busy",
                                                   run="r1", outcome="succeeded",
                                                   latency_ms=20.0)])  # fmt: skip
            await project_all(rt)
            await _age(rt, "rv-idle", 20)

            out = tmp_path / "review.json"
            doc = json.loads(await ok(env, "review", "--idle-days", "14", "--format", "json",
                                      "--out", str(out)))  # fmt: skip
            assert json.loads(out.read_text()) == doc and doc["idle_days"] == 14
            retire = [c for c in doc["candidates"] if c["verdict"] == "retire"]
            assert [(c["agent_id"], c["team"]) for c in retire] == [("rv-idle", "t")], doc
            (cand,) = retire
            assert cand["evidence"]["idle_days"] == 20 and cand["evidence"]["runs"] == 1
            assert cand["command"] == "fleetward agents retire rv-idle"
            assert "rv-busy" not in {c["agent_id"] for c in retire}
            text = await ok(env, "review", "--team", "t", "--format", "markdown")
            assert "## Team t" in text and "### Retire" in text, text
            assert "- **rv-idle** (version 1): idle 20 days" in text, text
            await refused(rt, env, "no team 'nope'", "review", "--team", "nope")
            await refused(rt, env, "argument --idle-days: '0' is not a whole number from 1",
                          "review", "--idle-days", "0")  # fmt: skip

            assert "retired rv-idle" in await ok(env, *cand["command"].split()[1:])
            assert isinstance(await last(rt, "fw.agent.rv-idle.>"), AgentRetired)
            await project_all(rt)
            assert status_of(await board_row(rt, "rv-held"))[:2] == ("inbox", None)
            with pytest.raises((ClaimLost, IntentRefused)):
                await idle.claim("rv-next")
            await project_all(rt)
            assert status_of(await board_row(rt, "rv-next"))[:2] == ("inbox", None)
            again = json.loads(await ok(env, "review", "--format", "json"))
            assert "rv-idle" not in {c["agent_id"] for c in again["candidates"]}
    finally:
        await idle.close()
        await busy.close()


async def test_rollback_and_promote_are_events_with_the_person_who_took_them(
    rt: Runtime, env: dict[str, str], ops: FleetClient
) -> None:
    worker = await agent(rt, "rv-w", version="1")
    try:
        async with task_api(rt):
            change = AgentVersionChanged(
                **envelope("rv-w"), agent="rv-w", version="2", prompt="p2", model="m2"
            )
            await publish_many(rt.js, [change])
            await project_all(rt)
            # carol holds no role: refused at once, one line, nothing published
            rollback = ("agents", "rollback", "rv-w", "--to", "1")
            for args, tag in ((rollback, "agent.version_changed"),
                              (("agents", "promote", "rv-w"), "agent.promoted")):  # fmt: skip
                before = (await rt.js.stream_info(EVENTS_STREAM)).state.last_seq
                code, out, err = await run_as(env, "carol", *args)
                assert (code, out, err) == (2, "", "fleetward: error: 'user:carol' does not hold "
                                            f"the role 'operator' for {tag}\n")  # fmt: skip
                assert (await rt.js.stream_info(EVENTS_STREAM)).state.last_seq == before
            await refused(rt, env, "agent rv-w never ran version 9",
                          "agents", "rollback", "rv-w", "--to", "9")  # fmt: skip
            await refused(rt, env, "agent rv-w already runs version 2",
                          "agents", "rollback", "rv-w", "--to", "2")  # fmt: skip
            await refused(rt, env, "no agent ghost", "agents", "promote", "ghost")

            out = await ok(env, "agents", "rollback", "rv-w", "--to", "1", "--reason", "drift")
            assert "rolled back rv-w to version 1" in out
            event = await last(rt, "fw.agent.rv-w.>")
            assert isinstance(event, AgentVersionChanged) and event.rollback
            assert (event.actor, event.version, event.notes) == ("user:alice", "1", "drift")
            await project_all(rt)  # the registry has it (the client reads the agent there)
            assert "promoted rv-w" in await ok(env, "agents", "promote", "rv-w", "--reason", "pays")
            event = await last(rt, "fw.agent.rv-w.>")
            assert isinstance(event, AgentPromoted)
            assert (event.actor, event.version, event.withdrawn) == ("user:alice", "1", False)
            await project_all(rt)
            async with rt.pool.acquire() as conn:
                row = await conn.fetchrow("SELECT * FROM fleet.agents WHERE agent_id = 'rv-w'")
                versions = await conn.fetch(
                    "SELECT version, rolled_back_by FROM fleet.agent_versions"
                    " WHERE agent_id = 'rv-w' ORDER BY version"
                )
            assert (row["version"], row["promoted_by"], row["promoted_version"]) == (
                "1", "user:alice", "1")  # fmt: skip
            assert row["promotion_reason"] == "pays" and row["promoted_at"] is not None
            assert "active, promoted" in await ok(env, "agents")  # every team sees the tag
            assert [tuple(v) for v in versions] == [("1", "user:alice"), ("2", None)]
            await refused(rt, env, "agent rv-w is already promoted at version 1",
                          "agents", "promote", "rv-w")  # fmt: skip
            await refused(rt, env, "agent rv-w already runs version 1",
                          "agents", "rollback", "rv-w", "--to", "1")  # fmt: skip
            assert "withdrew the promotion of rv-w" in await ok(
                env, "agents", "promote", "rv-w", "--withdraw"
            )
            await project_all(rt)
            async with rt.pool.acquire() as conn:
                tag = await conn.fetchval(
                    "SELECT promoted_by FROM fleet.agents WHERE agent_id = 'rv-w'"
                )
            assert tag is None
            await refused(rt, env, "agent rv-w is not promoted",
                          "agents", "promote", "rv-w", "--withdraw")  # fmt: skip
    finally:
        await worker.close()
