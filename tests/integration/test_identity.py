"""Identity with authentication on (issue #13, DESIGN 3.7): credentials per agent, person and
service; a credential publishes only on subjects that carry its own identity, reads only its
own inbox; a revoked credential is cut off at once and cannot sign in again."""

from __future__ import annotations

import contextlib
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient

from fleetward.schemas.events import AgentRegistered, Heartbeat, TaskCreated
from fleetward.schemas.grants import inbox_prefix
from fleetward.schemas.streams import COMMANDS_STREAM, EVENTS_STREAM, HEARTBEATS_STREAM
from fleetward.services.auth import jwt
from fleetward.services.auth.store import AuthStore
from fleetward.services.client import AgentClient, FleetClient
from fleetward.services.errors import FleetwardError
from fleetward.services.jetstream.publish import encode
from fleetward.services.runtime.connect import Runtime, connect_nats
from tests.helpers import agent, creds, envelope, person, project_all, task_api, wait_for

ROOT = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "fleetward.services.cli")


class Violations:
    """A raw connection as ``identity`` that records the server's permission violations."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    async def connect(self, rt: Runtime, identity: str) -> NatsClient:
        async def record(exc: Exception) -> None:
            self.errors.append(str(exc))

        return await nats.connect(
            rt.nats_url,
            user_credentials=str(creds(rt, identity)),
            inbox_prefix=inbox_prefix(identity),
            error_cb=record,
            allow_reconnect=False,
        )

    async def seen(self, subject: str) -> bool:
        """The server reported a permissions violation naming ``subject`` (within 5 s)."""

        async def reported() -> bool:
            return any(subject.lower() in e.lower() for e in self.errors)

        with anyio.move_on_after(5):
            await wait_for(reported, 5, f"a violation naming {subject}")
        return await reported()


async def last_seqs(rt: Runtime) -> tuple[int, ...]:
    streams = (EVENTS_STREAM, HEARTBEATS_STREAM, COMMANDS_STREAM)
    return tuple([(await rt.js.stream_info(s)).state.last_seq for s in streams])


async def test_an_agent_cannot_publish_as_another_agent_a_person_or_a_service(
    rt: Runtime,
) -> None:
    """Holds: agent A's credentials publish on A's own subjects only; every subject naming
    another agent, a person or a service is refused by the server (a permissions violation),
    and nothing is stored."""
    watch = Violations()
    nc = await watch.connect(rt, "agent-a")
    js = nc.jetstream(timeout=1)
    forged = {
        "fw.agent.agent-b.agent-b": AgentRegistered(
            **envelope("agent-b"), agent="agent-b", name="b", owner="o", team="t"
        ),
        "fw.hb.agent-b": Heartbeat(**envelope("agent-b"), agent="agent-b"),
        "fw.task.t-1.agent-b": TaskCreated(
            **envelope("agent-b"), task="t-1", project="p", title="x"
        ),
        "fw.task.t-1.user:ceo": TaskCreated(
            **envelope("user:ceo"), task="t-1", project="p", title="x"
        ),
        "fw.task.t-1.svc:watchdog": TaskCreated(
            **envelope("svc:watchdog"), task="t-1", project="p", title="x"
        ),
        "fw.agent.agent-b.svc:watchdog": AgentRegistered(
            **envelope("svc:watchdog"), agent="agent-b", name="b", owner="o", team="t"
        ),
        "fw.cmd.agent-b.svc:board": Heartbeat(**envelope("svc:board"), agent="agent-b"),
        "fw.budget.b-1.user:cfo": Heartbeat(**envelope("user:cfo"), agent="agent-a"),
        "fw.task.t-1": TaskCreated(**envelope("agent-a"), task="t-1", project="p", title="x", v=1),
    }
    before = await last_seqs(rt)
    try:
        for subject, event in forged.items():
            with pytest.raises(nats.errors.TimeoutError):
                await js.publish(subject, encode(event), timeout=0.5)
            assert await watch.seen(subject), (subject, watch.errors)
        # its own subject is fine (proving the connection worked all along)
        mine = AgentRegistered(
            **envelope("agent-a"), agent="agent-a", name="a", owner="o", team="t"
        )
        await js.publish("fw.agent.agent-a.agent-a", encode(mine), timeout=5)
    finally:
        await nc.close()
    after = await last_seqs(rt)
    assert after == (before[0] + 1, before[1], before[2])


async def test_an_agent_cannot_read_another_agents_inbox(rt: Runtime) -> None:
    """Holds: B's inbox consumer, B's commands and B's replies are out of A's reach: consumer
    info, pulls, creating a consumer on B's commands (or on all commands), subscribing to B's
    command subjects or B's reply inbox, and direct gets on FW_COMMANDS are all refused."""
    b = await agent(rt, "agent-b")  # its inbox exists now
    ops = await FleetClient.connect(rt.nats_url, creds(rt, "user:ops"))
    await project_all(rt)
    async with task_api(rt):
        await ops.pause_agent("agent-b", "a secret")
    await project_all(rt)  # the registry's pause command reaches B's inbox
    watch = Violations()
    nc = await watch.connect(rt, "agent-a")
    try:
        inbox = f"{COMMANDS_STREAM}.inbox_agent-b"
        config = {"durable_name": "inbox_agent-a", "filter_subject": "fw.cmd.agent-b.>"}
        attempts: list[tuple[str, bytes]] = [
            (f"$JS.API.CONSUMER.INFO.{inbox}", b""),
            (f"$JS.API.CONSUMER.MSG.NEXT.{inbox}", b'{"batch":1,"expires":500000000}'),
            (
                f"$JS.API.CONSUMER.CREATE.{COMMANDS_STREAM}.inbox_agent-a.fw.cmd.agent-b.>",
                msgspec.json.encode({"stream_name": COMMANDS_STREAM, "config": config}),
            ),
            (f"$JS.API.CONSUMER.DURABLE.CREATE.{COMMANDS_STREAM}.spy", b"{}"),
            (f"$JS.API.CONSUMER.CREATE.{COMMANDS_STREAM}", b"{}"),
            (f"$JS.API.DIRECT.GET.{COMMANDS_STREAM}", b'{"seq":1}'),
            (f"$JS.API.STREAM.MSG.GET.{COMMANDS_STREAM}", b'{"seq":1}'),
        ]
        for subject, payload in attempts:
            with pytest.raises(nats.errors.TimeoutError):
                await nc.request(subject, payload, timeout=0.5)
            assert await watch.seen(subject), (subject, watch.errors)
        for spied in ("fw.cmd.agent-b.>", "fw.cmd.>", f"{inbox_prefix('agent-b')}.>", ">"):
            await nc.subscribe(spied)
            assert await watch.seen(f'subscription to "{spied}"'), (spied, watch.errors)
    finally:
        await nc.close()
        await ops.close()
    # B still reads its own command
    command = await b.next_command(wait=5)
    assert command is not None and command.command == "pause"
    await b.close()


