"""Attacks on identity and permissions, as a hostile agent or person would make them.

Every attacker connects with its own credentials only; ``rt`` (the harness) only sets the scene
and reads the results. A test marked ``xfail(strict=True)`` is a weakness that works today: it
fails because the attack succeeds, and passes once the weakness is fixed.

The first group aims the server's answers. NATS checks the *subject* a client publishes on,
never the *reply subject* it names, and the server (JetStream's API, and any service allowed
to respond) publishes its answer on that reply subject with full rights, where FW_EVENTS,
FW_HEARTBEATS and FW_COMMANDS store it like any other message. A direct get answers with the
*bytes of a stored message*, so with one an attacker could store any payload on its own subject
(dead-lettered there, harmlessly), ask for it back with the victim's subject as reply, and have
the server re-publish the bytes where admission sees a subject whose actor token matches the
payload. What holds now: no agent or person may make a direct get (schemas/grants.py); the
message get they use answers in a JSON wrapper that every reader refuses; the task API answers
only on inboxes (``schemas.grants.is_inbox``); and what an inbox delivers elsewhere is the
agent's own commands, refused on any subject but their own.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient

from fleetward.projections.agents import AgentRegistry
from fleetward.projections.spend import Spend
from fleetward.projections.tasks import TaskBoard
from fleetward.schemas import new_id
from fleetward.schemas.admission import Rejected, admit
from fleetward.schemas.events import (
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    CommandIssued,
    Heartbeat,
    RoleGranted,
    TaskCancelled,
    TaskCreated,
)
from fleetward.schemas.grants import inbox_prefix
from fleetward.schemas.streams import COMMANDS_STREAM, EVENTS_STREAM, HEARTBEATS_STREAM
from fleetward.services.auth.store import AuthStore
from fleetward.services.client import AgentClient, IntentRefused
from fleetward.services.errors import FleetwardError
from fleetward.services.jetstream.connection import connect_as
from fleetward.services.jetstream.publish import encode, publish
from fleetward.services.projector.rebuild import rebuild
from fleetward.services.runtime.connect import Runtime
from tests.helpers import agent, creds, envelope, project_all, snapshot, task_api, wait_for

ROOT = Path(__file__).resolve().parents[2]
READERS = (AgentRegistry(), TaskBoard(), Spend())  # the projections that read agents' lifecycle
CLI = (sys.executable, "-m", "fleetward.services.cli")


# ---- helpers ------------------------------------------------------------------------------------


class Attacker:
    """A raw NATS connection as ``identity`` (its own credentials and inbox prefix) that
    records the server's permission violations."""

    def __init__(self, rt: Runtime, identity: str) -> None:
        self.rt, self.identity, self.errors = rt, identity, list[str]()
        self.nc: NatsClient

    async def __aenter__(self) -> Attacker:
        async def record(exc: Exception) -> None:
            self.errors.append(str(exc))

        self.nc = await nats.connect(
            self.rt.nats_url,
            user_credentials=str(creds(self.rt, self.identity)),
            inbox_prefix=inbox_prefix(self.identity),
            error_cb=record,
            allow_reconnect=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.close()

    async def violated(self, subject: str, timeout: float = 3.0) -> bool:  # noqa: ASYNC109
        async def seen() -> bool:
            return any(subject.lower() in e.lower() for e in self.errors)

        with anyio.move_on_after(timeout):
            await wait_for(seen, timeout, f"a violation naming {subject}")
        return await seen()

    async def request(self, subject: str, body: Any) -> dict[str, Any] | None:
        """A JetStream API request; its JSON answer, or None when nothing answered (refused)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            reply = await self.nc.request(subject, data, timeout=1)
        except nats.errors.TimeoutError:
            return None
        answer: dict[str, Any] = json.loads(reply.data)
        return answer

    async def replay_onto(self, payload: bytes, onto: str) -> None:
        """Store ``payload`` on the attacker's own task subject (no Nats-Msg-Id, so no
        duplicate window applies), then ask FW_EVENTS for it with ``onto`` as the reply
        subject: by direct get (which would publish the stored bytes themselves on ``onto``;
        the server must refuse the request), and by message get (which the server answers on
        ``onto``, in a JetStream API response)."""
        js = self.nc.jetstream(timeout=2)
        own = await js.publish(f"fw.task.scratch-{new_id()[-8:]}.{self.identity}", payload)
        request = json.dumps({"seq": own.seq}).encode()
        direct = f"$JS.API.DIRECT.GET.{EVENTS_STREAM}"
        await self.nc.publish(direct, request, reply=onto)
        await self.nc.publish(f"$JS.API.STREAM.MSG.GET.{EVENTS_STREAM}", request, reply=onto)
        await self.nc.flush()
        assert await self.violated(f'publish to "{direct}"'), self.errors


async def count_on(rt: Runtime, stream: str, subject: str) -> int:
    info = await rt.js.stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def landed(rt: Runtime, stream: str, subject: str, before: int = 0) -> bool:
    """Whether a message appears on ``subject`` in ``stream`` within 3 s."""

    async def there() -> bool:
        return await count_on(rt, stream, subject) > before

    with anyio.move_on_after(3):  # ends the wait; wait_for's own limit is only a backstop
        await wait_for(there, 60, f"a message on {subject}")
    return await there()


def at() -> datetime:
    return datetime.now(UTC)


async def row(rt: Runtime, sql: str, *args: object) -> Any:
    async with rt.pool.acquire() as conn:
        return await conn.fetchrow(sql, *args)


# ---- forging through the reply subject of a server's answer -----------------------------------


async def test_an_agent_cannot_make_a_person_admin_by_replaying_its_bytes_through_a_get(
    rt: Runtime,
) -> None:
    """Was CRITICAL: a v1 role.granted by svc:auth, stored on the agent's own subject and
    replayed by a direct get with reply subject fw.person.eve, was stored on the v1 subject and
    applied. Now the direct get is refused; the message get's answer lands and is refused."""
    forged = {"type": "role.granted", "id": new_id(), "actor": "svc:auth", "v": 1,
              "at": at().isoformat(), "person": "eve", "role": "admin"}  # fmt: skip
    async with Attacker(rt, "agent-a") as a:
        await a.replay_onto(json.dumps(forged).encode(), "fw.person.eve")
        assert await landed(rt, EVENTS_STREAM, "fw.person.eve")  # the wrapped answer
    await project_all(rt)
    granted = await row(rt, "SELECT held FROM fleet.roles WHERE person = 'eve' AND role = 'admin'")
    assert granted is None or not granted["held"], "agent-a made user:eve an admin"


