"""Session 11: attacking the commit that made a pause reach every process of an agent (a plain
subscription to ``fw.cmd.<agent>.svc:registry`` beside the durable inbox, ``payload.seq``), the
outbox's lookup of late events (``Outbox._stored_already``), and the claim that an agent
cannot publish on another agent's subjects.

Seven findings, each fixed in the same session (the tests that say "Fixed"); the others are
promises that held.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import anyio
import nats
import pytest
from nats.errors import ConnectionClosedError

from fleetward.schemas.grants import registry_commands
from fleetward.schemas.headers import MSG_ID
from fleetward.schemas.streams import COMMANDS_STREAM, inbox_durable
from fleetward.services.api.acting import AgentPool
from fleetward.services.client import AgentClient, Claim, ClaimLost, FleetClient
from fleetward.services.client.claims import AgentPaused as AgentPausedError
from fleetward.services.projector.outbox import Outbox
from fleetward.services.runtime.connect import Runtime
from tests.helpers import HARNESS, agent, creds, past_the_duplicate_window, project_all
from tests.integration.test_attack_identity import Attacker
from tests.integration.test_attack_intents import api, inbox


async def claim_or_lost(client: AgentClient, task: str) -> Claim | ClaimLost:
    try:
        return await client.claim(task)
    except ClaimLost as exc:
        return exc


async def aim_inbox_at(rt: Runtime, attacker: str, onto: str, batch: int) -> None:
    """``attacker`` pulls ``batch`` commands from its OWN inbox (a request its credentials
    allow) and names ``onto`` as the reply subject: NATS checks the subject a client publishes
    on, never the reply subject, so the server delivers the attacker's commands there."""
    async with Attacker(rt, attacker) as a:
        await a.nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{COMMANDS_STREAM}.{inbox_durable(attacker)}",
            json.dumps({"batch": batch, "expires": 2_000_000_000}).encode(),
            reply=onto,
        )
        await a.nc.flush()
        await anyio.sleep(0.5)
        assert a.errors == []  # no permission violation: the request is the attacker's own


async def own_lifecycle(rt: Runtime, who: str, *steps: str) -> None:
    """``who`` pauses / resumes itself (an agent may), on a connection with no inbox open."""
    me = await FleetClient.connect(rt.nats_url, creds(rt, who))
    try:
        for step in steps:
            await (me.pause_agent(who, "mine") if step == "pause" else me.resume_agent(who))
            await project_all(rt)
    finally:
        await me.close()


# ---- 1. another agent writes into the registry subscription of every process of a victim ----


async def test_another_agent_pauses_every_process_of_an_active_agent(
    rt: Runtime, ops: FleetClient
) -> None:
    """Fixed (an attack found it, (high): agent 'evil' pulls its own inbox (its own pause, which
    it may publish itself) with reply subject fw.cmd.victim.svc:registry; every process of
    'victim' obeys evil's pause (AgentClient._follow_registry never checks command.agent ==
    self.agent) and refuses to claim while victim is active)."""
    victim = await agent(rt, "victim")
    second = await AgentClient.connect(rt.nats_url, creds(rt, "victim"))
    await (await agent(rt, "evil")).close()
    try:
        async with api(rt):
            for t in ("v-1", "v-2"):
                await ops.create_task(t, project="p", title="t")
            await project_all(rt)
            await second.sync_inbox()
            await own_lifecycle(rt, "evil", "pause")
            await aim_inbox_at(rt, "evil", registry_commands("victim"), batch=1)
            outcomes = [await claim_or_lost(victim, "v-1"), await claim_or_lost(second, "v-2")]
            print(
                "victim's two processes:",
                outcomes,
                "victim is",
                (await ops.agent_profile("victim") or {}).get("status"),
            )
            assert not any(isinstance(o, AgentPausedError) for o in outcomes), outcomes
    finally:
        await victim.close()
        await second.close()