async def test_a_revoked_agent_is_cut_off_within_5s_and_cannot_sign_in_again(
    rt: Runtime, env: dict[str, str]
) -> None:
    """Holds: ``fleetward agents revoke ID`` closes the agent's open connection at once (its
    next publish fails within 5 s) and its credentials are refused from then on; other agents
    go on."""
    doomed = await agent(rt, "doomed")
    bystander = await agent(rt, "bystander")
    await doomed.heartbeat()
    kept = Path(rt.settings.home) / "doomed-kept.creds"  # what the agent holds
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_bytes(creds(rt, "doomed").read_bytes())
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [*CLI, "agents", "revoke", "doomed"], cwd=ROOT, env=env, check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    assert "revoked doomed" in done.stdout.decode()
    revoked_at = time.monotonic()

    async def cut_off() -> bool:
        try:
            await doomed.heartbeat()
        except Exception:  # any failure: the connection is gone
            return True
        return False

    await wait_for(cut_off, 5, "the revoked agent's publish to fail")
    assert time.monotonic() - revoked_at < 5
    with pytest.raises(FleetwardError, match="refused the credentials"):
        await AgentClient.connect(rt.nats_url, kept)  # the same credentials
    await bystander.heartbeat()  # others go on
    await bystander.close()
    # new credentials can be issued again on purpose (a new key): they work
    fresh = AuthStore(rt.settings.auth_dir).issue("doomed")
    again = await AgentClient.connect(rt.nats_url, fresh)
    await again.heartbeat()
    await again.close()
    with pytest.raises(Exception):  # noqa: B017  # closed by the server already
        await doomed.close()


