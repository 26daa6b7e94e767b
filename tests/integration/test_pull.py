"""The pull protocol against a real nats-server: the durable consumer and the ordered follower
when a request expires and when their consumer is deleted under them."""

from __future__ import annotations

import time

import anyio
import pytest

from fleetward.projections import BY_NAME
from fleetward.schemas.events import AgentRegistered
from fleetward.schemas.streams import EVENTS_STREAM, HEARTBEATS_STREAM
from fleetward.services.jetstream.consumer import PullConsumer, recreate_consumer
from fleetward.services.jetstream.follower import StreamFollower
from fleetward.services.jetstream.publish import publish
from fleetward.services.projector.commit import Resync
from fleetward.services.projector.runner import ProjectionRunner
from fleetward.services.runtime.connect import Runtime
from tests.helpers import envelope, run_to_end, wait_for

HB = ("fw.hb.>",)


def register(agent: str) -> AgentRegistered:
    return AgentRegistered(**envelope(agent), agent=agent, name=agent, owner="o", team="t")


async def test_an_expired_request_is_not_a_message(rt: Runtime) -> None:
    """A pull request that expires (status 408) wakes the reader; it must keep waiting and
    come back empty-handed, then still receive what arrives later."""
    await recreate_consumer(rt.js, HEARTBEATS_STREAM, "probe", HB, 0)
    consumer = PullConsumer(rt.nc, HEARTBEATS_STREAM, "probe", batch=10, expires=0.2)
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


async def test_a_consumer_deleted_under_a_waiting_request_is_gone(rt: Runtime) -> None:
    """The server ends the open request with 409 Consumer Deleted: ``gone``, and no request
    is made any more."""
    await recreate_consumer(rt.js, HEARTBEATS_STREAM, "probe", HB, 0)
    consumer = PullConsumer(rt.nc, HEARTBEATS_STREAM, "probe", batch=10, expires=30.0)
    await consumer.start()
    try:
        assert await consumer.next_batch(10, wait=0.2) == []  # a request is open
        await rt.js.delete_consumer(HEARTBEATS_STREAM, "probe")

        async def gone() -> bool:
            return consumer.gone

        await wait_for(gone, 10, "the consumer to be gone")
        published = rt.nc.stats["out_msgs"]
        assert await consumer.next_batch(10, wait=0.2) == []
        assert rt.nc.stats["out_msgs"] == published
    finally:
        await consumer.stop()


async def test_a_consumer_deleted_with_no_request_open_is_found_gone_at_the_next_read(
    rt: Runtime,
) -> None:
    """With no request open when the consumer is deleted, the next one is answered 503 (nobody
    serves its pull subject), not 409: the next read asks the server whether the consumer
    exists, learns that it does not, and sets ``gone``, so its owner can re-create it. A
    request per read and one question, never a loop with the server."""
    await recreate_consumer(rt.js, HEARTBEATS_STREAM, "probe", HB, 0)
    consumer = PullConsumer(rt.nc, HEARTBEATS_STREAM, "probe", batch=1, expires=30.0)
    await consumer.start()
    try:
        await rt.js.publish("fw.hb.a1", b"{}")
        await rt.js.publish("fw.hb.a2", b"{}")
        [first] = await consumer.next_batch(1, wait=5.0)  # the buffer is full: no request open
        await wait_for(lambda: _one_buffered(consumer), 5, "the second message")
        await rt.js.delete_consumer(HEARTBEATS_STREAM, "probe")
        published = rt.nc.stats["out_msgs"]
        assert [d.seq for d in await consumer.next_batch(1, wait=0.1)] == [2]  # then asks: 503

        async def gone() -> bool:
            return await consumer.next_batch(1, wait=0.2) == [] and consumer.gone

        await wait_for(gone, 10, "the consumer to be found gone")
        assert rt.nc.stats["out_msgs"] - published <= 4
        assert first.seq == 1 and consumer.unavailable_since is not None
    finally:
        await consumer.stop()


async def test_a_runner_whose_durable_vanished_with_no_request_open_resyncs_and_goes_on(
    rt: Runtime,
) -> None:
    """The projector's runner meets ``gone`` (found after a 503) as after a 409: ``step()``
    raises ``Resync``, and its loop re-positions, which re-creates the consumer from the
    checkpoint. Before, every step got one more 503 and nothing was applied again."""
    await publish(rt.js, register("a1"))
    runner = ProjectionRunner(rt, BY_NAME["agents"])
    await runner.position()  # the consumer exists; the first step makes the first request
    await rt.js.delete_consumer(EVENTS_STREAM, runner.durable)
    await publish(rt.js, register("a2"))
    with pytest.raises(Resync, match="deleted"):
        for _ in range(5):
            await runner.step(wait=0.3)
    await run_to_end(runner)  # what the loop does next: position, then read on
    async with rt.pool.acquire() as conn:
        agents = await conn.fetch("SELECT agent_id FROM fleet.agents ORDER BY agent_id")
    assert [r["agent_id"] for r in agents] == ["a1", "a2"]


async def _one_buffered(consumer: PullConsumer) -> bool:
    return not consumer.wants_more()  # batch 1: the buffer holds one delivery


async def test_the_follower_recreates_a_deleted_consumer_and_goes_on_in_order(
    rt: Runtime,
) -> None:
    seen: list[int] = []

    def handle(subject: str, data: bytes, seq: int, ns: int) -> None:
        seen.append(seq)

    follower = StreamFollower(rt.nc, rt.js, HEARTBEATS_STREAM, HB, handle, start_seq=1,
                              expires=30.0, name="fw_test_follow")  # fmt: skip

    async def seen_up_to(n: int) -> bool:
        return seen == list(range(1, n + 1))

    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(follower.run, stop.is_set)
        for i in range(3):
            await rt.js.publish(f"fw.hb.a{i}", b"{}")
        await wait_for(lambda: seen_up_to(3), 10, "the first three messages")
        [info] = await rt.js.consumers_info(HEARTBEATS_STREAM)
        await rt.js.delete_consumer(HEARTBEATS_STREAM, info.name)

        async def restarted() -> bool:
            return follower.restarts == 1 and follower.wants_more()

        await wait_for(restarted, 10, "the follower to re-create its consumer")
        for i in range(3, 5):
            await rt.js.publish(f"fw.hb.a{i}", b"{}")
        await wait_for(lambda: seen_up_to(5), 10, "the next two messages, once each")
        stop.set()
    assert follower.restarts == 1
