"""The projections' folds, without a database: events in, rows out.

Each test feeds events in stream order (increasing ``Meta.seq`` and ``Meta.time``) into an
in-memory ``Rows`` and checks the rows. The last part folds a long simulated fleet once and in
batches, loading between batches only the rows ``touches`` names, as the projector does, and
checks that both give the same rows.
"""

from __future__ import annotations

import copy
import functools
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest

from fleetward.projections import gates
from fleetward.projections.agents import AGENT_VERSIONS, AGENTS, AgentRegistry
from fleetward.projections.base import Key, Meta, Projection, Row, Rows, Table
from fleetward.projections.idempotence import newer_heartbeat
from fleetward.projections.lifecycle import FORBIDDEN
from fleetward.projections.spend import SPEND_AGENTS, SPEND_DAILY, UNASSIGNED, Spend
from fleetward.projections.tasks import (
    BOARD,
    DELIVERABLES,
    REJECTIONS,
    TASK_AGENTS,
    TASKS,
    TaskBoard,
    holder,
    step,
)
from fleetward.projections.utilization import HOURLY, MAX_GAP, UTILIZATION, Utilization
from fleetward.schemas import Rejected, new_id
from fleetward.schemas.events import (
    AgentOffline,
    AgentOnline,
    AgentPaused,
    AgentPromoted,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    AgentVersionChanged,
    CommandIssued,
    Deliverable,
    Event,
    Heartbeat,
    HeartbeatStatus,
    RunFinished,
    RunOutcome,
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
    TaskSubmitted,
    ToolCalled,
    Verdict,
    type_name,
)
from fleetward.schemas.subjects import subject_of
from fleetward.services.simulate import Fleet

T0 = datetime(2025, 3, 14, 9, 0, 0, tzinfo=UTC)
AGENT = "agent-7"
OTHER = "agent-8"
TASK = "task-42"
USER = "user:alice"
SVC = "svc:supervisor"
REVIEWER = "user:reviewer"
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


# ---- folding -------------------------------------------------------------------------------


class Fold:
    """One projection folding events into one ``Rows``, with its own stream clock. What the
    fold emits on the subjects it reads (the board's verdicts) is stored right after its cause
    and folded, as the projector's outbox does; everything emitted is kept in ``emitted``."""

    def __init__(self, projection: Projection, start: datetime = T0) -> None:
        self.projection = projection
        self.rows = Rows()
        self.seq = 0
        self.time = start
        self.emitted: list[Event] = []

    def __call__(
        self, event: Event, *, at: datetime | None = None, after: timedelta | None = None
    ) -> Meta:
        """Apply ``event`` at stream time ``at`` (or ``after`` the previous one; default 1s)."""
        self.seq += 1
        self.time = at if at is not None else self.time + (after or timedelta(seconds=1))
        meta = Meta(self.seq, self.time, subject_of(event))
        before = len(self.rows.outbox)
        self.projection.apply(self.rows, event, meta)
        for emitted, _ in self.rows.outbox[before:]:
            self.emitted.append(emitted)
            if subject_of(emitted).startswith(self.projection.subjects[0][:-1]):
                self(emitted, after=timedelta(milliseconds=1))
        return meta

    def row(self, table: Table, *key: Any) -> Row:
        row = self.rows.get(table, tuple(key))
        assert row is not None, f"no row {key} in {table.name}"
        return row

    def table(self, table: Table) -> dict[Key, Row]:
        return dict(self.rows.data.get(table.name, {}))


def env(actor: str, at: datetime = T0) -> dict[str, Any]:
    """The envelope; ``at`` is the producer's clock, which the folds must not use."""
    return {"id": new_id(), "actor": actor, "at": at}


# ---- event builders ------------------------------------------------------------------------


def registered(
    agent: str = AGENT, team: str = "docs", by: str | None = None, **fields: Any
) -> AgentRegistered:
    """``agent`` registers itself, or ``by`` (a person or a service) registers it."""
    defaults: dict[str, Any] = {"name": f"Agent {agent}", "owner": "alice@example.com"}
    return AgentRegistered(**env(by or agent), agent=agent, team=team, **(defaults | fields))


def paused(agent: str = AGENT, reason: str = "budget", by: str = SVC) -> AgentPaused:
    return AgentPaused(**env(by), agent=agent, reason=reason)


def resumed(agent: str = AGENT, reason: str = "budget raised", by: str = USER) -> AgentResumed:
    return AgentResumed(**env(by), agent=agent, reason=reason)


def retired(agent: str = AGENT, reason: str = "replaced") -> AgentRetired:
    return AgentRetired(**env(USER), agent=agent, reason=reason)


def created(task: str = TASK, **fields: Any) -> TaskCreated:
    return TaskCreated(**env(USER), task=task, **({"project": "docs", "title": "T"} | fields))


def assigned(agent: str = AGENT, task: str = TASK) -> TaskAssigned:
    return TaskAssigned(**env(SVC), task=task, agent=agent)


def claimed(agent: str = AGENT, epoch: int = 1, task: str = TASK) -> TaskClaimed:
    return TaskClaimed(**env(agent), task=task, agent=agent, epoch=epoch, lease_s=120.0)


def progressed(agent: str = AGENT, epoch: int = 1, task: str = TASK) -> TaskProgressed:
    return TaskProgressed(**env(agent), task=task, agent=agent, epoch=epoch, percent=50.0)


def blocked(agent: str = AGENT, epoch: int = 1, task: str = TASK) -> TaskBlocked:
    return TaskBlocked(**env(agent), task=task, agent=agent, epoch=epoch, reason="need input")


def released(agent: str = AGENT, epoch: int = 1, task: str = TASK) -> TaskReleased:
    return TaskReleased(**env(agent), task=task, agent=agent, epoch=epoch)


def submitted(
    agent: str = AGENT, epoch: int = 1, task: str = TASK, content: str = "# v1"
) -> TaskSubmitted:
    deliverable = Deliverable(kind="markdown", sha256=SHA, content=content)
    return TaskSubmitted(**env(agent), task=task, agent=agent, epoch=epoch, deliverable=deliverable)


def reviewed(verdict: Verdict, agent: str = AGENT, task: str = TASK) -> TaskReviewed:
    return TaskReviewed(**env(REVIEWER), task=task, agent=agent, verdict=verdict)


def cancelled(task: str = TASK) -> TaskCancelled:
    return TaskCancelled(**env(USER), task=task, reason="not needed")


def lease_expired(agent: str = AGENT, epoch: int = 1, task: str = TASK) -> TaskLeaseExpired:
    return TaskLeaseExpired(**env(SVC), task=task, agent=agent, epoch=epoch)


def heartbeat(
    status: HeartbeatStatus, agent: str = AGENT, task: str | None = None, message: str = ""
) -> Heartbeat:
    return Heartbeat(**env(agent), agent=agent, status=status, task=task, message=message)


def spent(cost: float, agent: str = AGENT, tokens: tuple[int, int] = (0, 0)) -> SpendRecorded:
    return SpendRecorded(
        **env(agent),
        agent=agent,
        model="small-1",
        tokens_in=tokens[0],
        tokens_out=tokens[1],
        cost_usd=cost,
    )


def tool(cost: float = 0.0, ok: bool = True, agent: str = AGENT) -> ToolCalled:
    return ToolCalled(
        **env(agent),
        agent=agent,
        tool="web.search",
        duration_ms=10.0,
        ok=ok,
        error=None if ok else "timeout",
        cost_usd=cost,
    )


def run_started(agent: str = AGENT, run: str = "run-1") -> RunStarted:
    return RunStarted(**env(agent), agent=agent, run=run)


def run_finished(outcome: RunOutcome, agent: str = AGENT, run: str = "run-1") -> RunFinished:
    return RunFinished(**env(agent), agent=agent, run=run, outcome=outcome, latency_ms=5.0)


# ---- agents --------------------------------------------------------------------------------