async def test_an_expired_credential_is_cut_off_and_refused_at_sign_in(
    rt: Runtime, env: dict[str, str]
) -> None:
    """Holds: ``fleetward agents credentials ID --expires S`` and ``fleetward people add NAME
    --expires S`` issue credentials that carry their expiry and work until then; once it has
    passed, the server closes the agent's open connection and refuses both at sign-in."""
    store = AuthStore(rt.settings.auth_dir)
    issued = {"agent": store.creds_path("brief"), "person": store.creds_path("user:temp")}
    expires_s = 4  # long enough for two CLI runs on a busy machine, short to wait out

    async def cli(*args: str) -> None:
        with anyio.fail_after(60):
            done = await anyio.run_process([*CLI, *args], cwd=ROOT, env=env, check=False)
        assert done.returncode == 0, done.stderr.decode()
        assert "they expire" in done.stdout.decode()

    async with anyio.create_task_group() as tg:
        tg.start_soon(cli, "agents", "credentials", "brief", "--expires", str(expires_s))
        tg.start_soon(cli, "people", "add", "temp", "--expires", str(expires_s))
    expiry = {k: jwt.claims(jwt.creds_jwt(p.read_text()))["exp"] for k, p in issued.items()}
    for exp in expiry.values():
        assert time.time() < exp <= time.time() + expires_s + 1
    brief = await AgentClient.connect(rt.nats_url, issued["agent"])
    await brief.heartbeat()  # valid until then
    temp = await FleetClient.connect(rt.nats_url, issued["person"])
    await temp.close()

    async def cut_off() -> bool:
        try:
            await brief.heartbeat()
        except Exception:  # any failure: the connection is gone
            return True
        return False

    await wait_for(cut_off, max(expiry.values()) - time.time() + 5, "the expired agent cut off")
    assert time.time() >= expiry["agent"]
    with contextlib.suppress(Exception):  # it was trying to reconnect, refused each time
        await brief.close()
    # the server compares whole seconds (expired once its clock's second is past ``exp``)
    await anyio.sleep(max(0.0, max(expiry.values()) + 1.1 - time.time()))
    with pytest.raises(FleetwardError, match="refused the credentials"):
        await AgentClient.connect(rt.nats_url, issued["agent"])
    with pytest.raises(FleetwardError, match="refused the credentials"):
        await FleetClient.connect(rt.nats_url, issued["person"])


async def test_each_service_may_publish_only_as_itself(rt: Runtime) -> None:
    """Holds: the watchdog's credentials cannot publish the board's verdicts or a person's
    events; the projector's cannot publish as the watchdog; the task API's publish no event."""
    cases = {
        "svc:watchdog": ("fw.task.t-1.svc:board", "fw.agent.a-1.user:ops", "fw.hb.a-1"),
        "svc:projector": ("fw.esc.e-1.svc:watchdog", "fw.task.t-1.a-1"),
        "svc:api": ("fw.task.t-1.svc:api", "fw.agent.a-1.svc:api"),
    }
    for identity, subjects in cases.items():
        watch = Violations()
        nc = await watch.connect(rt, identity)
        try:
            for subject in subjects:
                await nc.publish(subject, b"{}")
                assert await watch.seen(subject), (identity, subject, watch.errors)
        finally:
            await nc.close()


