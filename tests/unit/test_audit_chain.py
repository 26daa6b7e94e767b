"""The audit chain and file format (services/audit/chain.py), without servers: times in one
form, records of any bytes, and a file in each format that verifies line by line and fails at
the line that was changed, dropped or moved."""

from __future__ import annotations

import pytest

from fleetward.services.audit import chain


def test_stamps_keep_nanoseconds_and_one_form() -> None:
    ns = chain.parse_stamp("2025-03-14T09:27:03.5890001Z")
    assert ns % 1_000_000_000 == 589_000_100
    assert chain.stamp(ns) == "2025-03-14T09:27:03.589000100Z"
    assert chain.parse_stamp(chain.stamp(ns)) == ns
    assert chain.stamp(chain.parse_stamp("2025-03-14T09:27:03Z")).endswith(":03.000000000Z")
    with pytest.raises(ValueError, match="UTC"):
        chain.parse_stamp("2025-03-14T09:27:03+01:00")


def test_a_record_names_the_proven_actor_and_keeps_any_bytes() -> None:
    rec = chain.record(7, chain.stamp(0), "fw.task.t-1.a-7", b'{"type":"task.claimed"}',
                       chain.GENESIS)  # fmt: skip
    assert (rec.actor, rec.type, rec.data) == ("a-7", "task.claimed", '{"type":"task.claimed"}')
    raw = chain.record(8, chain.stamp(0), "fw.task.t-1", b"\xff\x00", chain.GENESIS)
    assert (raw.actor, raw.type, raw.data, raw.payload()) == (None, None, None, b"\xff\x00")
    broken = chain.record(9, chain.stamp(0), "fw.agent.a.a", b"a\nb", chain.GENESIS, fmt="csv")
    assert broken.data is None and broken.payload() == b"a\nb"


def build(fmt: chain.Format, n: int = 5) -> list[bytes]:
    writer, head = chain.Writer(fmt), chain.GENESIS
    anchor = chain.Anchor(seq=0, chain=chain.GENESIS.hex(), by="genesis")
    header = chain.Header(fleetward_audit=1, format=fmt, stream="FW_EVENTS", from_seq=1,
                          to_seq=n, filters={}, anchor=anchor, exported_by="svc:audit",
                          exported_at="2025-03-14T09:30:00+00:00")  # fmt: skip
    lines = writer.header(header).splitlines(keepends=True)
    for seq in range(1, n + 1):
        data, time = b'{"type":"tool.called","n":%d}' % seq, chain.stamp(seq * 1000)
        head = chain.step(head, seq, time, "fw.agent.a-1.a-1", data)
        lines.append(writer.record(chain.record(seq, time, "fw.agent.a-1.a-1", data, head,
                                                fmt=fmt)))  # fmt: skip
    lines.append(writer.end(chain.End(end=True, records=n, to_seq=n, head=head.hex())))
    return lines


def first_bad(lines: list[bytes]) -> int | None:
    check = chain.FileCheck()
    for number, line in enumerate(lines, 1):
        try:
            check.feed(line.rstrip(b"\n"))
        except chain.BadLine:
            return number
    try:
        check.finish()
    except chain.BadLine:
        return len(lines) + 1
    return None


@pytest.mark.parametrize("fmt", chain.FORMATS)
def test_a_file_verifies_and_fails_at_the_line_changed_dropped_or_moved(fmt: chain.Format) -> None:
    lines = build(fmt)
    assert first_bad(lines) is None
    first = 3 if fmt == "csv" else 2  # the first record's line
    for at in range(first, len(lines)):
        for offset in (0, len(lines[at - 1]) // 2, len(lines[at - 1]) - 3):
            changed, line = list(lines), bytearray(lines[at - 1])
            line[offset] ^= 0x04
            changed[at - 1] = bytes(line)
            assert first_bad(changed) == at
        assert first_bad(lines[: at - 1] + lines[at:]) == at
        if at < len(lines):
            swapped = list(lines)
            swapped[at - 1], swapped[at] = swapped[at], swapped[at - 1]
            assert first_bad(swapped) == at
    assert first_bad(lines[:-1]) == len(lines)  # no end line: cut short
