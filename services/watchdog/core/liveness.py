"""Liveness: a deadline heap and each agent's state machine. Pure: no I/O, no clock.

Silence counts from ``since``: the stream time of the agent's last heartbeat, or of its last
lifecycle change (registration, resume, online, ...) when that is later; the latter is the
instant the agents projection records as ``updated_at``, so a replica that starts from the
database and one that followed the stream agree. Deadlines: warning at
``since + interval x warn_misses``, critical at ``since + interval x critical_misses``.

Judgement (``AgentClock.state``)::

    alive --warning deadline--> warning --critical deadline--> critical
      ^                            |                              |
      +---- heartbeat: resolve ----+------ heartbeat: resolve + agent.online

A person resolving the escalation while the agent stays silent leaves it ``dismissed``: judged
again from its next heartbeat. Paused and retired agents are not judged; an offline one waits
for a heartbeat. At critical the agent is marked offline and its task leases are released.

Intervals enter through ``limits.period`` (clamped). An agent whose judgement raises anyway is
``quarantined``: the failure is noted (failures.py), the agent is not judged again until it
registers again (or the watchdog restarts), and every other agent is judged as usual.

Work: a heartbeat costs O(1): no heap operation while the agent is alive and scheduled. The heap
holds at most one live entry per agent; an entry that pops early (the agent heartbeated since)
is pushed again at the agent's real deadline. A tick pops only entries that are due: there is
never a scan of all agents.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from fleetward.projections import lifecycle
from fleetward.projections.idempotence import newer_heartbeat
from fleetward.schemas.admission import Rejected
from fleetward.schemas.events import (
    AgentOffline,
    AgentOnline,
    AgentRegistered,
    AgentVersionChanged,
    Event,
    TaskLeaseExpired,
    Tier,
)
from fleetward.services.config import WatchdogSettings
from fleetward.services.watchdog.core.failures import Failures
from fleetward.services.watchdog.core.incidents import (
    HEARTBEAT_MISSED,
    TIER_RANK,
    WATCHDOG,
    Escalations,
    Open,
    Plan,
    Publish,
    at,
    escalation_id,
    event_id,
    iso,
    raised_event,
    resolve_step,
)
from fleetward.services.watchdog.core.limits import period

K = TypeVar("K", bound=Hashable)

LIFECYCLE: Final = lifecycle.WITH_VERSION
# the values of the fleetward_watchdog_agents{state} gauge
STATES: Final = (
    "alive", "warning", "critical", "dismissed", "offline", "paused", "retired", "quarantined",
)  # fmt: skip
_RANK: Final = {"alive": 0, "dismissed": 0, "warning": 1, "critical": 2}


class DeadlineHeap(Generic[K]):
    """Keys with a due time. Scheduling a key again invalidates its older entry lazily."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._live: dict[K, int] = {}
        self._tokens = itertools.count()
        self.popped = 0  # entries taken off the heap, stale ones included: the work done

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: K) -> bool:
        return key in self._live

    def schedule(self, key: K, due: float) -> None:
        token = next(self._tokens)
        self._live[key] = token
        heapq.heappush(self._heap, (due, token, key))
        if len(self._heap) > 2 * len(self._live) + 1024:  # many stale entries: drop them
            self._heap = [e for e in self._heap if self._live.get(e[2]) == e[1]]
            heapq.heapify(self._heap)

    def cancel(self, key: K) -> None:
        self._live.pop(key, None)

    def next_due(self) -> float | None:
        heap, live = self._heap, self._live
        while heap and live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[K]:
        """The keys due at ``now``, earliest first; they are no longer scheduled."""
        out: list[K] = []
        heap, live = self._heap, self._live
        while heap and heap[0][0] <= now:
            _, token, key = heapq.heappop(heap)
            self.popped += 1
            if live.get(key) == token:
                del live[key]
                out.append(key)
        return out


