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

Reservations (``fw.api.budgets.reserve`` {"agent", "usd" (USD), "ttl_s" (seconds)} ->
{"reservation", "budgets", "expires_at"} or {"error"}; queue group ``fleetward-guard``, so
replicas share the requests): answered only on the inbox of the agent named (an agent reserves
for itself). The core judges (``Core.judge_reserve``); the grant is a ``budget.reserved`` on
each budget in scope, sorted by id, each published with compare-and-set on the sequence the
core had folded for that budget when it judged. A refused compare-and-set (10071: another
replica, or this one, stored something there meanwhile) gives back the parts already stored
(``Core.abandon``: released, reason ``refused``, by the tick), waits until this replica has
folded the budget's last sequence, and judges again with a new reservation id, up to
``RESERVE_ATTEMPTS`` times (then ``error`` "budget ... is busy"). So two grants are never
judged against the same remainder, whichever replicas judge them. At start, every reservation
stored before the follower's first sequence is read from ``fw.budget.*.svc:guard`` (all of
that subject's history, at every start); a spend that settled one before that sequence is not
read again, so such a reservation stays held until it expires (released ``expired``): the
guard may hold too much for a while after a restart, never too little.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import partial

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from nats.aio.subscription import Subscription
from nats.js.errors import APIError, NotFoundError

from fleetward.projections import lifecycle
from fleetward.projections.money import money
from fleetward.schemas.admission import Rejected, admit, decode
from fleetward.schemas.api import BUDGETS_RESERVE, ReserveReply, ReserveRequest
from fleetward.schemas.events import BudgetExhausted, BudgetReleased, BudgetReserved
from fleetward.schemas.grants import inbox_prefix
from fleetward.schemas.headers import WRONG_LAST_SEQUENCE
from fleetward.schemas.ids import deterministic_id, new_id
from fleetward.schemas.roles import RoleBook
from fleetward.schemas.roles import judge as judge_role
from fleetward.schemas.streams import EVENTS_STREAM, follower_prefix
from fleetward.schemas.subjects import PREFIX, parse, subject, wildcard
from fleetward.services import metrics
from fleetward.services.api.tasks import responder
from fleetward.services.client.roles import read_roles
from fleetward.services.db import q
from fleetward.services.guard.core import GUARD, LIFETIME, Budget, Core, Plan
from fleetward.services.guard.publish import Publisher
from fleetward.services.jetstream.boundary import last_of
from fleetward.services.jetstream.follower import StreamFollower
from fleetward.services.jetstream.plans import load_retrying, publishing
from fleetward.services.jetstream.publish import publish
from fleetward.services.runtime.connect import Runtime
from fleetward.services.signals import Signal, Signals

log = logging.getLogger("fleetward.guard")

