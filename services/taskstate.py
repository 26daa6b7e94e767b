"""A task's state read straight from its subject on the stream, for agents and operators that
must not wait for (or need not have) the Postgres projection.

The events of ``fw.task.<task>`` are folded with the task board's own pure fold, so the client
and the projection judge a claim the same way. ``last_seq`` is the subject's last sequence: the
value a claim sends as ``Nats-Expected-Last-Subject-Sequence``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from projections import Meta, Rows
from projections.tasks import TASKS, TaskBoard
from schemas import Rejected, admit
from schemas.subjects import subject
from services.pull import PullConsumer

STREAM = "FW_EVENTS"
_BOARD = TaskBoard(local=True)


@dataclass(frozen=True, slots=True)
class TaskState:
    task: str
    row: dict[str, Any] | None  # None: no such task (or only refused events)
    last_seq: int  # 0 when the subject has no events


async def last_seq(js: JetStreamContext, task: str) -> int:
    try:
        msg = await js.get_last_msg(STREAM, subject("task", task))
    except NotFoundError:
        return 0
    return int(msg.seq or 0)


async def read_task(nc: NatsClient, js: JetStreamContext, task: str) -> TaskState:
    """Fold every event of one task from the stream."""
    subj = subject("task", task)
    last = await last_seq(js, task)
    rows = Rows()
    if last == 0:
        return TaskState(task, None, 0)
    info = await js.add_consumer(
        STREAM,
        ConsumerConfig(
            filter_subject=subj,
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.ALL,
            inactive_threshold=30.0,
            mem_storage=True,
            num_replicas=1,
        ),
    )
    assert info.name is not None
    consumer = PullConsumer(nc, STREAM, info.name, batch=256, expires=2.0)
    await consumer.start()
    try:
        seen = 0
        while seen < last:
            batch = await consumer.next_batch(256, wait=5.0, linger=0.0)
            if not batch:
                raise TimeoutError(f"could not read {subj} up to sequence {last}")
            for d in batch:
                seen = d.seq
                if d.seq > last:
                    break
                with contextlib.suppress(Rejected):  # the board never applies bad events
                    _BOARD.apply(rows, admit(d.subject, d.data), Meta(d.seq, d.time, d.subject))
    finally:
        await consumer.stop()
        with contextlib.suppress(Exception):
            await js.delete_consumer(STREAM, info.name)
    return TaskState(task, rows.get(TASKS, (task,)), last)
