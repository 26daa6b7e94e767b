"""Who may change an agent's lifecycle (projections/lifecycle.py): the rule alone, then every
reader of agent events applying it alike (the registry, the board, spend, the watchdog), and the
projector dead-lettering what it refuses with its reason. Pure: no network."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fleetward.projections.agents import AGENTS, AgentRegistry
from fleetward.projections.base import Meta, Rows
from fleetward.projections.lifecycle import (
    FORBIDDEN,
    Life,
    after,
    check,
    problem,
    sets_limits,
    step,
)
from fleetward.projections.spend import SPEND_AGENTS, Spend
from fleetward.projections.tasks import TASK_AGENTS, TaskBoard
from fleetward.schemas import REASONS, Rejected, new_id
from fleetward.schemas.events import (
    AgentOffline,
    AgentOnline,
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    AgentVersionChanged,
    CommandIssued,
    Event,
)
from fleetward.schemas.subjects import subject_of
from fleetward.services.projector.window import fold
from fleetward.services.watchdog.core.judge import Judge
from tests.unit.test_liveness import SETTINGS

A = "agent-a"
OPS = "user:ops"
GUARD = "svc:guard"
T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


def env(actor: str) -> dict[str, Any]:
    return {"id": new_id(), "actor": actor, "at": T0}


def registered(by: str = A, roles: tuple[str, ...] = (), limit: int = 1, **kw: Any) -> Event:
    fields: dict[str, Any] = {"name": A, "owner": "o", "team": "t"} | kw
    return AgentRegistered(**env(by), agent=A, roles=roles, max_concurrent_tasks=limit, **fields)


def paused(by: str) -> Event:
    return AgentPaused(**env(by), agent=A, reason=f"paused by {by}")


def resumed(by: str) -> Event:
    return AgentResumed(**env(by), agent=A, reason=f"resumed by {by}")


def retired(by: str) -> Event:
    return AgentRetired(**env(by), agent=A, reason=f"retired by {by}")


def offline() -> Event:
    return AgentOffline(**env("svc:watchdog"), agent=A, escalation="e-1")


# ---- the rule ------------------------------------------------------------------------------


@pytest.mark.parametrize("by", [OPS, GUARD, "svc:watchdog"])
def test_an_agent_may_not_lift_a_pause_by_a_person_or_a_service(by: str) -> None:
    life, _ = after(Life(), paused(by))
    assert life == Life("paused", paused_by=by)
    why = problem(life, resumed(A))
    assert why is not None and f"was paused by {by}" in why and "operator" in why
    with pytest.raises(Rejected) as refused:
        check(life, resumed(A))
    assert refused.value.reason == FORBIDDEN


@pytest.mark.parametrize("by", [OPS, GUARD])
def test_a_person_or_a_service_lifts_any_pause(by: str) -> None:
    for pauser in (A, OPS, "svc:watchdog"):
        life, _ = after(Life(), paused(pauser))
        assert step(life, resumed(by)) == (Life("active"), f"resumed by {by}")


def test_an_agent_lifts_its_own_pause_until_someone_else_pauses_it_too() -> None:
    mine, _ = after(Life(), paused(A))
    assert mine.paused_by == A
    assert step(mine, resumed(A)) == (Life("active"), f"resumed by {A}")
    theirs, reason = step(mine, paused(OPS))  # someone else's pause takes over
    assert (theirs, reason) == (Life("paused", paused_by=OPS), f"paused by {OPS}")
    again, _ = step(theirs, paused(A))  # and its own never replaces it
    assert again.paused_by == OPS
    assert problem(again, resumed(A)) is not None


def test_an_unknown_pause_is_not_the_agents_own() -> None:
    """A pause from before the registry knew who made it (paused_by null: migration 0013)."""
    assert problem(Life("paused"), resumed(A)) is not None
    assert problem(Life("paused"), resumed(OPS)) is None


@pytest.mark.parametrize("event", [registered(), resumed(A)], ids=["register", "resume"])
@pytest.mark.parametrize("by", [A, OPS, GUARD])
def test_retirement_is_final_for_the_agent_whoever_retired_it(event: Event, by: str) -> None:
    life, _ = after(Life(registered_by=OPS), retired(by))
    assert life == Life("retired", registered_by=OPS)
    why = problem(life, event)
    assert why is not None and "retired" in why


@pytest.mark.parametrize("by", [OPS, GUARD])
def test_a_person_or_a_service_brings_a_retired_agent_back_by_registering_it(by: str) -> None:
    life, _ = after(Life(), retired(OPS))
    assert step(life, registered(by)) == (Life("active", registered_by=by), "")
    assert step(life, resumed(by)) == (life, None)  # a resume does not: retired stays retired


def test_an_agents_own_resume_when_active_changes_nothing_and_when_offline_is_refused() -> None:
    assert problem(Life(), resumed(A)) is None  # e.g. echoing the resume command it received
    down, _ = after(Life(), offline())
    assert down.status == "offline"
    why = problem(down, resumed(A))
    assert why is not None and "heartbeat" in why
    assert problem(down, resumed(OPS)) is None


def test_the_agents_other_own_events_are_never_refused() -> None:
    for life in (Life(), Life("paused", OPS), Life("retired"), Life("offline")):
        for event in (paused(A), retired(A), AgentVersionChanged(**env(A), agent=A, version="2")):
            assert problem(life, event) is None


def test_roles_and_limit_belong_to_whoever_registered_the_agent() -> None:
    own = registered(A, roles=("reviewer",), limit=20)
    assert sets_limits(Life(), own)  # nobody else registered it: it sets its own
    life, _ = after(Life(), own)
    assert life.registered_by is None
    life, _ = after(life, registered(OPS))
    assert life.registered_by == OPS
    assert not sets_limits(life, own)  # its own registration keeps the operator's
    assert sets_limits(life, registered(GUARD))
    life, _ = after(life, own)
    assert life.registered_by == OPS  # and it does not make the agent its own registrar


def test_v1_history_is_judged_as_it_was() -> None:
    life, _ = after(Life(), paused(OPS))
    old = AgentResumed(**env(A), agent=A, v=1)
    assert problem(life, old) is None
    assert step(life, old)[0].status == "active"


def test_the_reason_is_one_of_the_dead_letter_reasons() -> None:
    assert FORBIDDEN in REASONS


# ---- every reader applies it alike ------------------------------------------------------------


class Readers:
    """The registry, the board, spend (each folding on its own ``Rows``) and the watchdog's
    judge, fed the same stream."""

    def __init__(self) -> None:
        self.projections = (AgentRegistry(), TaskBoard(), Spend())
        self.rows = {p.name: Rows() for p in self.projections}
        self.judge = Judge(SETTINGS)
        self.seq = 0
        self.emitted: list[Event] = []

    def publish(self, event: Event) -> bool:
        """Fold ``event`` everywhere; whether it was applied (every reader must agree)."""
        self.seq += 1
        meta = Meta(self.seq, T0 + timedelta(seconds=self.seq), subject_of(event))
        verdicts = set()
        for p in self.projections:
            before = len(self.rows[p.name].outbox)
            try:
                p.apply(self.rows[p.name], event, meta)
                verdicts.add(True)
            except Rejected as r:
                assert r.reason == FORBIDDEN
                verdicts.add(False)
            self.emitted += [e for e, _ in self.rows[p.name].outbox[before:]]
        self.judge.event("agent", event, self.seq, self.seq * 10**9, float(self.seq))
        [applied] = verdicts
        self.agree()
        return applied

    def agent(self) -> dict[str, Any]:
        row = self.rows["agents"].get(AGENTS, (A,))
        assert row is not None
        return row

    def agree(self) -> None:
        """Each reader's agent (an agent a reader has no row for is active, with nobody's
        pause in force) is the registry's."""
        registry = self.rows["agents"].get(AGENTS, (A,))
        board = self.rows["tasks"].get(TASK_AGENTS, (A,))
        spend = self.rows["spend"].get(SPEND_AGENTS, (A,))
        clock = self.judge.liveness.agents.get(A)
        life = Life.of(registry)
        assert Life.of(board) == life
        assert Life.of(spend) == replace(life, registered_by=None)  # spend needs no registrar
        watched = (clock.status, clock.paused_by) if clock else ("active", None)
        assert watched == (life.status, life.paused_by)
        if registry is not None and board is not None:
            assert (board["roles"], board["max_concurrent_tasks"]) == (
                registry["roles"], registry["max_concurrent_tasks"])  # fmt: skip


