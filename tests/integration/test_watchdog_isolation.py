"""No agent, event or row stops the watchdog (issue 11, item 2; DESIGN 3.6), against a real
nats-server and Postgres: raw payloads that today's admission accepts, with the extremes of every
field the watchdog reads, and projection rows that hold worse. The watchdog stays alive, judges
the rest on time, after a restart too, and its health says why whenever it is not judging."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from fleetward.schemas import new_id
from fleetward.schemas.bounds import (
    MAX_COST_USD,
    MAX_DURATION_MS,
    MAX_FLOAT,
    MAX_PERIOD_S,
    MAX_SLA_S,
    MIN_PERIOD_S,
)
from fleetward.schemas.headers import MSG_ID
from fleetward.services import metrics
from fleetward.services.clock import ManualClock
from fleetward.services.runtime.connect import Runtime
from fleetward.services.watchdog.core.failures import STAGES
from fleetward.services.watchdog.service import STALE_S, Watchdog
from tests.helpers import http_get, wait_for
from tests.integration.test_watchdog import (
    FAST,
    Beater,
    Recorder,
    caught_up,
    judging,
    register,
    running,
    spawn_watchdog,
    stop,
)

HUGE_INT = 2**63 - 1  # the largest integer admission takes in evidence


def raw(payload: dict[str, Any]) -> bytes:
    """An event as an agent in any language could send it: JSON with the envelope added."""
    return msgspec.json.encode({"id": new_id(), "at": datetime.now(UTC).isoformat(), **payload})


async def publish_raw(rt: Runtime, boundary: str, payload: dict[str, Any]) -> None:
    """Publish ``payload`` on its subject in ``boundary`` (``fw.agent.a1``): contract v2, the
    subject carries the payload's actor."""
    data = raw(payload)
    subject = f"{boundary}.{payload['actor']}"
    await rt.js.publish(subject, data, headers={MSG_ID: msgspec.json.decode(data)["id"]})


MAX_INT4 = 2**31 - 1  # the largest epoch or task limit admission takes


def _extremes(
    *,
    tiny: float,
    huge: float,
    big: int,
    cost: float,
    dur: float,
    sla: tuple[float, float],
    ev_int: int,
    ev_float: float,
) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "fw.agent.tiny",
            {
                "type": "agent.registered",
                "actor": "tiny",
                "agent": "tiny",
                "name": "n",
                "owner": "o",
                "team": "t",
                "heartbeat_interval_s": tiny,
            },
        ),
        (
            "fw.agent.huge",
            {
                "type": "agent.registered",
                "actor": "huge",
                "agent": "huge",
                "name": "n",
                "owner": "o",
                "team": "t",
                "heartbeat_interval_s": huge,
                "max_concurrent_tasks": big,
            },
        ),
        (
            "fw.agent.max",
            {
                "type": "agent.registered",
                "actor": "max",
                "agent": "max",
                "name": "n",
                "owner": "o",
                "team": "t",
                "heartbeat_interval_s": huge,
            },
        ),
        (
            "fw.task.t-tiny",
            {
                "type": "task.created",
                "actor": "user:p",
                "task": "t-tiny",
                "project": "p",
                "title": "t",
                "sla_s": sla[0],
            },
        ),
        (
            "fw.task.t-tiny",
            {
                "type": "task.claimed",
                "actor": "tiny",
                "task": "t-tiny",
                "agent": "tiny",
                "epoch": big,
                "lease_s": huge,
            },
        ),
        (
            "fw.task.t-huge",
            {
                "type": "task.created",
                "actor": "user:p",
                "task": "t-huge",
                "project": "p",
                "title": "t",
                "sla_s": sla[1],
            },
        ),
        (
            "fw.task.t-huge",
            {
                "type": "task.claimed",
                "actor": "huge",
                "task": "t-huge",
                "agent": "huge",
                "epoch": big,
                "lease_s": tiny,
            },
        ),
        (
            "fw.agent.huge",
            {
                "type": "tool.called",
                "actor": "huge",
                "agent": "huge",
                "tool": "x" * 200,
                "duration_ms": dur,
                "ok": False,
                "error": "e" * 8000,
                "cost_usd": cost,
            },
        ),
        (
            "fw.agent.huge",
            {
                "type": "run.finished",
                "actor": "huge",
                "agent": "huge",
                "run": "r",
                "outcome": "failed",
                "latency_ms": dur,
            },
        ),
        (
            "fw.esc.e-extreme",
            {
                "type": "escalation.raised",
                "actor": "svc:other",
                "escalation": "e-extreme",
                "tier": "critical",
                "reason": "heartbeat_missed",
                "agent": "max",
                "task": "t-huge",
                "message": "m" * 8000,
                "evidence": {
                    "last_heartbeat_seq": ev_int,
                    "epoch": -ev_int - 1,
                    "interval_s": ev_float,
                    "misses": True,
                    "deadline": None,
                },
            },
        ),
        (
            "fw.esc.e-task",
            {
                "type": "escalation.raised",
                "actor": "svc:other",
                "escalation": "e-task",
                "tier": "warning",
                "reason": "task_overdue",
                "agent": "huge",
                "task": "t-huge",
                "evidence": {"epoch": ev_int},
            },
        ),
    ]


