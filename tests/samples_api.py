"""Valid requests and replies of every endpoint of the services' API (``schemas/api.py``), for
tests: ``sample_api()`` gives (schema name, message) pairs, the name as in
``schemas/jsonschema/<name>.json``. Every endpoint has a request, a reply that succeeded and a
reply that failed."""

from __future__ import annotations

from datetime import UTC, datetime

from msgspec import Struct

from fleetward.schemas.api import (
    AGENTS_GET,
    BUDGETS_RELEASE,
    BUDGETS_RESERVE,
    TASKS_CLAIMABLE,
    AgentProfile,
    AgentReply,
    AgentRequest,
    ClaimableReply,
    ClaimableRequest,
    ReleaseReply,
    ReleaseRequest,
    ReserveReply,
    ReserveRequest,
    bad_request,
    unavailable,
)

PROFILE = AgentProfile(
    agent_id="agent-7",
    name="Docs writer",
    owner="ana@example.com",
    team="docs",
    status="paused",
    status_reason="budget review",
    roles=("writer", "reviewer"),
    max_concurrent_tasks=2,
    heartbeat_interval_s=30.0,
    version="1.4.0",
    risk_class="medium",
)


def sample_api() -> list[tuple[str, Struct]]:
    """(schema name, message) for every request and reply shape, success and failure."""
    return [
        (
            "api/tasks.claimable.request",
            ClaimableRequest(agent="agent-7", roles=("writer",), limit=5),
        ),
        ("api/tasks.claimable.request", ClaimableRequest(agent="agent-7")),
        ("api/tasks.claimable.reply", ClaimableReply(tasks=("task-42", "task-41"))),
        ("api/tasks.claimable.reply", TASKS_CLAIMABLE.failed(unavailable(TASKS_CLAIMABLE))),
        ("api/agents.get.request", AgentRequest(agent="agent-7")),
        ("api/agents.get.reply", AgentReply(agent=PROFILE)),
        ("api/agents.get.reply", AgentReply(agent=None)),
        ("api/agents.get.reply", AGENTS_GET.failed(bad_request("Expected `object`, got `int`"))),
        ("api/budgets.reserve.request", ReserveRequest(agent="agent-7", usd=2.5, ttl_s=120.0)),
        ("api/budgets.reserve.request", ReserveRequest(agent="agent-7", usd=0.01)),
        ("api/budgets.reserve.request", ReserveRequest(usd=3.0, task="T-1", key="k-1")),
        (
            "api/budgets.reserve.reply",
            ReserveReply(
                reservation="rsv-1",
                budgets=("docs-day",),
                expires_at=datetime(2026, 11, 30, 17, 30, tzinfo=UTC),
            ),
        ),
        ("api/budgets.reserve.reply", BUDGETS_RESERVE.failed("budget docs-day is exhausted")),
        ("api/budgets.release.request", ReleaseRequest(reservation="rsv-1")),
        ("api/budgets.release.request", ReleaseRequest(agent="agent-7", reservation="rsv-1")),
        ("api/budgets.release.reply", ReleaseReply(budgets=("docs-day",))),
        (
            "api/budgets.release.reply",
            BUDGETS_RELEASE.failed("agent agent-7 holds no open reservation rsv-1"),
        ),
    ]
