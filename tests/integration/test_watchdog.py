"""The watchdog against a real nats-server and Postgres, with short intervals (0.3 s): tiers at
the right times, recovery, exactly one escalation per incident with two replicas, a restart
after downtime, and each detector against a healthy control group."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from anyio.abc import TaskGroup
from nats.js.errors import NotFoundError

from fleetward.schemas import new_id
from fleetward.schemas.admission import admit
from fleetward.schemas.events import (
    AgentOffline,
    AgentOnline,
    AgentPaused,
    AgentRegistered,
    Deliverable,
    EscalationRaised,
    EscalationResolved,
    Event,
    Heartbeat,
    RunFinished,
    RunOutcome,
    TaskClaimed,
    TaskCreated,
    TaskLeaseExpired,
    TaskProgressed,
    TaskReviewed,
    TaskSubmitted,
    Tier,
    ToolCalled,
)
from fleetward.services.auth.store import AuthStore
from fleetward.services.clock import ManualClock
from fleetward.services.config import Settings, WatchdogSettings
from fleetward.services.jetstream.follower import StreamFollower
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.runtime.connect import Runtime, open_runtime
from fleetward.services.runtime.embedded import nats_server_binary, server_config
from fleetward.services.watchdog.core.incidents import at
from fleetward.services.watchdog.service import Watchdog
from tests.helpers import as_harness, envelope, project_all, wait_for

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = 0.3
FAST = WatchdogSettings(
    interval_s=INTERVAL, warn_misses=2, critical_misses=5, grace_s=0.5, stall_s=3600.0,
    default_sla_s=0, error_window_s=60.0, error_threshold=0.5, error_min_calls=10,
)  # fmt: skip


def register(agent: str, interval: float = INTERVAL) -> AgentRegistered:
    return AgentRegistered(**envelope(agent), agent=agent, name=agent, owner="o", team="t",
                           heartbeat_interval_s=interval)  # fmt: skip


@dataclass
class Record:
    subject: str
    event: Event
    seq: int
    time: float  # stream time, seconds


@dataclass
class Recorder:
    """Everything on fw.esc.> and fw.agent.> (FW_EVENTS), as it is stored."""

    items: list[Record] = field(default_factory=list)
    last_seq: int = 0

    def handle(self, subject: str, data: bytes, seq: int, ns: int) -> None:
        self.items.append(Record(subject, admit(subject, data), seq, ns / 1e9))
        self.last_seq = seq

    async def has_all(self, rt: Runtime) -> bool:
        """Whether everything stored on its subjects so far has been recorded."""
        last = 0
        for subject in ("fw.esc.>", "fw.agent.>"):
            with contextlib.suppress(NotFoundError):
                last = max(last, (await rt.js.get_last_msg("FW_EVENTS", subject)).seq or 0)
        return self.last_seq >= last

    def raised(self, agent: str | None = None, tier: str | None = None) -> list[Record]:
        return [
            r for r in self.items
            if isinstance(r.event, EscalationRaised)
            and (agent is None or r.event.agent == agent)
            and (tier is None or r.event.tier == tier)
        ]  # fmt: skip

    def escalations(
        self, agent: str | None = None, tier: str | None = None
    ) -> list[EscalationRaised]:
        return [r.event for r in self.raised(agent, tier) if isinstance(r.event, EscalationRaised)]

    def agents(self, tier: str | None = None) -> set[str | None]:
        return {e.agent for e in self.escalations(tier=tier)}

    def of(self, kind: type[Event]) -> list[Any]:
        return [r.event for r in self.items if isinstance(r.event, kind)]


class Beater:
    """Heartbeats for a set of agents every ``every`` seconds (core publishes, flushed)."""

    def __init__(self, rt: Runtime, agents: list[str], every: float = 0.1) -> None:
        self.rt, self.every = rt, every
        self.alive = set(agents)
        self.rounds = 0
        self.enc = msgspec.json.Encoder()

    async def run(self) -> None:
        while True:
            for agent in sorted(self.alive):  # a new heartbeat (a new id) every time
                beat = Heartbeat(**envelope(agent), agent=agent, status="busy")
                await self.rt.nc.publish(f"fw.hb.{agent}", self.enc.encode(beat))
            if self.alive and self.rt.nc.is_connected:
                with contextlib.suppress(Exception):  # an outage: try again next round
                    await self.rt.nc.flush(timeout=1)
            self.rounds += 1
            await anyio.sleep(self.every)


@contextlib.asynccontextmanager
async def running(rt: Runtime, *watchdogs: Watchdog, beater: Beater | None = None,
                  clock: ManualClock | None = None,
                  ) -> AsyncIterator[tuple[Recorder, TaskGroup]]:  # fmt: skip
    """A recorder, the watchdogs and the heartbeats, run until the block ends. A watchdog on a
    ``clock`` moved by hand sleeps until it moves: it is moved (by nothing) at the end, so that
    the watchdog wakes and sees the stop."""
    recorder = Recorder()
    follower = StreamFollower(rt.nc, rt.js, "FW_EVENTS", ("fw.esc.>", "fw.agent.>"),
                              recorder.handle, start_seq=1, name="test_recorder")  # fmt: skip
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(follower.run, stop.is_set)
        for dog in watchdogs:
            tg.start_soon(dog.run, stop.is_set)
        if beater is not None:
            tg.start_soon(beater.run)
        try:
            yield recorder, tg
        finally:
            stop.set()
            if clock is not None:
                clock.advance(0)
            if beater is not None:
                tg.cancel_scope.cancel()


def judged_past_grace(dog: Watchdog) -> bool:
    """Whether the watchdog's last judging round was past its grace (judging(now) is True)."""
    last = dog.signals.judged.last
    return last is not None and dog.judge.judging(last)


