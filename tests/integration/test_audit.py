"""The audit trail you can verify (issue 15, parts 3 and 4), against real servers: an export of
100,000 events verifies, alone and against the stream, and one flipped byte, one dropped line
or two swapped lines fail it at that line; export order is stream order; filters; a record
forged consistently (hashes recomputed) is caught against the stream; seals, once per period
however many auditors run, agree with exported files; who may export; FW_EVENTS keeps six
months and denies deletes and purges."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.js.errors import APIError

from fleetward.schemas.events import AgentRegistered, AuditSealed, RoleGranted, ToolCalled
from fleetward.schemas.roles import ROLE_AUTHORITY
from fleetward.schemas.streams import DAY, EVENTS_STREAM
from fleetward.schemas.subjects import subject_of
from fleetward.services.audit import chain
from fleetward.services.audit.export import Filters, export
from fleetward.services.audit.sealer import Auditor
from fleetward.services.audit.verify import NotVerified, check_file, check_live
from fleetward.services.jetstream.publish import encode, publish_many
from fleetward.services.runtime.connect import Runtime, acting_as
from tests.helpers import envelope, person, project_all, wait_for

AT = "2025-03-14T09:27:03.589Z"


async def bulk(rt: Runtime, items: list[tuple[str, bytes]], window: int = 5_000) -> None:
    """Publish fast: core publishes with one reply inbox for the acks, ``window`` in flight."""
    acked, more = 0, asyncio.Event()

    async def on_ack(_msg: Any) -> None:
        nonlocal acked
        acked += 1
        more.set()

    inbox = rt.nc.new_inbox()
    sub = await rt.nc.subscribe(inbox, cb=on_ack, pending_msgs_limit=4 * window)
    for sent, (subj, data) in enumerate(items, 1):
        while sent - acked > window:
            more.clear()
            await asyncio.wait_for(more.wait(), 30)
        await rt.nc.publish(subj, data, reply=inbox)
    while acked < len(items):
        more.clear()
        await asyncio.wait_for(more.wait(), 30)
    await sub.unsubscribe()


def tool_calls(n: int, agents: int = 50) -> list[tuple[str, bytes]]:
    """``n`` tool calls of ``agents`` agents, with a not-JSON message every 10,000 (stored
    and exported too)."""
    out = []
    for i in range(n):
        a = f"a-{i % agents}"
        if i % 10_000 == 9_999:
            out.append((f"fw.agent.{a}.{a}", b"\xff not json"))
            continue
        data = (b'{"type":"tool.called","id":"id-%d","actor":"%s","at":"%s","agent":"%s",'
                b'"tool":"web.search","duration_ms":12.5,"ok":true}'
                % (i, a.encode(), AT.encode(), a.encode()))  # fmt: skip
        out.append((f"fw.agent.{a}.{a}", data))
    return out


async def export_to(rt: Runtime, path: Path, **options: Any) -> chain.Header:
    with path.open("wb") as out:
        await export(rt, out, **options)
    return check_file(path).header


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def fails_at(path: Path, changed: list[bytes]) -> int:
    path.write_bytes(b"".join(changed))
    with pytest.raises(NotVerified) as failed:
        check_file(path)
    return failed.value.line


@pytest.mark.slow
async def test_an_export_of_100k_events_verifies_and_any_change_fails_at_its_line(
    rt: Runtime, tmp_path: Path
) -> None:
    before = (await rt.js.stream_info(EVENTS_STREAM)).state.last_seq  # the test's admins
    n = 100_000
    await bulk(rt, tool_calls(n))
    good = tmp_path / "audit.jsonl"
    header = await export_to(rt, good)
    verdict = check_file(good)
    assert (verdict.records, header.from_seq, header.to_seq) == (before + n, 1, before + n)
    live = await check_live(rt, good, header)
    assert live.messages == before + n
    original = lines(good)
    # export order is stream order: line s + 1 holds seq s (line 1 is the header)
    seqs = [msgspec.json.decode(line, type=chain.Record).seq for line in original[1:-1]]
    assert seqs == list(range(1, before + n + 1))
    refused = msgspec.json.decode(original[before + 10_000], type=chain.Record)
    assert (refused.seq, refused.data) == (before + 10_000, None)
    assert refused.data_b64 == "/yBub3QganNvbg=="

    bad = tmp_path / "bad.jsonl"
    last = before + n + 1  # the last record's line
    for at in (before + 2, 5_000, 77_777, last):
        flipped = list(original)
        line = bytearray(flipped[at - 1])
        line[len(line) // 2] ^= 0x01
        flipped[at - 1] = bytes(line)
        assert fails_at(bad, flipped) == at, "flipped byte"
        assert fails_at(bad, original[: at - 1] + original[at:]) == at, "dropped line"
        swapped = list(original)
        swapped[at - 1], swapped[at] = swapped[at], swapped[at - 1]
        assert fails_at(bad, swapped) == at, "swapped lines"
    assert fails_at(bad, original[:-1]) == last + 1  # cut short: the end line is missing
    assert fails_at(bad, original[1:]) == 1  # no header


async def test_filters_keep_only_what_they_name_and_the_file_still_verifies(
    rt: Runtime, tmp_path: Path
) -> None:
    teams = {"a-1": "red", "a-2": "red", "a-3": "blue"}
    await publish_many(rt.js, [
        AgentRegistered(**envelope(a), agent=a, name=a, owner="o", team=t)
        for a, t in teams.items()
    ])  # fmt: skip
    calls = [
        ToolCalled(**envelope(a), agent=a, tool="t", duration_ms=1.0, ok=True)
        for a in ("a-1", "a-2", "a-3", "a-1")
    ]
    await publish_many(rt.js, calls)
    await project_all(rt)  # the registry knows the teams

    async def kept(**filters: frozenset[str]) -> list[tuple[int, str | None, str | None]]:
        path = tmp_path / "f.jsonl"
        header = await export_to(rt, path, filters=Filters(**filters))
        await check_live(rt, path, header)
        recs = [r for line in lines(path)[1:-1]
                if isinstance(r := chain.decode_record("jsonl", chain.split_json(
                    line.rstrip(b"\n"))[0]), chain.Record)]  # fmt: skip
        return [(r.seq, r.actor, r.type) for r in recs]

    everything = await kept()
    assert [s for s, _, _ in everything] == sorted(s for s, _, _ in everything)
    assert {a for _, a, _ in await kept(agents=frozenset({"a-1"}))} == {"a-1"}
    assert {a for _, a, _ in await kept(teams=frozenset({"red"}))} == {"a-1", "a-2"}
    assert {t for _, _, t in await kept(types=frozenset({"tool.called"}))} == {"tool.called"}
    assert len(await kept(types=frozenset({"tool.called"}), actors=frozenset({"a-1"}))) == 2
    admins = await kept(actors=frozenset({ROLE_AUTHORITY}))
    assert admins and {t for _, _, t in admins} == {"role.granted"}


async def test_a_consistently_forged_record_passes_alone_and_fails_against_the_stream(
    rt: Runtime, tmp_path: Path
) -> None:
    await bulk(rt, tool_calls(50))
    path = tmp_path / "a.jsonl"
    header = await export_to(rt, path)
    original = lines(path)
    # forge line 20: another tool, every hash and chain after it recomputed
    writer, head = chain.Writer("jsonl"), bytes.fromhex(header.anchor.chain)
    out = [writer.header(header)]
    for line in original[1:-1]:
        rec = msgspec.json.decode(chain.split_json(line.rstrip(b"\n"))[0], type=chain.Record)
        data = rec.payload()
        if len(out) == 19:
            data = data.replace(b"web.search", b"web.fetch!")
        head = chain.step(head, rec.seq, rec.time, rec.subject, data)
        out.append(writer.record(chain.record(rec.seq, rec.time, rec.subject, data, head)))
    end = chain.End(end=True, records=len(out) - 1, to_seq=header.to_seq, head=head.hex())
    out.append(writer.end(end))
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(b"".join(out))
    check_file(forged)  # anyone can recompute a hash chain: alone, it passes
    with pytest.raises(NotVerified) as failed:
        await check_live(rt, forged, header)
    assert failed.value.line == 20
    assert "differs from the message the stream stores at seq 19" in str(failed.value)


async def test_seals_once_per_period_and_files_check_against_them(
    rt: Runtime, tmp_path: Path
) -> None:
    now = [1_000_000.0]
    await bulk(rt, tool_calls(300))
    async with acting_as(rt, chain.SEALER) as art:
        one, two = (
            Auditor(art, 60.0, clock=lambda: now[0]),
            Auditor(art, 60.0, clock=lambda: now[0]),
        )
        await one.start()
        await two.start()
        assert await one.seal()
        assert not await two.seal() or two.last_seal == one.last_seal  # one seal for the period
        assert not two.due()
        await bulk(rt, tool_calls(200))
        now[0] += 60.0  # the next period
        await one.catch_up()
        await two.catch_up()
        assert one.due() and await one.seal()
        await two.catch_up()
        assert not two.due() or not await two.seal()
        three = Auditor(art, 60.0, clock=lambda: now[0])  # a restart takes the chain up
        await three.start()
        assert three.head == one.head if three.seq == one.seq else three.seq > one.seq
    stored = [m async for m in _seals(rt)]
    assert [s.period_start.timestamp() for s in stored] == [999_960.0, 1_000_020.0]
    # an export from the middle is anchored at the first seal and agrees with the second
    path = tmp_path / "mid.jsonl"
    header = await export_to(rt, path, start=stored[0].seq + 1)
    assert header.anchor.by == "seal" and header.anchor.seq == stored[0].seq
    verdict = check_file(path)
    assert verdict.seals_checked == 2  # the file holds both (the first, stored after its seq)
    assert (await check_live(rt, path, header)).seals == 1
    # a seal that lies about the chain: verify names it
    liar = AuditSealed(**envelope(chain.SEALER), stream=EVENTS_STREAM, seq=stored[1].seq,
                       head="0" * 64, period_start=stored[1].period_start,
                       period_s=60.0)  # fmt: skip
    await rt.js.publish(subject_of(liar), encode(liar))
    with pytest.raises(NotVerified, match="says chain"):
        await check_live(rt, path, header)


async def _seals(rt: Runtime) -> Any:
    from fleetward.services.audit.export import seals  # noqa: PLC0415

    for _, seal in await seals(rt, "direct"):
        yield seal


@pytest.mark.parametrize("fmt", ["csv", "ocsf"])
async def test_csv_and_ocsf_files_verify_and_fail_at_a_changed_line(
    rt: Runtime, tmp_path: Path, fmt: chain.Format
) -> None:
    items = [*tool_calls(30), ("fw.agent.a-1.a-1", b'{"type":"x",\n"multi":"line"}')]
    await bulk(rt, items)
    path = tmp_path / f"a.{fmt}"
    header = await export_to(rt, path, fmt=fmt)
    await check_live(rt, path, header)
    original = lines(path)
    first = 3 if fmt == "csv" else 2  # CSV: header, column names, then the records
    flipped, line = list(original), bytearray(original[first + 5])
    line[len(line) // 3] ^= 0x01
    flipped[first + 5] = bytes(line)
    assert fails_at(tmp_path / "bad", flipped) == first + 6
    swapped = list(original)
    swapped[first], swapped[first + 1] = swapped[first + 1], swapped[first]
    assert fails_at(tmp_path / "bad", swapped) == first + 1


def fleetward(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetward.services.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


async def test_who_may_export_and_verify_on_the_command_line(
    rt: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    await bulk(rt, tool_calls(20))
    nobody = fleetward(env, "--creds", str(person(env, "carol")), "audit", "export")
    assert nobody.returncode == 2 and nobody.stdout == ""
    assert nobody.stderr.count("\n") == 1 and "needs the role auditor" in nobody.stderr
    await publish_many(rt.js, [RoleGranted(**envelope(ROLE_AUTHORITY), person="carol",
                                           role="auditor")])  # fmt: skip
    out = tmp_path / "carol.jsonl"
    done = fleetward(env, "--creds", str(person(env, "carol")), "audit", "export", "--from",
                     "3", "--to", "12", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert check_file(out).records == 10
    ok = fleetward(env, "--creds", str(person(env, "carol")), "audit", "verify", str(out))
    assert ok.returncode == 0 and "matches the live stream" in ok.stdout, ok.stderr
    changed = lines(out)
    changed[1] = changed[1].replace(b'"role.granted"', b'"role.revoked"')  # line 2: seq 3
    out.write_bytes(b"".join(changed))
    bad = fleetward(env, "audit", "verify", str(out), "--offline")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert f"{out} line 2:" in bad.stderr


async def test_the_audit_stream_keeps_six_months_and_denies_deletes_and_purges(
    rt: Runtime,
) -> None:
    await bulk(rt, tool_calls(3))
    config = (await rt.js.stream_info(EVENTS_STREAM)).config
    assert config.deny_delete and config.deny_purge and not config.allow_rollup_hdrs
    assert (config.max_age or 0) >= 183 * DAY
    with pytest.raises(APIError):
        await rt.js.purge_stream(EVENTS_STREAM)
    with pytest.raises(APIError):
        await rt.js.delete_msg(EVENTS_STREAM, 1)
    assert (await rt.js.stream_info(EVENTS_STREAM)).state.messages >= 3


def test_bound_reads_sequences_dates_and_times() -> None:
    from fleetward.services.cli.audit import bound  # noqa: PLC0415

    assert bound("42") == 42
    assert bound("2025-03-14").isoformat() == "2025-03-14T00:00:00+00:00"  # type: ignore[union-attr]
    assert bound("2025-03-14T09:00:00Z").isoformat() == "2025-03-14T09:00:00+00:00"  # type: ignore[union-attr]


async def test_the_auditor_runs_sealing_each_period_until_stopped(rt: Runtime) -> None:
    import anyio  # noqa: PLC0415

    await bulk(rt, tool_calls(10))
    stop = anyio.Event()

    async def sealed() -> list[AuditSealed]:
        return [s async for s in _seals(rt)]

    async with acting_as(rt, chain.SEALER) as art, anyio.create_task_group() as tg:
        auditor = Auditor(art, 1.0)
        assert not auditor.health()[0]
        tg.start_soon(auditor.run, stop.is_set, 0.1)
        found = await wait_for(lambda: _at_least(sealed, 2), what="two seals")
        assert auditor.health()[0]
        stop.set()
    assert {s.actor for s in found} == {chain.SEALER}
    assert found[1].period_start > found[0].period_start


async def _at_least(read: Any, n: int) -> Any:
    found = await read()
    return found if len(found) >= n else None