async def test_an_agent_cannot_cancel_a_task_as_an_admin_through_a_get_reply(
    rt: Runtime,
) -> None:
    """Was CRITICAL: the replayed bytes landed on fw.task.<t>.user:alice, whose actor token
    matched the payload, so alice's (an admin's) task.cancelled written by agent-a was applied."""
    await publish(rt.js, TaskCreated(**envelope("user:ops"), task="t-1", project="p", title="x"))
    await project_all(rt)
    forged = TaskCancelled(**envelope("user:alice"), task="t-1", reason="forged by agent-a")
    async with Attacker(rt, "agent-a") as a:
        await a.replay_onto(encode(forged), "fw.task.t-1.user:alice")
        assert await landed(rt, EVENTS_STREAM, "fw.task.t-1.user:alice")
    await project_all(rt)
    task = await row(rt, "SELECT status FROM fleet.tasks WHERE task_id = 't-1'")
    assert task["status"] != "cancelled", "agent-a cancelled t-1 as user:alice"


async def test_an_agent_cannot_retire_another_agent_by_forging_a_command_into_its_inbox(
    rt: Runtime,
) -> None:
    """Was CRITICAL: a command.issued by svc:registry replayed onto fw.cmd.agent-b.svc:registry
    was admitted by agent-b's client, which obeyed it (retire)."""
    b = await agent(rt, "agent-b")
    try:
        forged = CommandIssued(
            **envelope("svc:registry"), agent="agent-b", command="retire", reason="forged"
        )
        async with Attacker(rt, "agent-a") as a:
            await a.replay_onto(encode(forged), "fw.cmd.agent-b.svc:registry")
            assert await landed(rt, COMMANDS_STREAM, "fw.cmd.agent-b.svc:registry")
        with anyio.move_on_after(5):
            while (command := await b.next_command(wait=1)) is not None:
                if command.id == forged.id:
                    break
        assert not b.retired, "agent-b obeyed a retire command written by agent-a"
    finally:
        await b.close()


