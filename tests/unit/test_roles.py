"""Roles judged by position (schemas/roles.py): a role counts from the event after its grant,
until the event after its revocation; admin holds all; a later grant never makes an earlier
event valid; only an admin (or the signing keys' holder) grants."""

from __future__ import annotations

import pytest

from fleetward.schemas.admission import Rejected
from fleetward.schemas.events import (
    EVENT_TYPES,
    BudgetSet,
    Event,
    RoleGranted,
    RoleRevoked,
    TaskAssigned,
    TaskCancelled,
    TaskReviewed,
)
from fleetward.schemas.roles import (
    PERSON_ROLES,
    ROLE_AUTHORITY,
    RoleBook,
    check_role,
    judged_by_roles,
)
from tests.helpers import envelope


def grant(person: str, role: str, by: str = ROLE_AUTHORITY) -> RoleGranted:
    return RoleGranted(**envelope(by), person=person, role=role)  # type: ignore[arg-type]


def revoke(person: str, role: str, by: str = ROLE_AUTHORITY) -> RoleRevoked:
    return RoleRevoked(**envelope(by), person=person, role=role)  # type: ignore[arg-type]


def cancel(by: str) -> TaskCancelled:
    return TaskCancelled(**envelope(by), task="t-1")


def judged(event: Event, seq: int, book: RoleBook) -> str | None:
    try:
        check_role(event, seq, book)
    except Rejected as r:
        return r.reason
    return None


def test_every_type_a_person_may_publish_names_the_role_it_needs() -> None:
    for cls in EVENT_TYPES:
        assert ("user" in cls.SENDERS) == (cls in PERSON_ROLES), cls


def test_a_role_counts_from_after_its_grant_until_after_its_revocation() -> None:
    book = RoleBook()
    book.note(10, grant("bob", "operator"))
    book.note(20, revoke("bob", "operator"))
    assert judged(cancel("user:bob"), 9, book) == "role_missing"
    assert judged(cancel("user:bob"), 10, book) == "role_missing"  # the grant itself
    assert judged(cancel("user:bob"), 11, book) is None
    assert judged(cancel("user:bob"), 20, book) is None  # revoked only after its own position
    assert judged(cancel("user:bob"), 21, book) == "role_missing"


def test_a_role_granted_later_does_not_make_an_earlier_event_valid() -> None:
    book = RoleBook()
    book.note(50, grant("late", "operator"))  # the book knows the future: it does not count
    assert judged(cancel("user:late"), 40, book) == "role_missing"
    assert judged(cancel("user:late"), 51, book) is None


def test_admin_holds_every_role_and_a_viewer_none() -> None:
    book = RoleBook()
    book.note(1, grant("root", "admin"))
    book.note(2, grant("eve", "viewer"))
    review = TaskReviewed(**envelope("user:root"), task="t", agent="a", verdict="approve")
    budget = BudgetSet(**envelope("user:root"), budget="b", scope="team", scope_id="x",
                       window="day", limit_usd=1)  # fmt: skip
    for event in (cancel("user:root"), review, budget, grant("x", "operator", by="user:root")):
        assert judged(event, 3, book) is None
    eve = (cancel("user:eve"), TaskAssigned(**envelope("user:eve"), task="t", agent="a"),
           grant("eve", "admin", by="user:eve"))  # fmt: skip
    assert [judged(e, 3, book) for e in eve] == ["role_missing"] * 3


def test_an_operator_may_not_grant_roles_and_only_the_authority_among_services() -> None:
    book = RoleBook()
    book.note(1, grant("op", "operator"))
    assert judged(grant("friend", "admin", by="user:op"), 2, book) == "role_missing"
    assert judged(grant("friend", "admin", by="svc:watchdog"), 2, book) == "actor_forbidden"
    assert judged(grant("friend", "admin", by=ROLE_AUTHORITY), 2, book) is None


def test_agents_and_services_need_no_person_role() -> None:
    book = RoleBook()
    assert judged(cancel("svc:board"), 5, book) is None
    assert judged(TaskReviewed(**envelope("rev-agent"), task="t", agent="a", verdict="approve"),
                  5, book) is None  # fmt: skip


@pytest.mark.parametrize("twice", [False, True])
def test_noting_a_change_twice_is_harmless(twice: bool) -> None:
    book = RoleBook()
    for _ in range(2 if twice else 1):
        book.note(3, grant("bob", "reviewer"))
        book.note(7, revoke("bob", "reviewer"))
    assert book.roles("bob", 5) == ("reviewer",)
    assert book.roles("bob", 8) == ()


def test_contract_v1_history_is_judged_without_roles() -> None:
    """v1 had no roles, and no credential may publish on a v1 subject any more: a rebuild
    after the upgrade keeps what v1 applied."""
    book = RoleBook()
    old = TaskCancelled(**{**envelope("user:bob"), "v": 1}, task="t-1")
    assert judged(old, 5, book) is None
    assert judged(cancel("user:bob"), 5, book) == "role_missing"


def test_a_book_covers_what_it_was_brought_up_to_date_after() -> None:
    """A reader skips the role lookup for events the book can judge already: those stored no
    later than one past what it noted, or than a position read before its last lookup."""
    book = RoleBook()
    assert book.covers(1) and not book.covers(2)
    book.note(5, grant("bob", "reviewer"))
    assert book.covers(6) and not book.covers(7)
    book.known_to = 40  # the last lookup began after sequence 40 was read
    assert book.covers(41) and not book.covers(42)


def test_only_a_persons_events_that_need_a_role_are_judged_by_roles() -> None:
    assert judged_by_roles(cancel("user:ops"))
    assert not judged_by_roles(cancel("svc:board"))
    assert not judged_by_roles(TaskCancelled(**envelope("user:ops"), task="t-1", v=1))
    assert judged_by_roles(grant("bob", "reviewer", by="user:admin"))
    assert not judged_by_roles(grant("bob", "reviewer"))  # the authority: a service
