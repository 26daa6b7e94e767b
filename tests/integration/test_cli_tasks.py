"""``fleetward tasks``: create, assign, review, cancel, and the board, as an operator types them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fleetward.services.client import AgentClient
from fleetward.services.runtime.connect import Runtime
from tests.helpers import project_all

ROOT = Path(__file__).resolve().parents[2]


def fleetward(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetward.services.cli", "tasks", *args],
        cwd=ROOT, env=env | {"FLEETWARD_USER": "alice"}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


async def test_an_operator_runs_a_task_from_creation_to_review(
    rt: Runtime, env: dict[str, str]
) -> None:
    made = fleetward(env, "create", "cli-a", "--project", "docs", "--title", "A", "--priority",
                     "high")  # fmt: skip
    assert made.returncode == 0 and "created cli-a (high) in docs" in made.stdout, made.stderr
    bad = fleetward(env, "create", "cli-b", "--project", "docs", "--title", "B",
                    "--depends-on", "cli-nope")  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().count("\n") == 0 and "unknown task(s) cli-nope" in bad.stderr
    assert fleetward(env, "create", "cli-c", "--project", "docs", "--title", "C").returncode == 0
    assigned = fleetward(env, "assign", "cli-a", "writer-9")
    assert assigned.returncode == 0 and "assigned cli-a to writer-9" in assigned.stdout

    writer = await AgentClient.connect(rt.nats_url, "writer-9")
    try:
        await writer.register(name="writer", owner="o", team="docs")
        claim = await writer.claim("cli-a")
        await writer.submit(claim, content="# A")
        early = fleetward(env, "review", "cli-c", "--approve")
        assert early.returncode == 2 and "not waiting for review" in early.stderr
        rejected = fleetward(env, "review", "cli-a", "--reject", "--feedback", "cite sources")
        assert rejected.returncode == 0, rejected.stderr
        assert "rejected cli-a (deliverable of writer-9)" in rejected.stdout
        feedback = await writer.next_command(wait=5)
        assert feedback is not None and (feedback.command, feedback.reason) == (
            "review_feedback",
            "cite sources",
        )
        assert feedback.actor == "user:alice"
    finally:
        await writer.close()
    cancelled = fleetward(env, "cancel", "cli-c", "--reason", "duplicate")
    assert cancelled.returncode == 0 and "cancelled cli-c" in cancelled.stdout

    await project_all(rt)
    board = fleetward(env, "--board")
    assert board.returncode == 0, board.stderr
    assert "in_progress (1)" in board.stdout and "cancelled (1)" in board.stdout
    assert "cli-a (writer-9)" in board.stdout
    listed = fleetward(env, "--status", "cancelled")
    assert "cli-c" in listed.stdout and "cli-a" not in listed.stdout
