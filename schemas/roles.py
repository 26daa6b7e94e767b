"""Roles of people: who may do what, at each position of the stream (DESIGN 3.7). Pure.

A person (``user:<name>``) holds a role from the ``role.granted`` that gives it until a
``role.revoked`` takes it away; both are events on ``fw.person.<name>.<actor>`` in FW_EVENTS,
so who could do what at any time is in the audit log. An event a person publishes is judged by
the roles in force *before its own position in FW_EVENTS*, so a rebuild judges every event the
same way, and a role granted later never makes an earlier event valid.

- ``PERSON_ROLES``: the role a person needs to publish each type. Types a person cannot publish
  (``SENDERS`` without ``user``) need none; a type a person can publish always names one.
- ``admin`` holds every role. Only an ``admin`` grants and revokes roles, or the holder of
  Fleetward's signing keys (``ROLE_AUTHORITY``: it can issue any identity anyway, so it is the
  root of trust that names the first admin).
- ``viewer`` may publish nothing: it exists so that "may see the fleet" is recorded too.
- Agents' roles (``reviewer`` for agent reviews) come from their registration, judged by the
  board (projections/tasks.py); services are judged by ``SENDERS`` and their credentials.
"""

from __future__ import annotations

import bisect
import typing
from typing import Final

from fleetward.schemas.admission import Rejected, actor_kind
from fleetward.schemas.events import (
    AgentPaused,
    AgentPromoted,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    AgentVersionChanged,
    ApprovalDenied,
    ApprovalGranted,
    BudgetSet,
    EscalationAcknowledged,
    EscalationResolved,
    Event,
    PolicySet,
    Role,
    RoleGranted,
    RoleRevoked,
    TaskAssigned,
    TaskCancelled,
    TaskCreated,
    TaskDependenciesChanged,
    TaskReviewed,
    TaskRevoked,
)
from fleetward.schemas.subjects import FIRST_V2

ROLES: Final[tuple[str, ...]] = typing.get_args(Role)
ADMIN: Final = "admin"
ROLE_AUTHORITY: Final = "svc:auth"  # the signing keys' holder (services/auth), see above

PERSON_ROLES: Final[dict[type[Event], str]] = {
    # operating the fleet: tasks and agents' lifecycle, escalations
    TaskCreated: "operator",
    TaskAssigned: "operator",
    TaskCancelled: "operator",
    TaskRevoked: "operator",
    TaskDependenciesChanged: "operator",
    AgentRegistered: "operator",
    AgentVersionChanged: "operator",
    AgentPaused: "operator",
    AgentResumed: "operator",
    AgentRetired: "operator",
    AgentPromoted: "operator",
    EscalationAcknowledged: "operator",
    EscalationResolved: "operator",
    TaskReviewed: "reviewer",
    BudgetSet: "budget-admin",
    ApprovalGranted: "approver",  # people oversee (DESIGN 3.10): agents decide no approvals
    ApprovalDenied: "approver",
    PolicySet: "policy-admin",
    RoleGranted: ADMIN,
    RoleRevoked: ADMIN,
}


def person_of(actor: str) -> str | None:
    """The name of a person actor (``user:alice`` -> ``alice``), None for anyone else."""
    return actor.split(":", 1)[1] if actor_kind(actor) == "user" else None


class RoleBook:
    """Every role change of the stream, by sequence: ``holds`` answers for any position, so a
    reader may learn changes beyond the events it judges (they do not count before their own
    position). ``note`` the role events of FW_EVENTS as they are read; noting one twice is
    harmless."""

    def __init__(self) -> None:
        # (person, role) -> sorted [(seq, granted)]
        self._changes: dict[tuple[str, str], list[tuple[int, bool]]] = {}
        self.last_seq = 0  # the highest sequence noted
        # every role change stored at or before this sequence is noted (a reader that read up
        # to a sequence and then brought the book up to date knows nothing was missed before it)
        self.known_to = 0

    def note(self, seq: int, event: Event) -> None:
        """Record ``event`` stored at ``seq`` if it grants or revokes a role."""
        if isinstance(event, RoleGranted | RoleRevoked):
            changes = self._changes.setdefault((event.person, event.role), [])
            entry = (seq, isinstance(event, RoleGranted))
            at = bisect.bisect_left(changes, entry)
            if at == len(changes) or changes[at][0] != seq:
                changes.insert(at, entry)
        self.last_seq = max(self.last_seq, seq)

    def _held(self, person: str, role: str, before: int) -> bool:
        changes = self._changes.get((person, role), ())
        at = bisect.bisect_left(changes, (before, False))  # the changes stored before ``before``
        return at > 0 and changes[at - 1][1]

    def covers(self, seq: int) -> bool:
        """Whether the book can judge an event stored at ``seq``: every role change stored
        before it is noted."""
        return seq - 1 <= max(self.known_to, self.last_seq)

    def holds(self, person: str, role: str, before: int) -> bool:
        """Whether ``user:<person>`` held ``role`` (or ``admin``) just before stream sequence
        ``before``."""
        return self._held(person, ADMIN, before) or self._held(person, role, before)

    def people(self) -> list[str]:
        """Everyone a role was ever granted to, by name."""
        return sorted({person for person, _ in self._changes})

    def roles(self, person: str, before: int) -> tuple[str, ...]:
        """The roles ``user:<person>`` held just before ``before`` (``admin`` means all)."""
        return tuple(r for r in ROLES if self._held(person, r, before))


def role_needed(event: Event) -> str | None:
    """The role the actor of ``event`` needs: for a person, ``PERSON_ROLES``; None for agents
    and services, and for contract v1 history (``v`` 1: roles came with v2, and no credential
    may publish a v1 subject any more, docs/events.md)."""
    if event.v < FIRST_V2 or actor_kind(event.actor) != "user":
        return None
    return PERSON_ROLES.get(type(event))


def judged_by_roles(event: Event) -> bool:
    """Whether ``check_role`` needs the book for ``event`` (a person's event that needs a
    role); a reader may skip bringing its book up to date for everything else."""
    return role_needed(event) is not None and person_of(event.actor) is not None


def check_role(event: Event, seq: int, book: RoleBook) -> None:
    """Raise ``Rejected("role_missing")`` when a person publishes ``event`` (stored at ``seq``)
    without the role it needs, as of just before ``seq``; ``Rejected("actor_forbidden")`` when a
    service other than ``ROLE_AUTHORITY`` grants or revokes a role."""
    if isinstance(event, RoleGranted | RoleRevoked) and actor_kind(event.actor) == "svc":
        if event.actor != ROLE_AUTHORITY:
            raise Rejected("actor_forbidden", f"{event.actor!r} may not grant or revoke roles")
        return
    needed = role_needed(event)
    person = person_of(event.actor)
    if needed is None or person is None:
        return
    if not book.holds(person, needed, seq):
        tag = type(event).__struct_config__.tag
        raise Rejected(
            "role_missing", f"{event.actor!r} does not hold the role {needed!r} for {tag}"
        )


def judge(event: Event, seq: int, book: RoleBook) -> None:
    """``check_role``, then ``note`` the event: a role change counts only when its author may
    make it. Raises ``Rejected`` as ``check_role`` does (the book still learns ``seq``)."""
    try:
        check_role(event, seq, book)
    except Rejected:
        book.last_seq = max(book.last_seq, seq)
        raise
    book.note(seq, event)
