"""Lease bookkeeping, pure: claims lapse after lease_s of silence, renewals push the deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fleetward.schemas import new_id
from fleetward.schemas.events import (
    Deliverable,
    Heartbeat,
    TaskCancelled,
    TaskClaimed,
    TaskClaimRefused,
    TaskLeaseExpired,
    TaskProgressed,
    TaskReleased,
    TaskReviewed,
    TaskRevoked,
    TaskSubmitted,
)
from fleetward.services.watchdog.core.leases import Lapse, LeaseBook

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
SHA = "0" * 64


def env(actor: str) -> dict[str, Any]:
    return {"id": new_id(), "actor": actor, "at": T0}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def claim(book: LeaseBook, *, task: str = "t1", agent: str = "a1", epoch: int = 1,
          when: float = 0, seq: int = 1, lease_s: float = 10) -> None:  # fmt: skip
    event = TaskClaimed(**env(agent), task=task, agent=agent, epoch=epoch, lease_s=lease_s)
    book.observe(event, at(when), seq)


def test_a_silent_claim_lapses_at_its_deadline_once() -> None:
    book = LeaseBook()
    claim(book, seq=7)
    assert book.due(at(9.999)) == []
    assert book.due(at(10)) == [Lapse("t1", "a1", 1, at(10), 7)]
    assert book.due(at(60)) == []  # reported once


def test_progress_and_heartbeats_naming_the_task_renew_the_lease() -> None:
    book = LeaseBook()
    claim(book)
    book.observe(TaskProgressed(**env("a1"), task="t1", agent="a1", epoch=1), at(8), 2)
    assert book.due(at(17)) == []
    book.observe(Heartbeat(**env("a1"), agent="a1", task="t1"), at(15), 1)
    book.observe(Heartbeat(**env("a1"), agent="a1", task="other"), at(24), 2)
    book.observe(Heartbeat(**env("a2"), agent="a2", task="t1"), at(24), 3)
    assert book.due(at(24.9)) == []
    assert [(x.task, x.deadline, x.expected_seq) for x in book.due(at(25))] == [("t1", at(25), 2)]


def test_an_old_epoch_does_not_renew_the_new_claim() -> None:
    book = LeaseBook()
    claim(book, agent="a1", epoch=1)
    book.observe(TaskLeaseExpired(**env("svc:watchdog"), task="t1", agent="a1", epoch=1), at(10), 2)
    claim(book, agent="a2", epoch=2, when=11, seq=3)
    book.observe(TaskProgressed(**env("a1"), task="t1", agent="a1", epoch=1), at(15), 4)
    assert [(x.agent, x.epoch, x.deadline) for x in book.due(at(21))] == [("a2", 2, at(21))]


def test_submission_pauses_the_lease_and_a_rejection_restarts_it() -> None:
    book = LeaseBook()
    claim(book)
    deliverable = Deliverable(kind="markdown", sha256=SHA, content="x")
    book.observe(
        TaskSubmitted(**env("a1"), task="t1", agent="a1", epoch=1, deliverable=deliverable),
        at(5),
        2,
    )
    assert book.due(at(1000)) == []
    book.observe(
        TaskReviewed(**env("user:r"), task="t1", agent="a1", verdict="reject"), at(2000), 3
    )
    assert [x.deadline for x in book.due(at(2010))] == [at(2010)]


def test_release_approval_and_cancellation_end_the_lease() -> None:
    book = LeaseBook()
    claim(book, task="t1")
    claim(book, task="t2", seq=2)
    claim(book, task="t3", seq=3)
    book.observe(TaskReleased(**env("a1"), task="t1", agent="a1", epoch=1), at(1), 4)
    book.observe(TaskCancelled(**env("user:o"), task="t2"), at(1), 5)
    book.observe(TaskReviewed(**env("user:r"), task="t3", agent="a1", verdict="approve"), at(1), 6)
    assert book.due(at(100)) == [] and len(book) == 0


def test_a_lapse_that_could_not_be_published_comes_again() -> None:
    book = LeaseBook()
    claim(book)
    (lapse,) = book.due(at(10))
    book.again(lapse)
    assert book.due(at(10)) == [lapse]


def test_checks_touch_only_what_is_due() -> None:
    book = LeaseBook()
    for i in range(10_000):
        claim(book, task=f"t{i}", agent=f"a{i}", lease_s=10 + i, seq=i + 1)
    assert len(book.due(at(15))) == 6  # leases of 10..15 s
    assert len(book._heap) == 10_000 - 6  # nothing else was looked at or dropped
    assert book.holders("a3")[0].task == "t3"


def test_a_revoke_or_a_refused_claim_ends_the_lease_of_that_claim_only() -> None:
    book = LeaseBook()
    claim(book, task="t1")
    claim(book, task="t2")
    claim(book, task="t3")
    book.observe(TaskRevoked(**env("user:o"), task="t1", agent="a1", epoch=1), at(1), 2)
    book.observe(TaskClaimRefused(**env("svc:board"), task="t2", agent="a1", epoch=1,
                                  claim="c", reason="paused"), at(1), 3)  # fmt: skip
    book.observe(TaskRevoked(**env("user:o"), task="t3", agent="a1", epoch=9), at(1), 4)
    assert [x.task for x in book.due(at(60))] == ["t3"]
