"""Fleetward on a three-node JetStream cluster (issue 18 parts 1 and 2): the streams are
created R3 and verified; a claim whose acknowledgement was lost is settled however the server
answers its retry; and the stream's leader, then a follower, killed with SIGKILL while agents
publish and claim and the projector ingests: every acknowledged event is stored once and
applied once, no (task, epoch) has two holders, nothing in the test reconnects anything, and
the views equal a rebuild."""

from __future__ import annotations

import random
import signal
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import PubAck
from nats.js.errors import APIError, ServiceUnavailableError

from fleetward.projections import ALL
from fleetward.schemas import Event
from fleetward.schemas.events import SpendRecorded, TaskClaimed
from fleetward.schemas.headers import MSG_ID, WRONG_LAST_SEQUENCE
from fleetward.schemas.streams import EVENTS_STREAM, HEARTBEATS_STREAM, all_streams
from fleetward.services.client import AgentClient, Claim, ClaimLost, FleetClient
from fleetward.services.client.direct import read_subjects
from fleetward.services.client.taskstate import read_task
from fleetward.services.config import Settings
from fleetward.services.errors import FleetwardError, StreamConflict
from fleetward.services.projector.rebuild import rebuild
from fleetward.services.runtime.connect import Runtime, open_runtime
from tests.cluster import SIZE, Cluster, stream_leader
from tests.helpers import (
    HARNESS,
    agent,
    creds,
    settings_env,
    snapshot,
    task_api,
    wait_for,
)
from tests.integration.test_chaos import all_caught_up
from tests.integration.test_cli import output, spawn
from tests.integration.test_health import ready_port

AGENTS = 6
TASKS = 10
PROGRESS_PER_FAULT = 40  # events acknowledged after a kill before the next step


async def test_streams_are_created_with_the_configured_replicas_and_verified(
    crt: Runtime, cluster_settings: Settings
) -> None:
    for spec in all_streams():
        info = await crt.js.stream_info(spec.name)
        assert info.config.num_replicas == SIZE, spec.name
        assert info.cluster is not None and len(info.cluster.replicas or []) == SIZE - 1
    async with open_runtime(cluster_settings, identity=HARNESS):  # verified as they are
        pass
    unset = Settings.from_env(settings_env(cluster_settings, FLEETWARD_STREAM_REPLICAS=""))
    async with open_runtime(unset, identity=HARNESS):  # no count asked for: any is accepted
        pass
    one = Settings.from_env(settings_env(cluster_settings, FLEETWARD_STREAM_REPLICAS="1"))
    with pytest.raises(StreamConflict, match="num_replicas is 3, FLEETWARD_STREAM_REPLICAS asks"):
        async with open_runtime(one, identity=HARNESS):
            pass


async def test_one_server_cannot_hold_three_replicas_and_says_so(settings: Settings) -> None:
    three = Settings.from_env(settings_env(settings, FLEETWARD_STREAM_REPLICAS="3"))
    with pytest.raises(FleetwardError, match="cannot create stream FW_EVENTS with 3 replicas"):
        async with open_runtime(three, identity=HARNESS):
            pass


async def test_a_claim_whose_ack_was_lost_is_won_on_one_server(rt: Runtime) -> None:
    await claim_with_lost_ack(rt, "wrong last sequence")


async def test_a_claim_whose_ack_was_lost_is_won_on_a_cluster(crt: Runtime) -> None:
    await claim_with_lost_ack(crt, "duplicate")


async def claim_with_lost_ack(rt: Runtime, retry_answer: str) -> None:
    """The claim is stored, its acknowledgement lost (a leader dying after storing it, here a
    timeout raised in its place), and the publish retried with the same id. One server checks
    the expected sequence first and answers 10071; a cluster checks the id first and answers
    "duplicate". Either way the client reads the task, finds its own claim, and holds it."""
    async with task_api(rt), await FleetClient.connect(rt.nats_url, creds(rt, "user:ops")) as ops:
        await ops.create_task("lost-ack", project="p", title="t")
        worker = await agent(rt, "worker")
        answers: list[str] = []
        real = worker.js.publish

        async def ack_lost_once(subject: str, payload: bytes, **kw: Any) -> PubAck:
            if not answers and ".lost-ack." in subject:
                answers.append("stored, ack lost")
                await real(subject, payload, **kw)
                raise NatsTimeout
            try:
                ack = await real(subject, payload, **kw)
            except APIError as exc:
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    answers.append("wrong last sequence")
                raise
            answers.append("duplicate" if ack.duplicate else "stored")
            return ack

        worker.js.publish = ack_lost_once  # type: ignore[method-assign]
        try:
            claim = await worker.claim("lost-ack", lease_s=60)
        finally:
            await worker.close()
        assert answers[:2] == ["stored, ack lost", retry_answer]
        state = await read_task(rt.nc, rt.js, "lost-ack")
        assert state.row is not None
        assert (state.row["assignee"], state.row["claim_id"]) == ("worker", claim.id)
        assert claim.epoch == 1 and worker.claims == {"lost-ack": claim}


