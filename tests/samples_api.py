"""Valid requests and replies of every endpoint of the services' API (``schemas/api.py``), for
tests: ``sample_api()`` gives (schema name, message) pairs, the name as in
``schemas/jsonschema/<name>.json``. Every endpoint has a request, a reply that succeeded and a
reply that failed."""

from __future__ import annotations

from msgspec import Struct

from fleetward.schemas.api import (
    AGENTS_GET,
    TASKS_CLAIMABLE,
    AgentProfile,
    AgentReply,
    AgentRequest,
    ClaimableReply,
    ClaimableRequest,
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
    ]