async def test_the_cli_acts_as_the_holder_of_its_credentials(
    rt: Runtime, env: dict[str, str]
) -> None:
    """Holds: the CLI publishes as the person whose credentials it holds (FLEETWARD_CREDS or
    --creds); FLEETWARD_USER decides nothing; a file that is no credential is one line, exit 2."""
    alice = person(env, "alice")
    bob = person(env, "bob")

    cli = partial(run_cli, env)

    done = await cli("tasks", "create", "by-alice", "--project", "p", "--title", "t",
                     FLEETWARD_CREDS=str(alice), FLEETWARD_USER="ceo")  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    done = await cli("--creds", str(bob), "tasks", "create", "by-bob", "--project", "p",
                     "--title", "t", FLEETWARD_CREDS=str(alice))  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    await project_all(rt)
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT task_id AS task, created_by FROM fleet.tasks "
            "WHERE task_id IN ('by-alice', 'by-bob') ORDER BY task_id"
        )
    assert [(r["task"], r["created_by"]) for r in rows] == [
        ("by-alice", "user:alice"),
        ("by-bob", "user:bob"),
    ]
    not_creds = Path(rt.settings.home) / "not.creds"
    not_creds.parent.mkdir(parents=True, exist_ok=True)
    not_creds.write_text("hello")
    done = await cli("tasks", "create", "x", "--project", "p", "--title", "t",
                     FLEETWARD_CREDS=str(not_creds))  # fmt: skip
    err = done.stderr.decode()
    assert done.returncode == 2 and err.count("\n") == 1, err
    assert "not a Fleetward credentials file" in err


async def test_the_cli_refuses_at_once_what_it_cannot_do_with_the_credentials_given(
    rt: Runtime, env: dict[str, str]
) -> None:
    """An agent's credentials are one line and exit 2 (not a timeout on the stream's state);
    ``agents credentials`` and ``agents revoke`` take agent ids only (not a person's or a
    service's); ``people add --role`` run with a person's credentials on the keys' machine
    grants as the signing keys' holder, not as that person (which the server would refuse)."""
    bob = person(env, "bob")
    agent_creds = creds(rt, "agent-q")

    cli = partial(run_cli, env)

    done = await cli("tasks", "create", "x", "--project", "p", "--title", "t",
                     FLEETWARD_CREDS=str(agent_creds))  # fmt: skip
    err = done.stderr.decode()
    assert done.returncode == 2 and err.count("\n") == 1, err
    assert "credentials of agent agent-q" in err
    for action in ("credentials", "revoke"):
        for who in ("user:mallory", "svc:projector"):
            done = await cli("agents", action, who)
            err = done.stderr.decode()
            assert done.returncode == 2 and "is not an agent id" in err, (action, who, err)
    done = await cli("people", "add", "eve", "--role", "operator", FLEETWARD_CREDS=str(bob))
    assert done.returncode == 0, done.stderr.decode()
    await project_all(rt)
    granted = await row_of(rt, "SELECT held FROM fleet.roles WHERE person = 'eve'")
    assert granted is not None and granted["held"]


async def run_cli(env: dict[str, str], *args: str, **extra: str) -> Any:
    """``fleetward ARGS`` in ``env`` plus ``extra``: the finished process."""
    with anyio.fail_after(60):
        return await anyio.run_process([*CLI, *args], cwd=ROOT, env=env | extra, check=False)


async def row_of(rt: Runtime, sql: str) -> Any:
    async with rt.pool.acquire() as conn:
        return await conn.fetchrow(sql)


async def test_connecting_without_credentials_is_refused(rt: Runtime) -> None:
    """Holds: nothing connects without credentials, and credentials of other signing keys are
    refused with one line naming the file."""
    bare = NatsClient()
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await bare.connect(rt.nats_url, allow_reconnect=False, max_reconnect_attempts=0)
    await bare.close()  # what a refused connect leaves open
    stranger = AuthStore(Path(rt.settings.home) / "other-keys").init().issue("user:mallory")
    with pytest.raises(FleetwardError, match="refused the credentials"):
        await connect_nats(rt.nats_url, creds=stranger, reconnect=False)
