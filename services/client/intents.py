"""What an operator's request would do, judged before it is sent (DESIGN 3.12): every write of
``FleetClient`` reads the current state first and, when the board would refuse the event or the
request could not take effect, raises ``IntentRefused`` with the one-line reason instead of
publishing. Pure: the rules take the task rows (``read_task``), agent records
(``FleetClient.agent_profile``) and budgets (``read_budget``) their caller read.

Invariants:
- A refusal names the task or agent and why, in one line an operator can act on.
- A request that would change nothing (assign a task to its assignee, pause a paused agent) is
  refused too: an intent either takes effect or fails visibly.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from fleetward.schemas.events import BudgetScope, BudgetSet, BudgetWindow

FINISHED = frozenset({"done", "cancelled"})
TAKEN = frozenset({"in_progress", "blocked", "review"})  # a claim holds it (or its deliverable)
BUDGET_SCOPES: tuple[str, ...] = typing.get_args(BudgetScope)
BUDGET_WINDOWS: tuple[str, ...] = typing.get_args(BudgetWindow)

Row = Mapping[str, Any]


# What kind of refusal: the one-line reason is the same everywhere; the HTTP API answers each
# kind with its own status (services/api/write.py: 404, 403, 400, 409).
Refusal = Literal["missing", "forbidden", "invalid", "conflict"]


class Missing(str):
    """A problem saying that the task or agent a request names does not exist (a ``str``, so
    the rules below return it like any other problem; ``refuse`` makes it kind ``missing``)."""

    __slots__ = ()


class IntentRefused(ValueError):
    """The request was not sent: the board would refuse it, or it would change nothing.
    ``str()`` is the reason, one line. ``kind``: ``missing`` (an unknown task, agent or
    escalation), ``forbidden`` (the sender lacks the role), ``invalid`` (the event would break
    the contract's bounds) or ``conflict`` (the state does not allow it: held, finished, a
    duplicate id, a change that would change nothing). Default: ``missing`` for a ``Missing``
    reason, else ``conflict``."""

    def __init__(self, reason: str, kind: Refusal | None = None) -> None:
        super().__init__(reason)
        self.kind: Refusal = kind or ("missing" if isinstance(reason, Missing) else "conflict")


def unknown_agent(agent: str) -> Missing:
    """``no agent A in the registry``."""
    return Missing(f"no agent {agent} in the registry")


def task_problem(task: str, row: Row | None) -> str | None:
    """Why nothing more may happen to ``task``: it does not exist or it is finished."""
    if row is None:
        return Missing(f"no task {task}")
    if row["status"] in FINISHED:
        return f"task {task} is {row['status']}"
    return None


def held(task: str, row: Row) -> str:
    """``task is held by A (in_progress, epoch 3)``."""
    return f"task {task} is held by {row['assignee']} ({row['status']}, epoch {row['claim_epoch']})"


def creation_problem(
    task: str, row: Row | None, depends_on: Sequence[str], deps: Sequence[Row | None]
) -> str | None:
    """Why ``task`` may not be created with these dependencies (``deps``: their rows)."""
    if row is not None:
        return f"task {task} already exists ({row['status']}): task ids are unique"
    if task in depends_on:
        return f"{task} cannot depend on itself (that would be a cycle)"
    missing = [d for d, dep in zip(depends_on, deps, strict=True) if dep is None]
    if missing:
        return (
            f"{task} depends on unknown task(s) {', '.join(missing)}: create those first "
            "(dependencies must already exist, so they can never form a cycle)"
        )
    dead = [
        d for d, dep in zip(depends_on, deps, strict=True) if dep and dep["status"] == "cancelled"
    ]
    if dead:
        return f"dependency {', '.join(dead)} is cancelled: it would never be done"
    return None


def agent_problem(agent: str, record: Row | None, task: str, row: Row) -> str | None:
    """Why ``agent`` cannot take ``task``: unknown, retired, or lacking the task's role."""
    if record is None:
        return unknown_agent(agent)
    if record["status"] == "retired":
        return f"agent {agent} is retired"
    role = row["required_role"]
    if role and role not in record["roles"]:
        return f"agent {agent} lacks the role {role} that task {task} requires"
    return None


