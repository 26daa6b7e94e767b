"""``fleetward kpis`` as people and scripts use it (issue 16, part 2): the KPIs of the known history
of test_kpis.py per agent, team and agent version, as a table and as JSON equal to the views; a
level, window or team that does not exist is one line and exit 2."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import anyio

from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import project_all
from tests.integration.test_cli_tasks import ok, refused
from tests.integration.test_kpis import history


async def test_kpis_per_agent_team_and_version_as_tables_and_json(
    rt: Runtime, env: dict[str, str]
) -> None:
    await publish_many(rt.js, history())
    with anyio.fail_after(60):
        await project_all(rt)

    doc = json.loads(await ok(env, "kpis", "--json"))
    assert (doc["by"], doc["window_days"], doc["team"]) == ("agent", 7, None)
    a1, a2 = doc["rows"]
    assert (a1["agent_id"], a1["team"], a1["version"], a1["days"]) == ("a1", "docs", "2", 7)
    # the hand-computed values of test_kpis.py: 22 runs, 20 succeeded, p95 2000 ms, $0.6 for
    # one completed task, one review of two rejected
    # money is a decimal string, exact (services/cli/output.py); counts and ratios are numbers
    assert (a1["runs"], a1["p95_latency_ms"], Decimal(a1["cost_usd"]), a1["tasks_done"]) == (
        22, 2000, Decimal("0.6"), 1)  # fmt: skip
    assert abs(a1["success_rate"] - 20 / 22) < 1e-12
    assert (Decimal(a1["cost_per_task_usd"]), a1["approval_rate"], a1["rework_rate"]) == (
        Decimal("0.6"), 0.5, 0.5)  # fmt: skip
    assert (a2["agent_id"], a2["runs"], a2["avg_latency_ms"], a2["cost_per_task_usd"]) == (
        "a2", 1, 50, None)  # fmt: skip
    async with rt.pool.acquire() as conn:
        cost = await conn.fetchval(
            "SELECT cost_per_run_usd FROM fleet.kpi_agents WHERE agent_id = 'a1' AND days = 7"
        )
    assert a1["cost_per_run_usd"] == str(cost)
    assert (doc["total"], doc["truncated"]) == (2, False)

    teams = json.loads(await ok(env, "kpis", "--by", "team", "--window", "30", "--json"))
    assert [(r["team"], r["days"], r["agents"], r["runs"]) for r in teams["rows"]] == [
        ("docs", 30, 1, 22), ("ops", 30, 1, 1)]  # fmt: skip
    versions = json.loads(await ok(env, "kpis", "--by", "version", "--team", "docs", "--json"))
    assert [(r["agent_id"], r["version"], r["current"], r["runs"], r["success_rate"],
             r["tools"]) for r in versions["rows"]] == [
        ("a1", "1", False, 2, 0.5, []),
        ("a1", "2", True, 20, 0.95, ["search", "shell"]),
    ]  # fmt: skip

    table = await ok(env, "kpis", "--team", "docs")
    assert "KPIs per agent, last 7 days (team docs)" in table
    row = next(line for line in table.splitlines() if re.search(r"\ba1\b", line))
    assert re.search(r"\b22\b.*90\.9%.*\b973\b.*\b2000\b.*\$0\.6000.*\$0\.0273.*\b1\b.*"
                     r"\$0\.6000.*50\.0%.*50\.0%.*50\.0%", row), row  # fmt: skip
    assert not re.search(r"\ba2\b", table), table
    shown = await ok(env, "kpis", "--by", "version", "--window", "30")
    assert re.search(r"a1 .* 2 .* yes .* m-large .* 20 .* 95\.0%", shown), shown
    assert "showing 1 of 2 (--limit N for more)" in await ok(
        env, "kpis", "--by", "team", "--limit", "1"
    )
    cut = json.loads(await ok(env, "kpis", "--by", "team", "--limit", "1", "--json"))
    assert ([r["team"] for r in cut["rows"]], cut["total"], cut["truncated"]) == (
        ["docs"], 2, True)  # fmt: skip

    await refused(rt, env, "argument --by: invalid choice: 'model'", "kpis", "--by", "model")
    await refused(rt, env, "argument --window: invalid choice: '14'", "kpis", "--window", "14")
    await refused(rt, env, "no team 'nope': no agent is in it", "kpis", "--team", "nope", "--json")
