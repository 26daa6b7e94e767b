"""KPI drift (issue 16, part 3) against the real projector, nats-server and Postgres: a version
change followed by a worse success rate raises exactly one ``kpi_drift`` (two replicas, many
readings), naming the KPI, both values and both versions; an agent whose success rate held
raises none."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import anyio

from fleetward.schemas.events import AgentVersionChanged, Event, RunOutcome
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime, open_runtime
from fleetward.services.watchdog.core.incidents import KPI_DRIFT
from fleetward.services.watchdog.service import Watchdog
from tests.helpers import as_harness, envelope, project_all, wait_for
from tests.integration.test_watchdog import (
    FAST,
    Beater,
    finished,
    judging,
    register,
    running,
)

# runs failed in a row and runs without progress are other detectors' business
DRIFT = replace(FAST, interval_s=1.0, failed_runs=1000, wake_runs=1000, drift_every_s=0.05,
                drift_min_runs=10)  # fmt: skip


def runs(agent: str, outcomes: str) -> list[Event]:
    """One run.finished per letter: s succeeded, f failed."""
    kind: dict[str, RunOutcome] = {"s": "succeeded", "f": "failed"}
    return [finished(agent, kind[c]) for c in outcomes]


def version(agent: str, v: str) -> Event:
    return AgentVersionChanged(**envelope(agent), agent=agent, version=v, prompt=f"p{v}")


async def test_a_version_change_then_a_worse_success_rate_raises_exactly_one_kpi_drift(
    rt: Runtime, settings: Any
) -> None:
    agents = ["kd", "kd-ok"]
    await publish_many(rt.js, [
        *(register(a, 1.0) for a in agents),
        *runs("kd", "sssssssssfss"), *runs("kd-ok", "sssssssssf"),  # 11/12 and 9/10 succeeded
        version("kd", "2"), version("kd-ok", "2"),
        *runs("kd", "sfsfsfsfsfsf"),  # 6/12 succeeded: 41.7 points down
        *runs("kd-ok", "ssssssssfs"),  # 9/10 again
    ])  # fmt: skip
    with anyio.fail_after(60):
        await project_all(rt)
    async with open_runtime(settings, identity=as_harness(settings)) as rt2:
        a, b = Watchdog(rt, DRIFT, name="wd_a"), Watchdog(rt2, DRIFT, name="wd_b")
        async with running(rt, a, b, beater=Beater(rt, agents)) as (rec, _):
            await judging(a, b)

            async def drifted() -> list[Any]:
                return [e for e in rec.escalations() if e.reason == KPI_DRIFT]

            [esc] = await wait_for(drifted, 20, "the kpi_drift escalation")
            await anyio.sleep(1.0)  # twenty readings more, by each replica
            for dog in (a, b):
                await dog.signals.wait_for(lambda d=dog: not d.publisher.in_flight, 10, "idle")
            assert await drifted() == [esc]
    assert (esc.agent, esc.tier) == ("kd", "warning")
    assert esc.evidence == {
        "kpi": "success_rate", "before": round(11 / 12, 6), "after": 0.5, "basis": "version",
        "before_of": "version 1", "after_of": "version 2", "version": "2",
        "previous_version": "1",
    }  # fmt: skip
    assert esc.message == "success rate of kd went from 91.7% (version 1) to 50.0% (version 2)"
