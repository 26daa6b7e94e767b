"""Dead ends against a real nats-server and Postgres: a review past its SLA and a cancelled
dependency, both as the watchdog reads them from the projections at start and as they happen
while it runs, are escalated once and resolved when they end; healthy tasks raise nothing."""

from __future__ import annotations

from dataclasses import replace

from fleetward.schemas.events import (
    Deliverable,
    EscalationRaised,
    EscalationResolved,
    Event,
    TaskCancelled,
    TaskClaimed,
    TaskCreated,
    TaskDependenciesChanged,
    TaskReviewed,
    TaskSubmitted,
)
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime
from fleetward.services.watchdog.service import Watchdog
from tests.helpers import envelope, project_all, wait_for
from tests.integration.test_watchdog import FAST, Beater, judging, register, running


def created(task: str, *deps: str, sla: float | None = None) -> TaskCreated:
    return TaskCreated(**envelope("user:p"), task=task, project="p", title=task, sla_s=sla,
                       depends_on=deps)  # fmt: skip


def handed_in(agent: str, task: str, sla: float) -> list[Event]:
    """``task`` created with an SLA, claimed by ``agent`` and submitted: now in review."""
    return [
        created(task, sla=sla),
        TaskClaimed(**envelope(agent), task=task, agent=agent, epoch=1),
        TaskSubmitted(**envelope(agent), task=task, agent=agent, epoch=1,
                      deliverable=Deliverable(kind="link", sha256="0" * 64)),
    ]  # fmt: skip


def reviewed(agent: str, task: str) -> TaskReviewed:
    return TaskReviewed(**envelope("user:r"), task=task, agent=agent, verdict="approve")


async def test_dead_ends_read_at_start_and_live_are_escalated_and_resolved(rt: Runtime) -> None:
    agents = ["rv-old", "rv-new", "rv-ok"]
    await publish_many(rt.js, [
        *(register(a, 1.0) for a in agents),
        *handed_in("rv-old", "t-old", 0.3),
        created("d-1"), created("t-dep", "d-1"), TaskCancelled(**envelope("user:o"), task="d-1"),
    ])  # fmt: skip
    await project_all(rt)  # the watchdog reads these from the projections
    dog = Watchdog(rt, replace(FAST, interval_s=1.0, review_sla_s=0.0))
    async with running(rt, dog, beater=Beater(rt, agents)) as (rec, _):
        await judging(dog)

        def raised(reason: str) -> dict[str | None, EscalationRaised]:
            return {e.task: e for e in rec.escalations() if e.reason == reason}

        async def loaded() -> bool:
            return "t-old" in raised("review_overdue") and "t-dep" in raised("dependency_cancelled")

        await wait_for(loaded, 10, "the dead ends read at start to be escalated")
        await publish_many(rt.js, [
            *handed_in("rv-new", "t-new", 0.3),
            *handed_in("rv-ok", "t-ok", 30.0), reviewed("rv-ok", "t-ok"),
            created("d-2"), created("d-3"), created("t-dep2", "d-2"), created("t-ctl", "d-3"),
            TaskCancelled(**envelope("user:o"), task="d-2"),
        ])  # fmt: skip

        async def live() -> bool:
            return "t-new" in raised("review_overdue") and "t-dep2" in raised(
                "dependency_cancelled"
            )

        await wait_for(live, 10, "the dead ends made while it runs to be escalated")
        overdue, dead = raised("review_overdue"), raised("dependency_cancelled")
        assert (overdue["t-old"].agent, overdue["t-new"].agent) == ("rv-old", "rv-new")
        assert {e.evidence["dependency"] for e in dead.values()} == {"d-1", "d-2"}
        assert {e.tier for e in [*overdue.values(), *dead.values()]} == {"warning"}

        await publish_many(rt.js, [
            reviewed("rv-old", "t-old"), reviewed("rv-new", "t-new"),
            TaskDependenciesChanged(**envelope("user:o"), task="t-dep", depends_on=()),
            TaskCancelled(**envelope("user:o"), task="t-dep2"),
        ])  # fmt: skip
        escalated = {e.escalation for e in rec.escalations()}

        async def all_resolved() -> bool:
            return {e.escalation for e in rec.of(EscalationResolved)} == escalated

        await wait_for(all_resolved, 10, "the four dead ends to be resolved")
        await dog.signals.wait_for(lambda: not dog.publisher.in_flight, 10, "publishing to end")
        assert len(rec.raised()) == 4  # none for t-ok (reviewed in time) nor t-ctl