# the extremes of every field the watchdog reads that admission accepts (schemas/bounds.py) ...
EXTREMES = _extremes(
    tiny=MIN_PERIOD_S,
    huge=MAX_PERIOD_S,
    big=MAX_INT4,
    cost=MAX_COST_USD,
    dur=MAX_DURATION_MS,
    sla=(MIN_PERIOD_S, MAX_SLA_S),
    ev_int=HUGE_INT,
    ev_float=MAX_FLOAT,
)
# ... and beyond them, as admission accepted before it had bounds: refused now, never applied
BEYOND = _extremes(
    tiny=5e-324,
    huge=1e308,
    big=2**64 - 1,
    cost=1e308,
    dur=1e308,
    sla=(5e-324, 1e308),
    ev_int=2**64 - 1,
    ev_float=1e308,
)


async def insert_extreme_rows(rt: Runtime) -> None:
    """Rows the projections may hold (written before a bound existed, or by hand): the
    watchdog reads them at start."""
    async with rt.pool.acquire() as conn:
        for agent, interval in [("row-tiny", 5e-324), ("row-nan", float("nan")),
                                ("row-inf", float("inf")), ("row-zero", 0.0)]:  # fmt: skip
            await conn.execute(
                "INSERT INTO fleetward.agents (agent_id, name, owner, team, purpose, risk_class,"
                " version, status, status_reason, heartbeat_interval_s, roles,"
                " max_concurrent_tasks, registered_at, updated_at, last_seq)"
                " VALUES ($1, $1, 'o', 't', '', 'low', '1', 'active', '', $2, '{}', 1, now(),"
                " now(), 0)",
                agent, interval,
            )  # fmt: skip
        await conn.execute(
            "INSERT INTO fleetward.tasks (task_id, project, title, description, priority, status,"
            " assignee, claim_epoch, lease_s, depends_on, sla_s, review_rounds, rework_count,"
            " deliverable_version, created_by, created_at, updated_at, claimed_at,"
            " last_progress_at, last_seq)"
            " VALUES ('t-row', 'p', 't', '', 'low', 'in_progress', 'row-tiny', 1, 1e308, '{}',"
            " 'NaN', 0, 0, 0, 'user:p', now(), now(), now(), now(), 0)"
        )


async def more_rounds(dog: Watchdog, n: int) -> None:
    judged = dog.signals.judged
    until = judged.count + n
    await dog.signals.wait_for(lambda: judged.count >= until, 10, f"{n} more judging rounds")


def recorded(rec: Recorder, rt: Runtime) -> Callable[[], Awaitable[bool]]:
    return lambda: rec.has_all(rt)


def failures() -> dict[str, float]:
    return {
        s: metrics.REGISTRY.get_sample_value("fleetward_watchdog_failures_total", {"stage": s})
        or 0.0
        for s in STAGES
    }


async def test_extreme_values_never_stop_the_watchdog_and_the_rest_are_judged(rt: Runtime) -> None:
    """``heartbeat_interval_s: 5e-324`` made the watchdog exit with OverflowError at the first
    judgement of that agent, and again after every restart. Admission now refuses it; rows
    written before the bounds existed still hold it, and the clamps judge those."""
    for subject, payload in BEYOND + EXTREMES:
        await publish_raw(rt, subject, payload)
    await rt.js.publish("fw.agent.dead.dead", raw(msgspec.to_builtins(register("dead"))))
    await rt.js.publish("fw.agent.ok.ok", raw(msgspec.to_builtins(register("ok"))))
    await insert_extreme_rows(rt)
    before = failures()
    raised_after_first = 0
    for restart in range(2):  # a restart reads it all again
        dog = Watchdog(rt, FAST, name=f"wd{restart}")
        beater = Beater(rt, ["ok", "huge", "max"])
        async with running(rt, dog, beater=beater) as (rec, _):
            await judging(dog)
            if restart == 0:

                async def silent_ones_escalated(rec: Recorder = rec) -> bool:
                    return rec.agents("critical") >= {"tiny", "dead", "row-tiny", "row-zero"}

                await wait_for(silent_ones_escalated, 15, "the silent agents' escalations")
            await more_rounds(dog, 20)
            await wait_for(recorded(rec, rt), 10, "the recorder to catch up")
            tiny = next(e for e in rec.escalations("tiny") if e.tier == "critical")
            assert tiny.evidence["interval_s"] == MIN_PERIOD_S
            worse = next(e for e in rec.escalations("row-tiny") if e.tier == "critical")
            assert worse.evidence["interval_s"] == 0.001  # a row's 5e-324: 1 ms (limits.period)
            # the other silent ones: escalated; those that heartbeat or promised ~forever: not
            ours = {e.agent for e in rec.escalations() if e.actor == "svc:watchdog"}
            assert ours == {"tiny", "dead", "row-tiny", "row-zero"}
            if restart == 0:
                raised_after_first = len(rec.raised())
            else:  # nothing raised twice
                assert len(rec.raised()) == raised_after_first
            assert dog.health() == (True, "judging")
            assert dog.judge.failures.total == 0
    assert failures() == before  # the clamps leave nothing to isolate


