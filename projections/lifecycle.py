"""An agent's lifecycle: its status, and who may change it (DESIGN 3.7, 3.12). Pure.

The one state machine every reader of agent events folds, in stream order: the registry
(projections/agents.py), the task board's record of agents (projections/tasks.py), spend
(projections/spend.py) and the watchdog (services/watchdog/core/liveness.py); the agent's client
(services/client/agent.py) judges its own registration with it before publishing. ``Life`` is
what they keep of an agent; ``step`` judges an event and returns the life after it.

Statuses: ``active``, ``paused``, ``offline`` (the watchdog judged it dead: set by
``agent.offline``, cleared by ``agent.online``), ``retired``.

Who may change what. ``SENDERS`` (schemas/events.py) says who may send each type at all, and a
person needs the role ``operator`` for every lifecycle event (schemas/roles.py); on top of
those, an agent may not overrule the people and services who operate it:

- **A pause is lifted by whoever may overrule its author.** ``paused_by`` is the actor whose
  pause is in force. An agent may resume itself only from a pause it made itself; a pause by a
  person or a service is lifted by a person (``operator``) or a service. A pause by someone else
  on an agent that paused itself takes over; the agent's own pause never replaces another's.
- **Retirement is final for the agent.** Its own ``agent.registered`` or ``agent.resumed``
  after retirement is refused; a person (``operator``) or a service brings it back by
  registering it.
- **Roles and ``max_concurrent_tasks`` belong to whoever registered the agent.**
  ``registered_by`` is the person or service that registered it last. Once there is one, the
  agent's own registration changes only the rest of its profile (name, owner, team, purpose,
  risk class, version, heartbeat interval): its roles and task limit stay theirs. An agent that
  nobody else registered sets its own.
- An agent's own ``agent.resumed`` when it is not paused or offline changes nothing, as
  anyone's does (an agent may echo the ``resume`` command it received).

A refusal raises ``Rejected("lifecycle_forbidden", why)``: the projector dead-letters the event
with that reason (counted, and reported to the agent as ``refused`` in its inbox); the watchdog
ignores it; the client raises before publishing. Contract v1 history is judged without these
rules, as it was (as roles are: schemas/roles.py), so a rebuild reads it as it always did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from fleetward.schemas.admission import Rejected
from fleetward.schemas.events import (
    AgentOffline,
    AgentOnline,
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    AgentVersionChanged,
    Event,
)
from fleetward.schemas.subjects import FIRST_V2

FORBIDDEN: Final = "lifecycle_forbidden"  # the dead letters' reason (schemas.admission.REASONS)
# the events of an agent's lifecycle, which every reader folds with ``step``
EVENTS: Final = (
    AgentRegistered,
    AgentPaused,
    AgentResumed,
    AgentRetired,
    AgentOffline,
    AgentOnline,
)
# ... and the events every reader of an agent's status and version folds (the registry, the
# board, spend, the watchdog): ``EVENTS`` and the version in force
WITH_VERSION: Final = (*EVENTS, AgentVersionChanged)


@dataclass(frozen=True, slots=True)
class Life:
    """What every reader keeps of an agent's lifecycle (the columns ``status``, ``paused_by``
    and ``registered_by`` of the rows that hold it)."""

    status: str = "active"
    paused_by: str | None = None  # the actor whose pause is in force (status paused)
    registered_by: str | None = None  # the person or service that registered it last

    @classmethod
    def of(cls, row: Mapping[str, Any] | None) -> Life:
        """The life a row holds (None: an agent not heard of yet, active). A row without
        ``paused_by`` or ``registered_by`` (a reader that keeps only the status) gets None."""
        if row is None:
            return cls()
        return cls(row["status"], row.get("paused_by"), row.get("registered_by"))


def by_itself(event: Event) -> bool:
    """The event is the agent's own (its ``actor`` is the agent it is about)."""
    return event.actor == getattr(event, "agent", None)


def problem(life: Life, event: Event) -> str | None:
    """Why the agent may not publish ``event`` about itself now (see the module's rules), or
    None. Events of others, and v1 history, are never refused here."""
    if not by_itself(event) or event.v < FIRST_V2:
        return None
    agent, status = event.actor, life.status
    match event:
        case AgentRegistered() if status == "retired":
            return (
                f"agent {agent} is retired, and retirement is final for the agent: only a person "
                "with the role operator (or a service) brings it back, by registering it"
            )
        case AgentResumed() if status == "retired":
            return f"agent {agent} is retired: it cannot resume itself"
        case AgentResumed() if status == "paused" and life.paused_by != agent:
            by = life.paused_by or "someone else"
            return (
                f"agent {agent} was paused by {by}: an agent may resume itself only from a pause "
                "it made itself; a person with the role operator (or a service) resumes it"
            )
        case AgentResumed() if status == "offline":
            return (
                f"agent {agent} is offline (the watchdog judged it dead): its next heartbeat "
                "brings it back (agent.online), not its own resume"
            )
    return None


def check(life: Life, event: Event) -> None:
    """Raise ``Rejected(FORBIDDEN, why)`` when ``problem`` finds one."""
    why = problem(life, event)
    if why is not None:
        raise Rejected(FORBIDDEN, why)


def sets_limits(life: Life, event: AgentRegistered) -> bool:
    """Whether ``event`` sets the agent's roles and ``max_concurrent_tasks``: every
    registration does, except the agent's own once a person or a service has registered it
    (``life`` is the agent's life before the event)."""
    return not (by_itself(event) and life.registered_by is not None)


def after(life: Life, event: Event) -> tuple[Life, str | None]:
    """The agent's life after ``event`` (one ``check`` lets through), and the status reason to
    record when the event sets its status (None: the status does not change, e.g. pausing a
    retired agent).

    A retired agent ignores pause and resume and comes back when registered (by a person or a
    service: ``check``); only an active agent goes offline, and only an offline one comes back
    online."""
    status = life.status
    match event:
        case AgentRegistered():
            if not by_itself(event):
                life = replace(life, registered_by=event.actor)
            if status == "retired":
                return replace(life, status="active", paused_by=None), ""
        case AgentPaused() if status != "retired":
            keep = status == "paused" and life.paused_by != event.agent and by_itself(event)
            by = life.paused_by if keep else event.actor  # its own never replaces another's
            return replace(life, status="paused", paused_by=by), event.reason
        case AgentResumed() if status != "retired":
            return replace(life, status="active", paused_by=None), event.reason
        case AgentRetired():
            return replace(life, status="retired", paused_by=None), event.reason
        case AgentOffline() if status == "active":
            return replace(life, status="offline"), f"escalation {event.escalation}"
        case AgentOnline() if status == "offline":
            return replace(life, status="active"), ""
    return life, None


def step(life: Life, event: Event) -> tuple[Life, str | None]:
    """``check``, then ``after``: the life after ``event`` and the status reason to record.
    Raises ``Rejected(FORBIDDEN, why)`` for an event the agent may not publish now."""
    check(life, event)
    return after(life, event)