LOADED = ("spend", "budgets", "agents", "tasks")  # the projections read at start
SHUTDOWN_S = 5.0  # on SIGTERM, plans in hand get this long to be published
QUEUE_GROUP = "fleetward-guard"  # replicas share fw.api.budgets.reserve
RESERVE_ATTEMPTS = 50  # judgments of one reservation request before "busy"
CATCH_UP_S = 5.0  # after a refused compare-and-set, wait this long to read the budget's head


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
        await self._load_reservations(core, min(self.checkpoints.values()) + 1)
        self.core = core
        log.info("%s: %d budgets, %d agents, %d tasks from the projections (checkpoints %s)",
                 self.name, len(budgets), len(agents), len(tasks), self.checkpoints)  # fmt: skip

    async def _load_reservations(self, core: Core, before: int) -> None:
        """Fold every ``budget.reserved``/``released`` the guard stored before stream sequence
        ``before`` (the follower reads on from there), so a restart loses no reservation."""
        if before <= 1:
            return

        def fold(subj: str, data: bytes, seq: int, ns: int) -> None:
            if seq >= before:
                return
            with contextlib.suppress(Rejected):
                event = admit(subj, data)
                if isinstance(event, BudgetReserved | BudgetReleased):
                    core.event(event, seq, ns)

        holds = StreamFollower(
            self.rt.nc, self.rt.js, EVENTS_STREAM, (f"{PREFIX}.budget.*.{GUARD}",), fold,
            start_seq=1, name=follower_prefix(f"{self.name}_holds"),
        )  # fmt: skip
        await holds.run(lambda: holds.caught_up or holds.last_seq >= before - 1)

    async def _stored_state(self, budget: str) -> tuple[int, str | None]:
        """The last sequence over the budget's subjects, and the window of the guard's
        ``budget.exhausted`` in force on it (None: none, or restored since)."""
        js = self.rt.js
        seq = (await last_of(js, "budget", budget, direct=True)).expect
        try:
            msg = await js.get_last_msg(
                EVENTS_STREAM, subject("budget", budget, GUARD), direct=True
            )
        except NotFoundError:
            return seq, None
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
        if where is not None and where.kind == "budget":
            self.core.budget_seq(where.key, seq)
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
        not. Raises on a NATS failure (the responder replies "the guard is unavailable"; a
        ``budget.reserved`` stored before it then expires unsettled)."""
        usd = money(req.usd)
        for _ in range(RESERVE_ATTEMPTS):
            now = time.time()
            verdict = self.core.judge_reserve(req.agent, usd, _today(now))
            if isinstance(verdict, str):
                self.reservations["refused"] += 1
                return BUDGETS_RESERVE.failed(verdict)
            reservation, expires = new_id(), datetime.fromtimestamp(now + req.ttl_s, UTC)
            stored: list[str] = []
            for grant in verdict:
                event = BudgetReserved(
                    id=deterministic_id("budget.reserved", grant.budget, reservation),
                    actor=GUARD, at=datetime.now(UTC), budget=grant.budget,
                    reservation=reservation, agent=req.agent, usd=req.usd, expires_at=expires,
                )  # fmt: skip
                try:
                    await publish(self.rt.js, event, expect=grant.seq)
                except APIError as exc:
                    if exc.err_code != WRONG_LAST_SEQUENCE:
                        raise
                    self.reservations["moved"] += 1
                    if stored:
                        self.core.abandon(reservation)
                    await self._read_up_to(grant.budget)
                    break
                stored.append(grant.budget)
            else:
                metrics.GUARD_PUBLISHED.labels("stored").inc(len(stored))
                self.reservations["granted"] += 1
                return ReserveReply(reservation=reservation, budgets=tuple(stored),
                                    expires_at=expires)  # fmt: skip
        self.reservations["busy"] += 1
        return BUDGETS_RESERVE.failed("the budgets are busy; retry")

    async def _read_up_to(self, budget: str) -> None:
        """Wait (up to ``CATCH_UP_S``) until this replica has folded the budget's last
        message."""
        last = (await last_of(self.rt.js, "budget", budget, direct=True)).expect
        with anyio.move_on_after(CATCH_UP_S):
            for _ in itertools.count():
                if budget not in self.core.budgets or self.core.budgets[budget].seq >= last:
                    return
                await anyio.sleep(0.005)

    async def _serve_reserve(self) -> Subscription:
        """Answer ``fw.api.budgets.reserve`` in the queue group (until unsubscribed)."""

        def refuse(req: ReserveRequest, reply: str) -> str | None:
            if reply.startswith(f"{inbox_prefix(req.agent)}."):
                return None
            return f"only agent {req.agent} may reserve for itself"

        return await self.rt.nc.subscribe(
            BUDGETS_RESERVE.subject, queue=QUEUE_GROUP,
            cb=responder(BUDGETS_RESERVE, self.reserve, refuse),
        )  # fmt: skip

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
        sub = await self._serve_reserve()
        try:
            await publishing(self.publisher.run, plans, readers, SHUTDOWN_S)
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

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