def test_registration_fills_the_agent_row() -> None:
    fold = Fold(AgentRegistry())
    meta = fold(
        registered(
            purpose="writes docs",
            risk_class="low",
            version="2025.03.1",
            heartbeat_interval_s=30.0,
            roles=("writer", "reviewer"),
            max_concurrent_tasks=3,
        )
    )
    assert fold.row(AGENTS, AGENT) == {
        "agent_id": AGENT,
        "name": f"Agent {AGENT}",
        "owner": "alice@example.com",
        "team": "docs",
        "purpose": "writes docs",
        "risk_class": "low",
        "version": "2025.03.1",
        "status": "active",
        "status_reason": "",
        "heartbeat_interval_s": 30.0,
        "roles": ["writer", "reviewer"],
        "max_concurrent_tasks": 3,
        "registered_at": meta.time,
        "updated_at": meta.time,
        "last_seq": meta.seq,
        "paused_by": None,
        "registered_by": None,
        "promoted_by": None,
        "promoted_at": None,
        "promoted_version": None,
        "promotion_reason": None,
    }
    assert set(fold.row(AGENTS, AGENT)) == set(AGENTS.columns)


def test_pause_resume_retire_change_status() -> None:
    fold = Fold(AgentRegistry())
    fold(registered())
    meta = fold(paused(reason="budget"))
    row = fold.row(AGENTS, AGENT)
    assert (row["status"], row["status_reason"]) == ("paused", "budget")
    assert (row["updated_at"], row["last_seq"]) == (meta.time, meta.seq)

    fold(resumed(reason="raised"))
    assert (fold.row(AGENTS, AGENT)["status"], fold.row(AGENTS, AGENT)["status_reason"]) == (
        "active",
        "raised",
    )

    meta = fold(retired(reason="replaced"))
    row = fold.row(AGENTS, AGENT)
    assert (row["status"], row["status_reason"]) == ("retired", "replaced")
    assert row["last_seq"] == meta.seq


def test_version_change_keeps_status() -> None:
    fold = Fold(AgentRegistry())
    fold(registered(version="1"))
    fold(paused())
    fold(AgentVersionChanged(**env(USER), agent=AGENT, version="2"))
    row = fold.row(AGENTS, AGENT)
    assert (row["version"], row["status"]) == ("2", "paused")


def test_a_rollback_puts_a_version_back_and_says_who_took_it() -> None:
    fold = Fold(AgentRegistry())
    fold(registered(version="1"))
    fold(AgentVersionChanged(**env(USER), agent=AGENT, version="2", prompt="p2"))
    meta = fold(AgentVersionChanged(**env(USER), agent=AGENT, version="1", rollback=True))
    assert fold.row(AGENTS, AGENT)["version"] == "1"
    back = fold.row(AGENT_VERSIONS, AGENT, "1")
    assert (back["rolled_back_by"], back["rolled_back_at"]) == (USER, meta.time)
    assert fold.row(AGENT_VERSIONS, AGENT, "2")["rolled_back_by"] is None


def test_a_promotion_tags_the_agent_until_withdrawn() -> None:
    fold = Fold(AgentRegistry())
    fold(registered(version="3"))
    meta = fold(AgentPromoted(**env(USER), agent=AGENT, version="3", reason="pays"))
    row = fold.row(AGENTS, AGENT)
    assert (row["promoted_by"], row["promoted_at"], row["promoted_version"]) == (
        USER, meta.time, "3")  # fmt: skip
    assert (row["promotion_reason"], row["status"]) == ("pays", "active")
    fold(AgentPromoted(**env(USER), agent=AGENT, version="3", withdrawn=True))
    assert fold.row(AGENTS, AGENT)["promoted_by"] is None


def test_pause_before_registration_keeps_a_placeholder_then_stays_paused() -> None:
    fold = Fold(AgentRegistry())
    fold(paused(reason="pre-emptive"))
    row = fold.row(AGENTS, AGENT)
    assert row["status"] == "paused"
    assert row["registered_at"] is None
    assert row["team"] == "unassigned"

    meta = fold(registered(team="research", version="3"))
    row = fold.row(AGENTS, AGENT)
    assert (row["team"], row["version"], row["owner"]) == ("research", "3", "alice@example.com")
    assert row["registered_at"] == meta.time
    assert (row["status"], row["status_reason"]) == ("paused", "pre-emptive")


def test_retired_agent_ignores_pause_and_resume() -> None:
    fold = Fold(AgentRegistry())
    fold(registered())
    retire = fold(retired(reason="gone"))
    fold(paused())
    fold(resumed())
    row = fold.row(AGENTS, AGENT)
    assert (row["status"], row["status_reason"]) == ("retired", "gone")
    assert (row["last_seq"], row["updated_at"]) == (retire.seq, retire.time)


def test_a_person_brings_a_retired_agent_back_by_registering_it() -> None:
    fold = Fold(AgentRegistry())
    first = fold(registered(team="docs"))
    fold(retired())
    fold(registered(team="platform", by=USER))
    row = fold.row(AGENTS, AGENT)
    assert (row["status"], row["status_reason"], row["team"]) == ("active", "", "platform")
    assert row["registered_at"] == first.time  # the first registration is kept
    assert row["registered_by"] == USER


def test_status_commands_carry_the_events_reason_and_sequence_and_a_comeback_is_a_resume() -> None:
    """The registry's pause, resume and retire tell the agent the event's own reason (none
    given: none) and its sequence (``payload.seq``: AgentClient orders them by it); bringing a
    retired agent back by registering it sends ``resume``, saying who did."""
    fold = Fold(AgentRegistry())
    fold(registered())
    quiet = fold(paused(reason=""))
    fold(resumed(reason="raised"))
    fold(retired(reason="replaced"))
    back = fold(registered(by=USER))
    told = [(e.command, e.reason, e.payload) for e in fold.emitted if isinstance(e, CommandIssued)]
    assert told == [
        ("pause", "", {"by": SVC, "seq": quiet.seq}),
        ("resume", "raised", {"by": USER, "seq": quiet.seq + 1}),
        ("retire", "replaced", {"by": USER, "seq": quiet.seq + 2}),
        ("resume", f"registered again by {USER}", {"by": USER, "seq": back.seq}),
    ]


def test_re_registration_does_not_resume_a_paused_agent() -> None:
    fold = Fold(AgentRegistry())
    fold(registered())
    fold(paused())
    fold(registered(version="2"))
    assert fold.row(AGENTS, AGENT)["status"] == "paused"


def test_agents_projection_ignores_activity() -> None:
    fold = Fold(AgentRegistry())
    fold(spent(0.5))
    fold(run_started())
    assert fold.table(AGENTS) == {}
    assert fold.rows.changed(AGENTS) == []


# ---- tasks ---------------------------------------------------------------------------------


def reject(fold: Fold, event: Event, why: str) -> None:
    """Feed ``event`` and check that it changed nothing but left a rejection saying ``why``."""
    task: str = getattr(event, "task")  # noqa: B009
    before = copy.deepcopy(fold.rows.get(TASKS, (task,)))
    deliverables = copy.deepcopy(fold.table(DELIVERABLES))
    meta = fold(event)
    assert fold.rows.get(TASKS, (task,)) == before, f"{type_name(type(event))} was applied"
    assert fold.table(DELIVERABLES) == deliverables
    rejection = fold.rows.get(REJECTIONS, (task, meta.seq))
    assert rejection is not None, f"{type_name(type(event))} was not recorded as rejected"
    assert rejection == {
        "task_id": task,
        "seq": meta.seq,
        "event_id": event.id,
        "type": type_name(type(event)),
        "actor": event.actor,
        "reason": rejection["reason"],
        "at": meta.time,
    }
    assert why in rejection["reason"], f"reason {rejection['reason']!r} lacks {why!r}"


def overruled(fold: Fold, event: Event, why: str) -> Event:
    """Feed ``event``, which the task's subject accepts but the board overrules: check that the
    board emitted one verdict saying ``why`` and that, once it is folded, the task has the
    status and assignee it had before. Returns the verdict."""
    task: str = getattr(event, "task")  # noqa: B009
    before = copy.deepcopy(fold.rows.get(TASKS, (task,)))
    n = len(fold.emitted)
    fold(event)
    verdicts = [
        e
        for e in fold.emitted[n:]
        if isinstance(e, TaskClaimRefused | TaskReviewRefused | TaskCancelled)
        or (isinstance(e, TaskDependenciesChanged) and e.actor == "svc:board")
    ]
    assert len(verdicts) == 1, f"verdicts: {verdicts}"
    assert why in verdicts[0].reason, f"reason {verdicts[0].reason!r} lacks {why!r}"
    after = fold.row(TASKS, task)
    if before is not None:
        keep = ("status", "assignee")
        assert {k: after[k] for k in keep} == {k: before[k] for k in keep}
    return verdicts[0]