async def test_an_agent_cannot_forge_another_agents_heartbeat_through_a_get_reply(
    rt: Runtime,
) -> None:
    """Was HIGH: heartbeats forged for another agent (keeping a dead agent 'alive' and its
    leases renewed): the replayed bytes landed on fw.hb.agent-b and were admitted."""
    forged = Heartbeat(**envelope("agent-b"), agent="agent-b", message="forged by agent-a")
    async with Attacker(rt, "agent-a") as a:
        await a.replay_onto(encode(forged), "fw.hb.agent-b")
        stored = await landed(rt, HEARTBEATS_STREAM, "fw.hb.agent-b")
    assert stored  # the replay reached FW_HEARTBEATS
    msg = await rt.js.get_last_msg(HEARTBEATS_STREAM, "fw.hb.agent-b")
    try:
        admitted = admit(msg.subject, msg.data)
    except Rejected:
        return  # refused by every reader: fixed
    raise AssertionError(f"agent-a's forged heartbeat is admitted as agent-b's: {admitted}")


async def test_api_answers_cannot_be_aimed_at_another_agents_inbox_or_the_audit_log(
    rt: Runtime,
) -> None:
    """Was MEDIUM: svc:api may respond anywhere, so its answers on fw.cmd.agent-b.svc:api and
    fw.task.t-9.svc:api landed in agent-b's inbox and the audit log. The task API answers only
    on inboxes now; a request with an inbox still gets its answer."""
    async with task_api(rt), Attacker(rt, "agent-a") as a:
        answer = await a.request("fw.api.agents.get", {"agent": "x"})
        assert answer is not None and answer["agent"] is None and "error" not in answer, answer
        await a.nc.publish("fw.api.agents.get", b'{"agent":"x"}', reply="fw.cmd.agent-b.svc:api")
        await a.nc.publish(
            "fw.api.tasks.claimable", b'{"agent":"agent-a"}', reply="fw.task.t-9.svc:api"
        )
        await a.nc.flush()
        in_inbox = await landed(rt, COMMANDS_STREAM, "fw.cmd.agent-b.svc:api")
        in_audit = await landed(rt, EVENTS_STREAM, "fw.task.t-9.svc:api")
    assert not (in_inbox or in_audit), (in_inbox, in_audit)


async def test_an_agent_that_makes_its_inbox_push_elsewhere_moves_only_its_own_commands(
    rt: Runtime,
) -> None:
    """Holds, with a gap left (docs/identity.md, Known gaps): the inbox consumer create is
    pinned by filter only, so an agent may make its inbox a push consumer delivering to any
    subject (here fw.task.zz.svc:registry). The server delivers only while something listens
    there, and a stream that captures the deliver subject stores the message under its *own*
    subject (a command on fw.cmd.agent-a.>, which no projection of FW_EVENTS reads): the agent
    can copy its own commands into the audit log, never put bytes on another actor's subject."""
    config = {"durable_name": "inbox_agent-a", "filter_subject": "fw.cmd.agent-a.>",
              "ack_policy": "explicit", "deliver_subject": "fw.task.zz.svc:registry"}  # fmt: skip
    listening = await rt.nc.subscribe("fw.task.zz.svc:registry")  # push needs a listener
    await rt.nc.flush()
    async with Attacker(rt, "agent-a") as a:
        answer = await a.request(
            f"$JS.API.CONSUMER.CREATE.{COMMANDS_STREAM}.inbox_agent-a.fw.cmd.agent-a.>",
            {"stream_name": COMMANDS_STREAM, "config": config},
        )
    assert answer is not None and "error" not in answer, answer  # the gap: allowed
    command = CommandIssued(
        **envelope("svc:registry"), agent="agent-a", command="retire", reason="a real one"
    )
    await publish(rt.js, command)
    own = "fw.cmd.agent-a.svc:registry"
    assert await landed(rt, EVENTS_STREAM, own)  # copied into FW_EVENTS, on its own subject
    await listening.unsubscribe()
    assert await count_on(rt, EVENTS_STREAM, "fw.task.zz.>") == 0
    await project_all(rt)
    assert await row(rt, "SELECT 1 FROM fleet.tasks WHERE task_id = 'zz'") is None