async def judging(*watchdogs: Watchdog) -> None:
    """Until each watchdog has judged a round past its grace."""
    for dog in watchdogs:
        await dog.signals.wait_for(
            lambda dog=dog: judged_past_grace(dog), 20, f"{dog.name} to judge past its grace"
        )


async def last_heartbeat(rt: Runtime, agent: str) -> float:
    msg = await rt.js.get_last_msg("FW_HEARTBEATS", f"fw.hb.{agent}")
    assert msg.time is not None
    return msg.time.timestamp()


async def test_a_silent_agent_gets_a_warning_then_a_critical_on_time_and_a_heartbeat_resolves_it(
    rt: Runtime,
) -> None:
    agents = ["dead", "ok-1", "ok-2", "ok-3"]
    await publish_many(rt.js, [register(a) for a in agents] + [
        TaskCreated(**envelope("user:p"), task="t1", project="p", title="t1"),
        TaskClaimed(**envelope("dead"), task="t1", agent="dead", epoch=1),
    ])  # fmt: skip
    dog = Watchdog(rt, FAST)
    beater = Beater(rt, agents)
    async with running(rt, dog, beater=beater) as (rec, _):
        await judging(dog)
        assert rec.raised() == []
        beater.alive.discard("dead")

        async def critical() -> list[Record]:
            return rec.raised("dead", "critical")

        [crit] = await wait_for(critical, 10, "the critical escalation")
        [warn] = rec.raised("dead", "warning")
        last = await last_heartbeat(rt, "dead")
        # never before the deadline (that the round reaching it raises is pinned, without
        # timing, by the clock-driven test below)
        assert warn.time >= last + 2 * INTERVAL, (warn.time, last)
        assert crit.time >= last + 5 * INTERVAL, (crit.time, last)
        esc = warn.event
        assert isinstance(esc, EscalationRaised) and isinstance(crit.event, EscalationRaised)
        assert (
            crit.event.escalation == esc.escalation
            and crit.subject == f"fw.esc.{esc.escalation}.svc:watchdog"
        )
        assert esc.evidence["last_seen"] and esc.evidence["misses"] == 2

        async def offline_and_released() -> bool:
            stored = await rt.js.get_last_msg("FW_EVENTS", "fw.task.t1.>")
            lease = admit(stored.subject, stored.data or b"")
            return bool(rec.of(AgentOffline)) and isinstance(lease, TaskLeaseExpired)

        await wait_for(offline_and_released, 10, "agent.offline and the lease expiry")
        [offline] = rec.of(AgentOffline)
        assert (offline.agent, offline.escalation) == ("dead", esc.escalation)

        beater.alive.add("dead")  # it comes back

        async def recovered() -> bool:
            return bool(rec.of(EscalationResolved)) and bool(rec.of(AgentOnline))

        await wait_for(recovered, 10, "the resolution and agent.online")
        [resolved] = rec.of(EscalationResolved)
        assert resolved.escalation == esc.escalation and resolved.actor == "svc:watchdog"
        assert [e.agent for e in rec.of(AgentOnline)] == ["dead"]
        assert rec.agents() == {"dead"}  # the others: nothing
        assert len(rec.raised()) == 2


