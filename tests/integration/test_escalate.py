"""Publishing the watchdog's plans against a real nats-server: what an unreadable message on an
escalation's subjects does (nothing: the plan is still published after it), and plans about a
boundary with contract v1 history (an escalation raised, a task claimed before v2)."""

from __future__ import annotations

import time

import msgspec

from fleetward.schemas import decode, subject_of
from fleetward.schemas.events import (
    EscalationResolved,
    Event,
    TaskClaimed,
    TaskCreated,
    TaskLeaseExpired,
    TaskProgressed,
)
from fleetward.services.jetstream.publish import publish
from fleetward.services.runtime.connect import Runtime
from fleetward.services.watchdog.core.incidents import (
    WATCHDOG,
    Publish,
    raised_event,
    resolve_step,
)
from fleetward.services.watchdog.escalate import Publisher
from tests.helpers import envelope


async def test_garbage_on_an_escalations_subject_does_not_keep_it_open(rt: Runtime) -> None:
    """A non-JSON message published on ``fw.esc.<id>.<actor>`` (dead-lettered by the
    projection) made the watchdog take its resolution for a duplicate: the escalation stayed
    open for ever."""
    stored: list[tuple[Event, int]] = []
    publisher = Publisher(rt.js, on_stored=lambda e, s: stored.append((e, s)), on_closed=print)
    now = time.time()
    raise_ = raised_event("hb-x1", "critical", "heartbeat_missed", now, agent="x1", message="m")
    assert await publisher.step(Publish(raise_, "empty")) == "stored"
    seq = stored[-1][1]
    # anyone can publish on their own subject of it; admission refuses it
    await rt.js.publish("fw.esc.hb-x1.mallory", b"\x00garbage")
    assert await publisher.step(resolve_step("hb-x1", now + 1, "heartbeat received", seq)) == (
        "stored"
    )
    last = await rt.js.get_last_msg("FW_EVENTS", "fw.esc.hb-x1.>")
    assert last.data is not None
    assert isinstance(decode(last.data), EscalationResolved)


def v1(event: Event) -> Event:
    """``event`` as contract v1 wrote it (history)."""
    return msgspec.structs.replace(event, v=1)


async def test_an_escalation_raised_under_v1_is_resolved_under_v2(rt: Runtime) -> None:
    """Compare-and-set is over the v2 subjects, which hold nothing of an escalation raised under
    v1: its resolution is published on top of them once the v1 history is read."""
    publisher = Publisher(rt.js, on_stored=lambda e, s: None, on_closed=print)
    now = time.time()
    raise_ = v1(raised_event("hb-old", "critical", "heartbeat_missed", now, agent="x1"))
    assert subject_of(raise_) == "fw.esc.hb-old"
    seq = (await publish(rt.js, raise_)).seq
    assert await publisher.step(resolve_step("hb-old", now + 1, "back", seq)) == "stored"
    assert await publisher.step(resolve_step("hb-old", now + 2, "back", seq)) == "duplicate"
    last = await rt.js.get_last_msg("FW_EVENTS", "fw.esc.hb-old.>")
    assert last.subject == f"fw.esc.hb-old.{WATCHDOG}"
    assert isinstance(decode(last.data or b""), EscalationResolved)


async def test_a_lease_of_a_task_claimed_under_v1_expires_under_v2(rt: Runtime) -> None:
    """The lease book knows the claim's sequence, on the v1 subject: the expiry is published on
    top of the task's v2 subjects when nothing came after it, and dropped when something did."""
    publisher = Publisher(rt.js, on_stored=lambda e, s: None, on_closed=print)
    for task in ("old-1", "old-2"):
        created = TaskCreated(**envelope("user:op"), task=task, project="p", title="t")
        await publish(rt.js, v1(created))
        claim = TaskClaimed(**envelope("a1"), task=task, agent="a1", epoch=1)
        seq = (await publish(rt.js, v1(claim))).seq
        expiry = TaskLeaseExpired(**envelope(WATCHDOG), task=task, agent="a1", epoch=1)
        if task == "old-2":  # progress just in time, under v2
            progress = TaskProgressed(**envelope("a1"), task=task, agent="a1", epoch=1)
            await publish(rt.js, progress)
            assert await publisher.step(Publish(expiry, "exact", seq)) == "duplicate"
        else:
            assert await publisher.step(Publish(expiry, "exact", seq)) == "stored"
            last = await rt.js.get_last_msg("FW_EVENTS", "fw.task.old-1.>")
            assert decode(last.data or b"").id == expiry.id