async def test_a_retired_agent_retires_another_agents_running_process_for_good(
    rt: Runtime, ops: FleetClient
) -> None:
    """Fixed (an attack found it, (high): a retired agent keeps its credentials and its inbox;
    aiming its own 'retire' at fw.cmd.victim.svc:registry retires victim's running process for
    good (_obey: retire sets retired, and no later resume clears it): after an operator's pause
    and resume of victim, its claim still raises AgentPaused 'victim is retired')."""
    victim = await agent(rt, "victim")
    await (await agent(rt, "evil")).close()
    try:
        async with api(rt):
            await ops.create_task("v-1", project="p", title="t")
            await ops.retire_agent("evil", reason="misbehaved")
            await project_all(rt)
            await aim_inbox_at(rt, "evil", registry_commands("victim"), batch=1)
            await victim.sync_inbox()
            print("victim process: paused", victim.paused, "retired", victim.retired)
            await ops.pause_agent("victim", reason="check")
            await project_all(rt)
            await ops.resume_agent("victim")
            await project_all(rt)
            outcome = await claim_or_lost(victim, "v-1")
            print("after the operator's pause and resume:", outcome)
            assert isinstance(outcome, Claim), outcome
    finally:
        await victim.close()


async def test_another_agent_lifts_the_pause_in_a_paused_agents_process(
    rt: Runtime, ops: FleetClient
) -> None:
    """Fixed (an attack found it, (medium): victim is paused by an operator; agent 'evil' pauses
    and resumes itself (newer FW_EVENTS sequences) and aims its own inbox at
    fw.cmd.victim.svc:registry: victim's process takes evil's resume as its own (higher
    payload.seq) and claims while paused, no AgentPaused (the board refuses it later))."""
    victim = await agent(rt, "victim")
    await (await agent(rt, "evil")).close()
    try:
        async with api(rt):
            await ops.create_task("v-1", project="p", title="t")
            await ops.pause_agent("victim", reason="ops")
            await project_all(rt)
            await victim.sync_inbox()
            assert victim.paused
            await own_lifecycle(rt, "evil", "pause", "resume")
            await aim_inbox_at(rt, "evil", registry_commands("victim"), batch=2)
            outcome = await claim_or_lost(victim, "v-1")
            print("paused victim's claim:", outcome)
            assert isinstance(outcome, AgentPausedError), outcome
    finally:
        await victim.close()


async def test_agents_and_people_cannot_publish_on_or_follow_another_agents_registry_subject(
    rt: Runtime,
) -> None:
    """Holds: the subject itself is closed to every identity but the projector."""
    await (await agent(rt, "victim")).close()
    await (await agent(rt, "evil")).close()
    subject = registry_commands("victim")
    async with Attacker(rt, "evil") as a:
        await a.nc.publish(subject, b"{}")
        await a.nc.flush()
        assert await a.violated(f'publish to "{subject}"')
        await a.nc.subscribe(subject)
        await a.nc.subscribe("fw.cmd.victim.>")
        await a.nc.flush()
        assert await a.violated(f'subscription to "{subject}"')
        assert await a.violated('subscription to "fw.cmd.victim.>"')
    async with Attacker(rt, "user:mallory") as p:
        await p.nc.publish(subject, b"{}")
        await p.nc.flush()
        assert await p.violated(f'publish to "{subject}"')


# ---- 2. a process that never saw the pause on its subscription ----


async def test_a_process_started_after_the_pause_claims_without_agent_paused(
    rt: Runtime, ops: FleetClient
) -> None:
    """Fixed (an attack found it, (medium): a process started after the pause was published (a
    restart, a new worker, a reconnect) and that does not call register: the durable inbox gave
    the pause to the first process (which acknowledged it), the plain subscription only sees
    commands published while subscribed, and sync_inbox/_may_claim never read the registry's
    status, so its claim goes out (no AgentPaused) while the agent is paused)."""
    first = await agent(rt, "pair")
    try:
        async with api(rt):
            await ops.create_task("pz-a", project="p", title="t")
            await ops.pause_agent("pair", reason="stop")
            await project_all(rt)
            assert [c.command for c in await inbox(first)] == ["pause"]  # read and acked
            later = await AgentClient.connect(rt.nats_url, creds(rt, "pair"))
            try:
                outcome = await claim_or_lost(later, "pz-a")
            finally:
                await later.close()
            print("process started after the pause:", outcome)
            assert isinstance(outcome, AgentPausedError), outcome
    finally:
        await first.close()