async def test_a_round_that_raises_is_counted_the_watchdog_lives_and_its_health_says_why(
    rt: Runtime,
) -> None:
    await rt.js.publish("fw.agent.a1.a1", raw(msgspec.to_builtins(register("a1"))))
    clock = ManualClock(time.time())
    dog = Watchdog(rt, FAST, clock=clock)
    signals = dog.signals
    assert dog.health() == (False, "cannot read the projections yet")

    async def round_at(when: float) -> None:
        clock.set(when)
        await signals.wait_for(lambda: signals.ticked.last == when, 10, f"a round at {when}")

    async with running(rt, dog, clock=clock):

        async def read() -> bool:
            return dog.caught_up()

        await wait_for(read, 20, "the watchdog to read the streams")
        await round_at(clock.now() + 0.01)
        ok, why = dog.health()
        assert ok and why.startswith("in grace until"), why
        await round_at(clock.now() + FAST.grace_s)
        assert dog.health() == (True, "judging")

        tick = dog.judge.tick

        def broken(now: float) -> Any:
            raise ZeroDivisionError("a bug in judging")

        dog.judge.tick = broken  # type: ignore[method-assign]
        before = failures()["tick"]
        await round_at(clock.now() + STALE_S + 1)
        ok, why = dog.health()
        assert not ok
        assert why == (
            f"no judging round completed for {STALE_S + 1:.1f}s; "
            "last failure at tick: ZeroDivisionError: a bug in judging"
        )
        assert failures()["tick"] == before + 1

        dog.judge.tick = tick  # type: ignore[method-assign]
        await round_at(clock.now() + 0.01)
        assert dog.health() == (True, "judging")


async def test_the_watchdog_process_reports_its_health_with_reasons(
    rt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    await rt.js.publish("fw.agent.a1.a1", raw(msgspec.to_builtins(register("a1"))))
    watchdog_env = env | {"FLEETWARD_METRICS_PORT": "0", "FLEETWARD_WATCHDOG_GRACE_S": "0.5"}
    with spawn_watchdog(watchdog_env, tmp_path / "wd") as (proc, logs):
        await wait_for(lambda: caught_up(proc, logs), 30, "the watchdog to catch up")
        port = int(re.findall(r"metrics on :(\d+)", (logs / "stdout").read_text())[0])

        async def judging_reported() -> dict[str, Any]:
            status, body = await http_get(port, "/healthz")
            report: dict[str, Any] = msgspec.json.decode(body)
            return report if status == 200 and "in grace" not in body else {}

        report = await wait_for(judging_reported, 10, "/healthz to report judging")
        assert report["checks"] == {"nats": {"ok": True, "reason": "connected"},
                                    "watchdog": {"ok": True, "reason": "judging"}}  # fmt: skip
        stop(proc, logs)


async def test_an_event_the_decoder_cannot_take_is_skipped_and_counted(rt: Runtime) -> None:
    """An unknown field nested 1,000 deep (2 KB) makes the decoder raise RecursionError, which
    admission does not turn into a rejection (yet): the watchdog counts it and reads on."""
    dog = Watchdog(rt, FAST)
    deep = b'{"type": "agent.registered", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    counts = failures()
    before = counts["event"] + counts["heartbeat"] + dog.rejected
    dog._on_event("fw.agent.a1.a1", deep, 7, time.time_ns())
    dog._on_heartbeat("fw.hb.a1", deep.replace(b"agent.registered", b"agent.heartbeat"), 8, 0)
    after = failures()
    assert after["event"] + after["heartbeat"] + dog.rejected == before + 2
