"""A task's state read straight from its subject on the stream, for agents and operators that
must not wait for (or need not have) the Postgres projection.

The events of ``fw.task.<task>`` are folded with the task state machine (projections/tasks.py
``step``), the fold the board itself applies, so the client and the projection agree on the
task's status, holder, epoch and current claim at every sequence. ``last_seq`` is the
subject's last sequence: the value a claim sends as ``Nats-Expected-Last-Subject-Sequence``.
The stream time in ``Meta`` is the one the server reports for each message, so local folds see
the board's timestamps.
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
from fleetward.schemas.headers import SEQUENCE, STATUS, TIME_STAMP, direct_get_subject
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import subject

BATCH = 1000


@dataclass(frozen=True, slots=True)
class TaskState:
    task: str
    row: dict[str, Any] | None  # None: no such task (or only refused events)
    last_seq: int  # 0 when the subject has no events
    history: tuple[Step, ...] = ()  # with ``history=True``: every message, and what it did


@dataclass(frozen=True, slots=True)
class Step:
    """One message of a task's subject and what the state machine made of it."""

    seq: int
    time: datetime
    event: Event | None  # None: admission refused it (``refused`` says why)
    refused: str | None  # why it was not applied, or None: applied


async def read_task(
    nc: NatsClient, js: JetStreamContext, task: str, *, history: bool = False
) -> TaskState:
    """Fold every event of one task, read with one batch direct get (ADR-31, NATS 2.11+): the
    server streams the subject's messages to an inbox and ends with a 204 status. With
    ``history``, keep every message and what the fold made of it."""
    subj = subject("task", task)
    row: Row | None = None
    last = 0
    steps: list[Step] = []
    seen: set[str] = set()  # a copy of an event (its id seen before here) is not applied again
    inbox = nc.new_inbox()
    replies = await nc.subscribe(inbox, pending_msgs_limit=100_000)
    try:
        while True:  # one request, unless a task ever has more than BATCH events
            request = {"batch": BATCH, "seq": last + 1, "next_by_subj": subj}
            await nc.publish(direct_get_subject(EVENTS_STREAM), msgspec.json.encode(request), inbox)
            got = 0
            while True:
                msg = await replies.next_msg(timeout=5.0)
                headers = msg.headers or {}
                if not msg.data and STATUS in headers:
                    break  # 204: end of batch; 404: nothing (more) on the subject
                got += 1
                last = int(headers[SEQUENCE])
                when = _parse_time(headers[TIME_STAMP])
                why: str | None
                try:
                    event: Event | None = admit(subj, msg.data)
                except Rejected as exc:  # the board never applies bad events
                    event, why = None, f"{exc.reason}: {exc.detail}"
                else:
                    assert event is not None
                    after = (
                        "a copy of an event stored before (the same id)"
                        if event.id in seen
                        else step(row, event, Meta(last, when, subj))
                    )
                    seen.add(event.id)
                    if isinstance(after, str):  # why it does not fit: not applied
                        why = after
                    else:
                        row, why = after, None
                if history:
                    steps.append(Step(last, when, event, why))
            if got < BATCH:
                break
    finally:
        await replies.unsubscribe()
    return TaskState(task, row, last, tuple(steps))


def _parse_time(stamp: str) -> datetime:
    """A JetStream RFC 3339 timestamp with nanoseconds, to microseconds."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    micros = (frac + "000000")[:6]
    return datetime.fromisoformat(f"{head}.{micros}+00:00")