async def test_the_https_ingress_claims_for_an_agent_paused_before_its_client_opened(
    rt: Runtime, ops: FleetClient
) -> None:
    """Fixed (an attack found it, (medium): the HTTPS ingress opens its client for an agent at the
    agent's first request (services/api/acting.py AgentPool._open: take_up_profile, which reads
    roles and limit but not the status); when the agent's NATS process already took the pause,
    the ingress client claims for a paused agent without AgentPaused)."""
    worker = await agent(rt, "httpish")
    pool = AgentPool(rt.nats_url, rt.settings.auth_dir)
    try:
        async with api(rt):
            await ops.create_task("h-1", project="p", title="t")
            await ops.pause_agent("httpish", reason="stop")
            await project_all(rt)
            assert [c.command for c in await inbox(worker)] == ["pause"]
            async with pool.acting("httpish") as acting:
                outcome = await claim_or_lost(acting.client, "h-1")
            print("the ingress's claim:", outcome)
            assert isinstance(outcome, AgentPausedError), outcome
    finally:
        await pool.aclose()
        await worker.close()


async def test_pause_resume_pause_in_quick_succession_reaches_three_processes(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: three processes (one started between the commands, after calling register);
    whichever got which command from the inbox, all end paused; after a resume all claim."""
    a = await agent(rt, "trio", max_concurrent_tasks=3)
    b = await AgentClient.connect(rt.nats_url, creds(rt, "trio"))
    try:
        async with api(rt):
            for t in ("t-a", "t-b", "t-c"):
                await ops.create_task(t, project="p", title="t")
            await project_all(rt)
            await b.sync_inbox()
            await ops.pause_agent("trio")
            await ops.resume_agent("trio")
            await ops.pause_agent("trio")
            await project_all(rt)
            c = await agent(rt, "trio")  # re-registers while paused
            try:
                await b.next_command(wait=0.2)  # b takes (at most) one from the inbox
                outcomes = [await claim_or_lost(p, t) for p, t in ((a, "t-a"), (b, "t-b"),
                                                                  (c, "t-c"))]  # fmt: skip
                assert all(isinstance(o, AgentPausedError) for o in outcomes), outcomes
                await ops.resume_agent("trio")
                await project_all(rt)
                outcomes = [await claim_or_lost(p, t) for p, t in ((a, "t-a"), (b, "t-b"),
                                                                  (c, "t-c"))]  # fmt: skip
                assert all(isinstance(o, Claim) for o in outcomes), outcomes
            finally:
                await c.close()
    finally:
        await a.close()
        await b.close()


# ---- 3. the outbox's lookup of late events ----


async def refused_rows(rt: Runtime, agent_id: str) -> list[dict[str, Any]]:
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT n, event_id, subject, data, published_at FROM fleetward.outbox "
            "WHERE subject = $1 ORDER BY n", f"fw.cmd.{agent_id}.svc:projector")  # fmt: skip
    return [dict(r) for r in rows]


async def test_the_late_lookup_marks_published_a_command_that_was_never_stored(
    rt: Runtime,
) -> None:
    """Fixed (an attack found it, (medium, rare): two refusals to one agent on
    fw.cmd.<a>.svc:projector, from two runners (FW_EVENTS and FW_HB dead letters) that commit
    concurrently: n=k+1 committed first and was published while n=k was not visible yet, and
    the outbox died (or lost the ack: NATS away) before marking it. Past LATE_S both wait; the
    last message on the subject is k+1, so Outbox._stored_already marks k published too ('those
    before it on the subject are stored' assumes publishing in n order, which a later commit of
    a lower n breaks): refusal k is never stored, a lost command)."""
    await (await agent(rt, "lossy")).close()
    async with Attacker(rt, "lossy") as a:  # two refused messages, two streams, two runners
        await a.nc.publish("fw.task.nowhere.lossy", b"not json")
        await a.nc.publish("fw.hb.lossy", b"not json either")
        await a.nc.flush()
    await project_all(rt, outbox=False)
    rows = await refused_rows(rt, "lossy")
    assert len(rows) == 2 and all(r["published_at"] is None for r in rows), rows
    first, second = rows
    # the outbox published the higher n (its transaction committed first), then died
    await rt.js.publish(second["subject"], bytes(second["data"]),
                        headers={MSG_ID: second["event_id"]})  # fmt: skip
    async with rt.pool.acquire() as conn:
        await conn.execute("UPDATE fleetward.outbox SET created_at = now() - interval "
                           "'10 minutes' WHERE published_at IS NULL")  # fmt: skip
    await Outbox(rt).publish_once()
    stored = []
    sub = await rt.js.subscribe(first["subject"], ordered_consumer=True)
    while True:
        try:
            msg = await sub.next_msg(timeout=0.5)
        except Exception:
            break
        stored.append((msg.headers or {}).get(MSG_ID))
    await sub.unsubscribe()
    marked = [r["published_at"] is not None for r in await refused_rows(rt, "lossy")]
    print("marked published:", marked, "in the stream:", stored)
    assert first["event_id"] in stored, "marked published, never stored"


async def test_the_late_lookup_with_nats_away_marks_nothing(rt: Runtime) -> None:
    """Holds: the lookup failing (the connection closed) marks nothing as published."""
    await (await agent(rt, "away")).close()
    async with Attacker(rt, "away") as a:
        await a.nc.publish("fw.task.nowhere.away", b"not json")
        await a.nc.flush()
    await project_all(rt, outbox=False)
    async with rt.pool.acquire() as conn:
        await conn.execute("UPDATE fleetward.outbox SET created_at = now() - interval "
                           "'10 minutes' WHERE published_at IS NULL")  # fmt: skip

    nc = await nats.connect(rt.nats_url, user_credentials=str(creds(rt, HARNESS)))
    await nc.close()  # the outbox's connection is gone
    box = Outbox(dataclasses.replace(rt, nc=nc, js=nc.jetstream()))
    with pytest.raises(ConnectionClosedError):
        await box.publish_once()
    assert all(r["published_at"] is None for r in await refused_rows(rt, "away"))


async def test_a_server_answer_aimed_at_the_subject_defeats_the_late_lookup(
    rt: Runtime, ops: FleetClient
) -> None:
    """Fixed (an attack found it, (low): the late lookup trusts 'last message by subject' to be
    the outbox's; anyone (here another agent) can have the server store its own answer there by
    naming fw.cmd.<victim>.svc:board as the reply subject of a message get. After a crash
    between publishing and marking and a projector down past the duplicate window, the last
    message is that answer, the lookup does not find the command, it is stored a second time
    and the restarted agent acts on one review_feedback twice (Outbox._stored_already looks
    only at the last message, not at the subject's messages after the row's creation))."""
    author = await agent(rt, "twice")
    await (await agent(rt, "evil")).close()
    try:
        await ops.create_task("tw", project="p", title="t")
        await project_all(rt)
        await author.submit(await author.claim("tw"), content="x")
        await ops.review("tw", "reject", feedback="once")
        await project_all(rt)
        assert [x.command for x in await inbox(author)] == ["review_feedback"]
        await author.close()
        await past_the_duplicate_window(rt)  # the server forgets the command's message id
        async with rt.pool.acquire() as conn:  # the crash: published, never marked
            marked = await conn.execute(
                "UPDATE fleetward.outbox SET published_at = NULL, created_at = now() - "
                "interval '10 minutes' WHERE subject = 'fw.cmd.twice.svc:board'")  # fmt: skip
        assert marked == "UPDATE 1"
        async with Attacker(rt, "evil") as a:  # a message get, answered on twice's subject
            await a.nc.publish("$JS.API.STREAM.MSG.GET.FW_EVENTS", b'{"seq": 1}',
                               reply="fw.cmd.twice.svc:board")  # fmt: skip
            await a.nc.flush()
            await anyio.sleep(0.3)
            assert a.errors == []
        await project_all(rt)
        author = await AgentClient.connect(rt.nats_url, creds(rt, "twice"))  # restarted
        again = await inbox(author)
        print("restarted agent sees:", [(x.command, x.reason) for x in again])
        assert again == []
    finally:
        await author.close()


async def test_credentials_issued_before_the_grant_still_work_with_the_inbox_alone(
    rt: Runtime, ops: FleetClient
) -> None:
    """Holds: an agent whose credentials lack the registry subscription (issued by an earlier
    Fleetward) registers, is paused by its inbox, resumed, and claims."""
    from fleetward.schemas.grants import grants_for  # noqa: PLC0415
    from fleetward.services.auth.store import AuthStore  # noqa: PLC0415

    new = grants_for("oldie")
    old = type(new)(publish=new.publish, subscribe=new.subscribe[:1])
    path = AuthStore(rt.settings.auth_dir).issue("oldie", grants=old)
    client = await AgentClient.connect(rt.nats_url, path)
    try:
        async with api(rt):
            await client.register(name="oldie", owner="o", team="t")
            await ops.create_task("o-1", project="p", title="t")
            await ops.pause_agent("oldie")
            await project_all(rt)
            assert isinstance(await claim_or_lost(client, "o-1"), AgentPausedError)
            await ops.resume_agent("oldie")
            await project_all(rt)
            assert isinstance(await claim_or_lost(client, "o-1"), Claim)
            assert client.nc.is_connected
    finally:
        await client.close()