def assign_problem(task: str, row: Row | None, agent: str) -> str | None:
    """Why ``task`` may not be assigned to ``agent`` whatever the agent: only a task in the
    inbox, or assigned to someone else, can be (a held one is revoked or reassigned)."""
    problem = task_problem(task, row)
    if problem or row is None:
        return problem
    if row["status"] in TAKEN:
        return f"{held(task, row)}: reassign or revoke it instead"
    if row["status"] == "assigned" and row["assignee"] == agent:
        return f"task {task} is already assigned to {agent}"
    return None


def cancel_problem(task: str, row: Row | None) -> str | None:
    return task_problem(task, row)


def revoke_problem(task: str, row: Row | None) -> str | None:
    """Only a held task, or one in review, can be taken back."""
    problem = task_problem(task, row)
    if problem or row is None:
        return problem
    if row["status"] not in TAKEN:
        holder = f" (assigned to {row['assignee']})" if row["assignee"] else ""
        return f"task {task} is not held: it is {row['status']}{holder}"
    return None


def reassign_problem(task: str, row: Row | None, agent: str) -> str | None:
    """Why ``task`` may not go to ``agent`` whatever the agent: a held task (or one in review)
    is taken from its holder, an open one is assigned; a finished one is neither."""
    problem = task_problem(task, row)
    if problem or row is None:
        return problem
    if row["assignee"] == agent and row["status"] in TAKEN:
        return f"{held(task, row)} already"
    if row["assignee"] == agent:
        return f"task {task} is already assigned to {agent}"
    return None


def review_problem(task: str, row: Row | None, reviewer: str) -> str | None:
    if row is None:
        return Missing(f"no task {task}")
    if row["status"] != "review":
        return f"task {task} is not waiting for review (it is {row['status']})"
    if row["assignee"] == reviewer:
        return f"{reviewer} may not review its own deliverable"
    return None


def dependencies_problem(
    task: str,
    row: Row | None,
    depends_on: Sequence[str],
    added: Mapping[str, tuple[Row | None, int | None]],
    created_seq: int | None,
) -> str | None:
    """Why ``task`` may not depend on exactly ``depends_on``. ``added``: each new dependency's
    row and the stream sequence of its creation; ``created_seq``: the task's own. A new
    dependency must exist, be alive and have been created before the task: every edge then
    points back in time, so the graph can never hold a cycle."""
    problem = task_problem(task, row)
    if problem or row is None:
        return problem
    if task in depends_on:
        return f"{task} cannot depend on itself (that would be a cycle)"
    if sorted(set(depends_on)) == sorted(set(row["depends_on"])):
        now = ", ".join(row["depends_on"]) or "nothing"
        return f"task {task} already depends on {now}"
    for dep, (dep_row, dep_seq) in added.items():
        if dep_row is None:
            return f"dependency {dep} is unknown: no task {dep}"
        if dep_row["status"] == "cancelled":
            return f"dependency {dep} is cancelled: it would never be done"
        if dep_seq is None or created_seq is None or dep_seq > created_seq:
            return (
                f"dependency {dep} was created after {task}: a task may only depend on tasks "
                "created before it (so dependencies can never form a cycle)"
            )
    return None


def drop_problem(task: str, row: Row | None, drop: Sequence[str]) -> str | None:
    """Why ``drop`` cannot be dropped from ``task``'s dependencies."""
    problem = task_problem(task, row)
    if problem or row is None:
        return problem
    absent = [d for d in drop if d not in row["depends_on"]]
    if absent:
        return f"task {task} does not depend on {', '.join(absent)}"
    return None


def pause_problem(agent: str, record: Row | None) -> str | None:
    if record is None:
        return unknown_agent(agent)
    if record["status"] == "retired":
        return f"agent {agent} is retired"
    if record["status"] == "paused":
        return f"agent {agent} is already paused"
    return None


def resume_problem(agent: str, record: Row | None) -> str | None:
    if record is None:
        return unknown_agent(agent)
    if record["status"] != "paused":
        return f"agent {agent} is not paused (it is {record['status']})"
    return None


