"""The guard's pure core: spend against budgets, in stream order (DESIGN 3.9). No I/O, no clock:
every time is passed in (UTC days of the stream's time of record).

State, folded from the projections at start (``load_*``) and from FW_EVENTS after:

- ``Sums`` of spend (USD as exact ``Decimal``, tokens in and out) per scope key (``("agent",
  id)``, ``("team", id)``, ``("project", id)``, ``("org", "")``), per UTC day and in total
  (lifetime). A spend counts for its agent, the team the agent is in when it spends (as the
  spend projection keeps it: ``unassigned`` before its first registration), the project of the
  task it names (a task the guard has not seen created yet keeps its spend until it is) and the
  org. So any budget's spent in any window is known at once, a budget set this second included.
- Budgets as their latest ``budget.set`` has them, with ``seq`` (the last stream sequence on
  the guard's own subject of the budget, ``fw.budget.<id>.svc:guard``: compare-and-set, so
  nobody else's messages on the budget can hold the guard up) and ``exhausted`` (the window the
  guard's last ``budget.exhausted`` stored on the stream names, until its ``budget.restored``).
- Agents: their team, lifecycle (projections/lifecycle.py, the one state machine) and ``hold``:
  the budget a pause of the guard names (its reason, ``pause_reason``).

Rules (the one place they are decided):

- ``state``: ``exhausted`` when spent >= limit (USD, or tokens when the budget limits them),
  ``warning`` when spent >= ``warn_at`` x limit, else ``ok``: what ``fleet.budgets`` shows.
- A window is the budget's UTC day, month or lifetime (``window_start``).
- Scope: agent (that agent), team (agents whose team is the budget's, in the registry), org
  (every agent), project (agents holding an open task of the project when the guard loaded,
  plus every agent that claims or spends on a task of the project while it runs: the agents
  that can spend on it; an agent that held one before the guard started and released it is
  not counted).
- Exhausted: plan ``budget.exhausted`` (compare-and-set on the budget) then a pause of every
  agent in scope that is active, offline or paused only by itself (a pause by a person or
  another service is theirs: it stays as it is). An agent that enters the scope while the
  budget is exhausted (registers into the team, claims or spends on the project) is paused too,
  once per window.
- Restored: the limit was raised (or the budget changed) so that it is not exhausted, or a new
  window began: plan ``budget.restored`` then resume each agent whose pause in force is the
  guard's and names this budget, unless another exhausted budget covers it (then that budget
  holds it).
- Warning: one ``escalation.raised`` (tier warning, reason ``budget_warning``) per budget and
  window, to the budget's owner (``set_by``, in the evidence), when spent reaches ``warn_at``.

Reservations (``fw.api.budgets.reserve.<agent>``, issue 14 part 4):

- ``judge_reserve``: granted when the agent is registered, neither paused nor retired, holds
  fewer than ``MAX_OPEN_RESERVATIONS`` open reservations, and every budget covering it (and,
  when the request names a task, the budgets of its project), sorted by id, is not exhausted
  and has ``remaining`` = limit - spent - open reservations (USD, exact) >= the amount; else
  the reason, in words. The grant is one ``budget.reserved`` per budget, each stored by the
  service with compare-and-set on the budget's sequence taken with the verdict (``Grant``): a
  replica that judged a stale budget is refused by the server, reads on and judges again. A
  reservation id asked again (the caller's idempotency key) gets the grant already held
  (``granted``).
- A reservation is open on a budget from its ``budget.reserved`` until its ``budget.released``.
  It is released (plans from ``tick``, one per reservation and budget, compare-and-set on the
  budget and a deterministic id): ``settled`` once a spend event of its agent names it (that
  spend counts as spent instead), ``expired`` once its ``expires_at`` passed by the host's
  clock, ``refused`` when the service gave it up (stored on one budget, refused on another:
  ``abandon``), ``returned`` when its agent gave it back unspent (``give_back``).
- A reservation follows its agent: when the agent enters the scope of another budget while
  the reservation is open (it registers into another team, claims a task of a project), the
  hold is added there at once (so this replica judges with it) and a ``budget.reserved`` is
  planned there (``_carry``; stored with the same deterministic id by any replica). The new
  budget may then hold more than it has left: its next grants are refused, and the overshoot
  is bounded by the reservation that moved, not by the agents running.
- Reservations are folded from every ``budget.reserved``/``released`` read; the ones open at
  start come from the budgets projection (``fleetward.reservations``, ``load_hold``).

Replicas fold the same stream and plan the same events with the same ids (deterministic: the
budget, its window and the sequence of the budget.set in force); the publisher's
compare-and-set and the stream's deduplication make them stored once.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Final, Literal

from fleetward.projections import lifecycle
from fleetward.projections.money import add_exact, money, mul_exact, sub_exact
from fleetward.schemas.admission import Rejected
from fleetward.schemas.api import MAX_OPEN_RESERVATIONS, MAX_RESERVE_TTL_S
from fleetward.schemas.bounds import MAX_LIMIT_TOKENS, MAX_LIMIT_USD
from fleetward.schemas.events import (
    AgentOnline,
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    BudgetExhausted,
    BudgetReleased,
    BudgetReserved,
    BudgetRestored,
    BudgetSet,
    EscalationRaised,
    Event,
    SpendRecorded,
    TaskClaimed,
    TaskCreated,
    ToolCalled,
)
from fleetward.schemas.ids import deterministic_id

GUARD: Final = "svc:guard"
BUDGET_WARNING: Final = "budget_warning"  # the escalations' reason
UNASSIGNED: Final = "unassigned"  # the team of an agent never registered (projections/spend.py)
LIFETIME: Final = "lifetime"
# budget.exhausted's bounds on spent_tokens and spent_usd (schemas/bounds.py): a window's
# spend can pass them (a million calls of a billion tokens); the event says "at least this much"
MAX_TOKENS: Final = MAX_LIMIT_TOKENS
MAX_USD: Final = MAX_LIMIT_USD
ENDED_KEPT_NS: Final = int(2 * MAX_RESERVE_TTL_S * 1e9)  # ended reservations remembered here

State = Literal["ok", "warning", "exhausted"]
ScopeKey = tuple[str, str]
Expect = Literal["budget", "empty", "any"]

_REASON: Final = re.compile(r"^budget (\S+) exhausted")


def pause_reason(budget: str, window: str, spent: Decimal, limit: Decimal) -> str:
    """The reason of the guard's ``agent.paused``: names the budget (``held_by`` reads it)."""
    return f"budget {budget} exhausted ({window}): {spent} of {limit} USD spent"


