"""The fast pull consumer against a real nats-server."""

from __future__ import annotations

import time

from fleetward.services.jetstream.consumer import PullConsumer, recreate_consumer
from fleetward.services.runtime.connect import Runtime


async def test_an_expired_request_is_not_a_message(rt: Runtime) -> None:
    """A pull request that expires (status 408) wakes the reader; it must keep waiting and
    come back empty-handed, then still receive what arrives later."""
    await recreate_consumer(rt.js, "FW_HEARTBEATS", "probe", ("fw.hb.>",), 0)
    consumer = PullConsumer(rt.nc, "FW_HEARTBEATS", "probe", batch=10, expires=0.2)
    await consumer.start()
    try:
        started = time.monotonic()
        assert await consumer.next_batch(10, wait=1.0) == []
        assert time.monotonic() - started >= 0.9  # waited through several expired requests
        await rt.js.publish("fw.hb.a1", b"{}")
        got = await consumer.next_batch(10, wait=5.0)
        assert [(d.seq, d.subject, d.data) for d in got] == [(1, "fw.hb.a1", b"{}")]
    finally:
        await consumer.stop()
