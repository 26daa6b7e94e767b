"""Partitioned heartbeats (schemas/partitions.py): FW_HEARTBEATS stores ``fw.hb.<agent>`` as
``fw.hb.<p>.<agent>`` by the server's own partition mapping; each partition's utilization runner
applies only its agents' heartbeats, and together they equal one unpartitioned rebuild."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from nats.js.api import StreamConfig

from fleetward.projections.utilization import HOURLY, UTILIZATION, Utilization, partition
from fleetward.schemas.events import Heartbeat
from fleetward.schemas.partitions import partition_filter, partition_of, stored_subject
from fleetward.schemas.streams import HEARTBEATS_STREAM, heartbeats_stream
from fleetward.services.auth.store import AuthStore
from fleetward.services.errors import StreamConflict
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.jetstream.streams import ensure_streams, heartbeat_partitions, to_config
from fleetward.services.projector.consumers import durable_name
from fleetward.services.projector.lease import Lease, this_process
from fleetward.services.projector.rebuild import rebuild
from fleetward.services.projector.runner import ProjectionRunner
from fleetward.services.runtime.connect import Runtime
from fleetward.services.watchdog.service import Watchdog
from tests.conftest import harness, make_settings
from tests.helpers import envelope, run_to_end, snapshot, wait_for
from tests.integration.test_watchdog import FAST, Beater, judging, register, running

AGENTS = 40
BEATS = 5  # per agent


@contextlib.asynccontextmanager
async def partitioned(
    auth: AuthStore, nats_url: str, database: str, home: Path, parts: int
) -> AsyncIterator[Runtime]:
    """The harness's runtime on a FW_HEARTBEATS created with ``parts`` partitions."""
    settings = make_settings(
        auth, nats_url, database, home, FLEETWARD_HEARTBEAT_PARTITIONS=str(parts)
    )
    async with harness(settings) as rt:
        yield rt


async def stored_subjects(rt: Runtime, count: int) -> list[str]:
    """The subjects of the first ``count`` messages FW_HEARTBEATS stored, in order."""
    return [(await rt.js.get_msg(HEARTBEATS_STREAM, seq)).subject or "" for seq in
            range(1, count + 1)]  # fmt: skip


async def test_the_partition_token_is_the_servers_mapping(
    clean_nats: str, database: str, tmp_path: Path, auth: AuthStore
) -> None:
    # ids of every shape an agent id may take: the server hashes the token's bytes
    agents = [f"a-{i}" for i in range(300)] + [f"agent_{i:04d}:x" for i in range(100)]
    async with partitioned(auth, clean_nats, database, tmp_path, 7) as rt:
        assert await heartbeat_partitions(rt.js) == 7
        for agent in agents:  # raw bytes: the mapping is the subject's, whatever the payload
            await rt.js.publish(f"fw.hb.{agent}", b"{}")
        stored = await stored_subjects(rt, len(agents))
    assert stored == [stored_subject(a, 7) for a in agents]
    assert {partition_of(a, 7) for a in agents} == set(range(7))  # every partition used


async def test_two_partitions_apply_each_heartbeat_once_and_equal_one_rebuild(
    clean_nats: str, database: str, tmp_path: Path, auth: AuthStore
) -> None:
    agents = [f"a-{i}" for i in range(AGENTS)]
    async with partitioned(auth, clean_nats, database, tmp_path, 2) as rt:
        beats = [Heartbeat(**envelope(a), agent=a, status="busy" if n % 2 else "idle")
                 for n in range(BEATS) for a in agents]  # fmt: skip
        await publish_many(rt.js, beats)
        tables = (UTILIZATION.name, HOURLY.name)

        first = partition(0, 2)
        await run_to_end(ProjectionRunner(rt, first))
        rows = await snapshot(rt, (first,))
        applied = {r[0]: r[8] for r in rows[UTILIZATION.name]}  # agent_id: heartbeats
        assert applied == {a: BEATS for a in agents if partition_of(a, 2) == 0}

        second = partition(1, 2)
        await run_to_end(ProjectionRunner(rt, second))
        both = await snapshot(rt, (second,))
        assert {r[0]: r[8] for r in both[UTILIZATION.name]} == dict.fromkeys(agents, BEATS)
        async with rt.pool.acquire() as conn:
            checkpoints = dict(await conn.fetch(
                "SELECT projection, seq FROM fleetward.checkpoints WHERE projection LIKE "
                "'utilization%'"))  # fmt: skip
        # each partition's checkpoint is its own last heartbeat's sequence; none for the whole
        last = {p: max(i + 1 for i, b in enumerate(beats) if partition_of(b.agent, 2) == k)
                for k, p in enumerate((first.name, second.name))}  # fmt: skip
        assert checkpoints == last

        await rebuild(rt, Utilization())  # one runner over the whole stream
        async with rt.pool.acquire() as conn:  # the partitions start over (and skip it all)
            assert not await conn.fetchval(
                "SELECT max(seq) FROM fleetward.checkpoints WHERE projection LIKE 'utilization_p%'"
            )
        assert {t: v for t, v in (await snapshot(rt, (Utilization(),))).items()
                if t in tables} == {t: both[t] for t in tables}  # fmt: skip
        assert not both["dead_letters"]