def _silence(a: AgentClock, now: float) -> str:
    """The escalation's message: how long ``a`` has been silent (seconds), and from what, when
    it counts from a status change (a resume, a registration) later than its last heartbeat."""
    said = f"no heartbeat for {now - a.since:.1f}s (interval {a.interval:g}s)"
    if a.lc_us <= a.hb_us:
        return said
    last = f"{now - a.hb_us / 1e6:.1f}s ago" if a.hb_seq else "none seen"
    return f"{said}, counted from its last status change (its last heartbeat: {last})"


@dataclass(slots=True)
class AgentClock:
    agent: str
    interval: float
    status: str = "active"  # as the agents projection has it: active, paused, offline, retired
    paused_by: str | None = None  # the actor whose pause is in force (projections/lifecycle.py)
    hb_seq: int = 0  # stream sequence of the last heartbeat (0: none seen)
    hb_us: int = 0  # its stream time, microseconds
    hb_id: str | None = None  # its event id: a heartbeat counts only with a newer one
    lc_us: int = 0  # stream time of the last lifecycle change, microseconds
    state: str = "alive"  # alive, warning, critical, dismissed
    escalation: str | None = None  # the open liveness escalation
    basis: int = 0  # the heartbeat sequence that escalation counts silence from
    online_sent: bool = False  # agent.online planned; not yet seen on the stream
    quarantined: bool = False  # judging it raised: not judged until it registers again

    @property
    def since(self) -> float:
        return max(self.hb_us, self.lc_us) / 1e6

    @property
    def label(self) -> str:
        if self.quarantined:
            return "quarantined"
        return self.status if self.status != "active" else self.state


Holdings = Callable[[str], Iterable[tuple[str, int]]]