def held_by(reason: str) -> str | None:
    """The budget a pause reason of the guard names, or None."""
    found = _REASON.match(reason)
    return found.group(1) if found else None


def window_start(window: str, day: date) -> date | None:
    """The first UTC day of the ``window`` (day, month, lifetime) holding ``day``; None:
    lifetime."""
    if window == "day":
        return day
    if window == "month":
        return day.replace(day=1)
    return None


def window_key(window: str, day: date) -> str:
    """The window holding ``day`` as text: its first day, or ``lifetime``."""
    start = window_start(window, day)
    return LIFETIME if start is None else start.isoformat()


def midnight(start: date | None) -> datetime | None:
    return None if start is None else datetime(start.year, start.month, start.day, tzinfo=UTC)


@dataclass(slots=True)
class Sums:
    usd: Decimal = Decimal(0)
    tokens: int = 0

    def add(self, usd: Decimal, tokens: int) -> None:
        self.usd = add_exact(self.usd, usd)  # exact: the default context rounds at 28 digits
        self.tokens += tokens


@dataclass(slots=True)
class Hold:
    """One open reservation on one budget: ``usd`` (USD) for ``agent`` until ``expires_ns``
    (stream-independent UTC, ns since the epoch); ``settled``: a spend named it;
    ``returned``: its agent gave it back; ``stored``: its ``budget.reserved`` is on this
    budget's subject (False: carried here by ``_carry`` and not stored yet)."""

    agent: str
    usd: Decimal
    expires_ns: int
    settled: bool = False
    returned: bool = False
    stored: bool = True


@dataclass(slots=True)
class Budget:
    budget: str
    scope: str
    scope_id: str
    window: str
    limit_usd: Decimal
    limit_tokens: int | None
    warn_at: float
    set_by: str
    set_seq: int  # the sequence of the budget.set in force (part of the events' ids)
    seq: int = 0  # the last sequence on the guard's subject of the budget (compare-and-set)
    exhausted: str | None = None  # the window of the guard's budget.exhausted in force
    holds: dict[str, Hold] = field(default_factory=dict)  # open reservations by id

    @property
    def key(self) -> ScopeKey:
        return ("org", "") if self.scope == "org" else (self.scope, self.scope_id)

    def reserved_usd(self) -> Decimal:
        """USD of the open reservations (exact): neither settled (that spend counts as spent
        from the same event on) nor returned by their agent, released or not yet."""
        total = Decimal(0)
        for hold in self.holds.values():
            if not (hold.settled or hold.returned):
                total = add_exact(total, hold.usd)
        return total

    def held_usd(self) -> Decimal:
        """USD of the holds no spend has settled, by the stream alone (a hold returned by its
        agent counts until its release is stored): what every replica judges a carry by."""
        total = Decimal(0)
        for hold in self.holds.values():
            if not hold.settled:
                total = add_exact(total, hold.usd)
        return total

    def state(self, spent: Sums) -> State:
        """As ``fleet.budgets`` judges it (migration 0015)."""
        tokens = self.limit_tokens
        if spent.usd >= self.limit_usd or (tokens is not None and spent.tokens >= tokens):
            return "exhausted"
        share = Decimal(repr(self.warn_at))
        if spent.usd >= mul_exact(self.limit_usd, share) or (
            tokens is not None and spent.tokens >= tokens * share
        ):
            return "warning"
        return "ok"