# ---- an agent overruling the people who operate it ----------------------------------------------


async def _registered_by_ops(rt: Runtime, name: str) -> AgentClient:
    """``name`` registered by an operator (no roles, one task at a time), and its own client."""
    profile = AgentRegistered(
        **envelope("user:ops"), agent=name, name=name, owner="o", team="t", roles=(),
        max_concurrent_tasks=1,
    )  # fmt: skip
    await publish(rt.js, profile)
    return await AgentClient.connect(rt.nats_url, creds(rt, name))


async def test_an_agent_paused_by_an_operator_resumes_itself(rt: Runtime) -> None:
    """agent.resumed lists 'self' among its senders (an agent lifts its own pause), so an agent
    an operator (or the watchdog) paused could resume itself: every reader now refuses that
    (projections/lifecycle.py), the registry dead-letters it with the reason, and the agent is
    told in its inbox."""
    a = await _registered_by_ops(rt, "agent-a")
    try:
        await publish(rt.js, AgentPaused(**envelope("user:ops"), agent="agent-a", reason="stop"))
        await project_all(rt)
        await a.send(AgentResumed(**a.envelope(), agent="agent-a", reason="no"))
        await project_all(rt)
        told = [await a.next_command(wait=3) for _ in range(2)]
    finally:
        await a.close()
    status = await row(rt, "SELECT status FROM fleet.agents WHERE agent_id = 'agent-a'")
    assert status["status"] == "paused"
    dead = await row(
        rt, "SELECT reason, detail FROM fleet.dead_letters WHERE projection = 'agents'"
    )
    assert dead["reason"] == "lifecycle_forbidden" and "paused by user:ops" in dead["detail"]
    assert [(c.command, c.payload.get("reason")) for c in told if c] == [
        ("pause", None), ("refused", "lifecycle_forbidden")]  # fmt: skip


async def test_an_agent_retired_by_an_operator_brings_itself_back(rt: Runtime) -> None:
    """Registering again un-retired, and an agent may register itself, so an agent an operator
    retired could bring itself back: retirement is now final for the agent itself
    (projections/lifecycle.py). Its client refuses at once; a registration sent past the
    client is dead-lettered by every reader."""
    a = await _registered_by_ops(rt, "agent-a")
    try:
        await publish(rt.js, AgentRetired(**envelope("user:ops"), agent="agent-a", reason="bye"))
        await project_all(rt)
        with pytest.raises(IntentRefused, match="agent-a is retired"):  # its inbox said retire
            await a.register(name="agent-a", owner="o", team="t")
        async with task_api(rt):  # the registry says so
            with pytest.raises(IntentRefused, match="agent-a is retired"):
                await a.register(name="agent-a", owner="o", team="t")
        await a.send(
            AgentRegistered(**a.envelope(), agent="agent-a", name="agent-a", owner="o", team="t")
        )
        await project_all(rt)
    finally:
        await a.close()
    status = await row(rt, "SELECT status FROM fleet.agents WHERE agent_id = 'agent-a'")
    assert status["status"] == "retired"
    async with rt.pool.acquire() as conn:
        dead = await conn.fetch(
            "SELECT projection, reason FROM fleet.dead_letters ORDER BY projection"
        )
    assert [tuple(d) for d in dead] == [
        ("agents", "lifecycle_forbidden"), ("spend", "lifecycle_forbidden"),
        ("tasks", "lifecycle_forbidden")]  # fmt: skip
    live = await snapshot(rt, READERS)
    for projection in READERS:  # judged from the stream alone: a rebuild judges alike
        await rebuild(rt, projection)
    assert await snapshot(rt, READERS) == live


