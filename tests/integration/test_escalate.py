"""Publishing the watchdog's plans against a real nats-server: what an unreadable message on an
escalation's subject does (nothing: the plan is still published after it)."""

from __future__ import annotations

import time

from fleetward.schemas import decode
from fleetward.schemas.events import EscalationResolved, Event
from fleetward.services.runtime.connect import Runtime
from fleetward.services.watchdog.core.incidents import Publish, raised_event, resolve_step
from fleetward.services.watchdog.escalate import Publisher


async def test_garbage_on_an_escalations_subject_does_not_keep_it_open(rt: Runtime) -> None:
    """A non-JSON message published on ``fw.esc.<id>`` (dead-lettered by the projection) made
    the watchdog take its resolution for a duplicate: the escalation stayed open for ever."""
    stored: list[tuple[Event, int]] = []
    publisher = Publisher(rt.js, on_stored=lambda e, s: stored.append((e, s)), on_closed=print)
    now = time.time()
    raise_ = raised_event("hb-x1", "critical", "heartbeat_missed", now, agent="x1", message="m")
    assert await publisher.step(Publish(raise_, "empty")) == "stored"
    seq = stored[-1][1]
    await rt.js.publish("fw.esc.hb-x1", b"\x00garbage")  # anyone can; admission refuses it
    assert await publisher.step(resolve_step("hb-x1", now + 1, "heartbeat received", seq)) == (
        "stored"
    )
    last = await rt.js.get_last_msg("FW_EVENTS", "fw.esc.hb-x1")
    assert last.data is not None
    assert isinstance(decode(last.data), EscalationResolved)