@dataclass(slots=True)
class Agent:
    team: str = UNASSIGNED
    life: lifecycle.Life = field(default_factory=lifecycle.Life)
    hold: str | None = None  # the budget the guard's pause names (while it is in force)

    def guard_paused(self) -> bool:
        return self.life.status == "paused" and self.life.paused_by == GUARD

    def pausable(self, agent: str) -> bool:
        """Active, offline or paused only by itself: the guard's pause may take over."""
        life = self.life
        return life.status in ("active", "offline") or (
            life.status == "paused" and life.paused_by == agent
        )


@dataclass(frozen=True, slots=True)
class Grant:
    """A reservation judged grantable on ``budget``: store its ``budget.reserved`` only on top of
    ``seq``, the last sequence the core had folded over the budget's subjects when it judged."""

    budget: str
    seq: int


@dataclass(frozen=True, slots=True)
class Granted:
    """A reservation already held (asked again with the same idempotency key): the budgets it
    holds and when it expires (ns since the epoch)."""

    budgets: tuple[str, ...]
    expires_ns: int


@dataclass(frozen=True, slots=True)
class Publish:
    event: Event
    # budget: compare-and-set on the guard's subject of the budget; empty: first on its subject
    expect: Expect = "any"


@dataclass(frozen=True, slots=True)
class Plan:
    """Events to publish in order; plans with one ``key`` (a budget id) one after another.
    ``crossing_ns``: the stream time (ns) of the event that exhausted the budget (the pause
    latency is measured from it); ``mark``: what the core planned, released by ``done``."""

    key: str
    steps: tuple[Publish, ...]
    mark: tuple[str, ...]
    crossing_ns: int | None = None