async def test_watchdog_partitions_read_only_their_token_and_judge_their_agents(
    clean_nats: str, database: str, tmp_path: Path, auth: AuthStore
) -> None:
    agents = [f"w-{i}" for i in range(12)]
    silent = [next(a for a in agents if partition_of(a, 2) == p) for p in (0, 1)]
    async with partitioned(auth, clean_nats, database, tmp_path, 2) as rt:
        await publish_many(rt.js, [register(a) for a in agents])
        dogs = [Watchdog(rt, replace(FAST, partition=(p, 2)), name=f"wd_p{p}") for p in (0, 1)]
        beater = Beater(rt, agents)
        async with running(rt, *dogs, beater=beater) as (rec, _):
            await judging(*dogs)
            # the server sends each replica its partition's heartbeats only
            assert [d.followers[0].subjects for d in dogs] == [
                (partition_filter(0),), (partition_filter(1),)]  # fmt: skip
            beater.alive -= set(silent)

            async def both_critical() -> bool:
                return rec.agents("critical") >= set(silent)

            await wait_for(both_critical, 20, "a critical escalation for each silent agent")
            # the beating ones: never critical (a warning needs only a second's delay of the
            # beater's rounds, which a loaded machine can give)
            assert rec.agents("critical") == set(silent)
            assert len(rec.raised(tier="critical")) == 2  # each once, by its partition's replica
        for part, dog in enumerate(dogs):
            assert set(dog.judge.liveness.agents) == {a for a in agents
                                                       if partition_of(a, 2) == part}  # fmt: skip


async def test_a_stream_without_partitions_gets_them_and_another_count_is_refused(
    rt: Runtime,
) -> None:
    assert await heartbeat_partitions(rt.js) == 1  # unset: created unpartitioned, as before
    await rt.js.publish("fw.hb.a-1", b"{}")
    await ensure_streams(rt.js, (heartbeats_stream(2),))  # migrated: the transform added
    await rt.js.publish("fw.hb.a-1", b"{}")
    assert await stored_subjects(rt, 2) == ["fw.hb.a-1", stored_subject("a-1", 2)]
    assert await heartbeat_partitions(rt.js) == 2
    await ensure_streams(rt.js, (heartbeats_stream(1),), transforms=False)  # unset: left as is
    with pytest.raises(StreamConflict, match=r"makes 2 partitions.*asks for 3"):
        await ensure_streams(rt.js, (heartbeats_stream(3),))
    with pytest.raises(StreamConflict, match=r"makes 2 partitions.*asks for 1"):
        await ensure_streams(rt.js, (heartbeats_stream(1),))
    assert await heartbeat_partitions(rt.js) == 2


async def test_each_partition_has_one_writer(rt: Runtime) -> None:
    def lease(projection: Utilization) -> Lease:
        return Lease(rt.database_url, durable_name(projection), [projection.name])

    first, second = lease(partition(0, 2)), lease(partition(0, 2))
    other = lease(partition(1, 2))
    try:
        assert await first.try_take()
        assert not await second.try_take()  # a second process of partition 0 stands by
        assert await other.try_take()  # partition 1 is written beside it
        host, pid = this_process()
        assert await second.holders() == [f"{host} pid {pid}"]  # the first, this process
        await first.close()
        assert await second.try_take()  # and takes over once the first is gone
    finally:
        for held in (first, second, other):
            await held.close()


def test_the_stream_config_carries_the_transform() -> None:
    config: StreamConfig = to_config(heartbeats_stream(4))
    assert config.subject_transform is not None
    assert (config.subject_transform.src, config.subject_transform.dest) == (
        "fw.hb.*",
        "fw.hb.{{partition(4,1)}}.{{wildcard(1)}}",
    )
    assert to_config(heartbeats_stream(1)).subject_transform is None
