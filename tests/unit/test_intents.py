"""The checks of an operator's writes (services/client/intents.py): each refusal's reason, and
what passes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fleetward.schemas import new_id
from fleetward.schemas.events import BudgetSet
from fleetward.services.client import intents


def task(status: str = "inbox", assignee: str | None = None, **more: Any) -> dict[str, Any]:
    return {"status": status, "assignee": assignee, "claim_epoch": 2, "depends_on": [],
            "required_role": None} | more  # fmt: skip


def agent(status: str = "active", roles: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"agent_id": "b", "status": status, "roles": list(roles)}


@pytest.mark.parametrize(
    ("row", "why"),
    [
        (None, "no task t"),
        (task("done"), "task t is done"),
        (task("cancelled"), "task t is cancelled"),
        (task("in_progress", "a"), "task t is held by a (in_progress, epoch 2): reassign or"),
        (task("blocked", "a"), "task t is held by a (blocked, epoch 2)"),
        (task("review", "a"), "task t is held by a (review, epoch 2)"),
        (task("assigned", "b"), "task t is already assigned to b"),
    ],
)
def test_assign_refusals(row: dict[str, Any] | None, why: str) -> None:
    problem = intents.assign_problem("t", row, "b")
    assert problem is not None and problem.startswith(why)


def test_assign_passes_an_open_task() -> None:
    assert intents.assign_problem("t", task(), "b") is None
    assert intents.assign_problem("t", task("assigned", "a"), "b") is None


@pytest.mark.parametrize(
    ("record", "row", "why"),
    [
        (None, task(), "no agent b in the registry"),
        (agent("retired"), task(), "agent b is retired"),
        (agent(), task(required_role="qa"), "agent b lacks the role qa that task t requires"),
    ],
)
def test_agent_refusals(record: dict[str, Any] | None, row: dict[str, Any], why: str) -> None:
    assert intents.agent_problem("b", record, "t", row) == why


def test_a_paused_or_offline_agent_may_be_given_work() -> None:
    for status in ("paused", "offline", "active"):
        assert (
            intents.agent_problem("b", agent(status, ("qa",)), "t", task(required_role="qa"))
            is None
        )


def test_creation_refusals() -> None:
    assert intents.creation_problem("t", task(), (), ()) == (
        "task t already exists (inbox): task ids are unique"
    )
    assert "cannot depend on itself" in (intents.creation_problem("t", None, ("t",), [None]) or "")
    why = intents.creation_problem("t", None, ("a", "b"), [task(), None])
    assert why is not None and why.startswith("t depends on unknown task(s) b")
    assert intents.creation_problem("t", None, ("a",), [task("done")]) is None


def test_revoke_and_reassign() -> None:
    assert intents.revoke_problem("t", task()) == "task t is not held: it is inbox"
    assert intents.revoke_problem("t", task("assigned", "a")) == (
        "task t is not held: it is assigned (assigned to a)"
    )
    assert intents.revoke_problem("t", task("done")) == "task t is done"
    for held in ("in_progress", "blocked", "review"):
        assert intents.revoke_problem("t", task(held, "a")) is None
        assert intents.reassign_problem("t", task(held, "a"), "b") is None
        assert intents.reassign_problem("t", task(held, "b"), "b") == (
            f"task t is held by b ({held}, epoch 2) already"
        )
    assert intents.reassign_problem("t", task("assigned", "b"), "b") == (
        "task t is already assigned to b"
    )
    assert intents.reassign_problem("t", None, "b") == "no task t"


def test_dependency_changes() -> None:
    row = task(depends_on=["a"])
    ok = {"b": (task(), 5)}
    assert intents.dependencies_problem("t", row, ("a", "b"), ok, 9) is None
    assert intents.dependencies_problem("t", row, (), {}, None) is None  # drop them all
    assert intents.dependencies_problem("t", row, ("a",), {}, None) == (
        "task t already depends on a"
    )
    assert "cannot depend on itself" in (
        intents.dependencies_problem("t", row, ("t",), {}, 9) or ""
    )
    unknown = intents.dependencies_problem("t", row, ("b",), {"b": (None, None)}, 9)
    assert unknown == "dependency b is unknown: no task b"
    later = intents.dependencies_problem("t", row, ("b",), {"b": (task(), 12)}, 9)
    assert later is not None and later.startswith("dependency b was created after t")
    dead = intents.dependencies_problem("t", row, ("b",), {"b": (task("cancelled"), 5)}, 9)
    assert dead == "dependency b is cancelled: it would never be done"
    assert intents.dependencies_problem("t", task("done"), ("b",), ok, 9) == "task t is done"
    assert intents.drop_problem("t", row, ["a"]) is None
    assert intents.drop_problem("t", row, ["a", "x"]) == "task t does not depend on x"


def test_agent_lifecycle_refusals() -> None:
    assert intents.pause_problem("b", None) == "no agent b in the registry"
    assert intents.pause_problem("b", agent("paused")) == "agent b is already paused"
    assert intents.pause_problem("b", agent("retired")) == "agent b is retired"
    assert intents.pause_problem("b", agent("offline")) is None
    assert intents.resume_problem("b", agent("active")) == "agent b is not paused (it is active)"
    assert intents.resume_problem("b", agent("retired")) == "agent b is not paused (it is retired)"
    assert intents.resume_problem("b", agent("paused")) is None
    assert intents.retire_problem("b", agent("retired")) == "agent b is already retired"
    assert intents.retire_problem("b", agent("paused")) is None
    assert intents.retire_problem("b", None) == "no agent b in the registry"


# ---- an agent's own registration (the rule: projections/lifecycle.py) ----------------------


def record(by: str | None, roles: tuple[str, ...] = ("writer",), limit: int = 2) -> dict[str, Any]:
    return {"status": "active", "roles": list(roles), "max_concurrent_tasks": limit,
            "registered_by": by, "paused_by": None}  # fmt: skip


def test_an_agents_own_registration_asks_for_what_holds_unless_it_says_otherwise() -> None:
    assert intents.own_limits(None, None, None) == ((), 1)  # a new agent
    assert intents.own_limits(record("user:ops"), None, None) == (("writer",), 2)
    assert intents.own_limits(record(None), ("x",), 7) == (("x",), 7)


@pytest.mark.parametrize(
    ("roles", "limit"), [(("reviewer",), None), (None, 20), ((), None), (("writer", "x"), 2)]
)
def test_an_agent_registered_by_a_person_cannot_change_its_roles_or_limit(
    roles: tuple[str, ...] | None, limit: int | None
) -> None:
    why = intents.own_limits_problem("a", record("user:ops"), roles, limit)
    assert why is not None
    assert why.startswith("agent a's roles (writer) and task limit (2) are set by user:ops")


@pytest.mark.parametrize(
    ("rec", "roles", "limit"),
    [
        (None, ("reviewer",), 20),  # unknown to the registry: nobody else registered it
        (record(None), ("reviewer",), 20),  # it registered itself only: it sets its own
        (record("user:ops"), None, None),  # asks for nothing: what holds
        (record("user:ops"), ("writer",), 2),  # asks for what holds already
    ],
)
def test_an_agents_own_registration_passes(
    rec: dict[str, Any] | None, roles: tuple[str, ...] | None, limit: int | None
) -> None:
    assert intents.own_limits_problem("a", rec, roles, limit) is None


def test_a_budget_has_a_known_scope_and_window() -> None:
    assert intents.budget_problem("project", "lifetime") is None
    assert intents.budget_problem("organisation", "day") == (
        "no budget scope 'organisation': it is one of agent, team, project, org"
    )
    assert intents.budget_problem("org", "week") == (
        "no budget window 'week': it is one of day, month, lifetime"
    )


def test_a_budget_set_to_what_it_is_changes_nothing() -> None:
    def budget(actor: str = "user:ann", **fields: Any) -> BudgetSet:
        given: dict[str, Any] = {"scope": "team", "scope_id": "docs", "window": "day",
                                 "limit_usd": 2.5} | fields  # fmt: skip
        return BudgetSet(id=new_id(), actor=actor, at=datetime.now(UTC), budget="b", **given)

    same = intents.budget_unchanged(budget(), budget("user:bob"))
    assert same == "budget b is already set to that (by user:ann)"
    assert intents.budget_unchanged(None, budget()) is None
    for change in ({"limit_usd": 2.6}, {"limit_tokens": 10}, {"warn_at": 0.9},
                   {"window": "month"}, {"scope": "project"}, {"scope_id": "ops"}):  # fmt: skip
        assert intents.budget_unchanged(budget(), budget(**change)) is None, change
