"""The lifecycle review's rules (services/cli/lifecycle_review.py) on hand-made rows: idle, low
success at high cost, drift and rising rework, top value per cost; one verdict per agent."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from fleetward.services.cli.lifecycle_review import judge
from fleetward.services.cli.review import render

TODAY = date(2026, 6, 30)


def row(agent: str, team: str = "docs", **kpis: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "agent_id": agent, "team": team, "version": "2", "status": "active",
        "registered_at": datetime(2026, 6, 1, tzinfo=UTC), "promoted_version": None,
        "runs": 10, "success_rate": 0.9, "cost_usd": Decimal("1.0"),
        "cost_per_run_usd": Decimal("0.1"), "tasks_done": 2, "cost_per_task_usd": Decimal("0.5"),
        "reviewed": 2, "rework_rate": 0.0, "tool_error_rate": 0.0,
        "last_active_day": TODAY, "previous_version": "1", "drifts": [],
    }  # fmt: skip
    return base | kpis


def test_each_verdict_with_its_evidence_and_command() -> None:
    agents = [
        row("idle", last_active_day=date(2026, 6, 10), tasks_done=0),
        row("never", last_active_day=None, runs=0, cost_per_run_usd=None, tasks_done=0),
        row("costly", runs=8, success_rate=0.25, cost_per_run_usd=Decimal("0.9")),
        row("drifting", drifts=["success_rate 0.9 -> 0.5 (version 1 -> 2)"]),
        row("reworks"),
        row("cheap", tasks_done=4, cost_usd=Decimal("0.5")),
        row("dear", tasks_done=4, cost_usd=Decimal("4")),
        row("free", team="ops", tasks_done=1, cost_usd=Decimal(0)),
    ]
    rework = [{"agent_id": "reworks", "reviewed_now": 4, "rejected_now": 2,
               "reviewed_before": 4, "rejected_before": 0}]  # fmt: skip
    found = judge(agents, rework, TODAY, idle_days=14)
    assert [(c.team, c.verdict, c.agent_id) for c in found] == [
        ("docs", "retire", "costly"), ("docs", "retire", "idle"), ("docs", "retire", "never"),
        ("docs", "refresh", "drifting"), ("docs", "refresh", "reworks"),
        ("docs", "promote", "cheap"), ("ops", "promote", "free"),
    ]  # fmt: skip
    by = {c.agent_id: c for c in found}
    assert by["idle"].evidence["idle_days"] == 20 and by["idle"].why.startswith("idle 20 days")
    assert by["never"].why == "idle 29 days (never ran, registered since 2026-06-01)"
    assert by["costly"].evidence["team_median_cost_per_run_usd"] == 0.1
    assert by["drifting"].command == "fleetward agents rollback drifting --to 1"
    rising = by["reworks"].evidence
    assert (rising["rework_rate_7d"], rising["rework_rate_prev_7d"]) == (0.5, 0.0)
    assert by["cheap"].evidence["tasks_per_usd"] == 8.0
    assert by["free"].evidence["tasks_per_usd"] is None and "at no cost" in by["free"].why
    assert by["cheap"].command == "fleetward agents promote cheap"
    md = render("markdown", found, TODAY, None, 14)
    assert md.startswith("# Lifecycle review, 2026-06-30 (all teams; idle: 14 days)\n")
    assert "## Team ops\n\n### Promote\n- **free** (version 2)" in md


def test_a_promoted_version_is_not_promoted_again_and_the_idle_threshold_counts() -> None:
    agents = [row("tagged", promoted_version="2"), row("quiet", last_active_day=date(2026, 6, 20))]
    assert [c.agent_id for c in judge(agents, [], TODAY, idle_days=14)] == ["quiet"]
    found = judge(agents, [], TODAY, idle_days=10)
    assert [(c.verdict, c.agent_id) for c in found] == [("retire", "quiet")]
    assert render("text", [], TODAY, "docs", 14).endswith("every agent earns its keep.\n")
