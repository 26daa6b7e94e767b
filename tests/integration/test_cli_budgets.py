"""``fleetward budgets`` as people type it: set, list, show; a setting the fleet would refuse (no
such scope or window, out of bounds, no role budget-admin, nothing to change) exits 2 with one
line and publishes nothing. And the cost of tasks in ``fleetward tasks`` and ``tasks show``."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import anyio
import pytest

from fleetward.schemas.events import (
    AgentRegistered,
    BudgetSet,
    SpendRecorded,
    TaskCreated,
    ToolCalled,
)
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.services.client import FleetClient
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import envelope, person, project_all
from tests.integration.test_cli_tasks import CLI, ROOT, last, ok, refused

DOCS_DAY = ("docs-day", "--scope", "team", "--scope-id", "docs", "--window", "day")


@pytest.mark.slow
async def test_a_budget_admin_sets_lists_and_shows_budgets(
    rt: Runtime, env: dict[str, str]
) -> None:
    out = await ok(env, "budgets", "set", *DOCS_DAY, "--limit-usd", "2.5")
    assert out.strip() == "set budget docs-day: team docs, $2.5 per day (warns at 80%)"
    event = await last(rt, "fw.budget.docs-day.>")
    assert isinstance(event, BudgetSet) and event.actor == "user:alice"
    assert (event.scope, event.limit_usd, event.limit_tokens, event.warn_at) == (
        "team", 2.5, None, 0.8)  # fmt: skip

    await refused(rt, env, "budget docs-day is already set to that (by user:alice)",
                  "budgets", "set", *DOCS_DAY, "--limit-usd", "2.5")  # fmt: skip
    await refused(rt, env, "no budget scope 'planet': it is one of agent, team, project, org",
                  "budgets", "set", "b", "--scope", "planet", "--scope-id", "x", "--window",
                  "day", "--limit-usd", "1")  # fmt: skip
    await refused(rt, env, "no budget window 'week': it is one of day, month, lifetime",
                  "budgets", "set", "b", "--scope", "team", "--scope-id", "x", "--window",
                  "week", "--limit-usd", "1")  # fmt: skip
    team_x = ("budgets", "set", "b", "--scope", "team", "--scope-id", "x", "--window", "day")
    await refused(rt, env, "'-1' is not an amount of USD", *team_x, "--limit-usd", "-1")
    await refused(rt, env, "'1.5' is not a share above 0 and at most 1",
                  *team_x, "--limit-usd", "1", "--warn-at", "1.5")  # fmt: skip
    await refused(rt, env, "'-5' is not a whole number from 0",
                  *team_x, "--limit-usd", "1", "--limit-tokens", "-5")  # fmt: skip
    out = await ok(env, "budgets", "set", "alpha", "--scope", "project", "--scope-id", "alpha",
                   "--window", "lifetime", "--limit-usd", "0.15", "--limit-tokens", "1000",
                   "--warn-at", "0.5")  # fmt: skip
    assert (
        "set budget alpha: project alpha, $0.15 and 1000 tokens per lifetime (warns at 50%)" in out
    )

    await publish_many(rt.js, [
        AgentRegistered(**envelope("a1"), agent="a1", name="a1", owner="o", team="docs"),
        TaskCreated(**envelope("user:ops"), task="t1", project="alpha", title="one"),
        SpendRecorded(**envelope("a1"), agent="a1", model="m", cost_usd=0.1, tokens_in=100,
                      tokens_out=50, task="t1"),
        ToolCalled(**envelope("a1"), agent="a1", tool="search", duration_ms=1.0, ok=False,
                   cost_usd=0.05, task="t1"),
    ])  # fmt: skip
    with anyio.fail_after(60):
        await project_all(rt)

    listed = await ok(env, "budgets", "list")
    assert await ok(env, "budgets") == listed
    lines = [line for line in listed.splitlines() if "docs-day" in line or "alpha" in line]
    cells = [cell.strip() for cell in re.split(r"[│|]", lines[0])]
    assert cells[1:4] == ["alpha", "project", "alpha"], listed  # exhausted first
    assert "exhausted" in lines[0] and "150 / 1000" in lines[0]
    assert "$2.5000" in lines[1] and "$0.1500" in lines[1] and "ok" in lines[1]

    doc = json.loads(await ok(env, "budgets", "--json"))
    assert (doc["total"], doc["truncated"]) == (2, False)
    alpha = doc["rows"][0]
    assert (alpha["budget_id"], alpha["state"], alpha["spent_tokens"]) == (
        "alpha",
        "exhausted",
        150,
    )
    # money: decimal strings, exact
    assert (Decimal(alpha["limit_usd"]), Decimal(alpha["spent_usd"])) == (Decimal("0.15"),) * 2
    one = json.loads(await ok(env, "budgets", "show", "alpha", "--json"))
    assert {k: one[k] for k in alpha} == alpha
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", one["set_at"]), one

    shown = await ok(env, "budgets", "show", "alpha")
    for line in [
        "alpha: project alpha, per lifetime",
        "state      exhausted (warns at 50% of a limit)",
        "spent      $0.1500 (ever, UTC days)",
        "reserved   $0.0000",
        "remaining  $0.0000",
        "tokens     150 / 1000, 850 remaining",
    ]:
        assert line in shown.splitlines(), (line, shown)
    assert re.search(r"^set by     user:alice at \d{4}-\d\d-\d\d ", shown, re.M), shown
    day = await ok(env, "budgets", "show", "docs-day")
    assert "spent      $0.1500 (since " in day and "no limit" in day

    code, out, err = await run_as(env, "alice", "budgets", "show", "nope")
    assert (code, out) == (2, "") and err == (
        "fleetward: error: no budget 'nope' (set it: fleetward budgets set)\n"
    )

    board = await ok(env, "tasks")
    assert re.search(r"t1 .* \$0\.1500 ", board), board
    story = await ok(env, "tasks", "show", "t1")
    assert ("cost: $0.1500 (model $0.1000, tools $0.0500); tokens 100 in, 50 out; "
            "0 runs, 1 tool calls (1 failed)") in story  # fmt: skip


async def run_as(env: dict[str, str], name: str, *args: str) -> tuple[int, str, str]:
    """``fleetward ARGS`` as ``user:<name>``: exit code, stdout, stderr."""
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [*CLI, *args], cwd=ROOT, check=False,
            env=env | {"FLEETWARD_CREDS": str(person(env, name))},
        )  # fmt: skip
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_setting_a_budget_needs_the_role_budget_admin(
    rt: Runtime, env: dict[str, str], ops: FleetClient
) -> None:
    """carol is no admin: refused at once, in one line, with nothing published, until she holds
    budget-admin (operator is not enough)."""
    args = ("budgets", "set", *DOCS_DAY, "--limit-usd", "1")
    for grant in (None, "operator"):
        if grant:
            await ops.grant_role("carol", grant)
        before = (await rt.js.stream_info(EVENTS_STREAM)).state.last_seq
        code, out, err = await run_as(env, "carol", *args)
        assert (code, out) == (2, "") and err == (
            "fleetward: error: 'user:carol' does not hold the role 'budget-admin' for budget.set\n"
        ), (code, out, err)
        assert (await rt.js.stream_info(EVENTS_STREAM)).state.last_seq == before
    await ops.grant_role("carol", "budget-admin")
    code, out, err = await run_as(env, "carol", *args)
    assert code == 0 and "set budget docs-day" in out, (code, out, err)
    event = await last(rt, "fw.budget.docs-day.>")
    assert isinstance(event, BudgetSet) and event.actor == "user:carol"
