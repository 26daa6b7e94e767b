"""Lease bookkeeping, pure: claims lapse after lease_s of silence, renewals push the deadline.
The book follows each task's row as the task mirror folds it (the task state machine), as the
watchdog feeds it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fleetward.schemas import new_id
from fleetward.schemas.events import (
    Deliverable,
    Event,
    TaskBlocked,
    TaskCancelled,
    TaskClaimed,
    TaskClaimRefused,
    TaskCreated,
    TaskLeaseExpired,
    TaskProgressed,
    TaskReleased,
    TaskReviewed,
    TaskRevoked,
    TaskSubmitted,
)
from fleetward.services.watchdog.core.leases import Lapse, LeaseBook
from fleetward.services.watchdog.core.mirror import TaskWatch, micros

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
SHA = "0" * 64


def env(actor: str) -> dict[str, Any]:
    return {"id": new_id(), "actor": actor, "at": T0}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Book:
    """A lease book fed as the judge feeds it: every task event through the mirror, then the
    task's row with the event's sequence."""

    def __init__(self) -> None:
        self.mirror = TaskWatch()
        self.book = LeaseBook()
        self.seq = 0

    def __call__(self, event: Event, when: float = 0, seq: int | None = None) -> None:
        self.seq = seq if seq is not None else self.seq + 1
        moved = self.mirror.apply(event, self.seq, micros(at(when)))
        self.book.observe(moved.task, self.mirror.rows.get(moved.task), self.seq)

    def claim(self, *, task: str = "t1", agent: str = "a1", epoch: int = 1, when: float = 0,
              seq: int | None = None, lease_s: float = 10) -> TaskClaimed:  # fmt: skip
        if task not in self.mirror.rows and task not in self.mirror.ended:
            self(TaskCreated(**env("user:p"), task=task, project="p", title=task), when)
        event = TaskClaimed(**env(agent), task=task, agent=agent, epoch=epoch, lease_s=lease_s)
        self(event, when, seq)
        return event


def test_a_silent_claim_lapses_at_its_deadline_once() -> None:
    b = Book()
    b.claim(seq=7)
    assert b.book.due(at(9.999)) == []
    assert b.book.due(at(10)) == [Lapse("t1", "a1", 1, at(10), 7)]
    assert b.book.due(at(60)) == []  # reported once


def test_progress_a_block_and_heartbeats_naming_the_task_renew_the_lease() -> None:
    b = Book()
    b.claim()
    b(TaskProgressed(**env("a1"), task="t1", agent="a1", epoch=1), 8)
    assert b.book.due(at(17)) == []
    b.book.heartbeat("a1", "t1", at(15))
    b.book.heartbeat("a1", "other", at(24))
    b.book.heartbeat("a2", "t1", at(24))
    assert b.book.due(at(24.9)) == []
    assert [(x.task, x.deadline, x.expected_seq) for x in b.book.due(at(25))] == [
        ("t1", at(25), 3)]  # fmt: skip
    b(TaskBlocked(**env("a1"), task="t1", agent="a1", epoch=1, reason="waiting"), 30)
    assert [x.deadline for x in b.book.due(at(40))] == [at(40)]


def test_an_old_epoch_does_not_renew_the_new_claim() -> None:
    b = Book()
    b.claim(agent="a1", epoch=1)
    b(TaskLeaseExpired(**env("svc:watchdog"), task="t1", agent="a1", epoch=1), 10)
    b.claim(agent="a2", epoch=2, when=11)
    b(TaskProgressed(**env("a1"), task="t1", agent="a1", epoch=1), 15)
    b.book.heartbeat("a1", "t1", at(16))
    assert [(x.agent, x.epoch, x.deadline) for x in b.book.due(at(21))] == [("a2", 2, at(21))]


def test_submission_ends_the_lease_and_a_rejection_opens_it_again() -> None:
    b = Book()
    b.claim()
    deliverable = Deliverable(kind="markdown", sha256=SHA, content="x")
    b(TaskSubmitted(**env("a1"), task="t1", agent="a1", epoch=1, deliverable=deliverable), 5)
    b.book.heartbeat("a1", "t1", at(6))  # nothing to renew while in review
    assert b.book.due(at(1000)) == [] and len(b.book) == 0
    b(TaskReviewed(**env("user:r"), task="t1", agent="a1", verdict="reject"), 2000)
    assert [(x.agent, x.epoch, x.deadline) for x in b.book.due(at(2010))] == [("a1", 1, at(2010))]


def test_release_approval_and_cancellation_end_the_lease() -> None:
    b = Book()
    for task in ("t1", "t2", "t3"):
        b.claim(task=task)
    b(TaskReleased(**env("a1"), task="t1", agent="a1", epoch=1), 1)
    b(TaskCancelled(**env("user:o"), task="t2"), 1)
    deliverable = Deliverable(kind="markdown", sha256=SHA, content="x")
    b(TaskSubmitted(**env("a1"), task="t3", agent="a1", epoch=1, deliverable=deliverable), 1)
    b(TaskReviewed(**env("user:r"), task="t3", agent="a1", verdict="approve"), 1)
    assert b.book.due(at(100)) == [] and len(b.book) == 0


def test_a_lapse_that_could_not_be_published_comes_again() -> None:
    b = Book()
    b.claim()
    (lapse,) = b.book.due(at(10))
    b.book.again(lapse)
    assert b.book.due(at(10)) == [lapse]


def test_news_of_the_task_judges_a_reported_lapse_again_on_top_of_it() -> None:
    b = Book()
    b.claim()
    assert len(b.book.due(at(10))) == 1
    b(TaskProgressed(**env("a2"), task="t1", agent="a2", epoch=1), 11)  # refused, but stored
    assert b.book.due(at(11)) == [Lapse("t1", "a1", 1, at(10), b.seq)]


def test_checks_touch_only_what_is_due() -> None:
    b = Book()
    for i in range(10_000):
        b.claim(task=f"t{i}", agent=f"a{i}", lease_s=10 + i)
    assert len(b.book.due(at(15))) == 6  # leases of 10..15 s
    assert len(b.book._heap) == 10_000 - 6  # nothing else was looked at or dropped
    assert b.book.holders("a3")[0].task == "t3"


def test_a_revoke_or_a_refused_claim_ends_the_lease_of_that_claim_only() -> None:
    b = Book()
    b.claim(task="t1")
    claim = b.claim(task="t2")
    b.claim(task="t3")
    b(TaskRevoked(**env("user:o"), task="t1", agent="a1", epoch=1), 1)
    b(TaskClaimRefused(**env("svc:board"), task="t2", agent="a1", epoch=1,
                       claim=claim.id, reason="paused"), 1)  # fmt: skip
    b(TaskRevoked(**env("user:o"), task="t3", agent="a1", epoch=9), 1)
    b(TaskClaimRefused(**env("svc:board"), task="t3", agent="a1", epoch=1,
                       claim="another claim", reason="paused"), 1)  # fmt: skip
    assert [x.task for x in b.book.due(at(60))] == ["t3"]


def test_a_refused_claim_never_replaces_the_holders_lease() -> None:
    """Issue 12: a claim the board refuses replaced the real holder's lease (the lease book
    followed claims, not the board). A claim of a held task fits no state: nothing changes."""
    b = Book()
    b.claim(agent="a1", epoch=1)
    b.claim(agent="paused", epoch=2, when=1)  # the task is held: refused by the task's state
    b.book.heartbeat("paused", "t1", at(9))
    b.book.heartbeat("a1", "t1", at(5))
    assert [(x.agent, x.epoch, x.deadline) for x in b.book.due(at(20))] == [("a1", 1, at(15))]


def test_a_claim_on_a_cancelled_task_opens_no_lease() -> None:
    b = Book()
    b(TaskCreated(**env("user:p"), task="t1", project="p", title="t1"))
    b(TaskCancelled(**env("user:o"), task="t1"))
    b.claim(agent="a1", epoch=1, when=1)
    assert len(b.book) == 0 and b.book.due(at(1000)) == []
