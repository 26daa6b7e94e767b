"""Contract v2, subjects carry their actor (issue 13, part 2), against real servers. Migration:
writers publish v2 only, and every reader folds v1 events on v1 subjects and v2 events on v2
subjects. So a stream of v1 history still projects as it did, a task created under v1 and
continued under v2 reads alike for every reader, and an inbox created under v1 moves to the
v2 filter (a v1 command still pending in it is not delivered: commands are transient)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from fleetward.projections import ALL
from fleetward.schemas import Event, subject_of
from fleetward.schemas.events import (
    CommandIssued,
    TaskAssigned,
    TaskClaimed,
    TaskCreated,
    TaskProgressed,
)
from fleetward.schemas.headers import MSG_ID
from fleetward.schemas.streams import COMMANDS_STREAM, inbox_durable
from fleetward.services.auth.store import AuthStore
from fleetward.services.client import AgentClient, Claim, ClaimLost, FleetClient
from fleetward.services.client.taskstate import read_task
from fleetward.services.config import Settings
from fleetward.services.jetstream.publish import encode, publish, publish_many
from fleetward.services.projector.rebuild import rebuild
from fleetward.services.runtime.connect import Runtime, open_runtime
from fleetward.services.runtime.embedded import EmbeddedNats, database_url
from fleetward.services.simulate import Fleet
from tests.helpers import (
    agent,
    as_harness,
    creds,
    envelope,
    grant_test_admins,
    now,
    project_all,
    snapshot,
)


def v1(event: Event) -> Event:
    """``event`` as contract v1 wrote it."""
    return msgspec.structs.replace(event, v=1)


async def publish_v1(rt: Runtime, event: Event, *, say_v: bool = True) -> int:
    """Store ``event`` as v1 history: ``v`` 1 on its v1 subject (``say_v=False``: without
    ``v``, as agents in other languages wrote it, v1's default being 1)."""
    old = v1(event)
    body = msgspec.to_builtins(old)
    data = encode(old) if say_v else msgspec.json.encode({k: body[k] for k in body if k != "v"})
    ack = await rt.js.publish(subject_of(old), data, headers={MSG_ID: event.id})
    return ack.seq


@contextlib.asynccontextmanager
async def another_deployment(
    pg_server: str, template_db: str, tmp_path: Path
) -> AsyncIterator[Runtime]:
    """A second nats-server and a fresh database: another deployment, to compare with."""
    name = f"fleetward_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_server)
    await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    keys = AuthStore(tmp_path / "auth-other")
    server = EmbeddedNats.start(tmp_path / "nats-other", keys.init())
    try:
        settings = Settings.from_env({"FLEETWARD_NATS_URL": server.url,
                                      "FLEETWARD_DATABASE_URL": database_url(pg_server, name),
                                      "FLEETWARD_HOME": str(tmp_path / "home-other"),
                                      "FLEETWARD_AUTH_DIR": str(keys.root)})  # fmt: skip
        async with open_runtime(settings, identity=as_harness(keys)) as rt:
            await grant_test_admins(rt)
            yield rt
    finally:
        server.stop()
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.close()


def timeless(rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Rows without their times: two servers store the same events at other times of record
    (their hours and days too, near midnight). Utilization is left out: it is measured by the
    time of record of heartbeats, whose subject (``fw.hb.<agent>``) both contracts share."""
    return {
        table: [tuple(None if isinstance(v, datetime | date) else v for v in r) for r in found]
        for table, found in rows.items()
        if not table.startswith("fleetward.utilization")
    }


async def test_a_v1_stream_projects_as_the_same_events_do_under_v2(
    rt: Runtime, pg_server: str, template_db: str, tmp_path: Path
) -> None:
    """The stream as it holds today (events with ``v`` 1 on v1 subjects, half of them without
    ``v``) projects to the rows the same events give as v2 on v2 subjects: nothing is
    dead-lettered, and a rebuild gives the rows again."""
    fleet = Fleet(20, seed=5)
    events = fleet.start(now())
    for _ in range(15):
        events += fleet.tick(now())
    assert len({type(e) for e in events}) >= 8
    for i, event in enumerate(events):
        await publish_v1(rt, event, say_v=i % 2 == 0)
    await project_all(rt)
    history = await snapshot(rt)
    assert history["dead_letters"] == []
    assert len(history["fleetward.tasks"]) > 10
    async with rt.pool.acquire() as conn:
        secret = await conn.fetchval("SELECT secret FROM fleetward.outbox_secret")
    async with another_deployment(pg_server, template_db, tmp_path) as now_rt:
        async with now_rt.pool.acquire() as conn:  # the same ids for what the folds emit
            await conn.execute("UPDATE fleetward.outbox_secret SET secret = $1", secret)
        await publish_many(now_rt.js, events)
        await project_all(now_rt)
        current = await snapshot(now_rt)
    assert timeless(history) == timeless(current)
    for projection in ALL:
        await rebuild(rt, projection)
    assert await snapshot(rt) == history


async def test_a_task_created_under_v1_and_continued_under_v2_reads_alike_everywhere(
    rt: Runtime, ops: FleetClient
) -> None:
    """Created, assigned, claimed and progressed under v1; progressed, submitted and reviewed
    under v2: ``read_task`` (two requests: the v2 subjects do not open with the creation)
    merges both forms in stream order, compare-and-set goes over the v2 subjects (empty at
    first: 0), a rival is refused on the v1 history, and the board agrees with the client."""
    worker = await agent(rt, "mover")
    rival = await agent(rt, "rival")
    try:
        await publish_v1(rt, TaskCreated(**envelope("user:ops"), task="mig-1", project="p",
                                         title="moved"), say_v=False)  # fmt: skip
        await publish_v1(rt, TaskAssigned(**envelope("user:ops"), task="mig-1", agent="mover"))
        claimed = TaskClaimed(**envelope("mover"), task="mig-1", agent="mover", epoch=1,
                              lease_s=600)  # fmt: skip
        await publish_v1(rt, claimed)
        await publish_v1(rt, TaskProgressed(**envelope("mover"), task="mig-1", agent="mover",
                                            epoch=1, note="v1"))  # fmt: skip
        before = await read_task(rt.nc, rt.js, "mig-1")
        assert before.row is not None and before.last_seq == 0  # nothing on the v2 subjects
        assert (before.row["status"], before.row["assignee"], before.row["claim_id"]) == (
            "in_progress", "mover", claimed.id)  # fmt: skip
        with pytest.raises(ClaimLost):
            await rival.claim("mig-1")

        claim = Claim("mig-1", 1, 600, claimed.id)
        first_v2 = await worker.progress(claim, "under v2", percent=50)
        await worker.submit(claim, content="done")
        review = await ops.review("mig-1", "approve")
        assert review.v == 2
        state = await read_task(rt.nc, rt.js, "mig-1", history=True)
        assert [(s.event.v if s.event else None, s.refused) for s in state.history] == [
            (1, None)] * 4 + [(2, None)] * 3  # fmt: skip
        assert [s.seq for s in state.history] == sorted(s.seq for s in state.history)
        assert state.last_seq == state.history[-1].seq > first_v2.seq
        assert state.row is not None
        assert (state.row["status"], state.row["assignee"], state.row["claim_epoch"]) == (
            "done", "mover", 1)  # fmt: skip

        await project_all(rt)
        async with rt.pool.acquire() as conn:
            board = await conn.fetchrow("SELECT * FROM fleet.tasks WHERE task_id = 'mig-1'")
            refused = await conn.fetchval("SELECT count(*) FROM fleet.task_rejections")
            dead = await conn.fetchval("SELECT count(*) FROM fleet.dead_letters")
        assert board is not None and (refused, dead) == (0, 0)
        same = ("status", "assignee", "claim_epoch", "claim_id", "deliverable_version",
                "review_rounds")  # fmt: skip
        assert {k: board[k] for k in same} == {k: state.row[k] for k in same}
        assert board["status"] == "done" and board["deliverable_version"] == 1
    finally:
        await worker.close()
        await rival.close()


async def test_an_inbox_created_under_v1_moves_to_the_v2_filter(
    rt: Runtime, ops: FleetClient
) -> None:
    """The inbox consumer v1 made (filter ``fw.cmd.<agent>``) is given the v2 filter
    (``fw.cmd.<agent>.>``) when the agent opens it; a v1 command still pending there is not
    delivered (commands are transient), the v2 ones are."""
    await rt.js.add_consumer(COMMANDS_STREAM, ConsumerConfig(
        durable_name=inbox_durable("old"), filter_subject="fw.cmd.old",
        ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=5.0,
    ))  # fmt: skip
    await publish(rt.js, v1(CommandIssued(**envelope("user:ops"), agent="old", command="pause")))
    client = await AgentClient.connect(rt.nats_url, creds(rt, "old"))
    try:
        await client.sync_inbox()
        info = await rt.js.consumer_info(COMMANDS_STREAM, inbox_durable("old"))
        assert (info.config.filter_subject, info.config.ack_wait) == ("fw.cmd.old.>", 5.0)
        async with await FleetClient.connect(rt.nats_url, creds(rt, "svc:ops")) as service:
            await service.command("old", "wake", reason="under v2")
        command = await client.next_command(wait=5)
        assert command is not None and (command.command, command.reason) == ("wake", "under v2")
        assert not client.paused
        assert await client.next_command(wait=0.5) is None
    finally:
        await client.close()