async def test_an_agent_gives_itself_roles_and_a_higher_limit_by_registering_again(
    rt: Runtime,
) -> None:
    """An agent's roles and limit were whatever its latest agent.registered said, its own
    included, so an agent an operator registered with no roles gave itself 'reviewer' and 20
    concurrent tasks: they now stay the operator's (projections/lifecycle.py). Its client
    refuses at once; a registration sent past the client changes only the rest of its
    profile, and the registry tells the agent (``refused``) what it kept."""
    a = await _registered_by_ops(rt, "agent-a")
    try:
        await project_all(rt)
        async with task_api(rt):
            with pytest.raises(IntentRefused, match="are set by user:ops"):
                await a.register(
                    name="agent-a", owner="o", team="t", roles=("reviewer",),
                    max_concurrent_tasks=20,
                )  # fmt: skip
        mine = AgentRegistered(
            **a.envelope(), agent="agent-a", name="renamed", owner="o", team="t",
            roles=("reviewer",), max_concurrent_tasks=20,
        )  # fmt: skip
        await a.send(mine)
        await project_all(rt)
        told = await a.next_command(wait=3)
    finally:
        await a.close()
    assert told is not None and told.command == "refused", told  # the agent is told
    assert told.payload["type"] == "agent.registered" and "kept []" in told.reason, told
    agent_row = await row(
        rt,
        "SELECT name, roles, max_concurrent_tasks, registered_by FROM fleet.agents "
        "WHERE agent_id = 'agent-a'",
    )
    assert list(agent_row["roles"]) == [] and agent_row["max_concurrent_tasks"] == 1
    assert (agent_row["name"], agent_row["registered_by"]) == ("renamed", "user:ops")
    board = await row(rt, "SELECT roles, max_concurrent_tasks FROM fleetward.task_agents")
    assert (list(board["roles"]), board["max_concurrent_tasks"]) == ([], 1)


# ---- what held ---------------------------------------------------------------------------------


async def test_the_inbox_consumer_cannot_be_bent_to_other_commands_or_names(rt: Runtime) -> None:
    """Holds: the server refuses the agent's own consumer-create subject with a second filter,
    another consumer name in the body, or another agent's filter in the subject; the legacy
    durable create, ephemeral creates, acks and pulls on another inbox, key-value and object
    store subjects and destructive stream verbs are permission violations."""
    own = f"$JS.API.CONSUMER.CREATE.{COMMANDS_STREAM}.inbox_agent-a.fw.cmd.agent-a.>"
    bodies = [
        {"durable_name": "inbox_agent-a", "filter_subjects": ["fw.cmd.agent-b.>"]},
        {
            "durable_name": "inbox_agent-a",
            "filter_subject": "fw.cmd.agent-a.>",
            "filter_subjects": ["fw.cmd.agent-b.>"],
        },
        {"durable_name": "inbox_agent-b", "filter_subject": "fw.cmd.agent-a.>"},
        {"durable_name": "inbox_agent-a", "filter_subject": "fw.cmd.>"},
    ]
    async with Attacker(rt, "agent-a") as a:
        for config in bodies:
            answer = await a.request(own, {"stream_name": COMMANDS_STREAM, "config": config})
            assert answer is not None and "error" in answer, (config, answer)
        refused = [
            f"$JS.API.CONSUMER.CREATE.{COMMANDS_STREAM}.inbox_agent-b.fw.cmd.agent-b.>",
            f"$JS.API.CONSUMER.CREATE.{COMMANDS_STREAM}.inbox_agent-a.fw.cmd.agent-b.>",
            f"$JS.API.CONSUMER.CREATE.{COMMANDS_STREAM}.inbox_agent-a.fw.cmd.*.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{COMMANDS_STREAM}.inbox_agent-a",
            f"$JS.API.CONSUMER.CREATE.{EVENTS_STREAM}",
            f"$JS.API.CONSUMER.MSG.NEXT.{COMMANDS_STREAM}.inbox_agent-b",
            f"$JS.ACK.{COMMANDS_STREAM}.inbox_agent-b.1.1.1.1.0",
            f"$JS.API.STREAM.UPDATE.{EVENTS_STREAM}",
            f"$JS.API.STREAM.PURGE.{COMMANDS_STREAM}",
            f"$JS.API.STREAM.MSG.DELETE.{COMMANDS_STREAM}",
            f"$JS.API.CONSUMER.DELETE.{COMMANDS_STREAM}.inbox_agent-b",
            "$JS.API.STREAM.CREATE.SPY",
            "$KV.fw.agent-b",
            "$O.fw.C.x",
            "fw.task.t-1.agent-b",
            "fw.task.t-1.*",
            "fw.task.t-1.>",
            "fw.cmd.agent-b.agent-a",
            "fw.person.eve.agent-a",
            "fw.hb.agent-b",
            "fw.task.t-1",  # the v1 subject
        ]
        for subject in refused:
            await a.nc.publish(subject, b"{}")
            assert await a.violated(f'publish to "{subject}"'), (subject, a.errors)