def test_every_reader_refuses_an_agent_resuming_itself_from_an_operators_pause() -> None:
    r = Readers()
    assert r.publish(registered(OPS))
    assert r.publish(paused(OPS))
    assert not r.publish(resumed(A))
    assert (r.agent()["status"], r.agent()["paused_by"]) == ("paused", OPS)
    assert r.publish(resumed(OPS))
    assert r.agent()["status"] == "active"
    commands = [e.command for e in r.emitted if isinstance(e, CommandIssued)]
    assert commands == ["pause", "resume"]  # the refused resume told the agent nothing to do


def test_every_reader_refuses_a_retired_agent_registering_itself_back() -> None:
    r = Readers()
    assert r.publish(registered(OPS, roles=("writer",)))
    assert r.publish(retired(OPS))
    assert not r.publish(registered(A, roles=("reviewer",), name="back again"))
    assert (r.agent()["status"], r.agent()["name"]) == ("retired", A)
    assert r.publish(registered(OPS, roles=("writer",)))
    assert r.agent()["status"] == "active"


def test_every_reader_keeps_the_operators_roles_and_limit() -> None:
    r = Readers()
    assert r.publish(registered(A, roles=("reviewer",), limit=9))  # its own, first: it holds
    assert (r.agent()["roles"], r.agent()["max_concurrent_tasks"]) == (["reviewer"], 9)
    assert r.publish(registered(OPS, roles=(), limit=1))
    assert r.publish(registered(A, roles=("reviewer",), limit=20, name="renamed", version="7"))
    row = r.agent()
    assert (row["roles"], row["max_concurrent_tasks"], row["registered_by"]) == ([], 1, OPS)
    assert (row["name"], row["version"]) == ("renamed", "7")  # the rest of its profile is its own


