"""One realistic, valid instance of every event type, for tests.

``sample_events()`` returns them in catalogue order (``schemas.events.EVENT_TYPES``). Every sample
is admitted on its own subject (contract v2: the subject carries the actor): its actor is allowed
to publish it (see ``SENDERS``). Optional
fields are set where they exist, so encoders and schemas see them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypedDict

from fleetward.schemas.events import (
    AgentOffline,
    AgentOnline,
    AgentPaused,
    AgentPromoted,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    AgentVersionChanged,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    AuditSealed,
    BudgetExhausted,
    BudgetReleased,
    BudgetReserved,
    BudgetRestored,
    BudgetSet,
    CommandIssued,
    Deliverable,
    EscalationAcknowledged,
    EscalationRaised,
    EscalationResolved,
    Event,
    Heartbeat,
    PolicySet,
    RoleGranted,
    RoleRevoked,
    RunFinished,
    RunStarted,
    SpendRecorded,
    TaskAssigned,
    TaskBlocked,
    TaskCancelled,
    TaskClaimed,
    TaskClaimRefused,
    TaskCreated,
    TaskDependenciesChanged,
    TaskLeaseExpired,
    TaskProgressed,
    TaskReleased,
    TaskReviewed,
    TaskReviewRefused,
    TaskRevoked,
    TaskSubmitted,
    ToolCalled,
)
from fleetward.schemas.ids import policy_id

AGENT = "agent-7"
REVIEWER = "agent-reviewer-2"
TASK = "task-42"
RUN = "run-0193"
ESCALATION = "esc-cost-agent-7"
APPROVAL = "appr-refund-1234"
BUDGET = "budget-docs-site"
USER = "user:alice@example"  # a v2 actor is one subject token: no "."
SVC = "svc:supervisor"
T0 = datetime(2025, 3, 14, 9, 26, 53, 589000, tzinfo=UTC)
SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"  # sha256("test")


class _Envelope(TypedDict):
    id: str
    actor: str
    at: datetime
    corr: str


def _id(n: int) -> str:
    """A fixed UUIDv7-shaped id, so samples are deterministic and sort in catalogue order."""
    return f"01959b1c-1e2d-7a00-8000-{n:012x}"


def _at(n: int) -> datetime:
    return T0 + timedelta(seconds=n)


def sample_events() -> list[Event]:
    """One valid instance of each of the event types, in ``EVENT_TYPES`` order."""
    n = iter(range(1, 1000))

    def env(actor: str) -> _Envelope:
        i = next(n)
        return {"id": _id(i), "actor": actor, "at": _at(i), "corr": "req-5d1c"}

    return [
        AgentRegistered(
            **env(AGENT),
            agent=AGENT,
            name="Doc writer",
            owner="alice@example.com",
            team="docs",
            purpose="Writes and updates product documentation.",
            risk_class="low",
            version="2025.03.1",
            heartbeat_interval_s=30.0,
            roles=("writer", "reviewer"),
            max_concurrent_tasks=2,
        ),
        AgentVersionChanged(
            **env(USER),
            agent=AGENT,
            version="2025.03.2",
            notes="New prompt for API references.",
        ),
        AgentPaused(**env(SVC), agent=AGENT, reason="daily budget exhausted"),
        AgentResumed(**env(USER), agent=AGENT, reason="budget raised"),
        AgentRetired(**env(USER), agent="agent-legacy-1", reason="replaced by agent-7"),
        AgentPromoted(
            **env(USER), agent=AGENT, version="2025.03.2", reason="top value per cost in docs"
        ),
        AgentOffline(
            **env("svc:watchdog"), agent=AGENT, escalation="hb-agent-7-1042", last_seen=T0
        ),
        AgentOnline(**env("svc:watchdog"), agent=AGENT, escalation="hb-agent-7-1042"),
        RunStarted(**env(AGENT), agent=AGENT, run=RUN, task=TASK, trigger="task.claimed"),
        RunFinished(
            **env(AGENT),
            agent=AGENT,
            run=RUN,
            outcome="succeeded",
            latency_ms=5230.5,
            task=TASK,
        ),
        ToolCalled(
            **env(AGENT),
            agent=AGENT,
            tool="web.search",
            duration_ms=812.0,
            ok=False,
            error="HTTP 429 Too Many Requests",
            cost_usd=0.002,
            run=RUN,
            task=TASK,
            approval=APPROVAL,
        ),
        SpendRecorded(
            **env(AGENT),
            agent=AGENT,
            model="claude-sonnet-4",
            tokens_in=12034,
            tokens_out=2048,
            cost_usd=0.0668,
            run=RUN,
            task=TASK,
        ),
        Heartbeat(
            **env(AGENT),
            agent=AGENT,
            status="busy",
            task=TASK,
            message="drafting section 3",
        ),
        TaskCreated(
            **env(USER),
            task=TASK,
            project="docs-site",
            title="Document the events API",
            description="Write docs/events.md for agents in other languages.",
            priority="high",
            depends_on=("task-41",),
            required_role="writer",
            sla_s=86400.0,
        ),
        TaskAssigned(**env(SVC), task=TASK, agent=AGENT),
        TaskClaimed(**env(AGENT), task=TASK, agent=AGENT, epoch=1, lease_s=600.0),
        TaskProgressed(
            **env(AGENT),
            task=TASK,
            agent=AGENT,
            epoch=1,
            note="outline done",
            percent=40.0,
        ),
        TaskBlocked(
            **env(AGENT),
            task=TASK,
            agent=AGENT,
            epoch=1,
            reason="waiting for task-41's schema",
        ),
        TaskReleased(**env(AGENT), task=TASK, agent=AGENT, epoch=1, reason="handing over"),
        TaskSubmitted(
            **env(AGENT),
            task=TASK,
            agent=AGENT,
            epoch=2,
            deliverable=Deliverable(
                kind="markdown",
                sha256=SHA256,
                content="# Events\n\nEvery event is JSON…",
                uri="https://git.example.com/docs/pull/12",
            ),
        ),
        TaskReviewed(
            **env(REVIEWER),
            task=TASK,
            agent=AGENT,
            verdict="reject",
            feedback="Add the NATS CLI example.",
        ),
        TaskCancelled(**env(USER), task="task-43", reason="duplicate of task-42"),
        TaskLeaseExpired(**env(SVC), task=TASK, agent=AGENT, epoch=2),
        TaskClaimRefused(
            **env(SVC),
            task=TASK,
            agent=AGENT,
            epoch=3,
            claim="0190b5a0-0000-7000-8000-00000000c1a1",
            reason="agent agent-7 is paused",
        ),
        TaskReviewRefused(
            **env(SVC),
            task=TASK,
            agent=AGENT,
            reviewer="agent-8",
            review="0190b5a0-0000-7000-8000-00000000c1a2",
            reason="agent-8 lacks the role reviewer",
        ),
        TaskRevoked(
            **env(USER), task=TASK, agent=AGENT, epoch=3, reason="rebalancing", assign_to="agent-9"
        ),
        TaskDependenciesChanged(
            **env(USER), task=TASK, depends_on=("task-0001",), reason="dropped a cancelled one"
        ),
        EscalationRaised(
            **env(SVC),
            escalation=ESCALATION,
            tier="warning",
            reason="budget_warn",
            agent=AGENT,
            task=TASK,
            message="agent-7 spent 85% of its daily budget",
            evidence={
                "spent_usd": 8.5,
                "limit_usd": 10,
                "window": "day",
                "hard": False,
                "note": None,
            },
        ),
        EscalationAcknowledged(**env(USER), escalation=ESCALATION, note="looking into it"),
        EscalationResolved(**env(SVC), escalation=ESCALATION, resolution="budget raised to $20"),
        BudgetSet(
            **env(USER),
            budget=BUDGET,
            scope="project",
            scope_id="docs-site",
            window="month",
            limit_usd=250.0,
            warn_at=0.9,
            limit_tokens=50_000_000,
        ),
        BudgetExhausted(
            **env("svc:guard"),
            budget=BUDGET,
            window="month",
            window_start=T0.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
            spent_usd=250.25,
            limit_usd=250.0,
            spent_tokens=1_200_000,
            limit_tokens=50_000_000,
        ),
        BudgetRestored(
            **env("svc:guard"),
            budget=BUDGET,
            window="month",
            window_start=T0.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
            reason="limit_raised",
        ),
        BudgetReserved(
            **env("svc:guard"),
            budget=BUDGET,
            reservation="rsv-1",
            agent=AGENT,
            usd=2.5,
            expires_at=T0.replace(minute=5),
        ),
        BudgetReleased(
            **env("svc:guard"),
            budget=BUDGET,
            reservation="rsv-1",
            agent=AGENT,
            usd=2.5,
            reason="settled",
        ),
        CommandIssued(
            **env(SVC),
            agent=AGENT,
            command="review_feedback",
            reason="task-42 was rejected",
            task=TASK,
            payload={"verdict": "reject", "feedback": "Add the NATS CLI example.", "epoch": 2},
        ),
        RoleGranted(**env(USER), person="bob", role="reviewer", reason="joins the docs team"),
        RoleRevoked(**env(USER), person="bob", role="reviewer", reason="left the docs team"),
        ApprovalRequested(
            **env(AGENT),
            approval=APPROVAL,
            agent=AGENT,
            kind="tool_call",
            name="payments.send",
            summary="Refund order 1234",
            arguments={"order": "1234", "usd": 12.5},
            risk="high",
            escalate_after_s=600.0,
            expire_after_s=3600.0,
            on_expiry="deny",
            task=TASK,
            run=RUN,
        ),
        ApprovalGranted(**env(USER), approval=APPROVAL, agent=AGENT, reason="refund agreed"),
        ApprovalDenied(
            **env(SVC), approval=APPROVAL, agent=AGENT, reason="no decision in time", expired=True
        ),
        PolicySet(
            **env(USER),
            policy=policy_id("team", "docs"),
            scope="team",
            scope_id="docs",
            allow=("web.search",),
            deny=("shell.exec",),
            approve=("payments.send",),
            default="approve",
            max_cost_usd=5.0,
            reason="payments need a person",
        ),
        AuditSealed(
            **env("svc:audit"),
            stream="FW_EVENTS",
            seq=1_000_000,
            head="9f2b" + "0" * 60,
            period_start=datetime(2025, 3, 14, tzinfo=UTC),
            period_s=86_400.0,
        ),
    ]