# ---- faults ---------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the agents published: every id tried, where each acknowledged one was stored, and
    the claims each agent was told it won."""

    tried: set[str] = field(default_factory=set)
    acked: dict[str, tuple[str, int]] = field(default_factory=dict)
    spend: dict[str, tuple[str, Decimal]] = field(default_factory=dict)  # id -> agent, cost
    wins: list[tuple[str, Claim]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


class RecordingAgent(AgentClient):
    """An agent client that writes down each publish and its outcome in ``ledger``."""

    ledger: Ledger

    async def send(self, event: Event, *, expect: int | None = None) -> PubAck:
        self.ledger.tried.add(event.id)
        if isinstance(event, SpendRecorded):
            self.ledger.spend[event.id] = (event.agent, Decimal(str(event.cost_usd)))
        ack = await super().send(event, expect=expect)
        self.ledger.acked[event.id] = (ack.stream, ack.seq)
        return ack


async def work(a: RecordingAgent, tasks: list[str], seed: int, stop: anyio.Event) -> None:
    """Claim a random task, report on it, spend, give it back; again until ``stop``. A step
    that fails for a reason other than losing the task is counted and tried again."""
    rng = random.Random(seed)
    ledger = a.ledger
    while not stop.is_set():
        try:
            await a.heartbeat()
            claim = await a.claim(rng.choice(tasks), lease_s=600)
        except ClaimLost:
            await anyio.sleep(0.01)  # someone else holds it: another pick, in a moment
            continue
        except Exception as exc:  # the cluster in an election: counted, and on
            ledger.errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
            continue
        ledger.wins.append((a.agent, claim))
        for step in ("progress", "spend", "release"):
            for _try in range(20):  # a held task is given back: others wait for it
                try:
                    if step == "progress":
                        await a.progress(claim, "working")
                    elif step == "spend":
                        await a.spend(model="m", cost_usd=0.01, tokens_in=10, task=claim.task)
                    else:
                        a.claims[claim.task] = claim  # a failed release dropped it
                        await a.release(claim, "next")
                    break
                except ClaimLost:
                    break
                except Exception as exc:
                    ledger.errors[f"{type(exc).__name__}: {exc}"[:120]] += 1


async def caught_up(rt: Runtime) -> bool:
    """``all_caught_up``, False while a consumer has no leader (its election after a kill:
    503, or no answer)."""
    try:
        return await all_caught_up(rt)
    except (ServiceUnavailableError, NatsTimeout):
        return False


async def stored(rt: Runtime, stream: str) -> list[tuple[int, str, bytes]]:
    """Every message of ``stream``: (sequence, its event id, its bytes), read from its leader
    (a direct get may be answered by any replica)."""
    out = []
    async for raw in read_subjects(rt.nc, stream, ">"):
        out.append((raw.seq, raw.headers.get(MSG_ID, ""), raw.data))
    return out


@pytest.mark.slow
async def test_leader_then_follower_killed_while_agents_claim_and_the_projector_ingests(
    crt: Runtime, nats_cluster: Cluster, cluster_env: dict[str, str], tmp_path: Path
) -> None:
    rt, ledger, stop = crt, Ledger(), anyio.Event()
    logs = tmp_path / "projector"
    with spawn(["projector"], {**cluster_env, "FLEETWARD_BATCH_SIZE": "200"}, logs) as proj:
        await ready_port(proj, logs)
        ops = await FleetClient.connect(rt.nats_url, creds(rt, "user:ops"))
        tasks = [f"ct-{i:02d}" for i in range(TASKS)]
        for task in tasks:
            await ops.create_task(task, project="cluster", title=task)
        agents = []
        for i in range(AGENTS):
            a = await RecordingAgent.connect(rt.nats_url, creds(rt, f"ca-{i}"))
            a.ledger = ledger
            await a.register(name=f"ca-{i}", owner="o", team="t")
            agents.append(a)

        async def progressed(since: int) -> bool:
            return len(ledger.acked) >= since + PROGRESS_PER_FAULT

        async def kill_and_restart(name: str, what: str) -> None:
            at = len(ledger.acked)
            nats_cluster.node(name).kill()
            await wait_for(lambda: progressed(at), 60, f"progress with the {what} killed")
            nats_cluster.node(name).start()
            await stream_leader(rt.nc, EVENTS_STREAM)  # every replica current again

        try:
            async with anyio.create_task_group() as tg:
                for i, a in enumerate(agents):
                    tg.start_soon(work, a, tasks, i, stop)
                await wait_for(lambda: progressed(0), 60, "the agents at work")
                leader = await stream_leader(rt.nc, EVENTS_STREAM)
                await kill_and_restart(leader, f"leader {leader}")
                now = await stream_leader(rt.nc, EVENTS_STREAM)
                follower = next(n.name for n in nats_cluster.nodes if n.name != now)
                await kill_and_restart(follower, f"follower {follower}")
                at = len(ledger.acked)
                await wait_for(lambda: progressed(at), 60, "progress after the faults")
                stop.set()
            await wait_for(lambda: caught_up(rt), 120, "the projector to catch up")
            assert proj.poll() is None, output(logs)  # it rode out both kills by itself
            proj.send_signal(signal.SIGTERM)
            assert proj.wait(timeout=30) == 0, output(logs)
        finally:
            stop.set()
            for a in agents:
                await a.close()
            await ops.close()

    await stream_leader(rt.nc, EVENTS_STREAM)  # every replica current again
    # what an agent met: only reads that met an election (a publish rides it out), and no
    # refusal it could not place (a lost compare-and-set is 10164 on a cluster, not an error)
    unexpected = {e: n for e, n in ledger.errors.items() if not election(e)}
    assert not unexpected, f"errors the agents should not have seen: {unexpected}"
    await check_stored_once(rt, ledger)
    await check_one_holder(rt, ledger)
    await check_applied_once(rt, ledger)


def election(error: str) -> bool:
    """Whether an error an agent counted is a read that met a stream without a leader for
    longer than a read rides out (services/jetstream/reads.py)."""
    return error.startswith(("TimeoutError", "StreamUnavailable")) or error.endswith(
        "temporarily unavailable"
    )


async def check_stored_once(rt: Runtime, ledger: Ledger) -> None:
    """Every acknowledged event is stored, once, where its acknowledgement said; every stored
    event of the agents was tried by them; none acknowledged was lost."""
    where: dict[str, tuple[str, int]] = {}
    counts: Counter[str] = Counter()
    for stream in (EVENTS_STREAM, HEARTBEATS_STREAM):
        messages = await stored(rt, stream)
        info = await rt.js.stream_info(stream)
        assert len(messages) == info.state.messages, f"{stream}: read all of it"
        for seq, event_id, _data in messages:
            counts[event_id] += 1
            where[event_id] = (stream, seq)
    twice = {i: n for i, n in counts.items() if n > 1}
    assert not twice, f"events stored more than once: {twice}"
    lost = {i: at for i, at in ledger.acked.items() if where.get(i) != at}
    assert not lost, f"acknowledged events not stored where acknowledged: {lost}"
    ours = {i for i in where if i in ledger.tried}
    unacked = ours - set(ledger.acked)  # published, no acknowledgement seen, stored after all
    assert len(ledger.acked) + len(unacked) == len(ours)
    print(
        f"tried {len(ledger.tried)} acked {len(ledger.acked)} stored-unacked {len(unacked)} "
        f"wins {len(ledger.wins)} errors {dict(ledger.errors)}"
    )
    assert len(ledger.acked) >= 3 * PROGRESS_PER_FAULT


async def check_one_holder(rt: Runtime, ledger: Ledger) -> None:
    """Each (task, epoch) was won by one agent, whose claim is the one the task's fold
    applied; no claim was applied that its agent did not know it won."""
    won = Counter((c.task, c.epoch) for _, c in ledger.wins)
    assert won and max(won.values()) == 1, "two agents were told they won one epoch"
    applied: dict[tuple[str, int], str] = {}
    for task in {c.task for _, c in ledger.wins}:
        for step in (await read_task(rt.nc, rt.js, task, history=True)).history:
            if isinstance(step.event, TaskClaimed) and step.refused is None:
                key = (task, step.event.epoch)
                assert key not in applied, f"{key}: two claims applied"
                applied[key] = step.event.id
    for agent_id, claim in ledger.wins:
        assert applied.get((claim.task, claim.epoch)) == claim.id, (agent_id, claim)
    ghosts = set(applied.values()) - {c.id for _, c in ledger.wins}
    assert not ghosts, f"claims that took a task without their agent knowing: {ghosts}"


async def check_applied_once(rt: Runtime, ledger: Ledger) -> None:
    """The spend the agents' stored events add up to is the spend the views show (an event
    applied twice, or not at all, would show), and the views equal a rebuild."""
    spent: dict[str, Decimal] = {}
    for _seq, event_id, data in await stored(rt, EVENTS_STREAM):
        if event_id in ledger.spend:
            assert msgspec.json.decode(data)["type"] == "spend.recorded"
            who, cost = ledger.spend[event_id]
            spent[who] = spent.get(who, Decimal(0)) + cost
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT agent_id, sum(cost_usd) AS cost FROM fleet.spend_daily GROUP BY agent_id"
        )
    assert {r["agent_id"]: r["cost"] for r in rows} == spent
    live = await snapshot(rt)
    for projection in ALL:
        await rebuild(rt, projection)
    clean = await snapshot(rt)
    assert clean["dead_letters"] == []
    for table, rows in clean.items():
        assert live[table] == rows, f"{table} differs from a clean rebuild"
