"""What a hostile agent publishes reaches the operator's terminal shown, never obeyed: an agent
registers with escape sequences in its name, owner and version, heartbeats an OSC title and a
forged line, blocks a task with a reason that overwrites its line, calls a denied tool whose
name holds C1 controls (an escalation quotes it) and asks an approval with a bidi override and a
hyperlink; ``fleetward agents``, ``agent ID``, ``tasks show``, ``escalations`` and
``approvals`` print every one of them as escapes (services/cli/output.py ``visible``), the
tables still aligned, and ``--json`` keeps them exactly."""

from __future__ import annotations

import json
import re

from rich.cells import cell_len

from fleetward.schemas.events import ApprovalRequested, ToolCalled
from fleetward.services.client import AgentClient, FleetClient
from fleetward.services.runtime.connect import Runtime
from tests.helpers import creds, envelope, project_all, task_api
from tests.integration.test_cli import fleetward_ok

AGENT = "eve-7"
NAME = "Eve\x1b[2J\x1b[H"  # clear the screen, cursor home
OWNER = "o\u202eevil"  # a right-to-left override
VERSION = "1\x1b[8D\x1b[Kv2"  # back 8 columns, erase the rest of the line
MESSAGE = "idle\x1b]0;owned\x07\nstatus     active"  # OSC 0 (the title), then a forged line
REASON = "waiting\r\x1b[1Adone"  # back to the line's start, up a line
TOOL = "sh\x9b2J\x9d0;t\x9c"  # CSI, OSC, ST in one byte each
APPROVAL_NAME = "pay\u202ecod.exe"
SUMMARY = "refund\x1b]8;;https://e.vil\x1b\\here\x1b]8;;\x1b\\"  # OSC 8: a hyperlink
# what must never reach the terminal raw (a newline ends a line the CLI composed: it may)
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _shown(text: str) -> str:
    """``text`` as the CLI must print it (spelled out here, not computed by the code under
    test)."""
    for char, escape in (("\x1b", r"\x1b"), ("\r", r"\r"), ("\n", r"\n"), ("\x07", r"\x07"),
                         ("\x08", r"\x08"), ("\x9b", r"\x9b"), ("\x9d", r"\x9d"),
                         ("\x9c", r"\x9c"), ("\u202e", r"\u202e")):  # fmt: skip
        text = text.replace(char, escape)
    return text


def _safe(out: str) -> None:
    assert not RAW.search(out), repr(out)


def _aligned(table: str) -> None:
    """Every line of the table (under its title, above any line after it) is as wide."""
    lines = [line for line in table.splitlines() if line[:1] in "┏┃┡│└"]
    assert len({cell_len(line) for line in lines}) == 1, table


async def test_what_agents_publish_is_shown_escaped_by_the_cli(
    rt: Runtime, env: dict[str, str]
) -> None:
    async with task_api(rt):
        eve = await AgentClient.connect(rt.nats_url, creds(rt, AGENT))
        ops = await FleetClient.connect(rt.nats_url, creds(rt, "user:ops"))
        try:
            await eve.register(name=NAME, owner=OWNER, team="ops", version=VERSION)
            await ops.create_task("t-eve", project="p", title="tidy up")
            await ops.set_policy("agent", AGENT, default="deny")
            await project_all(rt)
            await eve.block(await eve.claim("t-eve"), REASON)
            await eve.heartbeat(MESSAGE)
            await project_all(rt)
            await ops.pause_agent(AGENT, "too curious")
            await eve.send(ToolCalled(**envelope(AGENT), agent=AGENT, tool=TOOL,
                                      duration_ms=1.0, ok=True))  # fmt: skip
            await eve.send(ApprovalRequested(**envelope(AGENT), approval="ap-eve", agent=AGENT,
                                             kind="tool_call", name=APPROVAL_NAME,
                                             summary=SUMMARY))  # fmt: skip
            await project_all(rt)
        finally:
            await eve.close()
            await ops.close()

    agents = await fleetward_ok(env, "agents")
    _safe(agents)
    _aligned(agents)
    (row,) = [line for line in agents.splitlines() if AGENT in line]
    assert "paused" in row and "active" not in row, agents

    detail = await fleetward_ok(env, "agent", AGENT)
    _safe(detail)
    assert f"{AGENT} {_shown(NAME)} (ops, owner {_shown(OWNER)}, risk medium, version " \
           f"{_shown(VERSION)})" in detail, detail  # fmt: skip
    assert re.findall(r"^status .*$", detail, re.M) == ["status     paused (too curious)"], detail
    assert f" - {_shown(MESSAGE)} (its last heartbeat)" in detail, detail

    story = await fleetward_ok(env, "tasks", "show", "t-eve")
    _safe(story)
    assert f"reason={_shown(REASON)}" in story, story

    escalations = await fleetward_ok(env, "escalations")
    _safe(escalations)
    _aligned(escalations)
    assert f"tool {_shown(TOOL)} is denied" in escalations, escalations

    approvals = await fleetward_ok(env, "approvals")
    _safe(approvals)
    _aligned(approvals)
    assert f"tool_call {_shown(APPROVAL_NAME)}" in approvals, approvals
    assert _shown(SUMMARY) in approvals, approvals

    # for scripts, JSON: exactly what the agent wrote (JSON escapes it)
    one = await fleetward_ok(env, "agent", AGENT, "--json")
    assert one.isascii()
    assert {k: json.loads(one)[k] for k in ("name", "owner", "version", "message")} == {
        "name": NAME, "owner": OWNER, "version": VERSION, "message": MESSAGE}  # fmt: skip
    shown = json.loads(await fleetward_ok(env, "tasks", "show", "t-eve", "--json"))
    assert REASON in [h["event"].get("reason") for h in shown["history"]]
    (asked,) = json.loads(await fleetward_ok(env, "approvals", "--json"))["rows"]
    assert (asked["name"], asked["summary"]) == (APPROVAL_NAME, SUMMARY)
    (raised,) = json.loads(await fleetward_ok(env, "escalations", "--json"))["rows"]
    assert f"tool {TOOL} is denied" in raised["message"]
