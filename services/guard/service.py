"""The guard service: spend against budgets, pauses out (the rules are in
services/guard/core.py; this module only reads, times and publishes). DESIGN 3.9.

At start it reads, in one snapshot, the budgets (``fleetward.budgets``), the agents (team,
status, whose pause is in force and its reason), the tasks' projects and holders, and the
spend (per agent, team and UTC day; per task and day: this month day by day, earlier months in
one sum) with the projections' checkpoints, and, for each budget, the guard's own last event
on it (``fw.budget.<id>.svc:guard``: a ``budget.exhausted`` in force) and the last sequence over
its subjects. Then it follows fw.agent.>, fw.task.>, fw.budget.> and fw.person.> (FW_EVENTS,
together, in order) from the oldest checkpoint, folding each event a projection it loaded had
not applied yet (an event the spend projection applied is not added twice). Nothing is polled:
Postgres is read once per start. Its state is rebuilt at every start, so nothing it reads is
acknowledged.

Time: windows are UTC days of the stream's time of record; a new window is noticed by this
host's clock (``time.time()``) within ``tick_s`` seconds of midnight UTC.

Isolation (DESIGN 3.6): a row or a message whose folding raises is skipped, logged and counted
(``fleetward_guard_failures_total``); a message admission refuses is passed over (the
projector dead-letters it).

Health (``health``): not ready, with the reason, until the projections were read and the
stream caught up, and while NATS is away.

Reservations (``fw.api.budgets.reserve.<agent>`` {"usd" (USD), "ttl_s" (seconds), "task",
"key"} -> {"reservation", "budgets", "expires_at"} or {"error"}; queue group
``fleetward-guard``, so replicas share the requests). The subject names the agent: only its
credentials may publish there (schemas/grants.py), and the answer goes only to its inbox. The
core judges (``Core.judge_reserve``); the grant is a ``budget.reserved`` on each budget in
scope, sorted by id, each published with compare-and-set on the guard's own subject of the
budget, on the sequence the core had folded there when it judged. A refused compare-and-set
(10071: another replica, or this one, stored something there meanwhile) gives back the parts
already stored (``Core.abandon``: released, reason ``refused``, by the tick), waits until this
replica has folded the budget's last sequence (signalled as it folds, not polled), and judges
again with a new reservation id, up to ``RESERVE_ATTEMPTS`` times (then ``error`` "the budgets
are busy"). So two grants are never judged against the same remainder, whichever replicas
judge them. With a ``key``, the reservation's id is derived from the agent and the key, so a
request repeated after a timeout gets the reservation already held, never a second.

``fw.api.budgets.release.<agent>`` {"reservation"} -> {"budgets"} or {"error"}: the agent gives a
reservation back unspent; answered once the ``budget.released`` (reason ``returned``) are
folded here (or after ``CATCH_UP_S``, planned).

At start, the reservations open at the budgets projection's checkpoint come from
``fleetward.reservations``; the follower folds the rest. A spend that settled one before that
checkpoint is not read again, so such a reservation stays held until it expires (released
``expired``): the guard may hold too much for a while after a restart, never too little.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from functools import partial

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectSendStream
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import APIError, NotFoundError

from fleetward.projections import lifecycle
from fleetward.projections.money import money
from fleetward.schemas import subject_of
from fleetward.schemas.admission import Rejected, admit, decode
from fleetward.schemas.api import (
    BUDGETS_RELEASE,
    BUDGETS_RESERVE,
    ReleaseReply,
    ReleaseRequest,
    ReserveReply,
    ReserveRequest,
)
from fleetward.schemas.events import BudgetExhausted, BudgetReserved
from fleetward.schemas.grants import inbox_prefix
from fleetward.schemas.headers import WRONG_LAST_SEQUENCES
from fleetward.schemas.ids import deterministic_id, new_id
from fleetward.schemas.roles import RoleBook
from fleetward.schemas.roles import judge as judge_role
from fleetward.schemas.streams import EVENTS_STREAM, follower_prefix
from fleetward.schemas.subjects import parse, subject, wildcard
from fleetward.services import metrics
from fleetward.services.api.tasks import responder
from fleetward.services.client.roles import read_roles
from fleetward.services.db import q
from fleetward.services.guard.core import GUARD, LIFETIME, Budget, Core, Plan
from fleetward.services.guard.publish import Publisher
from fleetward.services.jetstream.follower import StreamFollower
from fleetward.services.jetstream.plans import load_retrying, publishing
from fleetward.services.jetstream.publish import publish
from fleetward.services.runtime.connect import Runtime
from fleetward.services.signals import Signal, Signals

log = logging.getLogger("fleetward.guard")

LOADED = ("spend", "budgets", "agents", "tasks")  # the projections read at start
SHUTDOWN_S = 5.0  # on SIGTERM, plans in hand get this long to be published
QUEUE_GROUP = "fleetward-guard"  # replicas share fw.api.budgets.*
RESERVE_ATTEMPTS = 50  # judgments of one reservation request before "busy"
CATCH_UP_S = 5.0  # after a refused compare-and-set, wait this long to read the budget's head
IN_FLIGHT = 64  # reservation requests answered at once by one replica


class GuardSignals(Signals):
    """What a guard announces (services/signals.py), for tests to wait on."""

    def __init__(self) -> None:
        super().__init__()
        self.ready: Signal[bool] = Signal(self, "ready")  # caught up; judging from now on
        self.published: Signal[str] = Signal(self, "published")  # a plan finished: its budget


class Guard:
    """One guard replica (see the module): ``run`` until ``stopping()``."""

    def __init__(self, rt: Runtime, *, tick_s: float = 0.2, name: str = "guard") -> None:
        self.rt, self.tick_s, self.name = rt, tick_s, name
        self.core = Core()
        self.signals = GuardSignals()
        self.publisher = Publisher(rt.js, seq_of=self._seq_of, on_done=self._done)
        self.roles = RoleBook()
        self.follower: StreamFollower | None = None
        self.checkpoints: dict[str, int] = {}
        self.rejected = 0
        self._send: MemoryObjectSendStream[Plan] | None = None
        self._loaded = False
        self._load_error = ""
        self.reservations: Counter[str] = Counter()  # granted, refused, moved (10071), busy
        self._progress = anyio.Event()  # set (and replaced) as a guard subject is folded

    # ---- start -------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the projections' state in one snapshot, with their checkpoints, then each
        budget's last event of the guard and last sequence from the stream."""
        core, month = Core(), datetime.now(UTC).date().replace(day=1)
        async with (
            self.rt.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            marks = await conn.fetch(q("projection_checkpoints"), list(LOADED))
            budgets = await conn.fetch(q("guard_budgets"))
            agents = await conn.fetch(q("guard_agents"))
            tasks = await conn.fetch(q("guard_tasks"))
            agent_spend = await conn.fetch(q("guard_agent_spend"), month)
            task_spend = await conn.fetch(q("guard_task_spend"), month)
            holds = await conn.fetch(q("guard_holds"))
        done = {r["projection"]: int(r["checkpoint"] or 0) for r in marks}
        self.checkpoints = {p: done.get(p, 0) for p in LOADED}
        for r in agents:
            with _Isolated("agent", r["agent_id"]):
                life = lifecycle.Life(r["status"], r["paused_by"])
                core.load_agent(r["agent_id"], r["team"], life, r["reason"])
        for r in tasks:
            with _Isolated("task", r["task_id"]):
                core.load_task(r["task_id"], r["project"], r["holder"])
        for r in agent_spend:
            with _Isolated("agent spend", r["agent_id"]):
                keys = [("agent", r["agent_id"]), ("team", r["team"]), ("org", "")]
                core.load_spend(keys, r["day"], r["usd"], int(r["tokens"]))
        for r in task_spend:
            with _Isolated("task spend", r["task_id"]):
                core.load_task_spend(r["task_id"], r["day"], r["usd"], int(r["tokens"]))
        for r in budgets:
            with _Isolated("budget", r["budget_id"]):
                budget = Budget(
                    r["budget_id"], r["scope"], r["scope_id"], r["budget_window"],
                    r["limit_usd"], r["limit_tokens"],
                    r["warn_at"], r["set_by"], int(r["last_seq"]), int(r["last_seq"]),
                )  # fmt: skip
                budget.seq, budget.exhausted = await self._stored_state(budget.budget)
                core.load_budget(budget)
        for r in holds:
            with _Isolated("reservation", r["reservation"]):
                expires = int(r["expires_at"].timestamp() * 1e9)
                core.load_hold(r["budget_id"], r["reservation"], r["agent_id"], r["usd"], expires)
        self.core = core
        log.info("%s: %d budgets, %d agents, %d tasks from the projections (checkpoints %s)",
                 self.name, len(budgets), len(agents), len(tasks), self.checkpoints)  # fmt: skip

    async def _stored_state(self, budget: str) -> tuple[int, str | None]:
        """The last sequence on the guard's subject of the budget, and the window of the
        guard's ``budget.exhausted`` in force on it (None: none, or restored since)."""
        js = self.rt.js
        try:
            msg = await js.get_last_msg(
                EVENTS_STREAM, subject("budget", budget, GUARD), direct=True
            )
        except NotFoundError:
            return 0, None
        seq = msg.seq or 0
        try:
            event = decode(msg.data or b"")
        except Rejected:
            return seq, None
        if not isinstance(event, BudgetExhausted):
            return seq, None
        start = event.window_start.date() if event.window_start else None
        return seq, LIFETIME if start is None else start.isoformat()

    # ---- reading -----------------------------------------------------------------------------

    def _on_event(self, subj: str, data: bytes, seq: int, ns: int) -> None:
        where = parse(subj)
        if where is not None and where.kind == "budget" and where.actor == GUARD:
            self.core.budget_seq(where.key, seq)
            self._progress.set()  # wakes whoever waits for this replica to fold a budget
            self._progress = anyio.Event()
        try:
            event = admit(subj, data)
            judge_role(event, seq, self.roles)  # as the projector judges it
        except Rejected:
            self.rejected += 1
            return
        if event.SUBJECT_KIND == "person":
            return
        marks = self.checkpoints
        with _Isolated("event", f"{EVENTS_STREAM} seq {seq}"):
            plans = self.core.event(
                event, seq, ns, spend=seq > marks["spend"], life=seq > marks["agents"],
                budget=seq > marks["budgets"],
            )  # fmt: skip
            self._plan(plans)

    def _plan(self, plans: list[Plan]) -> None:
        if self._send is None:
            return
        for plan in plans:
            self._send.send_nowait(plan)

    def _seq_of(self, budget: str) -> int:
        found = self.core.budgets.get(budget)
        return found.seq if found is not None else 0

    def _done(self, plan: Plan, stored: bool) -> None:
        self.core.done(plan, stored)
        if not stored and plan.key in self.core.budgets:  # moved: judge it again now
            now = time.time()
            self._plan(self.core.evaluate(self.core.budgets[plan.key], _today(now), _ns(now)))
        self.signals.published.emit(plan.key)

    # ---- reservations ------------------------------------------------------------------------

    async def reserve(self, req: ReserveRequest) -> ReserveReply:
        """Judge and store one reservation (see the module); the reply names it, or says why
        not. ``req.agent`` is the asker (the responder sets it from the subject). Raises on a
        NATS failure (the responder replies "the guard is unavailable"; a ``budget.reserved``
        stored before it then expires unsettled)."""
        agent, usd = req.agent or "", money(req.usd)
        keyed = req.key is not None
        for _ in range(RESERVE_ATTEMPTS):
            now = time.time()
            reservation = deterministic_id("reservation", agent, req.key) if req.key else new_id()
            held = self.core.granted(reservation, agent) if keyed else None
            if keyed and held is None and await self._used(reservation):
                self.reservations["refused"] += 1
                return BUDGETS_RESERVE.failed(
                    f"key {req.key} was used for a reservation that has ended; use a new key"
                )
            if held is not None:
                self.reservations["repeated"] += 1
                expires_at = datetime.fromtimestamp(held.expires_ns / 1e9, UTC)
                return ReserveReply(reservation=reservation, budgets=held.budgets,
                                    expires_at=expires_at)  # fmt: skip
            verdict = self.core.judge_reserve(agent, usd, _today(now), task=req.task)
            if isinstance(verdict, str):
                self.reservations["refused"] += 1
                return BUDGETS_RESERVE.failed(verdict)
            expires = datetime.fromtimestamp(now + req.ttl_s, UTC)
            stored: list[str] = []
            repeated = False
            for grant in verdict:
                event = BudgetReserved(
                    id=deterministic_id("budget.reserved", grant.budget, reservation),
                    actor=GUARD, at=datetime.now(UTC), budget=grant.budget,
                    reservation=reservation, agent=agent, usd=req.usd, expires_at=expires,
                )  # fmt: skip
                try:
                    ack = await publish(self.rt.js, event, expect=grant.seq,
                                        over=subject_of(event))  # fmt: skip
                except APIError as exc:
                    if exc.err_code not in WRONG_LAST_SEQUENCES:
                        raise
                    self.reservations["moved"] += 1
                    if stored:
                        self.core.abandon(reservation)
                    await self._read_up_to(grant.budget)
                    break
                if ack.duplicate:  # this key's reservation was stored before: answer it
                    repeated = True
                    await self._read_up_to(grant.budget)
                    break
                stored.append(grant.budget)
            else:
                metrics.GUARD_PUBLISHED.labels("stored").inc(len(stored))
                self.reservations["granted"] += 1
                return ReserveReply(reservation=reservation, budgets=tuple(stored),
                                    expires_at=expires)  # fmt: skip
            if repeated and self.core.granted(reservation, agent) is None:
                self.reservations["refused"] += 1
                return BUDGETS_RESERVE.failed(
                    f"the reservation of key {req.key} was granted and released already; "
                    "use a new key"
                )
        self.reservations["busy"] += 1
        return BUDGETS_RESERVE.failed("the budgets are busy; retry")

    async def _used(self, reservation: str) -> bool:
        """Whether ``reservation`` was granted before and has ended (released lately, as this
        replica read, or ever, as the budgets projection kept): its key is spent."""
        if reservation in self.core.ended:
            return True
        async with self.rt.pool.acquire() as conn:
            return bool(await conn.fetchval(q("guard_reservation_known"), reservation))

    async def release(self, req: ReleaseRequest) -> ReleaseReply:
        """Give ``req.reservation`` back for ``req.agent`` (the asker): plan its releases
        (reason ``returned``) and answer once they are folded here, or after ``CATCH_UP_S``."""
        agent = req.agent or ""
        budgets = self.core.give_back(req.reservation, agent)
        if not budgets:
            return BUDGETS_RELEASE.failed(
                f"agent {agent} holds no open reservation {req.reservation} (released, settled "
                "by a spend, expired, or not its own)"
            )
        self._plan(self.core.releases(_ns(time.time())))
        with anyio.move_on_after(CATCH_UP_S):
            while any(req.reservation in self.core.budgets[b].holds for b in budgets
                      if b in self.core.budgets):  # fmt: skip
                await self._progress.wait()
        return ReleaseReply(budgets=budgets)

    async def _read_up_to(self, budget: str) -> None:
        """Wait (up to ``CATCH_UP_S``) until this replica has folded the last message on the
        guard's subject of the budget: woken as budgets are folded, never polled."""
        try:
            msg = await self.rt.js.get_last_msg(
                EVENTS_STREAM, subject("budget", budget, GUARD), direct=True
            )
        except NotFoundError:
            return
        last = msg.seq or 0
        with anyio.move_on_after(CATCH_UP_S):
            while budget in self.core.budgets and self.core.budgets[budget].seq < last:
                await self._progress.wait()

    async def _serve(self, tg: anyio.abc.TaskGroup) -> list[Subscription]:
        """Answer ``fw.api.budgets.reserve.*`` and ``fw.api.budgets.release.*`` in the queue
        group (until unsubscribed), each request in its own task of ``tg`` (NATS hands a
        subscription's messages over one at a time: a request waiting for the stream must not
        hold up the others), at most ``IN_FLIGHT`` at once."""

        def refuse(req: ReserveRequest | ReleaseRequest, reply: str) -> str | None:
            if reply.startswith(f"{inbox_prefix(req.agent or '')}."):
                return None
            return f"only agent {req.agent} may ask for itself (answers go to its inbox)"

        nc, slots = self.rt.nc, anyio.Semaphore(IN_FLIGHT)

        def each(respond: Callable[[Msg], Awaitable[None]]) -> Callable[[Msg], Awaitable[None]]:
            async def run(msg: Msg) -> None:
                async with slots:
                    await respond(msg)

            async def spawn(msg: Msg) -> None:
                tg.start_soon(run, msg)

            return spawn

        return [
            await nc.subscribe(BUDGETS_RESERVE.pattern, queue=QUEUE_GROUP,
                               cb=each(responder(BUDGETS_RESERVE, self.reserve, refuse))),
            await nc.subscribe(BUDGETS_RELEASE.pattern, queue=QUEUE_GROUP,
                               cb=each(responder(BUDGETS_RELEASE, self.release, refuse))),
        ]  # fmt: skip

    # ---- the loops ---------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        """(ready, why): whether this replica is guarding, and the reason in words."""
        if not self._loaded:
            why = f" ({self._load_error})" if self._load_error else ""
            return False, f"cannot read the projections yet{why}"
        if not self.rt.nc.is_connected:
            return False, "disconnected from NATS"
        if not self.core.ready:
            return False, "reading the stream; guarding once caught up"
        return True, f"guarding {len(self.core.budgets)} budgets"

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Guard until ``stopping()``; plans in hand get up to ``SHUTDOWN_S`` to be published."""
        if not await self._load_retrying(stopping):
            return
        rt = self.rt
        start = min(self.checkpoints.values()) + 1
        subjects = tuple(wildcard(k) for k in ("agent", "task", "budget", "person"))
        self.follower = StreamFollower(
            rt.nc, rt.js, EVENTS_STREAM, subjects, self._on_event, start_seq=start,
            name=follower_prefix(f"{self.name}_events"),
        )  # fmt: skip
        plans = anyio.create_memory_object_stream[Plan](math.inf)
        self._send = plans[0]
        readers = [
            partial(self.follower.run, stopping),
            partial(self._tick, stopping),
        ]
        async with anyio.create_task_group() as requests:
            subs = await self._serve(requests)
            try:
                await publishing(self.publisher.run, plans, readers, SHUTDOWN_S)
            finally:
                with anyio.CancelScope(shield=True):
                    for sub in subs:
                        await sub.unsubscribe()
                requests.cancel_scope.cancel()

    async def _load_retrying(self, stopping: Callable[[], bool]) -> bool:
        async def load() -> None:
            await self.load()
            self.roles = await read_roles(self.rt.nc, direct=True)

        def failed(why: str) -> None:
            self._load_error = why

        self._loaded = await load_retrying(load, stopping, name=self.name, log=log, failed=failed)
        if self._loaded:
            self._load_error = ""
        return self._loaded

    async def _tick(self, stopping: Callable[[], bool]) -> None:
        while not stopping():
            now = time.time()
            with _Isolated("tick", ""):
                core = self.core
                if not core.ready and self.follower is not None and self.follower.caught_up:
                    core.ready = True
                    log.info("%s: caught up; guarding %d budgets", self.name, len(core.budgets))
                    self._plan(core.reconcile(_today(now), _ns(now)))
                    self.signals.ready.emit(True)
                if core.ready:
                    self._plan(core.tick(_today(now), _ns(now)))
                    core.forget_ended(_ns(now))
                exhausted = sum(b.exhausted is not None for b in core.budgets.values())
                metrics.GUARD_BUDGETS.labels("true").set(exhausted)
                metrics.GUARD_BUDGETS.labels("false").set(len(core.budgets) - exhausted)
            await anyio.sleep(self.tick_s)


class _Isolated:
    """Skip, log and count a failure to fold one row or message (DESIGN 3.6)."""

    def __init__(self, stage: str, key: str) -> None:
        self.stage, self.key = stage, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        metrics.GUARD_FAILURES.inc()
        log.error("guard: folding %s %s failed (%s); skipped", self.stage, self.key, exc,
                  exc_info=exc)  # fmt: skip
        return True


def _today(now: float) -> date:
    return datetime.fromtimestamp(now, UTC).date()


def _ns(now: float) -> int:
    return int(now * 1e9)