def retire_problem(agent: str, record: Row | None) -> str | None:
    if record is None:
        return unknown_agent(agent)
    if record["status"] == "retired":
        return f"agent {agent} is already retired"
    return None


# ---- an agent's own registration (AgentClient.register; the rule: projections/lifecycle.py) ----


def own_limits(
    record: Row | None, roles: Sequence[str] | None, max_concurrent_tasks: int | None
) -> tuple[tuple[str, ...], int]:
    """The roles and task limit an agent's own registration carries: those it asks for, else
    (None) those in force: its registry ``record``'s, or none and 1 for an agent the registry
    does not know."""
    held = tuple(record["roles"]) if record is not None else ()
    limit = record["max_concurrent_tasks"] if record is not None else 1
    return (
        tuple(roles) if roles is not None else held,
        max_concurrent_tasks if max_concurrent_tasks is not None else limit,
    )


def own_limits_problem(
    agent: str, record: Row | None, roles: Sequence[str] | None, max_concurrent_tasks: int | None
) -> str | None:
    """Why an agent's own registration would not set the roles or task limit it asks for: a
    person or a service registered it (``record["registered_by"]``) and theirs hold. None when
    nobody else registered it, or when it asks for nothing (None) or for what holds already."""
    by = record.get("registered_by") if record is not None else None
    if record is None or by is None:
        return None
    roles_differ = roles is not None and set(roles) != set(record["roles"])
    limit = record["max_concurrent_tasks"]
    limit_differs = max_concurrent_tasks is not None and max_concurrent_tasks != limit
    if not (roles_differ or limit_differs):
        return None
    held = ", ".join(record["roles"]) or "none"
    return (
        f"agent {agent}'s roles ({held}) and task limit ({limit}) are set by {by}, who "
        "registered it: its own registration cannot change them (register without roles and "
        "max_concurrent_tasks, or ask a person with the role operator)"
    )


def budget_problem(scope: str, window: str) -> str | None:
    """Why a budget may not have this scope or window: there is no such one. Checked before
    anything is read, so a typo fails at once."""
    if scope not in BUDGET_SCOPES:
        return f"no budget scope {scope!r}: it is one of {', '.join(BUDGET_SCOPES)}"
    if window not in BUDGET_WINDOWS:
        return f"no budget window {window!r}: it is one of {', '.join(BUDGET_WINDOWS)}"
    return None


def budget_unchanged(current: BudgetSet | None, wanted: BudgetSet) -> str | None:
    """Why setting ``wanted`` would change nothing: the budget is set to exactly that now."""
    fields = ("scope", "scope_id", "window", "limit_usd", "limit_tokens", "warn_at")
    if current is None or any(getattr(current, f) != getattr(wanted, f) for f in fields):
        return None
    return f"budget {wanted.budget} is already set to that (by {current.actor})"


# ---- the lifecycle review's actions (fleetward agents rollback | promote) ----------------------


def rollback_problem(agent: str, record: Row | None, to: str, ran: Row | None) -> str | None:
    """Why ``agent`` cannot be rolled back to version ``to``; ``ran`` is that version's row of
    ``fleet.agent_versions`` (None: the agent never ran it)."""
    if record is None:
        return unknown_agent(agent)
    if record["status"] == "retired":
        return f"agent {agent} is retired"
    if record["version"] == to:
        return f"agent {agent} already runs version {to}"
    if ran is None:
        return f"agent {agent} never ran version {to}: a rollback returns to a version it ran"
    return None


def promote_problem(
    agent: str, record: Row | None, promoted: str | None, withdraw: bool
) -> str | None:
    """Why ``agent`` cannot be promoted (or its promotion withdrawn); ``promoted`` is the
    version its tag names now (None: not promoted)."""
    if record is None:
        return unknown_agent(agent)
    if withdraw:
        return None if promoted is not None else f"agent {agent} is not promoted"
    if record["status"] == "retired":
        return f"agent {agent} is retired"
    if promoted == record["version"]:
        return f"agent {agent} is already promoted at version {promoted}"
    return None
