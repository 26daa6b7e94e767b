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

import msgspec
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from fleetward.projections import Meta
from fleetward.projections.base import Row
from fleetward.projections.tasks import step
from fleetward.schemas import Event, Rejected, admit
from fleetward.schemas.events import TaskCreated
from fleetward.schemas.headers import SEQUENCE, STATUS, SUBJECT, TIME_STAMP, direct_get_subject
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import boundary, boundary_wildcard

BATCH = 1000


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
class Stored:
    """A message as a direct get returns it, admitted (``event``) or not (``refused``)."""

    seq: int
    time: datetime
    subject: str
    event: Event | None
    refused: str | None


async def read_task(
    nc: NatsClient, js: JetStreamContext, task: str, *, history: bool = False
) -> TaskState:
    """Fold every event of one task (see above). With ``history``, keep every message and what
    the fold made of it."""
    v2 = await read_subjects(nc, boundary_wildcard("task", task))
    last = v2[-1].seq if v2 else 0
    messages = v2
    if not (v2 and isinstance(v2[0].event, TaskCreated)):  # v1 history, perhaps
        v1 = await read_subjects(nc, boundary("task", task))
        if v1:
            messages = sorted(v1 + v2, key=lambda m: m.seq)
    row: Row | None = None
    steps: list[Step] = []
    seen: set[str] = set()  # a copy of an event (its id seen before here) is not applied again
    for m in messages:
        why = m.refused
        if m.event is not None:
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
    return TaskState(task, row, last, tuple(steps))


async def read_subjects(nc: NatsClient, subjects: str) -> list[Stored]:
    """Every message of FW_EVENTS on ``subjects`` (a subject or a wildcard), in order, each
    admitted on the subject it is stored on, read with one batch direct get (ADR-31, NATS
    2.11+): the server streams the messages to an inbox and ends with a 204 status."""
    out: list[Stored] = []
    inbox = nc.new_inbox()
    replies = await nc.subscribe(inbox, pending_msgs_limit=100_000)
    try:
        while True:  # one request, unless there are ever more than BATCH messages
            after = out[-1].seq if out else 0
            request = {"batch": BATCH, "seq": after + 1, "next_by_subj": subjects}
            await nc.publish(direct_get_subject(EVENTS_STREAM), msgspec.json.encode(request), inbox)
            got = 0
            while True:
                msg = await replies.next_msg(timeout=5.0)
                headers = msg.headers or {}
                if not msg.data and STATUS in headers:
                    break  # 204: end of batch; 404: nothing (more) on the subjects
                got += 1
                subj = headers[SUBJECT]
                try:
                    event: Event | None = admit(subj, msg.data)
                    why = None
                except Rejected as exc:  # the board never applies bad events
                    event, why = None, f"{exc.reason}: {exc.detail}"
                seq, when = int(headers[SEQUENCE]), _parse_time(headers[TIME_STAMP])
                out.append(Stored(seq, when, subj, event, why))
            if got < BATCH:
                return out
    finally:
        await replies.unsubscribe()


def _parse_time(stamp: str) -> datetime:
    """A JetStream RFC 3339 timestamp with nanoseconds, to microseconds."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    micros = (frac + "000000")[:6]
    return datetime.fromisoformat(f"{head}.{micros}+00:00")