async def test_driven_by_its_clock_the_watchdog_raises_in_the_round_that_reaches_a_deadline(
    rt: Runtime,
) -> None:
    """The watchdog on a clock moved by hand runs one judging round per move: a silent agent is
    warned in the round at its deadline (warn_misses intervals after its last heartbeat) and
    not in the round a millisecond before, then made critical the same way; the escalations
    carry the clock's time."""
    await publish_many(rt.js, [register("quiet")])
    await publish_many(rt.js, [Heartbeat(**envelope("quiet"), agent="quiet", status="busy")])
    last = await last_heartbeat(rt, "quiet")
    clock = ManualClock(last)  # its grace ends 0.5 s after the heartbeat, before any deadline
    dog = Watchdog(rt, FAST, clock=clock)
    signals = dog.signals

    async def round_at(when: float) -> str:
        """Move the clock to ``when``; the agent's state after the round it causes."""
        clock.set(when)
        await signals.wait_for(lambda: signals.ticked.last == when, what=f"a round at {when}")
        return dog.judge.liveness.agents["quiet"].state

    async with running(rt, dog, clock=clock) as (rec, _):

        async def read() -> bool:  # over NATS: no round is needed for it
            return dog.caught_up()

        await wait_for(read, 20, "the watchdog to read the streams")
        liveness = dog.judge.liveness
        agent = liveness.agents["quiet"]
        warn_at, critical_at = liveness.warn_at(agent), liveness.critical_at(agent)
        assert warn_at == pytest.approx(last + 2 * INTERVAL, abs=1e-6)
        assert critical_at == pytest.approx(last + 5 * INTERVAL, abs=1e-6)
        assert await round_at(warn_at - 0.001) == "alive"
        assert judged_past_grace(dog)  # it judged in that round, and found nothing due
        assert await round_at(warn_at) == "warning"
        assert await round_at(critical_at - 0.001) == "warning"
        assert await round_at(critical_at) == "critical"

        await signals.wait_for(lambda: signals.published.count >= 2, 10, "both plans published")
        assert signals.published.count == 2  # the warning's plan, the critical one's
        await wait_for(lambda: rec.has_all(rt), 10, "the recorder to catch up")
        warn, crit = rec.escalations("quiet")
        assert (warn.tier, crit.tier) == ("warning", "critical")
        assert warn.at == at(warn_at) and crit.at == at(critical_at)
        assert crit.escalation == warn.escalation
        assert [e.agent for e in rec.of(AgentOffline)] == ["quiet"]


async def test_two_watchdogs_raise_exactly_one_escalation_per_incident(
    rt: Runtime, settings: Any
) -> None:
    silent = [f"s-{i:03d}" for i in range(200)]
    healthy = [f"h-{i:02d}" for i in range(20)]
    await publish_many(rt.js, [register(a, 1.0) for a in silent + healthy])
    settings_b = replace(FAST, interval_s=1.0)
    async with open_runtime(settings, identity=as_harness(settings)) as rt2:
        a, b = Watchdog(rt, settings_b, name="wd_a"), Watchdog(rt2, settings_b, name="wd_b")
        beater = Beater(rt, silent + healthy)
        async with running(rt, a, b, beater=beater) as (rec, _):
            await judging(a, b)
            beater.alive -= set(silent)

            async def all_critical() -> bool:
                return len(rec.raised(tier="critical")) >= len(silent)

            await wait_for(all_critical, 30, "200 critical escalations")

            async def settled() -> bool:  # both publishers idle, every offline event stored
                idle = a.publisher.in_flight == 0 and b.publisher.in_flight == 0
                return idle and len(rec.of(AgentOffline)) >= len(silent)

            await wait_for(settled, 10, "the watchdogs to finish publishing")
            raised = rec.escalations()
            per_incident = {(e.agent, e.tier) for e in raised}
            assert len(raised) == 2 * len(silent) == len(per_incident)
            assert {agent for agent, _ in per_incident} == set(silent)
            assert len({e.escalation for e in raised}) == len(silent)
            assert sorted(e.agent for e in rec.of(AgentOffline)) == silent
            stored = a.publisher.outcomes["stored"] + b.publisher.outcomes["stored"]
            assert stored == 3 * len(silent)  # warning, critical, offline: each stored once
            raced = a.publisher.outcomes["duplicate"] + b.publisher.outcomes["duplicate"]
            assert raced > 0, "the replicas never raced: the test proves nothing"