async def test_a_person_without_a_role_cannot_dodge_role_checks_with_v1(rt: Runtime) -> None:
    """Holds: user:eve (no role) cannot grant herself admin on her own v2 subject, neither as
    v2 (role_missing) nor as v1 (wrong_subject: a v1 event belongs on the v1 subject, which no
    credential may publish on), nor with another person's actor (actor_mismatch)."""
    forged = [
        RoleGranted(**envelope("user:eve"), person="eve", role="admin"),
        RoleGranted(**envelope("user:eve"), person="eve", role="admin", v=1),
        RoleGranted(**envelope("user:ops"), person="eve", role="admin"),
    ]
    async with Attacker(rt, "user:eve") as eve:
        js = eve.nc.jetstream(timeout=2)
        for event in forged:
            await js.publish("fw.person.eve.user:eve", encode(event))
    await project_all(rt)
    assert await row(rt, "SELECT 1 FROM fleet.roles WHERE person = 'eve'") is None
    async with rt.pool.acquire() as conn:
        reasons = await conn.fetch(
            "SELECT reason FROM fleetward.dead_letters WHERE subject = 'fw.person.eve.user:eve' "
            "ORDER BY seq"
        )
    assert [r["reason"] for r in reasons] == ["role_missing", "wrong_subject", "actor_mismatch"]


async def test_revoking_an_agent_cuts_off_every_credential_it_was_ever_issued(
    rt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    """Holds: two credential files of one agent (two keys), both connected with a subscription
    open: ``agents revoke`` closes both connections and refuses both files afterwards."""
    first = tmp_path / "first.creds"
    first.write_bytes(creds(rt, "agent-r").read_bytes())
    second = AuthStore(rt.settings.auth_dir).issue("agent-r")
    closed: list[str] = []
    conns = []
    for path in (first, second):

        async def on_closed(path: Path = path) -> None:
            closed.append(path.name)

        nc = await nats.connect(
            rt.nats_url, user_credentials=str(path), inbox_prefix=inbox_prefix("agent-r"),
            allow_reconnect=False, closed_cb=on_closed,
        )  # fmt: skip
        await nc.subscribe(f"{inbox_prefix('agent-r')}.x")
        conns.append(nc)
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [*CLI, "agents", "revoke", "agent-r"], cwd=ROOT, env=env, check=False
        )
    assert done.returncode == 0, done.stderr.decode()

    async def all_closed() -> bool:
        return all(nc.is_closed for nc in conns)

    await wait_for(all_closed, 5, "both connections closed")
    for path in (first, second):  # (connect_as closes what a refused connect leaves open)
        with pytest.raises(FleetwardError, match="refused the credentials"):
            await connect_as(rt.nats_url, path, "agent-r", allow_reconnect=False,
                             max_reconnect_attempts=0, connect_timeout=2)  # fmt: skip
    assert msgspec.json.encode(sorted(closed))  # the callbacks ran (both closed by the server)
