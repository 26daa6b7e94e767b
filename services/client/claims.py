"""The claim protocol (DESIGN 3.2): how an agent takes a task, atomically, on the stream.

The claimer folds the task's subject from the stream, checks the claim as the board would, and
publishes it with ``Nats-Expected-Last-Subject-Sequence`` set to the last sequence it read. The
first claim wins; any other publish on that subject in between makes the server answer "wrong
last sequence" (10071), and the claimer reads again. A retried publish may instead come back as
a duplicate. Either way the answer is settled by reading the subject.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nats.js.errors import APIError

from fleetward.projections.tasks import agent_claim_problem, task_claim_problem
from fleetward.schemas.events import TaskClaimed
from fleetward.schemas.headers import EXPECTED_LAST_SUBJECT_SEQ, WRONG_LAST_SEQUENCE
from fleetward.services.client.publisher import Publisher
from fleetward.services.client.taskstate import TaskState, read_task


class ClaimLost(Exception):
    """The claim did not take the task; ``reason`` says why (another agent won, not claimable)."""

    def __init__(self, task: str, reason: str) -> None:
        super().__init__(f"{task}: {reason}")
        self.task, self.reason = task, reason


@dataclass(frozen=True, slots=True)
class Claim:
    """A task this agent holds, in one epoch."""

    task: str
    epoch: int
    lease_s: float


def claimant(roles: Sequence[str], held: int, max_concurrent_tasks: int) -> dict[str, Any]:
    """An agent as the board's claim check sees it: active, its roles, the tasks it holds."""
    return {
        "status": "active",
        "roles": list(roles),
        "held": held,
        "max_concurrent_tasks": max_concurrent_tasks,
    }


async def claim_task(
    pub: Publisher,
    task: str,
    *,
    agent: str,
    me: Callable[[], dict[str, Any]],
    lease_s: float,
    attempts: int,
) -> TaskClaimed:
    """Publish ``agent``'s claim of ``task`` for a new epoch, compare-and-set on the task's
    subject; the claim that took the task, or ``ClaimLost`` saying why not. ``me`` is the agent
    as the board sees it (``claimant``), asked again at each attempt."""
    for _ in range(attempts):
        state = await read_task(pub.nc, pub.js, task)
        claim = await _claim_event(pub, state, agent, me, lease_s)
        try:
            ack = await pub.send(claim, **{EXPECTED_LAST_SUBJECT_SEQ: str(state.last_seq)})
        except APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            if await _holds(pub, task, agent, claim.epoch):  # an earlier try of ours did land
                return claim
            continue  # someone published first: read again and judge again
        if ack.duplicate and not await _holds(pub, task, agent, claim.epoch):
            raise ClaimLost(task, "the claim was stored before and did not take the task")
        return claim
    raise ClaimLost(task, "other agents kept publishing on the task first")


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
            row = (await read_task(pub.nc, pub.js, dep)).row
            if row is None or row["status"] != "done":
                problem = f"waiting on dependencies: {dep}"
                break
    if problem:
        raise ClaimLost(state.task, problem)
    return claim


async def _holds(pub: Publisher, task: str, agent: str, epoch: int) -> bool:
    """Settle by reading: does ``agent`` hold ``task`` in ``epoch`` now?"""
    row = (await read_task(pub.nc, pub.js, task)).row
    return bool(row and row["assignee"] == agent and row["claim_epoch"] == epoch)
