"""The watchdog service: heartbeats and activity in, escalations out (the judging is in
services/watchdog/core/judge.py; this module only reads, times and publishes).

At start it reads the agent registry, the open tasks (with the columns the task state machine
reads: core/mirror.py), the ended tasks they depend on and the open escalations from the
projections in one snapshot, with their checkpoints; then it follows fw.agent.> and fw.task.>
(FW_EVENTS, together, in order) from the older of their projections' checkpoints, fw.esc.> from
its own, and FW_HEARTBEATS from each agent's last heartbeat, with ordered ephemeral consumers
(services/jetstream/follower.py). Its state is
rebuilt at every start, so nothing it reads is acknowledged. Every ``drift_every_s`` it reads
the KPI sums (projection spend's rollups, reviewed deliverables) for the KPI drift
(core/drift.py).

Time: heartbeats are judged by the stream's timestamps; "now" is this host's clock
(``time.time()``), or the ``Clock`` a test gives it (services/clock.py), which also paces the
judging loop. Hosts are assumed NTP-synced with the NATS servers: a skew of s seconds shifts
every deadline by s.

Grace: nothing is judged while disconnected or while a reader has not caught up (at start, or
after re-creating its consumer on a reconnect or a JetStream outage), nor for one grace period
after: the agents need about as long to be heard again.

Isolation (DESIGN 3.6): one row, message, agent or task never stops the watchdog. A row read at
start, a heartbeat or an event whose handling raises is skipped; the core isolates each agent,
task and lease it judges (core/failures.py); a judging round that raises anyway is retried in
the next. Each failure is logged with its traceback and counted in
``fleetward_watchdog_failures_total{stage}``.

Health (``health``): not ready, with the reason, while the projections cannot be read, NATS is
away, the readers have not caught up, or no judging round has completed for ``STALE_S``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectSendStream

from fleetward.projections.approvals import gate_of
from fleetward.projections.gates import Gate
from fleetward.schemas.admission import Rejected, admit
from fleetward.schemas.events import EscalationRaised, Event
from fleetward.schemas.partitions import heartbeat_agent, partition_filter
from fleetward.schemas.roles import RoleBook
from fleetward.schemas.roles import judge as judge_role
from fleetward.schemas.streams import EVENTS_STREAM, HEARTBEATS, follower_prefix
from fleetward.schemas.subjects import wildcard
from fleetward.services import metrics
from fleetward.services.client.approvals import read_gate
from fleetward.services.client.roles import read_roles
from fleetward.services.clock import SYSTEM_CLOCK, Clock
from fleetward.services.config import WatchdogSettings
from fleetward.services.db import q
from fleetward.services.jetstream.consumer import EPOCH
from fleetward.services.jetstream.follower import StreamFollower
from fleetward.services.jetstream.plans import load_retrying, publishing
from fleetward.services.jetstream.streams import heartbeat_partitions
from fleetward.services.metrics import is_postgres_error
from fleetward.services.runtime.connect import Runtime
from fleetward.services.signals import Signal, Signals
from fleetward.services.watchdog.core.drift import AgentVersions, Sums
from fleetward.services.watchdog.core.failures import STAGES, Failure
from fleetward.services.watchdog.core.incidents import Plan, at
from fleetward.services.watchdog.core.judge import CHECKPOINTS, Judge
from fleetward.services.watchdog.core.liveness import STATES
from fleetward.services.watchdog.escalate import Publisher

log = logging.getLogger("fleetward.watchdog")

SHUTDOWN_S = 5.0  # on SIGTERM, plans in hand get this long to be published
STALE_S = 10.0  # no judging round completed for this long (by its clock): not healthy
READ_TIMEOUT_S = 20.0  # a KPI reading Postgres does not answer in this long counts as an error


def micros(when: datetime) -> int:
    """Microseconds since the epoch, exactly (as the projector stored the stream time)."""
    delta = when - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class WatchdogSignals(Signals):
    """What a watchdog announces (services/signals.py), for tests to wait on."""

    def __init__(self) -> None:
        super().__init__()
        # a round of the judging loop ended, connected or not: its "now" (clock seconds)
        self.ticked: Signal[float] = Signal(self, "ticked")
        # the judge ran in that round (NATS connected; in grace it judges no one): its "now"
        self.judged: Signal[float] = Signal(self, "judged")
        # the publisher finished a plan (stored, found done already, or dropped): its key
        self.published: Signal[str] = Signal(self, "published")


class Watchdog:
    """One watchdog replica: reads the projections once, follows the streams, judges every
    ``tick_s`` seconds (sooner when a deadline is due) by ``clock``, and publishes its plans.
    ``signals`` announce each round, each judgement and each plan published."""

    def __init__(
        self,
        rt: Runtime,
        settings: WatchdogSettings | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        tick_s: float = 0.05,
        name: str = "watchdog",
    ) -> None:
        self.rt = rt
        self.settings = settings or rt.settings.watchdog
        self.clock, self.tick_s, self.name = clock, tick_s, name
        self.signals = WatchdogSignals()
        self.judge = Judge(self.settings)
        self.publisher = Publisher(
            rt.js,
            on_stored=self._stored,
            on_closed=self.judge.found_resolved,
            on_done=self.signals.published.emit,
            clock=clock.now,
            read_gate=lambda approval: read_gate(rt.nc, approval, self.roles),
        )
        self.followers: list[StreamFollower] = []  # heartbeats, agents + tasks, escalations
        self.rejected = 0
        # people's events are judged by the roles in force at their position, as the
        # projector judges them; the followers note role changes in stream order
        self.roles = RoleBook()
        self._send: MemoryObjectSendStream[Plan] | None = None
        self._reconnects = 0
        self._restarts = 0
        self._loaded = False
        self._load_error = ""  # why the projections could not be read, while they cannot
        self._last_failure: Failure | None = None
        for stage in STAGES:  # present at 0, so increase() sees the first
            metrics.WATCHDOG_FAILURES.labels(stage)

    # ---- start -------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the projections' state in one snapshot, with their checkpoints."""
        judge, now = self.judge, self.clock.now()
        async with (
            self.rt.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            marks = await conn.fetch(q("watchdog_checkpoints"), list(CHECKPOINTS.values()))
            agents = await conn.fetch(q("watchdog_agents"))
            tasks = await conn.fetch(q("watchdog_tasks"))
            ended = await conn.fetch(q("watchdog_ended_deps"))
            open_ = await conn.fetch(q("watchdog_escalations"))
            approvals = await conn.fetch(q("watchdog_approvals"))
        done = {r["projection"]: int(r["seq"]) for r in marks}
        judge.checkpoints = {kind: done.get(p, 0) for kind, p in CHECKPOINTS.items()}
        isolated = judge.failures.isolated  # a row that cannot be judged is skipped
        for r in agents:
            with isolated("load", f"agent {r['agent_id']}"):
                judge.load_agent(
                    r["agent_id"], r["status"], r["heartbeat_interval_s"],
                    micros(r["updated_at"]), r["paused_by"],
                )  # fmt: skip
        for r in ended:
            with isolated("load", f"task {r['task_id']}"):
                judge.load_ended(r["task_id"], r["status"])
        for r in tasks:
            with isolated("load", f"task {r['task_id']}"):
                judge.load_task(dict(r), now)
        for r in open_:
            with isolated("load", f"escalation {r['escalation_id']}"):
                raised = EscalationRaised(
                    id=r["escalation_id"], actor="svc:watchdog", at=EPOCH,
                    escalation=r["escalation_id"], tier=r["tier"], reason=r["reason"],
                    agent=r["agent"], task=r["task"], message=r["message"],
                    evidence=msgspec.json.decode(r["evidence"]),
                )  # fmt: skip
                judge.load_escalation(raised, int(r["last_seq"]), now)
        for r in approvals:
            with isolated("load", f"approval {r['approval_id']}"):
                judge.load_approval(gate_of(dict(r)) or _never())
        self._report_failures()
        log.info(
            "%s: %d agents, %d tasks, %d open escalations from the projections (checkpoints %s)",
            self.name, len(agents), len(tasks), len(open_), judge.checkpoints,
        )  # fmt: skip

    # ---- reading -----------------------------------------------------------------------------

    def _on_heartbeat(self, subject: str, data: bytes, seq: int, ns: int) -> None:
        with self.judge.failures.isolated("heartbeat", f"{HEARTBEATS.name} seq {seq}"):
            agent = heartbeat_agent(subject)  # fw.hb.<agent>, or fw.hb.<p>.<agent> stored
            if not self.judge.owns(agent):
                return
            try:
                beat = admit(subject, data)
            except Rejected:
                self.rejected += 1
                metrics.WATCHDOG_REJECTED.labels(HEARTBEATS.name).inc()
                return
            task = getattr(beat, "task", None)
            now = self.clock.now()
            self._plan(self.judge.heartbeat(agent, seq, ns, now, task, event_id=beat.id))
        self._report_failures()

    def _on_event(self, subject: str, data: bytes, seq: int, ns: int) -> None:
        with self.judge.failures.isolated("event", f"{EVENTS_STREAM} seq {seq}"):
            kind = subject.split(".", 2)[1]
            try:
                event: Event = admit(subject, data)
                judge_role(event, seq, self.roles)  # as the projector judges it
            except Rejected:
                self.rejected += 1
                metrics.WATCHDOG_REJECTED.labels(EVENTS_STREAM).inc()
                return
            if kind != "person":  # role changes only change the book
                self._plan(self.judge.event(kind, event, seq, ns, self.clock.now()))
        self._report_failures()

    def _report_failures(self) -> None:
        """Log and count what the judge could not judge since the last report."""
        if not self.judge.failures:
            return
        for failure in self.judge.failures.drain():
            self._last_failure = failure
            metrics.WATCHDOG_FAILURES.labels(failure.stage).inc()
            then = "quarantined" if failure.stage == "liveness" else "skipped"
            log.error("%s: judging failed at %s for %s (%s); %s, judging the rest",
                      self.name, failure.stage, failure.key or "a round", failure, then,
                      exc_info=failure.error)  # fmt: skip

    def _plan(self, plans: list[Plan]) -> None:
        assert self._send is not None
        for plan in plans:
            self._send.send_nowait(plan)

    def _stored(self, event: Event, seq: int) -> None:
        esc = getattr(event, "escalation", None)
        if isinstance(esc, str) and event.SUBJECT_KIND == "esc":
            self.judge.stored(esc, seq)

    # ---- the loops ---------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        """(ready, why): whether this replica is judging, and the reason in words."""
        judge, now = self.judge, self.clock.now()
        if not self._loaded:
            return False, f"cannot read the projections yet{_because(self._load_error)}"
        if not self.rt.nc.is_connected:
            return False, "disconnected from NATS; judging no one until it is back"
        if not judge.ready:
            return False, "reading the streams; judging once caught up"
        last = self.signals.judged.last
        if last is None or now - last > STALE_S:
            since = "never" if last is None else f"for {now - last:.1f}s"
            failure = self._last_failure
            why = f"; last failure at {failure.stage}: {failure}" if failure else ""
            return False, f"no judging round completed {since}{why}"
        if not judge.judging(now):
            return True, f"in grace until {_hms(judge.grace_until)}"
        return True, "judging"

    async def _heartbeat_subjects(self) -> tuple[str, ...]:
        """What the heartbeat follower reads: with partition ``i/n`` of a stream stored in ``n``
        partitions, only ``fw.hb.<i>.>`` (the server sends no other agent's heartbeats); else
        the whole stream, of which ``owns`` keeps this replica's agents."""
        part, parts = self.settings.partition
        if parts == 1:
            return HEARTBEATS.subjects
        try:
            stored_in = await heartbeat_partitions(self.rt.js)
        except Exception as exc:  # NATS away or a foreign transform: read it all, judge ours
            log.warning("%s: reading every heartbeat (%s)", self.name, exc)
            return HEARTBEATS.subjects
        if stored_in != parts:
            log.warning("%s: partition %d/%d, but FW_HEARTBEATS is stored in %d partitions: "
                        "reading every heartbeat", self.name, part, parts, stored_in)  # fmt: skip
            return HEARTBEATS.subjects
        return (partition_filter(part),)

    def caught_up(self) -> bool:
        return bool(self.followers) and all(f.caught_up for f in self.followers)

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Watch until ``stopping()``; plans in hand get up to ``SHUTDOWN_S`` to be published."""
        if not await self._load_retrying(stopping):
            return
        rt, name = self.rt, self.name
        self.followers = [
            StreamFollower(rt.nc, rt.js, HEARTBEATS.name, await self._heartbeat_subjects(),
                           self._on_heartbeat, name=follower_prefix(f"{name}_hb")),
        ]  # fmt: skip
        # agent and task events in one reader, in stream order (the wake-loop detector weighs
        # runs against task progress); escalations in another, from their own checkpoint: a
        # checkpoint is the last sequence of *its* subjects, and escalations may be rare
        marks = self.judge.checkpoints
        self.followers += [
            StreamFollower(rt.nc, rt.js, EVENTS_STREAM, (wildcard("agent"), wildcard("task"),
                           wildcard("person")), self._on_event,
                           start_seq=min(marks["agent"], marks["task"]) + 1,
                           name=follower_prefix(f"{name}_events")),
            StreamFollower(rt.nc, rt.js, EVENTS_STREAM, (wildcard("esc"), wildcard("person")),
                           self._on_event, start_seq=marks["esc"] + 1,
                           name=follower_prefix(f"{name}_esc")),
            # approval requests and decisions (people's judged by roles, as the projector does)
            StreamFollower(rt.nc, rt.js, EVENTS_STREAM,
                           (wildcard("approval"), wildcard("person")), self._on_event,
                           start_seq=marks["approval"] + 1,
                           name=follower_prefix(f"{name}_approvals")),
        ]  # fmt: skip
        self.judge.enter_grace(self.clock.now())
        self._reconnects = rt.nc.stats["reconnects"]
        plans = anyio.create_memory_object_stream[Plan](math.inf)
        self._send = plans[0]
        readers = [partial(f.run, stopping) for f in self.followers]
        loops = [partial(self._judge, stopping), partial(self._kpi_drift, stopping)]
        await publishing(self.publisher.run, plans, [*readers, *loops], SHUTDOWN_S)

    async def _load_retrying(self, stopping: Callable[[], bool]) -> bool:
        async def load() -> None:
            await self.load()
            self.roles = await read_roles(self.rt.nc, direct=True)  # every role change up to now

        def failed(why: str) -> None:
            self._load_error = why

        self._loaded = await load_retrying(load, stopping, name=self.name, log=log, failed=failed)
        if self._loaded:
            self._load_error = ""
        return self._loaded

    async def _judge(self, stopping: Callable[[], bool]) -> None:
        gauges_at = 0.0
        while not stopping():
            now = self.clock.now()
            wait = self.tick_s
            with self.judge.failures.isolated("tick", ""):  # the next round tries again
                wait = self._round(now)
                if now - gauges_at >= 0.5:
                    gauges_at = now
                    self._gauges(now)
            self._report_failures()
            self.signals.ticked.emit(now)
            await self.clock.sleep(wait)

    async def _kpi_drift(self, stopping: Callable[[], bool]) -> None:
        """Every ``drift_every_s`` (0: never), read the KPI sums and judge their drift
        (core/drift.py). Postgres away is logged and counted, and tried again next time."""
        every, failing = self.settings.drift_every_s, False
        due = self.clock.now() + every
        while every > 0 and not stopping():
            await self.clock.sleep(self.tick_s)  # the judging loop's pace: it stops as soon
            now = self.clock.now()
            if stopping() or now < due or not self.judge.judging(now):
                continue
            due = now + every
            today = at(now).date()
            try:
                with anyio.fail_after(READ_TIMEOUT_S):
                    async with self.rt.pool.acquire() as conn:
                        agents = await conn.fetch(q("watchdog_kpi_agents"))
                        sums = await conn.fetch(q("watchdog_kpi_sums"), today)
            except Exception as exc:  # Postgres away or slow: the next reading tries again
                if is_postgres_error(exc) or isinstance(exc, TimeoutError):
                    metrics.POSTGRES_ERRORS.labels("watchdog").inc()
                if not failing:
                    log.warning("%s: cannot read the KPIs (%s); retrying", self.name, exc)
                failing = True
                continue
            failing = False
            with self.judge.failures.isolated("kpi_drift", "the KPI rows"):
                versions = [AgentVersions(r["agent_id"], r["version"], r["previous"],
                                          r["since"]) for r in agents]  # fmt: skip
                book = {(r["agent_id"], r["version"], r["period"]): Sums.of(r) for r in sums}
                self._plan(self.judge.kpi_drift(versions, book, today, now))
            self._report_failures()

    def _round(self, now: float) -> float:
        """One judging round at ``now``; how long to wait for the next (seconds)."""
        judge = self.judge
        self._watch_connection(now)
        if not judge.ready and self.caught_up():
            judge.ready = True
            log.info("%s: caught up; judging from %s", self.name, _hms(judge.grace_until))
            self._plan(judge.reconcile(now))
        if self.rt.nc.is_connected:
            self._plan(judge.tick(now))
            self.signals.judged.emit(now)
        nxt = judge.next_due() if judge.judging(now) else None
        return self.tick_s if nxt is None else min(self.tick_s, max(nxt - now, 0.005))

    def _watch_connection(self, now: float) -> None:
        """Grace while disconnected or re-reading, and for one period after: the agents need as
        long to be heard again (a NATS or JetStream outage silenced them too)."""
        nc = self.rt.nc
        reconnects = nc.stats["reconnects"]
        restarts = sum(f.restarts for f in self.followers)
        if (
            not nc.is_connected
            or not self.caught_up()
            or reconnects != self._reconnects
            or restarts != self._restarts
        ):
            self.judge.enter_grace(now)  # the followers re-create their consumers themselves
            if reconnects != self._reconnects or restarts != self._restarts:
                log.info("%s: reconnected or re-reading; judging again from %s",
                         self.name, _hms(self.judge.grace_until))  # fmt: skip
            self._reconnects, self._restarts = reconnects, restarts

    def _gauges(self, now: float) -> None:
        metrics.WATCHDOG_AGENTS_TRACKED.set(self.judge.tracked())
        counts = dict(self.judge.states())
        for state in STATES:
            metrics.WATCHDOG_AGENTS.labels(state).set(counts.get(state, 0))
        metrics.WATCHDOG_GRACE.set(0 if self.judge.judging(now) else 1)


def _never() -> Gate:
    raise ValueError("no request in the row")


def _because(error: str) -> str:
    return f" ({error})" if error else ""


def _hms(when: float) -> str:
    if math.isinf(when):
        return "never"
    return time.strftime("%H:%M:%S", time.localtime(when))