def test_an_agent_retired_or_paused_before_it_registers_stays_so_on_the_board() -> None:
    """The board keeps an agent from its first lifecycle event on, as the registry does: a
    retirement before the agent ever registered is not undone by its registering."""
    for first, status in ((retired(OPS), "retired"), (paused(OPS), "paused")):
        r = Readers()
        assert r.publish(first)
        board = r.rows["tasks"].get(TASK_AGENTS, (A,))
        assert board is not None and not board["registered"]
        assert r.publish(registered(A)) == (status == "paused")  # retired: refused
        board = r.rows["tasks"].get(TASK_AGENTS, (A,))
        assert board is not None and board["status"] == status
        assert board["registered"] == (status == "paused")


def test_random_lifecycles_every_reader_agrees() -> None:
    actors = (A, A, OPS, GUARD)
    for n in range(200):
        rng = random.Random(n)
        r = Readers()
        for _ in range(30):
            by = rng.choice(actors)
            roles = rng.choice(((), ("reviewer",)))
            event = rng.choice(
                (
                    registered(by, roles=roles, limit=rng.randint(1, 3)),
                    paused(by),
                    resumed(by),
                    retired(by),
                    offline(),
                    AgentOnline(**env("svc:watchdog"), agent=A),
                )
            )
            r.publish(event)  # every reader agrees after each (Readers.agree)


# ---- the projector dead-letters it with its reason --------------------------------------------


def test_the_projector_dead_letters_a_refused_event_with_its_reason() -> None:
    stream = [registered(OPS), paused(OPS), resumed(A), resumed(OPS)]
    items = [
        (e, Meta(seq, T0 + timedelta(seconds=seq), subject_of(e)))
        for seq, e in enumerate(stream, start=1)
    ]
    rows = Rows()
    [(event, meta, reason, detail)] = fold(AgentRegistry(), items, rows)
    assert (event, meta.seq, reason) == (stream[2], 3, FORBIDDEN)
    assert "paused by user:ops" in detail
    row = rows.get(AGENTS, (A,))
    assert row is not None and row["status"] == "active"
