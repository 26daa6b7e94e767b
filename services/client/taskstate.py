"""A task's state read straight from the stream, for agents and operators that must not wait
for (or need not have) the Postgres projection.

The task's events are folded with the task state machine (projections/tasks.py ``step``), the
fold the board itself applies, so the client and the projection agree on the task's status,
holder, epoch and current claim at every sequence. They are those of its v2 subjects
(``fw.task.<task>.>``, every actor's) and, for a task with contract v1 history, of its v1
subject (``fw.task.<task>``), merged in stream order: one request when the v2 subjects open
with the task's creation (every task created since v2), a second one otherwise. ``last_seq``
is the last sequence over the v2 subjects: the value a claim sends as
``Nats-Expected-Last-Subject-Sequence`` over them (the v1 subject is frozen history, never
published on again once credentials pin actors to v2 subjects). The stream time in ``Meta`` is
the one the server reports for each message, so local folds see the board's timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from fleetward.projections import Meta
from fleetward.projections.base import Row
from fleetward.projections.tasks import step
from fleetward.schemas import Event, Rejected, admit
from fleetward.schemas.events import TaskCreated
from fleetward.schemas.roles import RoleBook, check_role, judged_by_roles
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import boundary, boundary_wildcard
from fleetward.services.client import direct
from fleetward.services.client.roles import read_roles


@dataclass(frozen=True, slots=True)
class TaskState:
    task: str
    row: dict[str, Any] | None  # None: no such task (or only refused events)
    last_seq: int  # the last sequence over the task's v2 subjects; 0 when they hold nothing
    history: tuple[Step, ...] = ()  # with ``history=True``: every message, and what it did


@dataclass(frozen=True, slots=True)
class Step:
    """One message of the task's subjects and what the state machine made of it."""

    seq: int
    time: datetime
    event: Event | None  # None: admission refused it (``refused`` says why)
    refused: str | None  # why it was not applied, or None: applied


@dataclass(frozen=True, slots=True)
class Fold:
    """What a reader keeps of a task it folded, to fold only what was stored since: the row,
    the last sequence over the v2 subjects, the sequence read up to (v1 history included) and
    the event ids applied or seen (a later copy of one is not applied)."""

    row: Row
    last_seq: int
    read_to: int
    seen: frozenset[str]


class TaskCache:
    """The folds of the tasks a client read lately (``read_task``), least recently used first
    out past ``size``. A task's events never change once stored, and each is judged at its own
    position (roles included), so folding on from a kept fold gives what a fold from the start
    gives: a claim on a task with a long history reads only what is new (one message get
    each)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._folds: dict[str, Fold] = {}

    def get(self, task: str) -> Fold | None:
        fold = self._folds.pop(task, None)
        if fold is not None:
            self._folds[task] = fold  # most recent last
        return fold

    def put(self, task: str, fold: Fold) -> None:
        self._folds.pop(task, None)
        self._folds[task] = fold
        while len(self._folds) > self.size:
            del self._folds[next(iter(self._folds))]


@dataclass(frozen=True, slots=True)
class Stored:
    """A message as a direct get returns it, admitted (``event``) or not (``refused``)."""

    seq: int
    time: datetime
    subject: str
    event: Event | None
    refused: str | None


async def read_task(
    nc: NatsClient,
    js: JetStreamContext,
    task: str,
    *,
    history: bool = False,
    roles: RoleBook | None = None,
    cache: TaskCache | None = None,
) -> TaskState:
    """Fold every event of one task (see above). A person's event counts only with the role it
    needs at its position (schemas/roles.py), as the board judges it: ``roles`` is the caller's
    book of role changes, brought up to date here after the task is read when the task holds a
    person's event the book cannot judge yet (``RoleBook.covers``), so it then holds every
    change stored before the task's last event. With ``history``, keep every message and what
    the fold made of it. With ``cache`` (and no ``history``), fold on from the task's kept
    fold, reading only the messages stored since."""
    kept = None if cache is None or history else cache.get(task)
    if kept is not None:
        messages = await read_subjects(nc, boundary_wildcard("task", task), after=kept.read_to)
        last = messages[-1].seq if messages else kept.last_seq
    else:
        v2 = await read_subjects(nc, boundary_wildcard("task", task))
        last = v2[-1].seq if v2 else 0
        messages = v2
        if not (v2 and isinstance(v2[0].event, TaskCreated)):  # v1 history, perhaps
            v1 = await read_subjects(nc, boundary("task", task))
            if v1:
                messages = sorted(v1 + v2, key=lambda m: m.seq)
    book = RoleBook() if roles is None else roles
    if any(
        m.event is not None and judged_by_roles(m.event) and not book.covers(m.seq)
        for m in messages
    ):  # a person's event the book cannot judge yet: one lookup, more only if roles changed
        book = await read_roles(nc, book)
        book.known_to = max(book.known_to, messages[-1].seq)  # read before the lookup began
    row: Row | None = None if kept is None else kept.row
    steps: list[Step] = []
    # a copy of an event (its id seen before here) is not applied again
    seen: set[str] = set() if kept is None else set(kept.seen)
    for m in messages:
        why = m.refused
        if m.event is not None and why is None:
            try:
                check_role(m.event, m.seq, book)
            except Rejected as exc:
                why = f"{exc.reason}: {exc.detail}"
        if m.event is not None and why is None:
            after = (
                "a copy of an event stored before (the same id)"
                if m.event.id in seen
                else step(row, m.event, Meta(m.seq, m.time, m.subject))
            )
            seen.add(m.event.id)
            if isinstance(after, str):  # why it does not fit: not applied
                why = after
            else:
                row = after
        if history:
            steps.append(Step(m.seq, m.time, m.event, why))
    if cache is not None and row is not None:
        read_to = messages[-1].seq if messages else kept.read_to if kept else 0
        cache.put(task, Fold(row, last, read_to, frozenset(seen)))
    return TaskState(task, row, last, tuple(steps))


async def read_subjects(nc: NatsClient, subjects: str, *, after: int = 0) -> list[Stored]:
    """Every message of FW_EVENTS on ``subjects`` (a subject or a wildcard) stored after
    sequence ``after``, in order, each admitted on the subject it is stored on (one message get
    each: client/direct.py)."""
    out: list[Stored] = []
    async for raw in direct.read_subjects(nc, EVENTS_STREAM, subjects, after=after):
        try:
            event: Event | None = admit(raw.subject, raw.data)
            why = None
        except Rejected as exc:  # the board never applies bad events
            event, why = None, f"{exc.reason}: {exc.detail}"
        out.append(Stored(raw.seq, raw.time, raw.subject, event, why))
    return out