def board() -> Fold:
    """A task board that knows both agents (claims by unregistered agents are refused)."""
    fold = Fold(TaskBoard())
    fold(registered(AGENT, roles=("writer",)))
    fold(registered(OTHER))
    return fold


def task_fold(*events: Event) -> Fold:
    fold = board()
    for event in events:
        fold(event)
    assert fold.table(REJECTIONS) == {}, "setup events were rejected"
    return fold


def test_task_life_with_a_rejected_review() -> None:
    fold = board()
    fold(created("task-41"))  # a dependency, done before the claim
    fold(claimed(OTHER, 1, "task-41"))
    fold(submitted(OTHER, 1, "task-41"))
    fold(reviewed("approve", OTHER, "task-41"))
    c = fold(created(priority="high", depends_on=("task-41",), sla_s=3600.0))
    row = fold.row(TASKS, TASK)
    assert (row["status"], row["claim_epoch"], row["assignee"]) == ("inbox", 0, None)
    assert (row["created_by"], row["created_at"], row["priority"]) == (USER, c.time, "high")
    assert row["depends_on"] == ["task-41"]

    claim = fold(claimed(epoch=1))
    row = fold.row(TASKS, TASK)
    assert (row["status"], row["assignee"], row["claim_epoch"]) == ("in_progress", AGENT, 1)
    assert (row["claimed_at"], row["lease_s"]) == (claim.time, 120.0)

    fold(progressed())
    assert fold.row(TASKS, TASK)["status"] == "in_progress"

    first = fold(submitted(content="# draft"))
    row = fold.row(TASKS, TASK)
    assert (row["status"], row["deliverable_version"]) == ("review", 1)
    assert row["submitted_at"] == first.time
    assert fold.row(DELIVERABLES, TASK, 1) == {
        "task_id": TASK,
        "version": 1,
        "agent": AGENT,
        "epoch": 1,
        "kind": "markdown",
        "sha256": SHA,
        "uri": None,
        "content": "# draft",
        "submitted_at": first.time,
        "seq": first.seq,
        "agent_version": "1",  # the registration's version (no agent.version_changed yet)
        "team": "docs",  # the author's team when it submitted
        "verdict": None,  # not reviewed yet
        "reviewed_by": None,
        "reviewed_at": None,
    }

    rejection = fold(reviewed("reject"))
    draft = fold.row(DELIVERABLES, TASK, 1)
    assert (draft["verdict"], draft["reviewed_by"]) == ("reject", REVIEWER)
    assert draft["reviewed_at"] == rejection.time
    row = fold.row(TASKS, TASK)
    assert (row["status"], row["review_rounds"], row["rework_count"]) == ("in_progress", 1, 1)
    assert row["done_at"] is None
    assert row["assignee"] == AGENT

    second = fold(submitted(content="# final"))
    row = fold.row(TASKS, TASK)
    assert (row["status"], row["deliverable_version"]) == ("review", 2)
    assert fold.row(DELIVERABLES, TASK, 2)["content"] == "# final"
    assert fold.row(DELIVERABLES, TASK, 2)["seq"] == second.seq
    assert fold.row(DELIVERABLES, TASK, 1)["content"] == "# draft"  # version 1 is kept

    done = fold(reviewed("approve"))
    row = fold.row(TASKS, TASK)
    assert (row["status"], row["done_at"]) == ("done", done.time)
    final = fold.row(DELIVERABLES, TASK, 2)
    assert (final["verdict"], final["reviewed_at"]) == ("approve", done.time)
    assert fold.row(DELIVERABLES, TASK, 1)["verdict"] == "reject"  # each version keeps its own
    assert (row["review_rounds"], row["rework_count"]) == (2, 1)
    assert (row["updated_at"], row["last_seq"]) == (done.time, done.seq)
    assert fold.table(REJECTIONS) == {}


def test_block_and_progress() -> None:
    fold = task_fold(created(), claimed())
    blocked_at = fold(blocked()).time
    row = fold.row(TASKS, TASK)
    assert (row["status"], row["blocked_reason"]) == ("blocked", "need input")
    assert row["last_progress_at"] == blocked_at  # a report of the holder: renews its lease
    progressed_at = fold(progressed()).time
    row = fold.row(TASKS, TASK)
    assert (row["status"], row["blocked_reason"]) == ("in_progress", None)
    assert row["last_progress_at"] == progressed_at


def test_claim_of_a_task_held_by_another_agent_is_rejected() -> None:
    fold = task_fold(created(), claimed(AGENT, 1))
    reject(fold, claimed(OTHER, 2), "in_progress")
    assert fold.row(TASKS, TASK)["assignee"] == AGENT


@pytest.mark.parametrize("epoch", [1, 2, 4, 2_147_483_647])
def test_a_claim_must_open_the_next_epoch(epoch: int) -> None:
    """Every reader folds the same epochs, so a claim opens exactly the next one: one that
    skipped to the largest epoch the contract allows would leave the task unclaimable."""
    fold = task_fold(created(), claimed(OTHER, 1), released(OTHER, 1), claimed(OTHER, 2),
                     released(OTHER, 2))  # fmt: skip
    reject(fold, claimed(epoch=epoch), f"claim epoch {epoch} is not the next one (3)")
    fold(claimed(epoch=3))
    assert fold.row(TASKS, TASK)["claim_epoch"] == 3


def test_a_claim_the_board_overruled_keeps_its_epoch_for_every_reader() -> None:
    fold = task_fold(created(), paused(OTHER))
    overruled(fold, claimed(OTHER, 1), f"agent {OTHER} is paused")
    assert fold.row(TASKS, TASK)["claim_epoch"] == 1
    fold(claimed(AGENT, 2))
    assert fold.row(TASKS, TASK)["assignee"] == AGENT


def test_lease_expiry_returns_the_task_and_opens_epoch_2() -> None:
    fold = task_fold(created(), claimed(AGENT, 1), progressed(AGENT, 1))
    fold(lease_expired(AGENT, 1))
    row = fold.row(TASKS, TASK)
    assert (row["status"], row["assignee"], row["claim_epoch"]) == ("inbox", None, 1)

    reject(fold, progressed(AGENT, 1), "not the current claim")
    reject(fold, submitted(AGENT, 1), "not the current claim")
    reject(fold, claimed(OTHER, 1), "is not the next one (2)")

    fold(claimed(OTHER, 2))
    row = fold.row(TASKS, TASK)
    assert (row["status"], row["assignee"], row["claim_epoch"]) == ("in_progress", OTHER, 2)
    reject(fold, progressed(AGENT, 1), "not the current claim")
    reject(fold, progressed(AGENT, 2), "not the current claim")  # right epoch, wrong agent


def test_release_returns_the_task_to_the_inbox() -> None:
    fold = task_fold(created(), claimed(AGENT, 1))
    fold(released(AGENT, 1))
    row = fold.row(TASKS, TASK)
    assert (row["status"], row["assignee"]) == ("inbox", None)
    fold(claimed(AGENT, 2))
    assert fold.row(TASKS, TASK)["claim_epoch"] == 2


def fold_steps(*events: Event) -> list[Row | str]:
    """Each event folded by the task state machine alone (verdicts come when the test says),
    with what it gave: the new row, or why the event did not fit."""
    row: Row | None = None
    out: list[Row | str] = []
    for seq, event in enumerate(events, start=1):
        new = step(row, event, Meta(seq, T0 + timedelta(seconds=seq), subject_of(event)))
        out.append(new)
        row = new if not isinstance(new, str) else row
    return out


def claim_verdict(claim: TaskClaimed) -> TaskClaimRefused:
    return TaskClaimRefused(**env(BOARD), task=claim.task, agent=claim.agent, epoch=claim.epoch,
                            claim=claim.id, reason=f"agent {claim.agent} is paused")  # fmt: skip


def review_verdict(review: TaskReviewed) -> TaskReviewRefused:
    return TaskReviewRefused(**env(BOARD), task=review.task, agent=review.agent,
                             reviewer=review.actor, review=review.id,
                             reason=f"{review.actor} lacks the role reviewer")  # fmt: skip