async def test_a_watchdog_restarted_after_downtime_escalates_only_the_truly_silent(
    rt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    silent = [f"s-{i}" for i in range(10)]
    healthy = [f"h-{i}" for i in range(10)]
    await publish_many(rt.js, [register(a) for a in silent + healthy])
    watchdog_env = env | {
        "FLEETWARD_METRICS_PORT": "0",
        "FLEETWARD_WATCHDOG_INTERVAL_S": str(INTERVAL),
        "FLEETWARD_WATCHDOG_GRACE_S": "0.5",
    }
    beater = Beater(rt, silent + healthy)
    async with running(rt, beater=beater) as (rec, _):
        with spawn_watchdog(watchdog_env, tmp_path / "first") as (first, logs):
            await wait_for(lambda: caught_up(first, logs), 30, "the first watchdog to judge")
            stop(first, logs)
        assert rec.raised() == []
        beater.alive -= set(silent)
        last = max([await last_heartbeat(rt, a) for a in silent])

        async def three_intervals_later() -> bool:  # by the stream's clock
            return await last_heartbeat(rt, healthy[0]) > last + 3 * INTERVAL

        await wait_for(three_intervals_later, 10, "three intervals of downtime")
        with spawn_watchdog(watchdog_env, tmp_path / "second") as (second, logs):

            async def escalated() -> bool:
                return rec.agents("critical") == set(silent)

            await wait_for(escalated, 30, "the silent agents' critical escalations")
            port = int(re.findall(r"metrics on :(\d+)", (logs / "stdout").read_text())[0])

            async def exported() -> str:  # the gauges follow within a second
                text = await http_metrics(port)
                return text if 'fleetward_watchdog_agents{state="offline"} 10.0' in text else ""

            metrics = await wait_for(exported, 10, "the metrics to show the offline agents")
            stop(second, logs)
        assert rec.agents() == set(silent)
        assert "fleetward_watchdog_agents_tracked 20.0" in metrics
        assert 'fleetward_watchdog_agents{state="alive"} 10.0' in metrics
        critical = 'fleetward_escalations_raised_total{reason="heartbeat_missed",tier="critical"}'
        assert f"{critical} 10.0" in metrics
        assert (
            'fleetward_watchdog_detection_delay_seconds_count{reason="heartbeat_missed"}' in metrics
        )


@contextlib.contextmanager
def spawn_watchdog(
    env: dict[str, str], logs: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    logs.mkdir(parents=True)
    with (logs / "stdout").open("wb") as out, (logs / "stderr").open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "fleetward.services.cli", "watchdog"],
                                cwd=ROOT, env=env, stdout=out, stderr=err)  # fmt: skip
    try:
        yield proc, logs
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def caught_up(proc: subprocess.Popen[bytes], logs: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"the watchdog exited {proc.returncode}: {output(logs)}")
    return "caught up" in (logs / "stderr").read_text()