class Liveness:
    """Every tracked agent's clock and judgement."""

    def __init__(
        self, settings: WatchdogSettings, escalations: Escalations, failures: Failures | None = None
    ) -> None:
        self.s = settings
        self.escalations = escalations
        self.failures = failures if failures is not None else Failures()
        self.agents: dict[str, AgentClock] = {}
        self.heap: DeadlineHeap[str] = DeadlineHeap()
        self.counts: Counter[str] = Counter()

    # ---- bookkeeping -------------------------------------------------------------------------

    def clock(self, agent: str) -> AgentClock:
        a = self.agents.get(agent)
        if a is None:  # heard of before its registration: the default interval until then
            a = self.agents[agent] = AgentClock(agent, period(self.s.interval_s))
            self.counts[a.label] += 1
        return a

    def _relabel(self, a: AgentClock, old: str) -> None:
        new = a.label
        if new != old:
            self.counts[old] -= 1
            self.counts[new] += 1

    def warn_at(self, a: AgentClock) -> float:
        return a.since + a.interval * self.s.warn_misses

    def critical_at(self, a: AgentClock) -> float:
        return a.since + a.interval * self.s.critical_misses

    def _arm(self, a: AgentClock) -> None:
        """Schedule the agent's next judgement, or none when it is not judged."""
        if a.status != "active" or a.state in ("critical", "dismissed") or a.quarantined:
            self.heap.cancel(a.agent)
        elif a.state == "warning":
            self.heap.schedule(a.agent, self.critical_at(a))
        else:
            self.heap.schedule(a.agent, self.warn_at(a))

    def load(
        self,
        agent: str,
        status: str,
        interval: float,
        updated_us: int,
        paused_by: str | None = None,
    ) -> None:
        """An agent as the registry (fleet.agents) has it at start (``interval`` in seconds, any
        float: clamped here; ``updated_us`` its last lifecycle change, µs of stream time;
        ``paused_by`` whose pause is in force, if paused)."""
        a = self.clock(agent)
        old = a.label
        a.status, a.interval, a.lc_us = status, period(interval), updated_us
        a.paused_by = paused_by
        self._relabel(a, old)
        self._arm(a)

    # ---- what happens ------------------------------------------------------------------------

    def heartbeat(
        self, agent: str, seq: int, us: int, now: float, event_id: str | None = None
    ) -> list[Plan]:
        """A heartbeat stored at ``seq`` (stream time ``us``). With its ``event_id``, it counts
        only if the id is newer than the last counted (projections/idempotence.py: the rule
        every reader of heartbeats applies), so a copy stored late is no sign of life."""
        a = self.clock(agent)
        if seq <= a.hb_seq:
            return []  # older than what is known (a re-read after a reconnect)
        if event_id is not None:
            if not newer_heartbeat(a.hb_id, event_id):
                return []
            a.hb_id = event_id
        a.hb_seq, a.hb_us = seq, us
        if a.status in ("paused", "retired") and a.escalation is None:
            return []
        if a.state == "alive" and a.status == "active":
            if agent not in self.heap:
                self._arm(a)
            return []
        if seq <= a.basis:
            return []  # the heartbeat the open escalation counts from, not a newer one
        return self._recover(a, seq, now)

    def _recover(self, a: AgentClock, seq: int, now: float) -> list[Plan]:
        old = a.label
        steps: list[Publish] = []
        esc = self.escalations.get(a.escalation)
        if esc is not None:
            steps.append(
                resolve_step(esc.id, now, f"heartbeat received (stream seq {seq})", esc.seq)
            )
            self.escalations.close(esc.id)
        was_critical = a.state == "critical" and a.status == "active"
        if (a.status == "offline" or was_critical) and not a.online_sent:
            steps.append(Publish(AgentOnline(
                id=event_id(a.agent, "online", str(seq)), actor=WATCHDOG, at=at(now),
                agent=a.agent, escalation=a.escalation)))  # fmt: skip
            a.online_sent = True
        a.state, a.escalation, a.basis = "alive", None, 0
        self._relabel(a, old)
        self._arm(a)
        return [Plan(f"agent:{a.agent}", tuple(steps))] if steps else []

    def lifecycle(self, event: Event, us: int) -> bool:
        """Mirror the agents projection's status changes: the same ones it applies, by the
        agents' state machine (projections/lifecycle.py). Returns False, changing nothing, for
        an agent's own event that machine refuses (e.g. resuming itself from an operator's
        pause), which the projection dead-letters."""
        assert isinstance(event, LIFECYCLE)
        a = self.clock(event.agent)
        try:
            life, reason = lifecycle.step(lifecycle.Life(a.status, a.paused_by), event)
        except Rejected:
            return False
        old = a.label
        if isinstance(event, AgentRegistered):
            a.interval = period(event.heartbeat_interval_s)
            a.quarantined = False  # a new promise: judged again
        elif reason is None and not isinstance(event, AgentVersionChanged):
            return True  # a status change that does not apply (e.g. pausing a retired agent)
        was = a.status
        a.status, a.paused_by = life.status, life.paused_by
        if isinstance(event, AgentOffline) and a.status != was:
            if a.escalation is None and event.escalation in self.escalations.open:
                a.escalation = event.escalation
            if a.state in ("alive", "warning") and not a.online_sent:
                a.state = "critical"  # offline by another replica's critical
        elif isinstance(event, AgentOnline) and a.status != was:
            a.online_sent = False
        a.lc_us = us
        self._relabel(a, old)
        self._arm(a)
        return True

    def adopt(self, esc: Open, now: float) -> list[Plan]:
        """A liveness escalation raised by anyone (another replica, or this one before a
        restart) becomes this agent's, unless the agent has heartbeated since its basis."""
        if esc.agent is None:
            return []
        a = self.clock(esc.agent)
        if a.escalation not in (None, esc.id):
            return []  # the agent has another open incident; keep that one
        old = a.label
        a.escalation, a.basis = esc.id, esc.basis
        if esc.tier in ("warning", "critical") and TIER_RANK[esc.tier] > _RANK[a.state]:
            a.state = esc.tier
        self._relabel(a, old)
        self._arm(a)
        if a.hb_seq > esc.basis and a.status not in ("paused", "retired"):
            return self._recover(a, a.hb_seq, now)
        return []

    def closed(self, esc: Open) -> None:
        """A liveness escalation was resolved (by a heartbeat here or elsewhere, or a person)."""
        a = self.agents.get(esc.agent or "")
        if a is None or a.escalation != esc.id:
            return
        old = a.label
        recovered = a.hb_seq > a.basis
        a.escalation, a.basis = None, 0
        if a.state in ("warning", "critical"):
            a.state = "alive" if recovered else "dismissed"
        self._relabel(a, old)
        self._arm(a)

    def healthy(self, agent: str) -> bool:
        """Not in a liveness incident (nor paused, retired or offline)."""
        a = self.agents.get(agent)
        return a is None or (a.status == "active" and a.state == "alive")

    def judgeable(self, agent: str) -> bool:
        """An agent the detectors may judge: not paused, retired or offline."""
        a = self.agents.get(agent)
        return a is None or a.status == "active"

    # ---- the timer -------------------------------------------------------------------------

    def due(self, now: float, holdings: Holdings) -> list[Plan]:
        """Judge the agents whose deadline has passed. One whose judgement raises is
        quarantined (``quarantine``); the others are judged all the same."""
        plans: list[Plan] = []
        for agent in self.heap.pop_due(now):
            a = self.agents.get(agent)
            if a is None or a.status != "active" or a.state not in ("alive", "warning"):
                continue
            try:
                plan = self._judge(a, now, holdings)
            except Exception as exc:
                self.quarantine(a, exc)
                continue
            if plan is not None:
                plans.append(plan)
        return plans

    def _judge(self, a: AgentClock, now: float, holdings: Holdings) -> Plan | None:
        warn_at, critical_at = self.warn_at(a), self.critical_at(a)
        if now >= critical_at:
            return self._raise(a, "critical", now, critical_at, holdings)
        if a.state == "alive" and now >= warn_at:
            return self._raise(a, "warning", now, warn_at, holdings)
        self._arm(a)  # heartbeated since it was scheduled: its real deadline
        return None

    def quarantine(self, a: AgentClock, error: Exception) -> None:
        """Stop judging ``a`` after its judgement raised ``error`` (noted as a ``liveness``
        failure); its next registration lifts this."""
        self.failures.note("liveness", a.agent, error)
        old = a.label
        a.quarantined = True
        self.heap.cancel(a.agent)
        self._relabel(a, old)

    def _raise(
        self, a: AgentClock, tier: Tier, now: float, deadline: float, holdings: Holdings
    ) -> Plan:
        old = a.label
        first = a.escalation is None
        if first:
            basis = f"hb{a.hb_seq}" if a.hb_seq and a.hb_us >= a.lc_us else f"lc{a.lc_us}"
            a.escalation, a.basis = escalation_id("hb", a.agent, basis), a.hb_seq
        esc = a.escalation
        assert esc is not None
        silent = now - a.since
        last_seen = iso(a.hb_us / 1e6) if a.hb_seq else None
        raised = raised_event(
            esc, tier, HEARTBEAT_MISSED, now, agent=a.agent, message=_silence(a, now),
            evidence={"last_seen": last_seen, "last_heartbeat_seq": a.hb_seq,
                      "misses": int(silent // a.interval), "interval_s": a.interval,
                      "deadline": iso(deadline)},
        )  # fmt: skip
        self.escalations.raised(raised)
        steps = [Publish(raised, "empty" if first else "open", self.escalations.seq(esc))]
        if tier == "critical":
            steps.append(Publish(AgentOffline(
                id=event_id(a.agent, "offline", esc), actor=WATCHDOG, at=at(now), agent=a.agent,
                escalation=esc, last_seen=at(a.hb_us / 1e6) if a.hb_seq else None)))  # fmt: skip
            for task, epoch in holdings(a.agent):  # the id a lapsed lease of it gets, too
                steps.append(Publish(TaskLeaseExpired(
                    id=event_id("lease", task, str(epoch)), actor=WATCHDOG, at=at(now),
                    task=task, agent=a.agent, epoch=epoch)))  # fmt: skip
        a.state = tier
        self._relabel(a, old)
        self._arm(a)
        return Plan(f"agent:{a.agent}", tuple(steps), deadline)
