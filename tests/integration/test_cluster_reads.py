"""Reads made while a stream's leader is being elected (issue 18). On the three-node cluster,
FW_EVENTS' leader is killed (SIGKILL) and each kind of read the client library, the CLI and
the services make is issued at once, once: the caller retries nothing. Each rides out the
election (services/jetstream/reads.py) and returns what it returned before the kill. Without
the ride-out, the wrapped gets raise ``nats.errors.TimeoutError`` after their 5 s, the CLI
prints a traceback, and a batch of direct gets answered by a 503 returned no messages at all."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import boundary, boundary_wildcard
from fleetward.services.client import AgentClient, FleetClient
from fleetward.services.client.direct import BATCH, read_subjects
from fleetward.services.client.roles import read_roles
from fleetward.services.client.taskstate import TaskState, read_task
from fleetward.services.jetstream.boundary import last_of
from fleetward.services.jetstream.reads import READ_RIDE_OUT_S, READS
from fleetward.services.runtime.connect import Runtime
from tests.cluster import Cluster, stream_leader
from tests.helpers import agent, creds
from tests.integration.test_cli import fleetward


def seen(state: TaskState) -> tuple[Any, ...]:
    """What a task read shows: its holder, epoch, status and last sequence."""
    assert state.row is not None
    return state.row["assignee"], state.row["claim_epoch"], state.row["status"], state.last_seq


async def test_reads_issued_right_after_the_stream_leader_dies_ride_out_the_election(
    crt: Runtime, nats_cluster: Cluster, cluster_env: dict[str, str]
) -> None:
    rt = crt
    async with await FleetClient.connect(rt.nats_url, creds(rt, "user:ops")) as ops:
        await ops.create_task("rd-1", project="p", title="read me")
        worker = await agent(rt, "rd-worker")
        # the same agent's next process: its first inbox read asks for the consumer's info
        restarted = await AgentClient.connect(rt.nats_url, creds(rt, "rd-worker"))
        try:
            await worker.claim("rd-1", lease_s=600)
            await worker.sync_inbox()  # its inbox exists: opening it again reads, writes nothing
            task_subjects = boundary_wildcard("task", "rd-1")

            async def direct_seqs() -> list[int]:  # a service's batch of direct gets
                stored = read_subjects(rt.nc, EVENTS_STREAM, task_subjects, direct=True)
                return [raw.seq async for raw in stored]

            reads: dict[str, Callable[[], Awaitable[Any]]] = {
                "an operator's task read (message gets)": lambda: read_task(ops.nc, ops.js, "rd-1"),
                "an agent's task read (message gets)": lambda: read_task(
                    worker.nc, worker.js, "rd-1"
                ),
                "an operator's role book (message gets)": lambda: read_roles(ops.nc),
                "a service's role book (direct gets)": lambda: read_roles(rt.nc, direct=True),
                "a service's batch of direct gets": direct_seqs,
                "the task's last message (message get)": lambda: last_of(rt.js, "task", "rd-1"),
                "the task's last message (direct get)": lambda: last_of(
                    rt.js, "task", "rd-1", direct=True
                ),
                "an agent's inbox (consumer info)": restarted.sync_inbox,
            }

            def shown(name: str, value: Any) -> Any:
                if isinstance(value, TaskState):
                    return seen(value)
                if "role book" in name:
                    return value.last_seq
                if "last message" in name:
                    return value.expect
                return value

            before = {n: shown(n, await read()) for n, read in reads.items() if "inbox" not in n}
            before["an agent's inbox (consumer info)"] = None
            holder = before["an operator's task read (message gets)"][:3]
            assert holder == ("rd-worker", 1, "in_progress")
            leader = await stream_leader(rt.nc, EVENTS_STREAM)
            after: dict[str, Any] = {}
            cli: list[tuple[int, str, str]] = []

            async def once(name: str, read: Callable[[], Awaitable[Any]]) -> None:
                after[name] = shown(name, await read())

            async def show_task() -> None:
                cli.append(await fleetward(cluster_env, "tasks", "show", "rd-1"))

            async def create_task() -> None:  # verifies the streams and reads, then publishes
                cli.append(
                    await fleetward(
                        cluster_env, "tasks", "create", "rd-2", "--project", "p", "--title", "t"
                    )
                )

            with READS.retried.recording() as retried:
                nats_cluster.node(leader).kill()
                async with anyio.create_task_group() as tg:
                    for name, read in reads.items():
                        tg.start_soon(once, name, read)
                    tg.start_soon(show_task)
                    tg.start_soon(create_task)
        finally:
            await worker.close()
            await restarted.close()

    assert after == before
    for code, out, err in cli:
        assert code == 0, f"fleetward exited {code}:\n{out}\n{err}"
        assert "Traceback" not in err, err
    assert any("in_progress by rd-worker, epoch 1" in out for _, out, _ in cli), cli
    assert (await read_task(rt.nc, rt.js, "rd-2")).row is not None
    new = await stream_leader(rt.nc, EVENTS_STREAM, all_current=False)
    assert new != leader
    # the reads did meet the election (else this test shows nothing): the message gets found
    # no leader to answer them, and were asked again
    assert any(what == f"reading {EVENTS_STREAM}" for what, _ in retried), retried
    print(f"killed {leader}, now {new}; asked again: {sorted({c for _, c in retried})}")


async def test_a_read_by_direct_gets_goes_on_past_one_batch(rt: Runtime) -> None:
    """A read by batch direct gets asks for one ``BATCH`` after another, each from the message
    after the last it got, until one comes back short: every message, in order, once (one
    server, no election)."""
    where = boundary("agent", "batch-reader")
    acks = []
    for start in range(0, 2 * BATCH + 5, 500):
        count = min(500, 2 * BATCH + 5 - start)
        acks += await asyncio.gather(*(rt.js.publish(where, b"%d" % i) for i in range(count)))
    every = read_subjects(rt.nc, EVENTS_STREAM, where, direct=True)
    assert [raw.seq async for raw in every] == [ack.seq for ack in acks]
    rest = read_subjects(rt.nc, EVENTS_STREAM, where, after=acks[BATCH].seq, direct=True)
    assert [raw.seq async for raw in rest] == [ack.seq for ack in acks[BATCH + 1 :]]


async def test_a_read_that_finds_no_leader_for_long_fails_in_one_line(
    crt: Runtime, nats_cluster: Cluster, cluster_env: dict[str, str]
) -> None:
    """Two nodes of three down, the stream's leader among them: no leader until one comes back.
    A read gives up after ``READ_RIDE_OUT_S`` and the CLI says so in one line (exit 2), no
    traceback."""
    async with await FleetClient.connect(crt.nats_url, creds(crt, "user:ops")) as ops:
        await ops.create_task("rd-3", project="p", title="t")
    # the stream's leader and one more: the node left is a follower, which answers no message
    # get and cannot be elected alone (a leader left alone answered reads until it noticed
    # it had lost its quorum: a CI run's "tasks show" exited 0)
    leader = await stream_leader(crt.nc, EVENTS_STREAM)
    other = next(n for n in nats_cluster.nodes if n.name != leader)
    for node in (nats_cluster.node(leader), other):
        node.kill()
    code, out, err = await fleetward(cluster_env, "tasks", "show", "rd-3")
    assert code == 2, f"fleetward tasks show exited {code}:\n{out}\n{err}"
    problem = [line for line in err.splitlines() if line.startswith("fleetward: error:")]
    expected = (  # the cause: a try's timeout, or the 503 a node without a leader answers
        rf"fleetward: error: reading {EVENTS_STREAM}: NATS could not answer within "
        rf"{READ_RIDE_OUT_S:g} s \((TimeoutError|ServiceUnavailableError): .+\); are most of "
        r"the cluster's nodes running\?"
    )
    assert len(problem) == 1 and re.fullmatch(expected, problem[0]), err
    assert "Traceback" not in err, err
