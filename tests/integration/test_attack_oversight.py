"""Attacks on human oversight (issue 15) as a hostile agent in another language would make them:
raw NATS publishes with its own credentials only (``rt``, the harness, sets the scene and reads
the results). Approving its own request, forging a person's or the watchdog's decision,
deciding or squatting another agent's request, flooding a request's subjects, a tool call
naming another agent's approval, policies with the largest lists, deadlines at their bounds,
exporting the audit log without the role, and export files made to break the verifier."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from fleetward.schemas.bounds import MAX_LISTED, MAX_WAIT_S, MIN_PERIOD_S
from fleetward.schemas.events import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ToolCalled,
)
from fleetward.schemas.ids import policy_id
from fleetward.services.audit import chain
from fleetward.services.audit.export import Filters
from fleetward.services.audit.verify import NotVerified, check_file, check_live
from fleetward.services.client import FleetClient, IntentRefused
from fleetward.services.client.approvals import Approval
from fleetward.services.jetstream.publish import encode, publish
from fleetward.services.runtime.connect import Runtime
from tests.helpers import agent, creds, envelope, project_all, task_api
from tests.integration.test_attack_identity import Attacker
from tests.integration.test_audit import export_to, lines

ROOT = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "fleetward.services.cli")


async def _dead_letters(rt: Runtime) -> list[tuple[str, str]]:
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT subject, reason FROM fleet.dead_letters WHERE projection = 'approvals' "
            "ORDER BY seq"
        )
    return [(r["subject"], r["reason"]) for r in rows]


async def _approval(rt: Runtime, approval: str) -> dict[str, Any]:
    async with rt.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM fleet.approvals WHERE approval_id = $1", approval)
    assert row is not None, approval
    return dict(row)


async def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    with anyio.fail_after(60):
        done = await anyio.run_process([*CLI, *args], cwd=ROOT, env=env, check=False)
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def _request(agent_id: str, approval: str, **fields: Any) -> ApprovalRequested:
    return ApprovalRequested(**envelope(agent_id), approval=approval, agent=agent_id,
                             kind="tool_call", name=fields.pop("name", "payments.send"),
                             **fields)  # fmt: skip


async def test_a_hostile_agent_cannot_decide_forge_or_squat_a_request(
    rt: Runtime, ops: FleetClient
) -> None:
    victim = await agent(rt, "victim")
    hostile = await agent(rt, "hostile", roles=("approver",))  # a role agents cannot use
    try:
        await victim.send(_request("victim", "req-v"))
        async with Attacker(rt, "hostile") as h, Attacker(rt, "victim") as v:
            hjs, vjs = h.nc.jetstream(timeout=2), v.nc.jetstream(timeout=2)
            stored = [
                # deciding another agent's request, as itself
                ("fw.approval.req-v.hostile", ApprovalGranted(
                    **envelope("hostile"), approval="req-v", agent="victim")),
                # a person's decision, forged in the payload
                ("fw.approval.req-v.hostile", ApprovalGranted(
                    **envelope("user:ops"), approval="req-v", agent="victim")),
                # the watchdog's expiry, forged in the payload
                ("fw.approval.req-v.hostile", ApprovalDenied(
                    **envelope("svc:watchdog"), approval="req-v", agent="victim", expired=True)),
                # squatting the request's id
                ("fw.approval.req-v.hostile", _request("hostile", "req-v")),
            ]  # fmt: skip
            for subject, event in stored:
                await hjs.publish(subject, encode(event))
            await hjs.publish("fw.approval.req-v.hostile", b"\xff junk")
            # the victim approving its own request
            own = ApprovalGranted(**envelope("victim"), approval="req-v", agent="victim")
            await vjs.publish("fw.approval.req-v.victim", encode(own))
            # on the subjects of a person or the watchdog: refused by the server
            for actor in ("user:ops", "svc:watchdog"):
                forged = ApprovalGranted(**envelope(actor), approval="req-v", agent="victim")
                await h.nc.publish(f"fw.approval.req-v.{actor}", encode(forged))
                assert await h.violated(f"fw.approval.req-v.{actor}")
        await project_all(rt)
        row = await _approval(rt, "req-v")
        assert (row["agent_id"], row["state"]) == ("victim", "open")
        dead = await _dead_letters(rt)
        assert len(dead) == 6, dead
        assert {r for s, r in dead if s.endswith(".victim")} == {"actor_forbidden"}
        assert all(r != "projection_error" for _, r in dead), dead
        # a person with the role still decides it, and the victim's client hears of it
        await ops.decide("req-v", grant=True, reason="ok")
        await project_all(rt)
        assert (await _approval(rt, "req-v"))["decided_by"] == "user:ops"
        decided = await victim.decision("req-v", wait_s=10)
        assert isinstance(decided, Approval) and decided.by == "user:ops"
    finally:
        await victim.close()
        await hostile.close()


@pytest.mark.xfail(strict=True, reason="open: agents may publish on any request's subjects")
async def test_a_flood_on_a_request_does_not_stop_its_decision(
    rt: Runtime, ops: FleetClient
) -> None:
    """A weakness that works today. An agent may publish on ``fw.approval.<any id>.<itself>``
    (NATS grants cannot tie a token to its owner), so a hostile agent can store junk on another
    agent's request as fast as the server takes it (thousands a second). Every reader of the
    request (``read_gate``: the person's decision, the watchdog's expiry, the agent's fallback)
    reads every message on its subjects, one message get each, and a decision is
    compare-and-set over those subjects: the read never catches up and the compare-and-set
    never holds, so no one can decide the request while the flood lasts (it fails visibly:
    the person's client gives up, the watchdog logs a failed plan). The projector dead-letters
    each junk message. Fixing it takes a contract change: decisions on subjects agents cannot
    publish on (see the issue's report)."""
    await publish(rt.js, _request("victim", "req-f"))
    published = 0
    async with Attacker(rt, "hostile") as h, anyio.create_task_group() as tg:
        hjs = h.nc.jetstream(timeout=2)

        flooding = anyio.Event()

        async def flood() -> None:
            nonlocal published
            with contextlib.suppress(Exception):
                while True:
                    await hjs.publish("fw.approval.req-f.hostile", b'{"type":"junk"}')
                    published += 1
                    if published >= 200:
                        flooding.set()

        for _ in range(4):
            tg.start_soon(flood)
        await flooding.wait()
        try:
            with anyio.fail_after(10):
                decided = await ops.decide("req-f", grant=False, reason="no")
        finally:
            tg.cancel_scope.cancel()
    assert isinstance(decided, ApprovalDenied)


async def test_a_tool_call_naming_another_agents_approval_is_a_violation(
    rt: Runtime, ops: FleetClient
) -> None:
    async with task_api(rt):
        owner, thief = await agent(rt, "owner"), await agent(rt, "thief")
        try:
            await ops.set_policy("team", "t", approve=("payments.send",))
            await owner.send(_request("owner", "req-o"))
            await ops.decide("req-o", grant=True)
            await project_all(rt)
            async with Attacker(rt, "thief") as t:
                call = ToolCalled(**envelope("thief"), agent="thief", tool="payments.send",
                                  duration_ms=1.0, ok=True, approval="req-o")  # fmt: skip
                await t.nc.jetstream(timeout=2).publish("fw.agent.thief.thief", encode(call))
            await project_all(rt)
            async with rt.pool.acquire() as conn:
                v = await conn.fetch("SELECT agent_id, kind, detail FROM fleet.policy_violations")
            assert [(r["agent_id"], r["kind"]) for r in v] == [("thief", "unapproved")]
            assert "not one of thief's requests" in v[0]["detail"]
            assert (await _approval(rt, "req-o"))["used_by"] is None  # still the owner's to use
            own = ToolCalled(**envelope("owner"), agent="owner", tool="payments.send",
                             duration_ms=1.0, ok=True, approval="req-o")  # fmt: skip
            await owner.send(own)
            await project_all(rt)
            assert (await _approval(rt, "req-o"))["used_by"] == own.id
            async with rt.pool.acquire() as conn:
                assert await conn.fetchval("SELECT count(*) FROM fleet.policy_violations") == 1
        finally:
            await owner.close()
            await thief.close()


async def test_policies_with_the_largest_lists_apply_and_one_more_is_refused(
    rt: Runtime, ops: FleetClient, env: dict[str, str]
) -> None:
    def tools(prefix: str, n: int = MAX_LISTED, pad: str = "x") -> tuple[str, ...]:
        return tuple(f"{prefix}{i:04d}".ljust(200, pad) for i in range(n))  # 200 characters

    # every list full, every name as long as allowed, in two-byte characters: past the
    # largest event (256 KiB), refused at once, nothing published
    with pytest.raises(IntentRefused, match="oversized"):
        await ops.set_policy("agent", "big", allow=tools("a", pad="é"), deny=tools("d", pad="é"),
                             approve=tools("p", pad="é"))  # fmt: skip
    event, version = await ops.set_policy(
        "agent", "big", allow=tools("a"), deny=tools("d"), approve=tools("p"), max_cost_usd=0.0
    )
    assert version == 1 and len(encode(event)) > 150_000
    with pytest.raises(IntentRefused):
        await ops.set_policy("agent", "big", deny=tools("d", MAX_LISTED + 1))
    too_long = ("x" * 201,)
    with pytest.raises(IntentRefused):
        await ops.set_policy("agent", "big", deny=too_long)
    # the same, published raw by a person with the role: stored, refused by every reader
    over = msgspec.structs.replace(event, id=envelope("user:ops")["id"],
                                   deny=tools("d", MAX_LISTED + 1))  # fmt: skip
    await publish(rt.js, over)
    await project_all(rt)
    async with rt.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT version, deny FROM fleet.policies WHERE policy_id = $1",
                                  policy_id("agent", "big"))  # fmt: skip
        dead = await conn.fetch("SELECT reason FROM fleet.dead_letters WHERE subject LIKE "
                                "'fw.policy.%'")  # fmt: skip
    assert row is not None and (row["version"], len(row["deny"])) == (1, MAX_LISTED)
    assert [r["reason"] for r in dead] == ["invalid"]
    shown = await _cli(env, "policies", "show")
    assert shown.returncode == 0 and "agent big" in shown.stdout, shown.stderr


async def test_deadlines_at_their_bounds(rt: Runtime, ops: FleetClient) -> None:
    a = await agent(rt, "bounds")
    try:
        longest = _request("bounds", "req-long", escalate_after_s=MAX_WAIT_S,
                           expire_after_s=MAX_WAIT_S)  # fmt: skip
        shortest = _request("bounds", "req-short", escalate_after_s=MIN_PERIOD_S,
                            expire_after_s=MIN_PERIOD_S)  # fmt: skip
        backwards = _request("bounds", "req-back", escalate_after_s=60.0, expire_after_s=1.0)
        for event in (longest, shortest, backwards):
            await a.send(event)
        for wait in (MAX_WAIT_S * 2, MIN_PERIOD_S / 2, float("inf")):
            with pytest.raises((IntentRefused, OverflowError, ValueError)):
                await a.approval(kind="action", name="x", escalate_after_s=wait, wait_s=1)
        # past the bound, raw: refused by every reader
        raw = encode(longest).replace(b'"escalate_after_s":2592000.0', b'"escalate_after_s":1e9')
        assert raw != encode(longest)
        async with Attacker(rt, "bounds") as b:
            await b.nc.jetstream(timeout=2).publish(
                "fw.approval.req-over.bounds", raw.replace(b"req-long", b"req-over")
            )
        await project_all(rt)
        long_row = await _approval(rt, "req-long")
        assert long_row["expires_at"] - long_row["requested_at"] == timedelta(days=30)
        back = await _approval(rt, "req-back")
        assert back["expires_at"] == back["deadline_at"]  # the second never before the first
        async with rt.pool.acquire() as conn:
            over = await conn.fetchval("SELECT count(*) FROM fleet.approvals "
                                       "WHERE approval_id = 'req-over'")  # fmt: skip
        assert over == 0
        assert ("fw.approval.req-over.bounds", "invalid") in await _dead_letters(rt)
        await ops.decide("req-long", grant=True)
    finally:
        await a.close()


async def test_an_agent_cannot_export_the_audit_log(rt: Runtime, env: dict[str, str]) -> None:
    await agent(rt, "reader")
    done = await _cli(env, "--creds", str(creds(rt, "reader")), "audit", "export")
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "holds the credentials of agent reader" in done.stderr, done.stderr


def _rehash(out: list[bytes]) -> bytes:
    """The lines of a JSON file with every line hash recomputed (anyone can)."""
    prev, fixed = chain.FILE_GENESIS, []
    for line in out:
        body, _ = chain.split_json(line.rstrip(b"\n"))
        new, prev = chain.seal_json(body, prev)
        fixed.append(new)
    return b"".join(fixed)


async def test_hostile_payloads_export_and_verify_and_hostile_files_fail_at_their_line(
    rt: Runtime, tmp_path: Path
) -> None:
    """An agent may store anything on its own subject (refused, kept: the audit log holds it):
    a payload nested too deep for any decoder and one far past the csv module's field limit
    still export, in each format, and verify. A file rewritten with its hashes recomputed
    around a line made to break the verifier fails at that line, as any bad line does."""
    deep = b'{"type":"tool.called","agent":"hostile","x":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    big = b'{"type":"tool.called","note":"' + b"z" * 400_000 + b'"}'
    async with Attacker(rt, "hostile") as h:
        hjs = h.nc.jetstream(timeout=5)
        for data in (deep, big, b"[" * 100_000):
            await hjs.publish("fw.agent.hostile.hostile", data)
    for fmt in chain.FORMATS:
        path = tmp_path / f"audit.{fmt}"
        header = await export_to(rt, path, fmt=fmt)
        assert check_file(path).records == header.to_seq
        await check_live(rt, path, header)
    original = lines(tmp_path / "audit.jsonl")
    record = json.loads(original[-2])  # the last record: the deep list
    for broken in (
        b'{"seq":' + b"[" * 50_000 + b"]" * 50_000 + b"}",  # nested too deep to decode
        json.dumps({**record, "time": "9" * 5000 + "Z"}).encode(),
        json.dumps({**record, "data": None, "data_b64": "!!"}).encode(),
    ):
        forged = [*original[:-2], broken[:-1] + b',"hash":"' + b"0" * 64 + b'"}\n', original[-1]]
        bad = tmp_path / "bad.jsonl"
        bad.write_bytes(_rehash(forged))
        with pytest.raises(NotVerified) as failed:
            check_file(bad)
        assert failed.value.line == len(original) - 1, str(failed.value)
    # a filtered file's chain values are only checked as sha256 values: one not hex fails
    filtered = tmp_path / "filtered.jsonl"
    await export_to(rt, filtered, filters=Filters(agents=frozenset({"hostile"})))
    kept = lines(filtered)
    rec = json.loads(kept[1])
    rec["chain"] = "z" * 64
    kept[1] = json.dumps(rec).encode()[:-1] + b',"hash":"' + b"0" * 64 + b'"}\n'
    filtered.write_bytes(_rehash(kept))
    with pytest.raises(NotVerified) as failed:
        check_file(filtered)
    assert failed.value.line == 2 and "not a sha256" in str(failed.value)
