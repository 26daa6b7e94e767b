"""The watchdog's task mirror (DESIGN 3.3): every open task's row as the task state machine
(projections/tasks.py ``step``) folds it, the one fold the board, the agent client and the
operator client use too. So the watchdog watches, times and expires exactly the claims the
board holds, and a claim the board refuses holds here only as long as it holds there (until its
``task.claim_refused``, on the task's subject). Pure: fed task events with their stream sequence
and time (microseconds).

What the detectors and the leases need is read off the rows, by comparing a task's row before
and after each event (``Moved``):

- which claim holds the task (in progress or blocked; holder, epoch, claim id): a claim that
  starts holding is ``claimed`` (a new claim, or the work back with its holder after a rejected
  review), one that stops is ``ended`` (submitted, released, expired, revoked, voided by the
  board, cancelled), and a report of the holder (claim, progress, block, rework: the row's
  ``last_progress_at``) is ``touched``;
- since when the task waits for a review (in review: ``submitted_at``);
- the dependencies of an open task, and which tasks are cancelled (its dead ends).

Terminal tasks (done, cancelled) are dropped, as ``step`` refuses every event on them; kept of
them is their status (``ended``, the latest ``remember``), so that a second ``task.created`` is
refused and a cancelled dependency is a dead end. A done task that a verdict of the board may
still send back (``tasks.reopenable``: the verdict on its claim or on the agent's review that
did it is on its way) is the exception: its row is kept (the latest ``remember_reopenable``).

Rules only the board can judge reach the mirror as the board's verdicts on the task's subject,
as they reach every reader: a refused claim, a refused review, a creation with unknown
dependencies, a change of dependencies put back.

Rows hold the columns ``MIRRORED`` (those of ``fleetward.tasks`` that ``step`` reads or writes
and the detectors read): the watchdog loads the same columns at start (``load``), so a loaded
row and a folded row are the same.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, NamedTuple

from fleetward.projections.base import Meta, Row
from fleetward.projections.tasks import OPEN, TASKS, holder, reopenable, step
from fleetward.schemas.events import Event, TaskCreated
from fleetward.services.watchdog.core.limits import period

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# what the board's rows hold beyond what the watchdog needs (long texts, the claim's role)
# and what only the board writes (``overruled``: what it overruled, until its verdict lands)
_UNWATCHED: Final = frozenset({"project", "title", "description", "priority", "created_by",
                               "required_role", "overruled"})  # fmt: skip
MIRRORED: Final = tuple(c for c in TASKS.columns if c not in _UNWATCHED)


def stream_time(us: int) -> datetime:
    """A stream time in microseconds since the epoch as the projector stores it, exactly."""
    return EPOCH + timedelta(microseconds=us)


def micros(when: datetime) -> int:
    """Microseconds since the epoch of a stream time, exactly."""
    return (when - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Held:
    """A task held by a claim, as the detectors see it (read off the task's row)."""

    task: str
    agent: str
    epoch: int
    claim: str | None  # the claim's event id
    claimed: float  # stream time of the claim, seconds
    touched_us: int  # stream time of the holder's last report, microseconds
    sla: float | None  # seconds, clamped (limits.period)

    @property
    def touched(self) -> float:
        return self.touched_us / 1e6


Change = tuple[Literal["claimed", "touched", "ended"], Held]


class Waiting(NamedTuple):
    """A task in review: who submitted (in which epoch), since when (stream time, µs)."""

    agent: str
    epoch: int
    submitted_us: int


@dataclass(frozen=True, slots=True)
class Moved:
    """What one event changed of its task (nothing when the task's state refused it)."""

    task: str
    applied: bool
    changes: tuple[Change, ...] = ()  # the held claim: ended, then claimed or touched
    submitted: tuple[int | None, int | None] = (None, None)  # in review since: before, after
    dead_ends: tuple[str, ...] = ()  # the tasks whose dependencies to look at again


def held_of(row: Row | None) -> Held | None:
    """The claim that holds the task of ``row``, or None."""
    agent = holder(row)
    if row is None or agent is None:
        return None
    claimed = row["claimed_at"] or row["updated_at"]
    touched = row["last_progress_at"] or claimed
    sla = None if row["sla_s"] is None else period(row["sla_s"])
    return Held(row["task_id"], agent, row["claim_epoch"], row["claim_id"],
                micros(claimed) / 1e6, micros(touched), sla)  # fmt: skip


def waiting_of(row: Row | None) -> Waiting | None:
    """The submission the task of ``row`` waits a review for, or None."""
    if row is None or row["status"] != "review":
        return None
    since = row["submitted_at"] or row["updated_at"]
    return Waiting(row["assignee"], row["claim_epoch"], micros(since))


def deps_of(row: Row | None) -> tuple[str, ...]:
    """The dependencies of an open task (an ended one waits for nothing)."""
    if row is None or row["status"] not in OPEN:
        return ()
    return tuple(dict.fromkeys(row["depends_on"]))


@dataclass(slots=True)
class TaskWatch:
    rows: dict[str, Row] = field(default_factory=dict)  # open tasks (and reopenable ones)
    ended: OrderedDict[str, str] = field(default_factory=OrderedDict)  # task -> done, cancelled
    reopenable: OrderedDict[str, None] = field(default_factory=OrderedDict)  # done, in rows
    remember: int = 100_000
    remember_reopenable: int = 10_000
    # read off the rows, for the detectors
    held: dict[str, Held] = field(default_factory=dict)
    by_agent: dict[str, set[str]] = field(default_factory=dict)
    submitted: dict[str, Waiting] = field(default_factory=dict)
    dependents: dict[str, set[str]] = field(default_factory=dict)  # dependency -> open tasks

    # ---- reading -----------------------------------------------------------------------------

    def status(self, task: str) -> str | None:
        """The task's status as the board has it; None: unknown (or forgotten)."""
        row = self.rows.get(task)
        if row is not None:
            return str(row["status"])
        return self.ended.get(task)

    def holdings(self, agent: str) -> list[tuple[str, int]]:
        return sorted((t, self.held[t].epoch) for t in self.by_agent.get(agent, ()))

    def sla(self, task: str) -> float | None:
        """The task's own SLA (clamped), or None."""
        row = self.rows.get(task)
        return None if row is None or row["sla_s"] is None else period(row["sla_s"])

    def deps(self, task: str) -> tuple[str, ...]:
        return deps_of(self.rows.get(task))

    def cancelled_deps(self, task: str) -> list[str]:
        """The dependencies of open ``task`` that are cancelled: it can never be claimed."""
        return [d for d in self.deps(task) if self.status(d) == "cancelled"]

    # ---- folding -----------------------------------------------------------------------------

    def load(self, row: Row) -> Moved:
        """A task as the board (fleetward.tasks) has it at start: the columns ``MIRRORED``."""
        task = row["task_id"]
        self.ended.pop(task, None)
        return self._put(task, self.rows.get(task), {c: row[c] for c in MIRRORED})

    def load_ended(self, task: str, status: str) -> None:
        """A task that ended before the start (e.g. the cancelled dependency of an open one)."""
        if task not in self.rows:
            self._end(task, status)

    def apply(self, event: Event, seq: int, us: int) -> Moved:
        """Fold an event of a task's subject, stored at ``seq`` at stream time ``us``."""
        task = getattr(event, "task", None)
        if not isinstance(task, str):
            return Moved("", False)
        before = self.rows.get(task)
        if before is None and task in self.ended:
            return Moved(task, False)  # done or cancelled: step refuses all, a re-creation too
        after = step(before, event, Meta(seq, stream_time(us), ""))
        if isinstance(after, str):
            return Moved(task, False)
        if isinstance(event, TaskCreated):
            after = {c: after[c] for c in MIRRORED}
        return self._put(task, before, after)

    def _put(self, task: str, before: Row | None, after: Row) -> Moved:
        """Store ``after`` as the task's row and bring what is read off the rows up to date."""
        old_held, new_held = self.held.get(task), held_of(after)
        changes: list[Change] = []
        if old_held is not None and (new_held is None or _claim(new_held) != _claim(old_held)):
            changes.append(("ended", old_held))
            self._unhold(old_held)
        if new_held is not None:
            if old_held is None or _claim(new_held) != _claim(old_held):
                changes.append(("claimed", new_held))
            elif new_held.touched_us != old_held.touched_us:
                changes.append(("touched", new_held))
            self.held[task] = new_held
            self.by_agent.setdefault(new_held.agent, set()).add(task)

        was = self.submitted.pop(task, None)
        now = waiting_of(after)
        if now is not None:
            self.submitted[task] = now

        old_deps, new_deps = deps_of(before), deps_of(after)
        self._depend(task, old_deps, new_deps)
        dead_ends: list[str] = [task] if old_deps != new_deps or before is None else []
        was_cancelled = before is not None and before["status"] == "cancelled"
        if after["status"] == "cancelled" and not was_cancelled:
            dead_ends += sorted(self.dependents.get(task, ()))

        status = after["status"]
        if status in OPEN:
            self.rows[task] = after
            self.reopenable.pop(task, None)
        elif reopenable(after):
            self.rows[task] = after  # the board's verdict may still send it back to review
            self.reopenable[task] = None
            self.reopenable.move_to_end(task)
            while len(self.reopenable) > self.remember_reopenable:
                oldest, _ = self.reopenable.popitem(last=False)
                self._end(oldest, self.rows.pop(oldest)["status"])
        else:
            self.rows.pop(task, None)
            self.reopenable.pop(task, None)
            self._end(task, status)
        return Moved(
            task,
            True,
            tuple(changes),
            (None if was is None else was.submitted_us, None if now is None else now.submitted_us),
            tuple(dead_ends),
        )

    def _unhold(self, h: Held) -> None:
        self.held.pop(h.task, None)
        tasks = self.by_agent.get(h.agent)
        if tasks is not None:
            tasks.discard(h.task)
            if not tasks:
                del self.by_agent[h.agent]

    def _depend(self, task: str, old: Iterable[str], new: Iterable[str]) -> None:
        for dep in old:
            waiting = self.dependents.get(dep)
            if waiting is not None:
                waiting.discard(task)
                if not waiting:
                    del self.dependents[dep]
        for dep in new:
            self.dependents.setdefault(dep, set()).add(task)

    def _end(self, task: str, status: str) -> None:
        self.ended[task] = status
        self.ended.move_to_end(task)
        while len(self.ended) > self.remember:
            self.ended.popitem(last=False)


def _claim(h: Held) -> tuple[str, int, str | None]:
    return h.agent, h.epoch, h.claim