@pytest.mark.parametrize("verdict", ["approve", "reject"])
def test_a_refused_claim_is_voided_though_an_agent_reviewed_its_work_before_the_verdict(
    verdict: Verdict,
) -> None:
    """The claim's verdict restores the task as it was before the claim, whatever an agent's
    review of its work did meanwhile (the property test in test_one_task_machine.py found the
    refused claim holding the task again when the two shared what a verdict restores)."""
    claim = claimed(AGENT)
    review = TaskReviewed(**env(OTHER), task=TASK, agent=AGENT, verdict=verdict)
    *_, after_review, voided, late = fold_steps(
        created(), claim, submitted(), review, claim_verdict(claim), review_verdict(review)
    )
    assert isinstance(after_review, dict) and isinstance(voided, dict)
    assert after_review["status"] == ("done" if verdict == "approve" else "in_progress")
    assert (voided["status"], voided["assignee"], voided["done_at"]) == ("inbox", None, None)
    assert late == f"review {review.id} is not the task's last review"  # nothing left to undo


def test_a_refused_claim_voids_a_rework_a_person_asked_for() -> None:
    claim = claimed(AGENT)
    *_, rework, voided = fold_steps(
        created(), assigned(AGENT), claim, submitted(), reviewed("reject"), claim_verdict(claim)
    )
    assert isinstance(rework, dict) and holder(rework) == AGENT
    assert isinstance(voided, dict)
    assert (voided["status"], voided["assignee"]) == ("assigned", AGENT)  # as before the claim


def test_lease_expiry_for_an_old_epoch_is_rejected() -> None:
    fold = task_fold(created(), claimed(AGENT, 1), released(AGENT, 1), claimed(OTHER, 2))
    reject(fold, lease_expired(AGENT, 1), "not the current claim")
    assert fold.row(TASKS, TASK)["status"] == "in_progress"


def test_submission_by_a_non_holder_is_rejected() -> None:
    fold = task_fold(created(), claimed(AGENT, 1))
    reject(fold, submitted(OTHER, 1), "not the current claim")
    assert fold.table(DELIVERABLES) == {}


def test_submission_when_not_held_is_rejected() -> None:
    fold = task_fold(created(), claimed(), submitted())
    reject(fold, submitted(content="again"), "task is review")
    assert list(fold.table(DELIVERABLES)) == [(TASK, 1)]


@pytest.mark.parametrize("verdict", ["approve", "reject"])
def test_review_when_not_in_review_is_rejected(verdict: Verdict) -> None:
    fold = task_fold(created(), claimed())
    reject(fold, reviewed(verdict), "task is in_progress")
    assert fold.row(TASKS, TASK)["review_rounds"] == 0


def test_review_of_another_agents_deliverable_is_rejected() -> None:
    fold = task_fold(created(), claimed(AGENT), submitted(AGENT))
    reject(fold, reviewed("approve", agent=OTHER), "deliverable under review")


def test_review_after_approval_is_rejected() -> None:
    fold = task_fold(created(), claimed(), submitted(), reviewed("approve"))
    reject(fold, reviewed("reject"), "task is done")


def test_event_for_an_unknown_task_is_rejected() -> None:
    fold = board()
    reject(fold, claimed(), "unknown task")
    assert fold.table(TASKS) == {}


def test_duplicate_task_created_is_rejected() -> None:
    fold = task_fold(created(title="first"), claimed())
    reject(fold, created(title="second"), "already exists")
    row = fold.row(TASKS, TASK)
    assert (row["title"], row["status"]) == ("first", "in_progress")


def test_cancel_of_an_open_task() -> None:
    fold = task_fold(created(), claimed())
    fold(cancelled())
    assert fold.row(TASKS, TASK)["status"] == "cancelled"
    reject(fold, progressed(), "task is cancelled")
    reject(fold, cancelled(), "task is cancelled")


def test_cancel_of_a_done_task_is_rejected() -> None:
    fold = task_fold(created(), claimed(), submitted(), reviewed("approve"))
    reject(fold, cancelled(), "task is done")
    assert fold.row(TASKS, TASK)["status"] == "done"


def test_assigned_task_can_only_be_claimed_by_the_assignee() -> None:
    fold = task_fold(created())
    fold(assigned(AGENT))
    row = fold.row(TASKS, TASK)
    assert (row["status"], row["assignee"]) == ("assigned", AGENT)

    reject(fold, claimed(OTHER, 1), f"assigned to {AGENT}")
    fold(claimed(AGENT, 1))
    row = fold.row(TASKS, TASK)
    assert (row["status"], row["assignee"], row["claim_epoch"]) == ("in_progress", AGENT, 1)


def test_assigning_a_held_task_is_rejected() -> None:
    fold = task_fold(created(), claimed(AGENT))
    reject(fold, assigned(OTHER), "task is in_progress")


def test_rejections_of_one_task_are_kept_apart() -> None:
    fold = task_fold(created(), claimed(AGENT, 1))
    first = fold(claimed(OTHER, 2))
    second = fold(claimed(OTHER, 2))
    assert set(fold.table(REJECTIONS)) == {(TASK, first.seq), (TASK, second.seq)}


# ---- utilization ---------------------------------------------------------------------------


def util_row(fold: Fold, agent: str = AGENT) -> Row:
    return fold.row(UTILIZATION, agent)


def test_gap_is_credited_to_the_previous_heartbeats_state() -> None:
    fold = Fold(Utilization())
    gap = timedelta(seconds=1, microseconds=234_567)
    fold(heartbeat("busy"), at=T0)
    fold(heartbeat("idle"), at=T0 + gap)  # the gap was busy
    assert (util_row(fold)["busy_us"], util_row(fold)["idle_us"]) == (1_234_567, 0)

    fold(heartbeat("waiting"), at=T0 + 2 * gap)  # the gap was idle
    assert (util_row(fold)["busy_us"], util_row(fold)["idle_us"]) == (1_234_567, 1_234_567)

    fold(heartbeat("error"), at=T0 + 3 * gap)  # waiting counts as busy
    assert (util_row(fold)["busy_us"], util_row(fold)["idle_us"]) == (2_469_134, 1_234_567)

    fold(heartbeat("busy"), at=T0 + 4 * gap)  # error counts as nothing
    row = util_row(fold)
    assert (row["busy_us"], row["idle_us"], row["heartbeats"]) == (2_469_134, 1_234_567, 5)
    assert isinstance(row["busy_us"], int)
    assert isinstance(row["idle_us"], int)


def test_durations_are_whole_microseconds_over_days() -> None:
    fold = Fold(Utilization())
    fold(heartbeat("busy"), at=T0)
    fold(heartbeat("busy"), at=T0 + timedelta(microseconds=1))
    fold(heartbeat("busy"), at=T0 + timedelta(seconds=299, microseconds=999_999))
    assert util_row(fold)["busy_us"] == 299_999_999
    assert type(util_row(fold)["busy_us"]) is int