@dataclass
class Core:
    """The guard's state and rules (see the module). ``ready``: plans are made only once the
    followers caught up (the state is then the stream's head), as the watchdog judges."""

    budgets: dict[str, Budget] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)  # task -> project
    ready: bool = False
    _index: defaultdict[ScopeKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    _days: defaultdict[ScopeKey, defaultdict[date, Sums]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(Sums))
    )
    _total: defaultdict[ScopeKey, Sums] = field(default_factory=lambda: defaultdict(Sums))
    _orphans: defaultdict[str, list[tuple[date | None, Sums]]] = field(
        default_factory=lambda: defaultdict(list)
    )  # spend on tasks not seen created yet
    _project_agents: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    _planned: set[tuple[str, ...]] = field(default_factory=set)
    _targets: defaultdict[tuple[str, str], set[str]] = field(
        default_factory=lambda: defaultdict(set)
    )  # (budget, window) -> agents judged for a pause in it
    _abandoned: set[str] = field(default_factory=set)  # reservations to release as refused
    # reservations released lately (id -> stream time, ns): an id is never granted again
    ended: dict[str, int] = field(default_factory=dict)

    # ---- loading -----------------------------------------------------------------------------

    def load_budget(self, budget: Budget) -> None:
        old = self.budgets.get(budget.budget)
        if old is not None:
            self._index[old.key].discard(old.budget)
            budget.seq, budget.exhausted = max(old.seq, budget.seq), old.exhausted
            budget.holds = old.holds
        self.budgets[budget.budget] = budget
        self._index[budget.key].add(budget.budget)

    def load_hold(self, budget: str, reservation: str, agent: str, usd: Decimal,
                  expires_ns: int) -> None:  # fmt: skip
        """A reservation open on ``budget`` at the projections' snapshot."""
        if budget in self.budgets:
            self.budgets[budget].holds[reservation] = Hold(agent, usd, expires_ns)

    def load_agent(self, agent: str, team: str, life: lifecycle.Life, reason: str) -> None:
        hold = held_by(reason) if life.status == "paused" and life.paused_by == GUARD else None
        self.agents[agent] = Agent(team, life, hold)

    def load_task(self, task: str, project: str, holder: str | None) -> None:
        self._created(task, project)
        if holder is not None:
            self._project_agents[project].add(holder)

    def load_spend(self, keys: list[ScopeKey], day: date | None, usd: Decimal, tokens: int) -> None:
        """Spend of ``keys`` on ``day`` (None: before the days kept one by one)."""
        for key in keys:
            self._add(key, day, usd, tokens)

    def load_task_spend(self, task: str, day: date | None, usd: Decimal, tokens: int) -> None:
        project = self.tasks.get(task)
        if project is None:
            sums = Sums()
            sums.add(usd, tokens)
            self._orphans[task].append((day, sums))
        else:
            self._add(("project", project), day, usd, tokens)

    # ---- spend -------------------------------------------------------------------------------

    def _add(self, key: ScopeKey, day: date | None, usd: Decimal, tokens: int) -> None:
        self._total[key].add(usd, tokens)
        if day is not None:
            self._days[key][day].add(usd, tokens)

    def spent(self, budget: Budget, day: date) -> Sums:
        """What ``budget``'s scope spent in its window holding ``day``."""
        key = budget.key
        start = window_start(budget.window, day)
        if start is None:
            return self._total[key]
        if start == day:
            return self._days[key].get(day) or Sums()
        total = Sums()
        for d, sums in self._days[key].items():
            if start <= d <= day:  # d > day: spend of a later day, stored before this event
                total.add(sums.usd, sums.tokens)
        return total

    def _created(self, task: str, project: str) -> None:
        if task in self.tasks:
            return
        self.tasks[task] = project
        for day, sums in self._orphans.pop(task, []):
            self._add(("project", project), day, sums.usd, sums.tokens)

    def _scope_keys(self, agent: str, task: str | None) -> list[ScopeKey]:
        team = self.agents[agent].team if agent in self.agents else UNASSIGNED
        keys: list[ScopeKey] = [("agent", agent), ("team", team), ("org", "")]
        project = self.tasks.get(task) if task is not None else None
        if project is not None:
            keys.append(("project", project))
        return keys

    def in_scope(self, budget: Budget, agent: str) -> bool:
        match budget.scope:
            case "agent":
                return agent == budget.scope_id
            case "team":
                return agent in self.agents and self.agents[agent].team == budget.scope_id
            case "project":
                return agent in self._project_agents[budget.scope_id]
        return agent in self.agents  # org

    def scope_agents(self, budget: Budget) -> list[str]:
        if budget.scope == "agent":
            return [budget.scope_id] if budget.scope_id in self.agents else []
        if budget.scope == "project":
            return sorted(a for a in self._project_agents[budget.scope_id] if a in self.agents)
        return sorted(a for a in self.agents if self.in_scope(budget, a))

    # ---- the stream --------------------------------------------------------------------------

    def budget_seq(self, budget: str, seq: int) -> None:
        """Any message stored on the budget's subjects (readable or not) moves its sequence."""
        if budget in self.budgets:
            self.budgets[budget].seq = max(self.budgets[budget].seq, seq)

    def event(self, event: Event, seq: int, ns: int, *, spend: bool = True,
              life: bool = True, budget: bool = True) -> list[Plan]:  # fmt: skip
        """Fold one admitted event stored at ``seq`` at stream time ``ns`` (nanoseconds since
        the epoch); the plans it calls for (none before ``ready``). ``spend``, ``life`` and
        ``budget`` say whether the projections loaded at start had not applied it yet (an
        event they applied is read again only to follow the stream from one position)."""
        day = datetime.fromtimestamp(ns / 1e9, UTC).date()
        match event:
            case SpendRecorded() | ToolCalled():
                if event.reservation is not None:  # whatever the spend projection applied
                    self._settle(event.reservation, event.agent)
                if not spend:
                    return []
                tokens = (
                    event.tokens_in + event.tokens_out if isinstance(event, SpendRecorded) else 0
                )
                cost = money(event.cost_usd)
                keys = self._scope_keys(event.agent, event.task)
                for key in keys:
                    self._add(key, day, cost, tokens)
                self.agents.setdefault(event.agent, Agent())
                if event.task is not None and event.task in self.tasks:
                    self._project_agents[self.tasks[event.task]].add(event.agent)
                return self._evaluate_keys(keys, event.agent, day, ns)
            case TaskCreated():
                self._created(event.task, event.project)
                return []
            case TaskClaimed():
                project = self.tasks.get(event.task)
                if project is None:
                    return []
                self._project_agents[project].add(event.agent)
                joined: list[ScopeKey] = [("project", project)]
                carried = self._carry(event.agent, joined, day)
                return carried + self._joined(event.agent, joined, day, ns)
            case BudgetSet():
                if not budget:
                    return []
                # set_seq = seq; the compare-and-set sequence (the guard's own subject's) is
                # kept by load_budget
                new = Budget(
                    event.budget, event.scope, event.scope_id, event.window,
                    money(event.limit_usd), event.limit_tokens, event.warn_at, event.actor, seq,
                )  # fmt: skip
                return self._set(new, day, ns)
            case BudgetExhausted():
                if event.budget in self.budgets:
                    b = self.budgets[event.budget]
                    start = event.window_start.date() if event.window_start else None
                    b.exhausted = LIFETIME if start is None else start.isoformat()
                    return self.evaluate(b, day, ns)
                return []
            case BudgetReserved():
                if event.budget in self.budgets:
                    holds = self.budgets[event.budget].holds
                    if event.reservation in holds:  # carried here: now stored
                        holds[event.reservation].stored = True
                    else:
                        expires = int(event.expires_at.timestamp() * 1e9)
                        holds[event.reservation] = Hold(event.agent, money(event.usd), expires)
                return []
            case BudgetReleased():
                self.ended[event.reservation] = ns
                if event.budget in self.budgets:
                    self.budgets[event.budget].holds.pop(event.reservation, None)
                return []
            case BudgetRestored():
                if event.budget in self.budgets:
                    self.budgets[event.budget].exhausted = None
                    return self.evaluate(self.budgets[event.budget], day, ns)
                return []
        if not life or not hasattr(event, "agent") or event.SUBJECT_KIND != "agent":
            return []
        return self._lifecycle(event, day, ns)

    def _lifecycle(self, event: Event, day: date, ns: int) -> list[Plan]:
        agent_id: str = event.agent  # type: ignore[attr-defined]
        agent = self.agents.setdefault(agent_id, Agent())
        try:
            agent.life, _ = lifecycle.step(agent.life, event)
        except Rejected:  # refused by every reader: changes nothing
            return []
        if not agent.guard_paused():
            agent.hold = None
        elif isinstance(event, AgentPaused) and event.actor == GUARD:
            agent.hold = held_by(event.reason)
        if isinstance(event, AgentRegistered) and event.team != agent.team:
            agent.team = event.team
            keys: list[ScopeKey] = [("team", event.team), ("org", "")]
            return self._carry(agent_id, keys, day) + self._joined(agent_id, keys, day, ns)
        if isinstance(event, AgentResumed | AgentOnline) and agent.pausable(agent_id):
            # someone else's pause ended while a budget of its scope is exhausted: pause it now
            mine = [p for p, who in self._project_agents.items() if agent_id in who]
            keys = [*self._scope_keys(agent_id, None), *(("project", p) for p in mine)]
            return self._joined(agent_id, keys, day, ns)
        return []

    def _set(self, new: Budget, day: date, ns: int) -> list[Plan]:
        """A ``budget.set`` in force from now. When it moves an exhausted budget to another
        scope or window, the old one is restored first (``budget_changed``: the guard's pauses
        for it are lifted) and the new one judged afresh (its scope paused if exhausted)."""
        old = self.budgets.get(new.budget)
        plans: list[Plan] = []
        moved = old is not None and (old.scope, old.scope_id, old.window) != (
            new.scope, new.scope_id, new.window,
        )  # fmt: skip
        if old is not None and moved and old.exhausted is not None:
            plans += self._restore(old, window_key(old.window, day), resume=True,
                                   why="budget_changed")  # fmt: skip
        self.load_budget(new)
        if old is not None and moved:
            new.exhausted = None  # restored above (stored in order: the same plan key)
            for target in [t for t in self._targets if t[0] == new.budget]:
                del self._targets[target]  # the new scope is judged afresh
        return plans + self.evaluate(new, day, ns)

    # ---- judging -----------------------------------------------------------------------------

    def _evaluate_keys(self, keys: list[ScopeKey], agent: str, day: date, ns: int) -> list[Plan]:
        plans = self._joined(agent, keys, day, ns)
        for key in keys:
            for budget in sorted(self._index.get(key, ())):
                plans += self.evaluate(self.budgets[budget], day, ns)
        return plans

    def _exhausted_window(self, budget: Budget, day: date) -> str | None:
        """The window (key) in which ``budget`` is exhausted now, stored or planned."""
        wk = window_key(budget.window, day)
        if (
            budget.exhausted == wk
            or ("exhaust", budget.budget, wk, str(budget.set_seq)) in self._planned
        ):
            return wk
        return None

    def _joined(self, agent: str, keys: list[ScopeKey], day: date, ns: int) -> list[Plan]:
        """``agent`` may have entered the scope of an exhausted budget: pause it there."""
        if not self.ready:
            return []
        plans = []
        for key in keys:
            for name in sorted(self._index.get(key, ())):
                budget = self.budgets[name]
                wk = self._exhausted_window(budget, day)
                if wk is None or agent in self._targets[(name, wk)]:
                    continue
                if not self.in_scope(budget, agent):
                    continue
                if self.agents[agent].pausable(agent):  # else judged again once it is
                    self._targets[(name, wk)].add(agent)
                    spent = self.spent(budget, day)
                    pause = self._pause(budget, wk, agent, spent)
                    plans.append(Plan(name, (Publish(pause),), (), ns))
        return plans

    def evaluate(self, budget: Budget, day: date, ns: int) -> list[Plan]:
        """The plans ``budget`` calls for on ``day`` (the stream day of the event at ``ns``)."""
        if not self.ready:
            return []
        plans: list[Plan] = []
        name, wk = budget.budget, window_key(budget.window, day)
        spent = self.spent(budget, day)
        state = budget.state(spent)
        if budget.exhausted is not None and (budget.exhausted != wk or state != "exhausted"):
            plans += self._restore(budget, wk, resume=state != "exhausted")
        mark = ("exhaust", name, wk, str(budget.set_seq))
        if state == "exhausted" and budget.exhausted != wk and mark not in self._planned:
            self._planned.add(mark)
            plans.append(self._exhaust(budget, wk, day, spent, ns))
        warn = ("warn", name, wk)
        if state != "ok" and warn not in self._planned:
            self._planned.add(warn)
            plans.append(Plan(name, (Publish(self._warning(budget, wk, spent), "empty"),), warn))
        return plans

    def _exhaust(self, budget: Budget, wk: str, day: date, spent: Sums, ns: int) -> Plan:
        name = budget.budget
        mark = ("exhaust", name, wk, str(budget.set_seq))
        start = window_start(budget.window, day)
        exhausted = BudgetExhausted(
            id=deterministic_id("budget.exhausted", name, wk, str(budget.set_seq)),
            actor=GUARD, at=_at(ns), budget=name, window=budget.window,  # type: ignore[arg-type]
            window_start=midnight(start), spent_usd=min(float(spent.usd), MAX_USD),
            limit_usd=float(budget.limit_usd), spent_tokens=min(spent.tokens, MAX_TOKENS),
            limit_tokens=budget.limit_tokens,
        )  # fmt: skip
        steps = [Publish(exhausted, "budget")]
        for agent in self.scope_agents(budget):
            if agent in self._targets[(name, wk)]:
                continue
            if self.agents[agent].pausable(agent):  # else judged again once it is (_joined)
                self._targets[(name, wk)].add(agent)
                steps.append(Publish(self._pause(budget, wk, agent, spent)))
        return Plan(name, tuple(steps), mark, ns)

    def _pause(self, budget: Budget, wk: str, agent: str, spent: Sums) -> AgentPaused:
        return AgentPaused(
            id=deterministic_id("agent.paused", budget.budget, wk, str(budget.set_seq), agent),
            actor=GUARD, at=_now(), agent=agent,
            reason=pause_reason(budget.budget, budget.window, spent.usd, budget.limit_usd),
        )  # fmt: skip

    def _restore(self, budget: Budget, wk: str, *, resume: bool,
                 why: Literal["new_window", "limit_raised", "budget_changed"] | None = None,
                 ) -> list[Plan]:  # fmt: skip
        name, old = budget.budget, budget.exhausted or LIFETIME
        mark = ("restore", name, old, str(budget.set_seq))
        if mark in self._planned:
            return []
        self._planned.add(mark)
        if why is None:
            why = "new_window" if old != wk else "limit_raised"
        start = None if old == LIFETIME else date.fromisoformat(old)
        restored = BudgetRestored(
            id=deterministic_id("budget.restored", name, old, str(budget.set_seq)),
            actor=GUARD, at=_now(), budget=name, window=budget.window,  # type: ignore[arg-type]
            window_start=midnight(start), reason=why,
        )  # fmt: skip
        steps = [Publish(restored, "budget")]
        if resume:  # (a new window exhausted at once keeps its agents paused)
            steps += self._resumes(name, (old, str(budget.set_seq)), why)
        return [Plan(name, tuple(steps), mark)]

    def _resumes(self, name: str, parts: tuple[str, ...], why: str) -> list[Publish]:
        """Resume the agents whose pause in force is the guard's for budget ``name``, unless
        another exhausted budget covers them (it holds them then). ``parts`` make the ids."""
        steps = []
        for agent_id, agent in sorted(self.agents.items()):
            if agent.hold != name or not agent.guard_paused():
                continue
            other = self._covering(agent_id, name)
            if other is not None:
                agent.hold = other  # still exhausted there: that budget holds it
                continue
            steps.append(Publish(AgentResumed(
                id=deterministic_id("agent.resumed", name, *parts, agent_id),
                actor=GUARD, at=_now(), agent=agent_id, reason=f"budget {name} restored ({why})",
            )))  # fmt: skip
        return steps

    def _covering(self, agent: str, but: str) -> str | None:
        """Another budget exhausted now (stored) whose scope holds ``agent``."""
        for name, budget in sorted(self.budgets.items()):
            if name != but and budget.exhausted is not None and self.in_scope(budget, agent):
                return name
        return None

    def _warning(self, budget: Budget, wk: str, spent: Sums) -> EscalationRaised:
        esc = (
            f"budget-{deterministic_id('budget_warning', budget.budget, wk).replace('-', '')[:20]}"
        )
        limit = budget.limit_usd
        return EscalationRaised(
            id=deterministic_id(esc, "raised", "warning"), actor=GUARD, at=_now(),
            escalation=esc, tier="warning", reason=BUDGET_WARNING,
            agent=budget.scope_id if budget.scope == "agent" else None,
            message=(f"budget {budget.budget} ({budget.scope} {budget.scope_id}, "
                     f"{budget.window}) has spent {spent.usd} of {limit} USD; "
                     f"for {budget.set_by}, who set it"),
            evidence={"budget": budget.budget, "owner": budget.set_by, "window": budget.window,
                      "window_start": wk, "spent_usd": float(spent.usd),
                      "limit_usd": float(limit), "warn_at": budget.warn_at,
                      "spent_tokens": min(spent.tokens, MAX_TOKENS),
                      "limit_tokens": budget.limit_tokens},
        )  # fmt: skip

    # ---- reservations ------------------------------------------------------------------------

    def judge_reserve(self, agent: str, usd: Decimal, day: date, *,
                      task: str | None = None) -> list[Grant] | str:  # fmt: skip
        """Whether ``usd`` (USD, > 0) may be reserved for ``agent`` on ``day`` (today, UTC),
        spending on ``task`` when given: the budgets covering it, sorted by id, each with the
        sequence to compare-and-set on; or why not (one line for people). See the module."""
        if not self.ready:
            return "the guard is catching up with the stream; retry shortly"
        found = self.agents.get(agent)
        if found is None:
            return f"agent {agent} is not registered"
        if found.life.status in ("paused", "retired"):
            return f"agent {agent} is {found.life.status}"
        held = {r for b in self.budgets.values() for r, h in b.holds.items() if h.agent == agent}
        if len(held) >= MAX_OPEN_RESERVATIONS:
            return (f"agent {agent} holds {len(held)} open reservations, the most at once; "
                    "spend or release one first")  # fmt: skip
        project = self.tasks.get(task) if task is not None else None
        grants = []
        for name, budget in sorted(self.budgets.items()):
            if not (self.in_scope(budget, agent) or budget.key == ("project", project)):
                continue
            spent = self.spent(budget, day)
            if budget.state(spent) == "exhausted" or self._exhausted_window(budget, day):
                return f"budget {name} is exhausted"
            left = sub_exact(sub_exact(budget.limit_usd, spent.usd), budget.reserved_usd())
            if left < usd:
                return f"budget {name} has {max(left, Decimal(0))} USD left; {usd} USD asked"
            grants.append(Grant(name, budget.seq))
        return grants

    def forget_ended(self, ns: int) -> None:
        """Forget the reservations released more than ``ENDED_KEPT_NS`` before ``ns``."""
        for reservation in [r for r, at in self.ended.items() if at < ns - ENDED_KEPT_NS]:
            del self.ended[reservation]

    def granted(self, reservation: str, agent: str) -> Granted | None:
        """The reservation ``reservation`` of ``agent`` when it is held (an idempotent repeat of
        its request), else None."""
        names = tuple(
            name for name, b in sorted(self.budgets.items())
            if reservation in b.holds and b.holds[reservation].agent == agent
        )  # fmt: skip
        if not names:
            return None
        return Granted(names, self.budgets[names[0]].holds[reservation].expires_ns)

    def give_back(self, reservation: str, agent: str) -> tuple[str, ...]:
        """``agent`` gives ``reservation`` back unspent: its open holds (not settled) are
        released (reason ``returned``) by the next ``releases``. The budgets it held; empty
        when ``agent`` holds no such open reservation."""
        names = []
        for name, budget in sorted(self.budgets.items()):
            hold = budget.holds.get(reservation)
            if hold is not None and hold.agent == agent and not hold.settled:
                hold.returned = True
                names.append(name)
        return tuple(names)

    def _carry(self, agent: str, keys: list[ScopeKey], day: date) -> list[Plan]:
        """``agent`` entered the scopes ``keys`` on ``day``: each of its open reservations
        holds the budgets there too when they have room for it, judged as a grant is (limit -
        spent - what they hold already, by what the stream says: the same on every replica).
        A reservation that does not fit a budget it entered is revoked: released everywhere
        (``refused``), so the spend that names it counts after the fact, like a spend with no
        reservation. The holds are added now, ready or not; ``budget.reserved`` is planned once
        ready (``reconcile`` and ``tick`` plan the ones not stored yet)."""
        mine: dict[str, Hold] = {}
        for budget in self.budgets.values():
            for reservation, hold in budget.holds.items():
                if (
                    hold.agent == agent
                    and not (hold.settled or hold.returned)
                    and (reservation not in self._abandoned)
                ):
                    mine.setdefault(reservation, hold)
        if not mine:
            return []
        plans = []
        for key in keys:
            for name in sorted(self._index.get(key, ())):
                budget = self.budgets[name]
                for reservation, hold in sorted(mine.items()):
                    if reservation in budget.holds or reservation in self._abandoned:
                        continue
                    spent = self.spent(budget, day).usd
                    left = sub_exact(sub_exact(budget.limit_usd, spent), budget.held_usd())
                    if left < hold.usd or budget.state(self.spent(budget, day)) == "exhausted":
                        self._abandoned.add(reservation)  # released everywhere by the tick
                        continue
                    budget.holds[reservation] = Hold(agent, hold.usd, hold.expires_ns,
                                                     stored=False)  # fmt: skip
                    plans += self._carry_plan(name, reservation)
        return plans

    def _carry_plan(self, name: str, reservation: str) -> list[Plan]:
        mark = ("carry", name, reservation)
        if not self.ready or mark in self._planned:
            return []
        self._planned.add(mark)
        hold = self.budgets[name].holds[reservation]
        event = BudgetReserved(
            id=deterministic_id("budget.reserved", name, reservation), actor=GUARD, at=_now(),
            budget=name, reservation=reservation, agent=hold.agent, usd=float(hold.usd),
            expires_at=_at(hold.expires_ns),
        )  # fmt: skip
        return [Plan(name, (Publish(event, "budget"),), mark)]

    def _unstored_carries(self) -> list[Plan]:
        """``budget.reserved`` for the holds carried and not stored yet: carried while catching
        up, or whose plan was dropped (the budget moved under it: ``done``)."""
        plans = []
        for name, budget in sorted(self.budgets.items()):
            for reservation, hold in sorted(budget.holds.items()):
                if not (hold.stored or hold.settled or hold.returned) and (
                    reservation not in self._abandoned
                ):
                    plans += self._carry_plan(name, reservation)
        return plans

    def abandon(self, reservation: str) -> None:
        """The service gave ``reservation`` up (refused on another budget): its holds are
        released (reason ``refused``) by the next ``tick``."""
        self._abandoned.add(reservation)

    def _settle(self, reservation: str, agent: str) -> None:
        """A spend by ``agent`` naming ``reservation`` settles it only if the reservation is
        ``agent``'s own: another agent naming it (its id is on the budget's subjects, which
        agents may read) releases nothing."""
        for budget in self.budgets.values():
            hold = budget.holds.get(reservation)
            if hold is not None and hold.agent == agent:
                hold.settled = True

    def releases(self, ns: int) -> list[Plan]:
        """The releases due at ``ns`` (host clock, ns since the epoch): holds settled,
        abandoned or expired, each planned once (again once a plan was dropped: ``done``)."""
        if not self.ready:
            return []
        plans = []
        for name, budget in sorted(self.budgets.items()):
            for reservation, hold in sorted(budget.holds.items()):
                reason: Literal["settled", "expired", "refused", "returned"]
                if hold.settled:
                    reason = "settled"
                elif hold.returned:
                    reason = "returned"
                elif reservation in self._abandoned:
                    reason = "refused"
                elif hold.expires_ns <= ns:
                    reason = "expired"
                else:
                    continue
                if not hold.stored:  # carried and never stored here: nothing to release
                    del budget.holds[reservation]
                    continue
                mark = ("release", name, reservation)
                if mark in self._planned:
                    continue
                self._planned.add(mark)
                released = BudgetReleased(
                    id=deterministic_id("budget.released", name, reservation), actor=GUARD,
                    at=_now(), budget=name, reservation=reservation, agent=hold.agent,
                    usd=float(hold.usd), reason=reason,
                )  # fmt: skip
                plans.append(Plan(name, (Publish(released, "budget"),), mark))
        return plans

    def tick(self, day: date, ns: int) -> list[Plan]:
        """A new window may have begun (``day``: today by the host's clock, UTC): restore the
        budgets exhausted in an earlier one; and release the reservations due."""
        plans: list[Plan] = self.releases(ns) + self._unstored_carries()
        for budget in list(self.budgets.values()):
            if budget.exhausted is not None and budget.exhausted != window_key(budget.window, day):
                plans += self.evaluate(budget, day, ns)
        return plans

    def reconcile(self, day: date, ns: int) -> list[Plan]:
        """Once caught up: judge every budget, and lift the guard's pauses that name a budget
        no longer exhausted (a restore stored while the guard was away, its resumes not)."""
        plans: list[Plan] = []
        for budget in list(self.budgets.values()):
            plans += self.evaluate(budget, day, ns)
        plans += self._unstored_carries()
        held = {a.hold for a in self.agents.values() if a.hold is not None and a.guard_paused()}
        for name in sorted(held):
            found = self.budgets.get(name)
            if found is not None and found.exhausted is not None:
                continue
            mark = ("resume", name, str(found.seq if found else 0))
            if mark not in self._planned:
                self._planned.add(mark)
                steps = self._resumes(name, mark[1:], "restored while the guard was away")
                if steps:
                    plans.append(Plan(name, tuple(steps), mark))
        return plans

    def done(self, plan: Plan, stored: bool) -> None:
        """A plan finished; when it was not stored (the budget moved under it), its mark is
        released so the next event judges the budget again."""
        if not stored and plan.mark:
            self._planned.discard(plan.mark)


def _at(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _now() -> datetime:
    """Producer time (informational; ids never depend on it)."""
    return datetime.now(UTC)