def stop(proc: subprocess.Popen[bytes], logs: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, output(logs)
    assert "Traceback" not in (logs / "stderr").read_text(), output(logs)


def output(logs: Path) -> str:
    return f"stdout:\n{(logs / 'stdout').read_text()}\nstderr:\n{(logs / 'stderr').read_text()}"


async def http_metrics(port: int) -> str:
    chunks: list[bytes] = []
    with anyio.fail_after(5):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            with contextlib.suppress(anyio.EndOfStream):
                while True:
                    chunks.append(await stream.receive())
    return b"".join(chunks).decode()


# ---- the detectors ---------------------------------------------------------------------------


def tool(agent: str, ok: bool) -> ToolCalled:
    return ToolCalled(**envelope(agent), agent=agent, tool="shell", duration_ms=3.0, ok=ok,
                      error=None if ok else "exit 1")  # fmt: skip


def progress(agent: str, task: str) -> TaskProgressed:
    return TaskProgressed(**envelope(agent), task=task, agent=agent, epoch=1)


def finished(agent: str, outcome: RunOutcome = "succeeded") -> RunFinished:
    return RunFinished(**envelope(agent), agent=agent, run=new_id()[-12:], outcome=outcome,
                       latency_ms=5.0)  # fmt: skip


async def test_each_detector_fires_on_its_condition_and_the_control_group_stays_quiet(
    rt: Runtime,
) -> None:
    settings = WatchdogSettings(
        interval_s=1.0, grace_s=0.5, stall_s=0.8, default_sla_s=0, error_window_s=30.0,
        error_threshold=0.5, error_min_calls=6, wake_runs=4, wake_window_s=30.0,
    )  # fmt: skip
    firing = {"od": "task_overdue", "st": "task_stalled", "te": "tool_error_spike",
              "wl": "wake_loop"}  # fmt: skip
    control = ["od-ok", "st-ok", "te-ok", "wl-ok"]
    agents = [*firing, *control]
    tasks = {"od": 0.8, "od-ok": 0.8, "st": 60.0, "st-ok": 60.0, "wl-ok": 60.0}  # task: SLA
    setup: list[Event] = [register(a, 1.0) for a in agents]
    for agent, sla in tasks.items():
        task = f"t-{agent}"
        setup += [TaskCreated(**envelope("user:p"), task=task, project="p", title=task, sla_s=sla),
                  TaskClaimed(**envelope(agent), task=task, agent=agent, epoch=1)]  # fmt: skip
    await publish_many(rt.js, setup)
    dog = Watchdog(rt, settings)
    beater = Beater(rt, agents)

    async def reports() -> None:  # the busy holders report every 0.2 s; "st" never does
        n = 0
        while True:
            n += 1
            batch: list[Event] = [progress(a, f"t-{a}") for a in ("od", "st-ok", "wl-ok")]
            if n == 2:  # the punctual one hands in before its SLA, and is reviewed in time
                batch.append(TaskSubmitted(**envelope("od-ok"), task="t-od-ok", agent="od-ok",
                    epoch=1, deliverable=Deliverable(kind="link", sha256="0" * 64)))  # fmt: skip
                batch.append(TaskReviewed(**envelope("user:r"), task="t-od-ok", agent="od-ok",
                                          verdict="approve"))  # fmt: skip
            await publish_many(rt.js, batch)
            await anyio.sleep(0.2)

    async with running(rt, dog, beater=beater) as (rec, tg):
        tg.start_soon(reports)
        await judging(dog)
        # the controls' events go first: by the time the firing ones are judged, so are they
        healthy: list[Event] = [tool("te-ok", ok=k != 3) for k in range(8)]
        for _ in range(5):
            healthy += [finished("wl-ok"), progress("wl-ok", "t-wl-ok")]
        await publish_many(rt.js, healthy)
        spike: list[Event] = [tool("te", ok=k % 4 == 0) for k in range(8)]
        await publish_many(rt.js, [*spike, *(finished("wl") for _ in range(5))])

        async def all_fired() -> bool:
            return rec.agents() >= set(firing)

        await wait_for(all_fired, 15, "all four detectors to fire")
        signals = dog.signals
        started = signals.judged.last
        assert started is not None

        def judged_past_the_controls() -> bool:  # their deadlines have passed, twice over
            judged = signals.judged.last
            return judged is not None and judged > started + 2 * 0.8 and not dog.publisher.in_flight

        await signals.wait_for(judged_past_the_controls, 10, "judging past the controls' deadlines")
        by_agent = {e.agent: e for e in rec.escalations()}
        assert {a: e.reason for a, e in by_agent.items()} == firing
        assert len(rec.raised()) == 4
        assert by_agent["te"].tier == "critical"
        assert {by_agent[a].tier for a in ("od", "st", "wl")} == {"warning"}
        assert (by_agent["od"].task, by_agent["st"].task) == ("t-od", "t-st")
        await assert_paused_by_the_watchdog(rt, rec, "te", by_agent["te"].escalation)


async def assert_paused_by_the_watchdog(rt: Runtime, rec: Recorder, agent: str, esc: str) -> None:
    """The watchdog paused ``agent`` as an operator would: one ``agent.paused`` on the agent's
    subject naming ``esc``, which the projections apply; no command of its own on FW_COMMANDS
    (the board turns every agent.paused into the inbox's pause command)."""
    await wait_for(lambda: rec.has_all(rt), 10, "the recorder to catch up")
    [paused] = [e for e in rec.of(AgentPaused) if e.agent == agent]
    assert paused.actor == "svc:watchdog" and esc in paused.reason
    with pytest.raises(NotFoundError):
        await rt.js.get_last_msg("FW_COMMANDS", f"fw.cmd.{agent}.svc:watchdog")
    await project_all(rt)
    async with rt.pool.acquire() as conn:
        status = await conn.fetchval("SELECT status FROM fleet.agents WHERE agent_id = $1", agent)
    assert status == "paused"


async def test_runs_failed_in_a_row_escalate_and_pause_the_agent_like_an_operator(
    rt: Runtime,
) -> None:
    """Five failed runs in a row (a control fails four, succeeds, fails four): one critical
    failed_runs escalation, and the agent paused through agent.paused, which the registry
    applies; no pause command of the watchdog's own."""
    agents = ["fr", "fr-ok"]
    await publish_many(rt.js, [register(a, 1.0) for a in agents])
    # runs without progress are a wake loop too: not what this test is about
    dog = Watchdog(rt, replace(FAST, interval_s=1.0, failed_runs=5, wake_runs=100))
    async with running(rt, dog, beater=Beater(rt, agents)) as (rec, _):
        await judging(dog)
        control = [finished("fr-ok", "failed") for _ in range(4)]
        control += [finished("fr-ok"), *(finished("fr-ok", "failed") for _ in range(4))]
        await publish_many(rt.js, [*control, *(finished("fr", "failed") for _ in range(6))])

        async def escalated() -> list[EscalationRaised]:
            return rec.escalations("fr")

        [esc] = await wait_for(escalated, 10, "the failed_runs escalation")
        assert (esc.reason, esc.tier, esc.evidence["failed_runs"]) == ("failed_runs", "critical", 5)
        await assert_paused_by_the_watchdog(rt, rec, "fr", esc.escalation)
        await dog.signals.wait_for(lambda: not dog.publisher.in_flight, 10, "publishing to end")
        assert [e.agent for e in rec.escalations()] == ["fr"]


# ---- the escalations projection and CLI ----------------------------------------------------


async def fleetward(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-m", "fleetward.services.cli", *args], cwd=ROOT, env=env, check=False
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def escalation(esc: str, tier: Tier, agent: str) -> EscalationRaised:
    return EscalationRaised(
        **envelope("svc:watchdog"), escalation=esc, tier=tier, reason="heartbeat_missed",
        agent=agent, message=f"{agent} silent",
    )  # fmt: skip


async def test_people_list_acknowledge_and_resolve_escalations(
    rt: Runtime, env: dict[str, str]
) -> None:
    # raised in this order; listed critical first, the oldest first within a tier
    raises: list[tuple[str, Tier, str]] = [
        ("esc-warn-old", "warning", "a1"), ("esc-crit-old", "critical", "a2"),
        ("esc-info", "info", "a3"), ("esc-crit-new", "critical", "a4"),
    ]  # fmt: skip
    for esc, tier, agent in raises:
        await publish_many(rt.js, [escalation(esc, tier, agent)])
    await project_all(rt)
    code, out, err = await fleetward(env, "escalations")
    assert code == 0, err
    order = re.findall(r"esc-[a-z-]+", out)
    assert order == ["esc-crit-old", "esc-crit-new", "esc-warn-old", "esc-info"], out

    code, out, err = await fleetward(env, "escalations", "ack", "esc-crit-new", "--note", "on it")
    assert (code, out.strip()) == (0, "acknowledged esc-crit-new"), err
    code, out, err = await fleetward(env, "escalations", "resolve", "esc-crit-old",
                                     "--resolution", "restarted it")  # fmt: skip
    assert (code, out.strip()) == (0, "resolved esc-crit-old"), err
    lasts = [await rt.js.get_last_msg("FW_EVENTS", f"fw.esc.{esc}.>")
             for esc in ("esc-crit-new", "esc-crit-old")]  # fmt: skip
    answers = [admit(m.subject, m.data or b"") for m in lasts]
    assert [type(e).__name__ for e in answers] == ["EscalationAcknowledged", "EscalationResolved"]
    assert all(e.actor.startswith("user:") for e in answers)

    await project_all(rt)
    async with rt.pool.acquire() as conn:
        rows = {r["escalation_id"]: r for r in await conn.fetch("SELECT * FROM fleet.escalations")}
    assert (rows["esc-crit-new"]["state"], rows["esc-crit-new"]["ack_note"]) == (
        "acknowledged", "on it")  # fmt: skip
    assert (rows["esc-crit-old"]["state"], rows["esc-crit-old"]["open"]) == ("resolved", False)
    code, out, _ = await fleetward(env, "escalations")
    assert "esc-crit-old" not in out and "acknowledged" in out
    code, out, _ = await fleetward(env, "escalations", "--all")
    assert "esc-crit-old" in out and "resolved" in out

    for args, problem in [
        (("ack", "nope"), "no escalation 'nope'"),
        (("resolve", "esc-crit-old"), "escalation 'esc-crit-old' is already resolved"),
        (
            ("ack", "fw.>"),
            "argument escalation_id: 'fw.>' is not a valid escalation id: 1 to "
            "64 characters of A-Z a-z 0-9 _ - (see 'fleetward escalations ack --help')",
        ),
    ]:
        code, _, err = await fleetward(env, "escalations", *args)
        assert (code, err.strip().splitlines()) == (2, [f"fleetward: error: {problem}"]), err


# ---- a NATS outage -------------------------------------------------------------------------


@contextlib.contextmanager
def nats_on(port: int, store: Path, auth: AuthStore) -> Iterator[subprocess.Popen[bytes]]:
    """A nats-server on a fixed port (so clients can reconnect to it after a restart), with
    authentication as every Fleetward server has it."""
    store.mkdir(parents=True, exist_ok=True)
    config = store / "nats-server.conf"
    config.write_text(server_config(store, auth, port))
    args = ["-c", str(config)]
    with (store.parent / f"nats-{port}.log").open("ab") as log:
        proc = subprocess.Popen([nats_server_binary(), *args], stdout=log, stderr=log)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_after_a_nats_outage_the_watchdog_waits_a_grace_period_before_judging(
    database: str, tmp_path: Path, auth: AuthStore
) -> None:
    port, store = free_port(), tmp_path / "js"
    settings = Settings.from_env({"FLEETWARD_NATS_URL": f"nats://127.0.0.1:{port}",
                                  "FLEETWARD_DATABASE_URL": database,
                                  "FLEETWARD_HOME": str(tmp_path / "home"),
                                  "FLEETWARD_AUTH_DIR": str(auth.root)})  # fmt: skip
    agents = [f"a-{i}" for i in range(10)]
    server = nats_on(port, store, auth)
    server.__enter__()
    try:
        async with (
            open_runtime(settings, identity=as_harness(settings)) as rt,
            open_runtime(settings, identity=as_harness(settings)) as agents_rt,
        ):
            await publish_many(rt.js, [register(a) for a in [*agents, "dead"]])
            # the agents' clients reconnect up to ~1 s after the server is back: a grace of 2 s
            dog = Watchdog(rt, replace(FAST, grace_s=2.0))
            beater = Beater(agents_rt, agents)
            async with running(rt, dog, beater=beater) as (rec, _):
                await judging(dog)
                await wait_for(lambda: _agents(rec, {"dead"}), 10, "the dead agent's escalation")
                beater.alive.clear()  # the agents lose NATS too, and come back a while later
                grace_before = dog.judge.grace_until
                server.__exit__(None, None, None)
                await wait_for(_not(rt), 10, "the watchdog to notice the outage")
                ok, why = dog.health()  # not ready, and it says why
                assert not ok and why.startswith("disconnected from NATS"), why
                down = dog.clock.now()

                def outage_over() -> bool:  # the outage lasts past the critical deadline
                    return (dog.signals.ticked.last or down) - down > 5 * INTERVAL

                await dog.signals.wait_for(outage_over, 5, "a round five intervals into the outage")
                server = nats_on(port, store, auth)
                server.__enter__()

                async def reconnected() -> bool:
                    return rt.nc.is_connected and agents_rt.nc.is_connected

                await wait_for(reconnected, 15, "both clients to reconnect")
                beater.alive.update(agents)
                assert dog.judge.grace_until > grace_before + 1.0  # moved past the outage

                await dog.signals.wait_for(
                    lambda: judged_past_grace(dog), 15, "the watchdog to judge again"
                )
                await wait_for(lambda: rec.has_all(rt), 10, "the recorder to catch up")
                assert rec.agents() == {"dead"}
    finally:
        server.__exit__(None, None, None)


async def _agents(rec: Recorder, expected: set[str]) -> bool:
    return rec.agents() == expected


def _not(rt: Runtime) -> Any:
    async def check() -> bool:
        return not rt.nc.is_connected

    return check