def test_gap_over_max_gap_counts_nothing() -> None:
    fold = Fold(Utilization())
    fold(heartbeat("busy"), at=T0)
    fold(heartbeat("idle"), at=T0 + MAX_GAP)  # exactly MAX_GAP still counts
    assert util_row(fold)["busy_us"] == MAX_GAP // timedelta(microseconds=1)

    silence = T0 + MAX_GAP + MAX_GAP + timedelta(microseconds=1)
    fold(heartbeat("busy"), at=silence)
    row = util_row(fold)
    assert (row["busy_us"], row["idle_us"]) == (MAX_GAP // timedelta(microseconds=1), 0)
    assert row["last_seen"] == silence

    fold(heartbeat("busy"), at=silence + timedelta(seconds=10))  # counting resumes
    assert util_row(fold)["busy_us"] == MAX_GAP // timedelta(microseconds=1) + 10_000_000


def test_days_long_silence_counts_nothing() -> None:
    fold = Fold(Utilization())
    fold(heartbeat("idle"), at=T0)
    fold(heartbeat("idle"), at=T0 + timedelta(days=3, seconds=1))
    assert (util_row(fold)["busy_us"], util_row(fold)["idle_us"]) == (0, 0)


def hourly(fold: Fold) -> dict[tuple[str, datetime], tuple[int, int, int]]:
    """What fleet.utilization_hourly shows: (busy_us, idle_us, heartbeats) by agent and hour,
    the closed hours from the hourly table and each agent's current hour from its row."""
    out = {k: (r["busy_us"], r["idle_us"], r["heartbeats"]) for k, r in fold.table(HOURLY).items()}
    for (agent,), r in fold.table(UTILIZATION).items():
        assert (agent, r["hour"]) not in out  # a closed hour is never also the current one
        out[(agent, r["hour"])] = (r["hour_busy_us"], r["hour_idle_us"], r["hour_heartbeats"])
    return out


def test_hourly_buckets_take_the_gap_in_the_hour_of_the_later_heartbeat() -> None:
    fold = Fold(Utilization())
    nine = T0.replace(hour=9)
    ten = T0.replace(hour=10)
    fold(heartbeat("busy"), at=nine + timedelta(minutes=59, seconds=30))
    assert fold.table(HOURLY) == {}  # nine o'clock is the agent's current hour
    fold(heartbeat("idle"), at=ten + timedelta(seconds=20))  # 50 s busy, credited to 10:00
    fold(heartbeat("idle"), at=ten + timedelta(seconds=50))  # 30 s idle
    assert fold.table(HOURLY) == {  # nine o'clock is over: it moved to the hourly table
        (AGENT, nine): {
            "agent_id": AGENT,
            "hour": nine,
            "busy_us": 0,
            "idle_us": 0,
            "heartbeats": 1,
        },
    }
    assert hourly(fold) == {
        (AGENT, nine): (0, 0, 1),
        (AGENT, ten): (50_000_000, 30_000_000, 2),
    }
    row = util_row(fold)
    assert (row["busy_us"], row["idle_us"], row["heartbeats"]) == (50_000_000, 30_000_000, 3)
    fold(heartbeat("idle"), at=ten + timedelta(hours=3))  # after a silence, a new current hour
    assert hourly(fold) == {
        (AGENT, nine): (0, 0, 1),
        (AGENT, ten): (50_000_000, 30_000_000, 2),
        (AGENT, ten + timedelta(hours=3)): (0, 0, 1),
    }


def test_agents_are_counted_apart() -> None:
    fold = Fold(Utilization())
    fold(heartbeat("busy", agent=AGENT), at=T0)
    fold(heartbeat("idle", agent=OTHER), at=T0 + timedelta(seconds=1))
    fold(heartbeat("idle", agent=AGENT), at=T0 + timedelta(seconds=5))
    fold(heartbeat("idle", agent=OTHER), at=T0 + timedelta(seconds=8))
    assert (util_row(fold, AGENT)["busy_us"], util_row(fold, AGENT)["idle_us"]) == (5_000_000, 0)
    assert (util_row(fold, OTHER)["busy_us"], util_row(fold, OTHER)["idle_us"]) == (0, 7_000_000)


def test_state_and_task_follow_the_latest_heartbeat() -> None:
    fold = Fold(Utilization())
    first = fold(heartbeat("busy", task=TASK, message="drafting"), at=T0)
    latest = heartbeat("idle", task=None, message="waiting for work")
    last = fold(latest, at=T0 + MAX_GAP * 2)
    assert util_row(fold) == {
        "agent_id": AGENT,
        "state": "idle",
        "current_task": None,
        "message": "waiting for work",
        "first_seen": first.time,
        "last_seen": last.time,
        "busy_us": 0,
        "idle_us": 0,
        "heartbeats": 2,
        "last_seq": last.seq,
        "hour": last.time.replace(minute=0, second=0, microsecond=0),
        "hour_busy_us": 0,
        "hour_idle_us": 0,
        "hour_heartbeats": 2,
        "last_id": latest.id,
    }
    fold(heartbeat("waiting", task="task-43", message="tool"), at=last.time + timedelta(seconds=1))
    row = util_row(fold)
    assert (row["state"], row["current_task"], row["message"]) == ("waiting", "task-43", "tool")


def test_a_heartbeat_counts_once_and_never_after_a_newer_one() -> None:
    """A copy of a heartbeat counted already, or an older one stored late, changes nothing:
    a heartbeat counts only if its id sorts after the last one counted for its agent."""
    fold = Fold(Utilization())
    older, first, second = heartbeat("idle"), heartbeat("busy"), heartbeat("waiting")
    other = heartbeat("busy", agent="agent-8")
    fold(first)
    fold(first)  # the same heartbeat stored again
    fold(other)  # another agent's heartbeats are judged on their own
    fold(second)
    before = util_row(fold)
    fold(first, after=timedelta(seconds=30))  # an old copy long after
    fold(older)  # made before the first: sorts before it
    fold(second)
    assert util_row(fold) == before
    assert (before["heartbeats"], before["state"], before["last_id"]) == (2, "waiting", second.id)
    assert fold.row(UTILIZATION, "agent-8")["heartbeats"] == 1


def test_newer_heartbeat_compares_ids_as_text() -> None:
    assert newer_heartbeat(None, "01J0000000000000000000000A")
    assert newer_heartbeat(
        "0190a6e2-0000-7000-8000-000000000000", "0190a6e2-0001-7000-8000-000000000000"
    )
    assert not newer_heartbeat(
        "0190a6e2-0001-7000-8000-000000000000", "0190a6e2-0000-7000-8000-000000000000"
    )
    assert not newer_heartbeat("01J0000000000000000000000A", "01J0000000000000000000000A")
    ids = [new_id() for _ in range(1000)]  # Fleetward's own ids grow
    assert all(newer_heartbeat(a, b) for a, b in pairwise(ids))


def test_time_comes_from_the_stream_not_the_producer() -> None:
    fold = Fold(Utilization())
    late = T0 + timedelta(hours=5)
    fold(Heartbeat(**env(AGENT, at=late), agent=AGENT, status="busy"), at=T0)
    fold(Heartbeat(**env(AGENT, at=T0), agent=AGENT, status="busy"), at=T0 + timedelta(seconds=2))
    assert util_row(fold)["busy_us"] == 2_000_000
    assert set(hourly(fold)) == {(AGENT, T0.replace(minute=0, second=0, microsecond=0))}


# ---- spend ---------------------------------------------------------------------------------


def exact(*costs: float) -> Decimal:
    return sum((Decimal(repr(c)) for c in costs), Decimal(0))


def day_row(fold: Fold, day: date, agent: str = AGENT, team: str = UNASSIGNED) -> Row:
    return fold.row(SPEND_DAILY, agent, day, team)


def team_cost(fold: Fold, team: str) -> Decimal:
    """What fleet.spend_team_daily shows for ``team`` on the day of ``T0``."""
    day = T0.date()
    return sum(
        (
            r["model_cost_usd"] + r["tool_cost_usd"]
            for r in fold.table(SPEND_DAILY).values()
            if r["team"] == team and r["day"] == day
        ),
        Decimal(0),
    )


def test_cost_sums_are_exact_decimals() -> None:
    fold = Fold(Spend())
    fold(spent(0.1))
    fold(spent(0.2))
    fold(tool(0.2))
    fold(tool(0.1))
    row = day_row(fold, T0.date())
    assert row["model_cost_usd"] == Decimal("0.3")
    assert row["tool_cost_usd"] == Decimal("0.3")
    assert isinstance(row["model_cost_usd"], Decimal)

    costs = [0.0668, 1e-7, 0.000123, 12.34, 1 / 3, 0.3, 2.5e-5]
    fold = Fold(Spend())
    for c in costs:
        fold(spent(c))
        fold(tool(c * 2))
    row = day_row(fold, T0.date())
    assert row["model_cost_usd"] == exact(*costs)
    assert row["tool_cost_usd"] == exact(*(c * 2 for c in costs))
    assert row["model_cost_usd"] != Decimal(repr(sum(costs)))


def test_tokens_runs_and_tool_calls_are_counted() -> None:
    fold = Fold(Spend())
    fold(run_started(run="r1"))
    fold(spent(0.01, tokens=(1000, 200)))
    fold(tool(ok=True))
    fold(tool(ok=False))
    fold(tool(ok=False))
    fold(run_finished("failed", run="r1"))
    fold(run_started(run="r2"))
    fold(spent(0.02, tokens=(30, 4)))
    fold(run_finished("succeeded", run="r2"))
    fold(run_started(run="r3"))
    fold(run_finished("cancelled", run="r3"))
    row = day_row(fold, T0.date())
    assert {k: row[k] for k in SPEND_DAILY.columns if k not in ("model_cost_usd", "day")} == {
        "agent_id": AGENT,
        "team": UNASSIGNED,
        "tool_cost_usd": Decimal(0),
        "tokens_in": 1030,
        "tokens_out": 204,
        "runs": 3,
        "runs_failed": 1,
        "tool_calls": 3,
        "tool_errors": 2,
        "spend_events": 2,
        "paused_cost_usd": Decimal(0),
        "paused_events": 0,
    }
    assert row["model_cost_usd"] == Decimal("0.03")


def test_spend_of_a_paused_agent_is_kept_and_flagged() -> None:
    fold = Fold(Spend())
    fold(registered(team="docs"))
    fold(spent(1.0))
    fold(paused())
    fold(spent(2.0))
    fold(tool(0.25))
    fold(resumed())
    fold(spent(4.0))
    day = day_row(fold, T0.date(), team="docs")
    assert day["model_cost_usd"] == Decimal("7.0")  # the truth is kept
    assert (day["paused_cost_usd"], day["paused_events"]) == (Decimal("2.25"), 2)


def test_team_is_stamped_from_the_latest_registration() -> None:
    fold = Fold(Spend())
    d1 = T0
    fold(spent(1.0), at=d1)
    assert day_row(fold, d1.date())["team"] == UNASSIGNED

    fold(registered(team="docs"), at=d1 + timedelta(minutes=1))
    assert fold.row(SPEND_AGENTS, AGENT) == {
        "agent_id": AGENT,
        "team": "docs",
        "teams": [UNASSIGNED],
        "status": "active",
        "paused_by": None,
        "version": "1",  # the registration's version
        "kpi_keys": ["unassigned/"],  # the KPI rows it has: the spend before it registered
    }
    fold(spent(2.0), at=d1 + timedelta(minutes=2))
    assert fold.row(SPEND_AGENTS, AGENT)["kpi_keys"] == ["docs/1", "unassigned/"]
    assert day_row(fold, d1.date(), team="docs")["model_cost_usd"] == Decimal("2.0")
    assert day_row(fold, d1.date())["model_cost_usd"] == Decimal("1.0")  # before it registered

    d2 = d1 + timedelta(days=1)
    fold(registered(team="platform"), at=d2)
    fold(tool(0.5), at=d2 + timedelta(minutes=1))
    assert day_row(fold, d2.date(), team="platform")["tool_cost_usd"] == Decimal("0.5")
    assert day_row(fold, d1.date(), team="docs")["team"] == "docs"  # the earlier day keeps its team

    fold(registered(OTHER, team="growth"), at=d2 + timedelta(minutes=2))
    fold(tool(0.5), at=d2 + timedelta(minutes=3))
    assert day_row(fold, d2.date(), team="platform")["tool_calls"] == 2  # another agent's
    assert {k[2] for k in fold.table(SPEND_DAILY)} == {UNASSIGNED, "docs", "platform"}
    assert fold.row(SPEND_AGENTS, AGENT)["teams"] == ["docs", "platform", UNASSIGNED]


def test_re_registration_into_another_team_keeps_the_days_spend_with_the_old_team() -> None:
    """Issue 11: team A's 5.00 disappeared into B once the agent was re-registered into B."""
    fold = Fold(Spend())
    fold(registered(team="A"))
    fold(spent(5.0, tokens=(100, 10)))
    fold(registered(team="B"))
    fold(spent(1.0, tokens=(7, 1)))
    assert team_cost(fold, "A") == Decimal("5.0")
    assert team_cost(fold, "B") == Decimal("1.0")
    assert day_row(fold, T0.date(), team="A")["tokens_in"] == 100
    assert day_row(fold, T0.date(), team="B")["tokens_in"] == 7

    fold(registered(team="A"))  # back again, the same day: adds to A's row
    fold(spent(0.25))
    assert team_cost(fold, "A") == Decimal("5.25")
    assert team_cost(fold, "B") == Decimal("1.0")
    assert day_row(fold, T0.date(), team="A")["spend_events"] == 2


def test_re_registrations_within_one_batch_equal_one_by_one() -> None:
    """A batch that moves the agent back to a team it already spent under today must load that
    team's row, which the team at the start of the batch does not name."""
    events = [registered(team="A"), spent(5.0), registered(team="B"), spent(1.0)]
    events += [spent(2.0), registered(team="A"), spent(0.5), registered(team="B"), tool(0.25)]
    items = [
        (e, Meta(i, T0 + timedelta(seconds=i), subject_of(e))) for i, e in enumerate(events, 1)
    ]
    whole = fold_at_once(Spend(), items)
    for sizes in ([4, 100], [1] * 9, [2, 3, 4], [5, 4]):
        chunks = iter(sizes)
        assert fold_in_batches(Spend(), items, chunks.__next__) == whole, sizes
    rows = whole[SPEND_DAILY.name]
    assert rows[(AGENT, T0.date(), "A")]["model_cost_usd"] == Decimal("5.5")
    assert rows[(AGENT, T0.date(), "B")]["model_cost_usd"] == Decimal("3.0")
    assert rows[(AGENT, T0.date(), "B")]["tool_cost_usd"] == Decimal("0.25")


def test_token_sums_pass_bigint_exactly() -> None:
    """The contract bounds one spend's tokens; the sums (numeric columns) have no bound. Two
    spends built past admission, whose sum passes 2^63, add up exactly."""
    fold = Fold(Spend())
    half = 2**62 + 1
    fold(spent(0.0, tokens=(half, half)))
    fold(spent(0.0, tokens=(half, 2**63 - 1)))
    row = day_row(fold, T0.date())
    assert row["tokens_in"] == 2**63 + 2
    assert row["tokens_out"] == 2**62 + 2**63


def test_registration_alone_makes_no_day_row() -> None:
    fold = Fold(Spend())
    fold(registered())
    assert fold.table(SPEND_DAILY) == {}


def test_day_comes_from_the_stream_time_not_the_event() -> None:
    fold = Fold(Spend())
    before_midnight = datetime(2025, 3, 14, 23, 59, 59, 999_999, tzinfo=UTC)
    midnight = datetime(2025, 3, 15, tzinfo=UTC)
    fold(SpendRecorded(**env(AGENT, at=midnight), agent=AGENT, model="m", cost_usd=1.5), at=T0)
    fold(
        SpendRecorded(**env(AGENT, at=T0), agent=AGENT, model="m", cost_usd=0.25),
        at=before_midnight,
    )
    fold(
        SpendRecorded(**env(AGENT, at=before_midnight), agent=AGENT, model="m", cost_usd=2.0),
        at=midnight,
    )
    table = fold.table(SPEND_DAILY)
    first, second = (AGENT, date(2025, 3, 14), UNASSIGNED), (AGENT, date(2025, 3, 15), UNASSIGNED)
    assert set(table) == {first, second}
    assert table[first]["model_cost_usd"] == Decimal("1.75")
    assert table[second]["model_cost_usd"] == Decimal("2.0")
    assert table[first]["day"] == date(2025, 3, 14)


# ---- batching: one fold equals many batches ------------------------------------------------

START = datetime(2025, 3, 14, 22, 40, 0, tzinfo=UTC)  # the run crosses hours and midnight


def _disturb(rng: random.Random, fleet: Fleet) -> list[Event]:
    """Events the demo fleet never makes: lifecycle changes, lease expiries, stale or rival
    claims, cancellations and unusual heartbeats, so that every branch of the folds runs."""
    out: list[Event] = []
    agent = rng.choice(fleet.agents)
    me = agent.agent_id
    roll = rng.random()
    if roll < 0.05:  # by a service or a person, or by the agent itself (refused at times)
        by = rng.choice((None, me))
        out.append(paused(me, by=by or SVC) if rng.random() < 0.5 else resumed(me, by=by or USER))
    elif roll < 0.07:
        out.append(retired(me))
        if rng.random() < 0.5:  # it tries to come back on its own: refused
            out.append(registered(me, team="escaped", roles=("reviewer",)))
    elif roll < 0.09:  # by itself (refused once retired) or by a person (who brings it back)
        team = rng.choice(("research", "support", "infra"))
        out.append(registered(me, team=team, by=rng.choice((None, USER)), roles=("worker",)))
    elif roll < 0.11:
        out.append(AgentVersionChanged(**env(USER), agent=me, version=str(rng.randint(2, 9))))
    elif roll < 0.16 and agent.task is not None:
        out.append(lease_expired(me, agent.epoch, agent.task))
        in_review = any(task == agent.task for task, _ in fleet.review)
        if not in_review and rng.random() < 0.6:  # the agent notices; the task is claimed anew
            fleet.inbox.append(agent.task)
            agent.task = agent.run = None
        # otherwise it goes on with its old epoch, and the board rejects what it sends
    elif roll < 0.20 and agent.task is not None:
        rival = rng.choice(fleet.agents).agent_id
        out.append(claimed(rival, agent.epoch + rng.randint(0, 1), agent.task))
    elif roll < 0.22 and fleet.inbox:
        out.append(cancelled(rng.choice(fleet.inbox)))
    elif roll < 0.23 and fleet.inbox:
        task = rng.choice(fleet.inbox)
        out.append(claimed(me, fleet.epochs.get(task, 0), task))  # an epoch already used
    elif roll < 0.24:
        out.append(created(f"task-{rng.randint(1, fleet.task_no):05d}"))  # a duplicate
    elif roll < 0.26:
        out.append(progressed(me, 1, "task-unknown"))
    elif roll < 0.34:
        status: HeartbeatStatus = rng.choice(("waiting", "error"))
        out.append(heartbeat(status, me, agent.task))
    return out


@functools.cache
def generated() -> tuple[tuple[Event, Meta], ...]:
    """A few thousand events of a simulated fleet, each with its stream position and time."""
    fleet = Fleet(12, seed=13)
    rng = random.Random(13)
    now = START
    events = fleet.start(now)
    for _ in range(300):
        now += timedelta(seconds=1)
        events += fleet.tick(now)
        events += _disturb(rng, fleet)
    out: list[tuple[Event, Meta]] = []
    time = START
    for seq, event in enumerate(events, start=1):
        if rng.random() < 0.002:
            time += MAX_GAP + timedelta(seconds=rng.randint(1, 600))  # a silence
        else:
            time += timedelta(microseconds=rng.randint(0, 2_500_000))
        out.append((event, Meta(seq, time, subject_of(event))))
    return tuple(out)


def stream_of(projection: Projection) -> list[tuple[Event, Meta]]:
    """The generated events on the subjects ``projection`` reads."""
    prefixes = tuple(s.removesuffix(">") for s in projection.subjects)
    return [(e, m) for e, m in generated() if m.subject.startswith(prefixes)]


Tables = dict[str, dict[Key, Row]]


def apply_or_refuse(
    projection: Projection,
    rows: Rows,
    event: Event,
    meta: Meta,
    refused: Counter[str] | None = None,
) -> None:
    """Fold one event; one the fold refuses (``Rejected``: the projector dead-letters it)
    changes nothing, and is counted in ``refused`` by type (the state machines' refusals
    only: ``lifecycle_forbidden``, ``approval_forbidden``)."""
    try:
        projection.apply(rows, event, meta)
    except Rejected as r:
        assert r.reason in (FORBIDDEN, gates.FORBIDDEN), r
        if refused is not None:
            refused[type_name(type(event))] += 1


def fold_at_once(
    projection: Projection,
    items: list[tuple[Event, Meta]],
    refused: Counter[str] | None = None,
    outbox: list[tuple[Event, int]] | None = None,
) -> Tables:
    """Every event folded in one batch, on rows that start empty (what the folds emit is
    appended to ``outbox``)."""
    rows = Rows(outbox=outbox if outbox is not None else [])
    for event, meta in items:
        apply_or_refuse(projection, rows, event, meta, refused)
    return {t.name: dict(rows.data.get(t.name, {})) for t in projection.tables}


def fold_in_batches(
    projection: Projection,
    items: list[tuple[Event, Meta]],
    sizes: Callable[[], int],
    outbox: list[tuple[Event, int]] | None = None,
) -> Tables:
    """What the projector does: per batch, load only the rows ``touches`` names from the
    database (copies, as a round trip would make), fold, and write back the changed rows. What
    the folds emit is appended to ``outbox``."""
    db: Tables = {t.name: {} for t in projection.tables}
    i = 0
    while i < len(items):
        batch = items[i : i + sizes()]
        i += len(batch)
        rows = Rows(outbox=outbox if outbox is not None else [])
        for event, meta in batch:
            for table, key in projection.touches(event, meta):
                if key in db[table.name]:
                    rows.data.setdefault(table.name, {})[key] = copy.deepcopy(db[table.name][key])
        for event, meta in batch:  # the second round, on what the first one found
            for table, key in projection.touches_more(rows, event, meta):
                if key in db[table.name] and key not in rows.data.get(table.name, {}):
                    rows.data.setdefault(table.name, {})[key] = copy.deepcopy(db[table.name][key])
        for event, meta in batch:
            apply_or_refuse(projection, rows, event, meta)
        for table in projection.tables:
            for row in rows.changed(table):
                db[table.name][table.key_of(row)] = copy.deepcopy(row)
    return db


PROJECTIONS = [AgentRegistry(), TaskBoard(), Utilization(), Spend()]
CHUNKINGS: dict[str, Callable[[random.Random], Callable[[], int]]] = {
    "one-by-one": lambda rng: lambda: 1,
    "pairs": lambda rng: lambda: 2,
    "fixed-97": lambda rng: lambda: 97,
    "random": lambda rng: lambda: rng.choice((1, 3, 17, 50, 250, 1000)),
}


def test_generated_stream_exercises_every_path() -> None:
    """Guards the batching test below: the stream is long and reaches every branch."""
    assert len(generated()) > 2000
    agents = fold_at_once(AgentRegistry(), stream_of(AgentRegistry()))[AGENTS.name]
    assert {r["status"] for r in agents.values()} >= {"active", "paused", "retired"}
    refused: Counter[str] = Counter()  # the agents' own events refused at times
    fold_at_once(AgentRegistry(), stream_of(AgentRegistry()), refused)
    assert refused["agent.registered"] and refused["agent.resumed"], refused
    assert any(r["registered_by"] == USER for r in agents.values())

    tasks = fold_at_once(TaskBoard(), stream_of(TaskBoard()))
    assert {r["status"] for r in tasks[TASKS.name].values()} >= {
        "inbox",
        "in_progress",
        "done",
        "cancelled",
    }  # every done task passed through review; deliverables and rework show it below
    assert len(tasks[DELIVERABLES.name]) > 20
    assert any(r["claim_epoch"] > 1 for r in tasks[TASKS.name].values())
    assert any(r["rework_count"] > 0 for r in tasks[TASKS.name].values())
    reasons = {r["reason"].split(" ")[0] for r in tasks[REJECTIONS.name].values()}
    assert {"epoch", "task", "unknown"} <= reasons, reasons
    rows = Rows()
    for event, meta in stream_of(TaskBoard()):
        apply_or_refuse(TaskBoard(), rows, event, meta)
    verdicts = {e.reason.split(" ")[0] for e, _ in rows.outbox if isinstance(e, TaskClaimRefused)}
    assert "agent" in verdicts, verdicts  # claims the board overruled

    util = fold_at_once(Utilization(), stream_of(Utilization()))
    assert len({hour for _, hour in util[HOURLY.name]}) >= 2
    assert all(r["busy_us"] > 0 for r in util[UTILIZATION.name].values())
    assert all(r["idle_us"] > 0 for r in util[UTILIZATION.name].values())

    spend = fold_at_once(Spend(), stream_of(Spend()))
    assert len({day for _, day, _ in spend[SPEND_DAILY.name]}) >= 2
    assert len({r["team"] for r in spend[SPEND_DAILY.name].values()}) >= 4
    # agents that spent under several teams on one day (re-registered in between)
    assert len({k for k in spend[SPEND_DAILY.name]}) > len({k[:2] for k in spend[SPEND_DAILY.name]})


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("projection", PROJECTIONS, ids=[p.name for p in PROJECTIONS])
def test_batched_fold_equals_one_fold(projection: Projection, chunking: str) -> None:
    items = stream_of(projection)
    assert len(items) > 500
    whole = fold_at_once(projection, items)
    batched = fold_in_batches(projection, items, CHUNKINGS[chunking](random.Random(5)))
    for table in projection.tables:
        assert whole[table.name], f"{table.name} is empty: the test would prove nothing"
        missing = whole[table.name].keys() ^ batched[table.name].keys()
        assert not missing, f"{table.name}: keys in only one of the folds: {sorted(missing)[:5]}"
        for key, row in whole[table.name].items():
            assert batched[table.name][key] == row, f"{table.name} {key} differs"


# ---- claims judged by the board ------------------------------------------------------------


def test_a_task_waits_for_its_dependencies() -> None:
    fold = task_fold(created("task-a"), created("task-b", depends_on=("task-a",)))
    overruled(fold, claimed(AGENT, 1, "task-b"), "waiting on dependencies: task-a")
    fold(claimed(OTHER, 1, "task-a"))
    fold(submitted(OTHER, 1, "task-a"))
    overruled(fold, claimed(AGENT, 2, "task-b"), "waiting on dependencies: task-a")  # in review
    fold(reviewed("approve", OTHER, "task-a"))
    fold(claimed(AGENT, 3, "task-b"))
    assert fold.row(TASKS, "task-b")["assignee"] == AGENT


def test_creation_refuses_a_cycle() -> None:
    fold = board()
    meta = fold(created(depends_on=(TASK,)))
    assert fold.rows.get(TASKS, (TASK,)) is None
    rejection = fold.rows.get(REJECTIONS, (TASK, meta.seq))
    assert rejection is not None and "cannot depend on itself" in rejection["reason"]


def test_a_task_with_an_unknown_dependency_is_cancelled_by_the_board() -> None:
    """Its subject alone cannot show that a dependency does not exist: the board's verdict
    (a cancellation) does, for every reader."""
    fold = board()
    overruled(fold, created(depends_on=("task-nowhere",)), "unknown task(s) task-nowhere")
    assert fold.row(TASKS, TASK)["status"] == "cancelled"


def test_a_claim_needs_the_required_role() -> None:
    fold = task_fold(created(required_role="writer"))
    overruled(fold, claimed(OTHER), "lacks the role writer")
    fold(claimed(AGENT, 2))  # AGENT holds "writer"
    assert fold.row(TASKS, TASK)["assignee"] == AGENT


@pytest.mark.parametrize(
    ("event", "status"),
    [
        (lambda: paused(AGENT), "paused"),
        (lambda: retired(AGENT), "retired"),
        (lambda: AgentOffline(**env("svc:watchdog"), agent=AGENT, escalation="esc-1"), "offline"),
    ],
)
def test_only_an_active_agent_may_claim(event: Callable[[], Event], status: str) -> None:
    fold = task_fold(created(), event())
    overruled(fold, claimed(AGENT), f"agent {AGENT} is {status}")


def test_an_agent_back_online_or_resumed_may_claim_again() -> None:
    offline = AgentOffline(**env("svc:watchdog"), agent=AGENT, escalation="esc-1")
    online = AgentOnline(**env("svc:watchdog"), agent=AGENT, escalation="esc-1")
    fold = task_fold(created(), created("task-2"), offline, online, paused(), resumed())
    fold(claimed(AGENT))
    assert fold.row(TASK_AGENTS, AGENT)["held"] == 1


def test_an_unregistered_agent_may_not_claim() -> None:
    fold = task_fold(created())
    overruled(fold, claimed("agent-stranger"), "agent-stranger is not registered")


def test_the_concurrency_limit_counts_held_tasks() -> None:
    fold = task_fold(created("t1"), created("t2"), created("t3"), claimed(AGENT, 1, "t1"))
    overruled(fold, claimed(AGENT, 1, "t2"), "already holds 1 task(s), its limit")
    assert fold.row(TASK_AGENTS, AGENT)["held"] == 1  # the refused claim holds nothing
    fold(submitted(AGENT, 1, "t1"))  # in review: no longer held
    fold(claimed(AGENT, 2, "t2"))
    fold(reviewed("reject", AGENT, "t1"))  # rework owed: held again, even past the limit
    assert fold.row(TASK_AGENTS, AGENT)["held"] == 2
    overruled(fold, claimed(AGENT, 1, "t3"), "already holds 2 task(s)")
    fold(released(AGENT, 2, "t2"))
    fold(lease_expired(AGENT, 1, "t1"))
    assert fold.row(TASK_AGENTS, AGENT)["held"] == 0
    fold(claimed(AGENT, 2, "t3"))


def test_a_larger_limit_allows_more_tasks_at_once() -> None:
    fold = Fold(TaskBoard())
    fold(registered(AGENT, max_concurrent_tasks=2))
    for task in ("t1", "t2", "t3"):
        fold(created(task))
    fold(claimed(AGENT, 1, "t1"))
    fold(claimed(AGENT, 1, "t2"))
    overruled(fold, claimed(AGENT, 1, "t3"), "already holds 2 task(s)")
    fold(cancelled("t1"))  # cancelling a held task frees its holder
    fold(claimed(AGENT, 2, "t3"))
    assert fold.row(TASK_AGENTS, AGENT)["held"] == 2


def test_agent_activity_naming_a_task_does_not_move_it() -> None:
    fold = task_fold(created(), claimed())
    before = copy.deepcopy(fold.row(TASKS, TASK))
    fold(RunStarted(**env(AGENT), agent=AGENT, run="run-9", task=TASK))
    fold(tool(0.5))
    assert fold.row(TASKS, TASK) == before
    assert fold.table(REJECTIONS) == {}


def test_only_people_services_and_reviewer_agents_may_review() -> None:
    fold = task_fold(created(), claimed(), submitted())
    fold(registered("agent-rev", roles=("reviewer",)))
    by_worker = TaskReviewed(**env(OTHER), task=TASK, agent=AGENT, verdict="approve")
    overruled(fold, by_worker, f"{OTHER} lacks the role reviewer")
    assert fold.row(TASKS, TASK)["review_rounds"] == 0  # the review was undone
    by_reviewer = TaskReviewed(**env("agent-rev"), task=TASK, agent=AGENT, verdict="reject")
    fold(by_reviewer)
    assert fold.row(TASKS, TASK)["review_rounds"] == 1
    fold(submitted(content="v2"))
    fold(reviewed("approve"))  # a person (user:reviewer)
    assert fold.row(TASKS, TASK)["status"] == "done"


def test_money_adds_exactly_however_far_apart_the_figures() -> None:
    """A day's spend is a sum of figures from 5e-324 to 1e6 USD: the default decimal context
    (28 digits) rounded 1e6 + 1e-30 to 1e6; the sums must stay exact, live and after a rebuild."""
    from decimal import Decimal  # noqa: PLC0415

    from fleetward.projections.money import add_money  # noqa: PLC0415

    total = Decimal(0)
    for x in (1e6, 5e-324, 1e-30, 0.1):
        total = add_money(total, x)
    exact = "1000000.1" + "0" * 28 + "1" + "0" * 293 + "5"  # written out, no context involved
    assert total == Decimal(exact)


def test_retiring_an_agent_takes_back_what_it_holds_and_what_is_assigned_to_it() -> None:
    fold = board()
    fold(registered(AGENT, roles=("writer",), max_concurrent_tasks=2))
    fold(created("held"))
    fold(created("queued"))
    fold(claimed(AGENT, 1, "held"))
    fold(TaskAssigned(**env(USER), task="queued", agent=AGENT))
    assert fold.row(TASK_AGENTS, AGENT)["assigned_tasks"] == ["queued"]
    fold(retired(AGENT))
    for task in ("held", "queued"):
        row = fold.row(TASKS, task)
        assert (row["status"], row["assignee"]) == ("inbox", None), task
    told = [(e.command, e.task) for e in fold.emitted if isinstance(e, CommandIssued)]
    assert ("lease_lost", "held") in told and ("lease_lost", "queued") in told
    assert fold.row(TASK_AGENTS, AGENT)["assigned_tasks"] == []


def test_a_dependency_change_the_board_refuses_is_put_back_for_every_reader() -> None:
    """A new dependency must be older than the task; the subject alone cannot show that, so the
    board publishes the old dependencies again (a verdict every reader folds)."""
    fold = task_fold(created("old"), created(), created("young"))
    change = TaskDependenciesChanged(**env(USER), task=TASK, depends_on=("young",))
    overruled(fold, change, "was created after")
    assert fold.row(TASKS, TASK)["depends_on"] == []
    fold(TaskDependenciesChanged(**env(USER), task=TASK, depends_on=("old",)))
    assert fold.row(TASKS, TASK)["depends_on"] == ["old"]
