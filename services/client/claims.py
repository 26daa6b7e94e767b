"""The claim protocol (DESIGN 3.2, 3.3): how an agent takes a task, atomically, on the stream,
and how it keeps the right to report on it.

Claiming: the claimer folds the task's events with the task state machine (projections/tasks.py
``step``), checks the claim as the board would, and publishes it with
``Nats-Expected-Last-Subject-Sequence`` set to the last sequence it read over all of the task's
subjects (``Nats-Expected-Last-Subject-Sequence-Subject: fw.task.<task>.>``). The first claim
wins; any other publish on the task in between, by any actor, makes the server answer "wrong
last sequence" (10071), and the claimer reads again. A retried publish may instead come back
as a duplicate (a cluster checks the message id before the expected sequence; one server checks
the sequence first). Either way the answer is settled by the *identity* of the stored claim: the
task's current claim is ours only if its event id is the one we published (two processes of
one agent compute the same epoch; only one of them published the winning event).

Holding: progress, block, release and submit are published with compare-and-set on the last
sequence the holder knows of the task. Anything else stored on the task meanwhile (a lease
expiry, a revocation, the board's verdict on the claim, a cancellation) makes the server refuse
the publish; the holder reads the task again and goes on only if the claim is still its own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from nats.js.errors import APIError

from fleetward.projections.tasks import HELD, agent_claim_problem, task_claim_problem
from fleetward.schemas.events import TaskClaimed
from fleetward.schemas.headers import WRONG_LAST_SEQUENCES
from fleetward.services.client.publisher import Publisher
from fleetward.services.client.taskstate import TaskState, read_task
from fleetward.services.jetstream.publish import RIDE_OUT_S, TRANSIENT


class ClaimLost(Exception):
    """The claim did not take the task, or no longer holds it; ``reason`` says why (another
    agent won, not claimable, the lease expired, revoked, refused by the board)."""

    def __init__(self, task: str, reason: str) -> None:
        super().__init__(f"{task}: {reason}")
        self.task, self.reason = task, reason


class AgentPaused(ClaimLost):
    """This agent is paused (or retired): it may take no new work until it is resumed."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A task this agent holds, in one epoch; ``id`` is the event id of the claim."""

    task: str
    epoch: int
    lease_s: float
    id: str = ""


def claimant(
    roles: Sequence[str], held: int, max_concurrent_tasks: int, status: str = "active"
) -> dict[str, Any]:
    """An agent as the board's claim check sees it: registered, its status, roles and the tasks
    it holds."""
    return {
        "registered": True,
        "status": status,
        "roles": list(roles),
        "held": held,
        "max_concurrent_tasks": max_concurrent_tasks,
    }


def holder_problem(row: dict[str, Any] | None, claim: Claim, agent: str) -> str | None:
    """Why ``agent`` no longer holds ``claim`` by the task's folded ``row``, or None."""
    if row is None:
        return "no such task"
    mine = row["assignee"] == agent and row["claim_epoch"] == claim.epoch
    if claim.id:
        mine = mine and row["claim_id"] == claim.id
    if not mine:
        by = f", held by {row['assignee']} in epoch {row['claim_epoch']}" if row["assignee"] else ""
        return f"the claim is no longer this agent's: the task is {row['status']}{by}"
    if row["status"] not in HELD:
        return f"task is {row['status']}"
    return None


async def claim_task(
    pub: Publisher,
    task: str,
    *,
    agent: str,
    me: Callable[[], dict[str, Any]],
    lease_s: float,
    attempts: int,
    gate: Callable[[], Awaitable[None]] | None = None,
) -> tuple[TaskClaimed, int]:
    """Publish ``agent``'s claim of ``task`` for a new epoch, compare-and-set over the task's
    subjects: the claim that took the task and the sequence it was stored at, or ``ClaimLost``
    saying why not. ``me`` is the agent as the board sees it (``claimant``), asked again at each
    attempt. ``gate`` (e.g. taking the agent's inbox; it raises to stop the claim) runs at each
    attempt once the task is read, before the claim is judged: the read's answer comes after
    every message the server had sent this connection before, so the gate sees them all."""
    for _ in range(attempts):
        state = await read_task(pub.nc, pub.js, task, roles=pub.roles, cache=pub.tasks)
        if gate is not None:
            await gate()
        claim = await _claim_event(pub, state, agent, me, lease_s)
        try:
            ack = await pub.send(claim, expect=state.last_seq)
        except APIError as exc:
            if exc.err_code not in WRONG_LAST_SEQUENCES:
                raise
            now = await _settle(pub, task)
            if now.row is not None and now.row["claim_id"] == claim.id:
                return claim, now.last_seq  # an earlier try of this very claim did land
            continue  # someone published first: read again and judge again
        if ack.duplicate:  # a retry of this very claim, stored before (on a cluster)
            now = await _settle(pub, task)
            if now.row is None or now.row["claim_id"] != claim.id:
                raise ClaimLost(task, "the claim was stored before and did not take the task")
            return claim, now.last_seq
        return claim, ack.seq
    raise ClaimLost(task, "other agents kept publishing on the task first")


async def _settle(pub: Publisher, task: str) -> TaskState:
    """The task read after the server's answer left open whether the claim took it. That
    answer may come from a cluster electing a new leader for the stream (the old one stored the
    claim and died before acknowledging it), so a read that meets the election is tried again
    while ``publish`` itself would ride it out: giving up here would leave the task held by a
    claim its agent does not know it won."""
    give_up = time.monotonic() + RIDE_OUT_S
    delay = 0.05
    while True:
        try:
            return await read_task(pub.nc, pub.js, task, roles=pub.roles, cache=pub.tasks)
        except TRANSIENT:
            if time.monotonic() + delay > give_up:
                raise
            await anyio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def _claim_event(
    pub: Publisher,
    state: TaskState,
    agent: str,
    me: Callable[[], dict[str, Any]],
    lease_s: float,
) -> TaskClaimed:
    """The claim to publish, judged against the folded task and its dependencies."""
    if state.row is None:
        raise ClaimLost(state.task, "no such task")
    claim = TaskClaimed(
        **pub.envelope(),
        task=state.task,
        agent=agent,
        epoch=state.row["claim_epoch"] + 1,
        lease_s=lease_s,
    )
    problem = task_claim_problem(state.row, claim) or agent_claim_problem(state.row, me(), claim)
    if problem is None:
        for dep in state.row["depends_on"]:
            row = (await read_task(pub.nc, pub.js, dep, roles=pub.roles, cache=pub.tasks)).row
            if row is None or row["status"] != "done":
                problem = f"waiting on dependencies: {dep}"
                break
    if problem:
        raise ClaimLost(state.task, problem)
    return claim
