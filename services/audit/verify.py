"""``fleetward audit verify FILE``: a file checked on its own (``chain.FileCheck``), then
against the live stream when it is reachable: every record's stored facts and chain value
equal the message the stream stores at its sequence, the file's anchor is where the stream's
chain has it, and every seal of svc:audit in the file's range agrees with the chain.

A failure names the first line that fails (``NotVerified``, exit 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.services.audit import chain
from fleetward.services.audit.export import reader_of, seals
from fleetward.services.audit.read import stored
from fleetward.services.errors import FleetwardError
from fleetward.services.runtime.connect import Runtime


class NotVerified(FleetwardError):
    """The file does not verify: ``line`` (1-based; 0 when no line is to blame) says where."""

    exit_code = 1

    def __init__(self, path: Path, line: int, why: str) -> None:
        self.line = line
        super().__init__(f"{path} line {line}: {why}" if line else f"{path}: {why}")


@dataclass(frozen=True, slots=True)
class FileVerdict:
    header: chain.Header
    records: int
    head: str  # the end line's chain(to_seq)
    seals_checked: int  # seals of svc:audit inside the file, agreeing with its chain
    seals_unchecked: int  # seals inside the file naming a sequence before the file's reach


def _records(path: Path) -> Iterator[tuple[int, chain.Record | None, chain.FileCheck]]:
    check = chain.FileCheck()
    with path.open("rb") as f:
        number = 0
        for number, line in enumerate(f, 1):  # the last number is needed after
            try:
                yield number, check.feed(line.rstrip(b"\n")), check
            except chain.BadLine as exc:
                raise NotVerified(path, number, str(exc)) from None
        try:
            check.finish()
        except chain.BadLine as exc:
            raise NotVerified(path, number + 1, str(exc)) from None


def check_file(path: Path) -> FileVerdict:
    """Check ``path`` on its own. Raises ``NotVerified`` at the first line that fails,
    ``FleetwardError`` when it cannot be read."""
    try:
        check: chain.FileCheck | None = None
        for _, _, found in _records(path):
            check = found
    except OSError as exc:
        raise FleetwardError(f"cannot read {path}: {exc}") from None
    assert check is not None and check.header is not None
    return FileVerdict(check.header, check.records, check.chain.hex() if not check.filtered
                       else "", check.seals_checked, check.seals_unchecked)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LiveVerdict:
    messages: int  # stored messages read and chained
    seals: int  # seals of svc:audit in the file's range that agree with the stream's chain


async def check_live(rt: Runtime, path: Path, header: chain.Header) -> LiveVerdict:
    """Check ``path`` (which ``check_file`` passed) against the stream ``rt`` reads. Raises
    ``NotVerified`` at the first record that differs from the stream, or when the stream's
    chain does not reach the file's anchor or disagrees with a seal."""
    how = reader_of(rt)
    sealed = await seals(rt, how)
    anchor = header.anchor
    start, head = anchor.seq, bytes.fromhex(anchor.chain)
    if anchor.by == "seal":
        found = [s for at, s in sealed if at == anchor.seal_stored_seq]
        if not found:
            raise NotVerified(path, 1, f"its anchor's seal (stored at {anchor.seal_stored_seq}) "
                              "is no seal of svc:audit in the stream")  # fmt: skip
        start, head = found[0].seq, bytes.fromhex(found[0].head)
    elif anchor.by == "genesis":
        start, head = 0, chain.GENESIS
    heads = {s.seq: (at, s.head) for at, s in sealed}
    records = ((n, r) for n, r, _ in _records(path) if r is not None)
    pending = next(records, None)
    read = agreed = 0
    async for m in stored(rt.nc, EVENTS_STREAM, start + 1, header.to_seq, how=how):
        head, read = chain.step(head, m.seq, m.time, m.subject, m.data), read + 1
        if m.seq == anchor.seq and head.hex() != anchor.chain:
            raise NotVerified(path, 1, f"its anchor is not the stream's chain({m.seq})")
        if pending is not None and pending[1].seq < m.seq:
            raise NotVerified(path, pending[0], f"seq {pending[1].seq} is not in the stream")
        if pending is not None and pending[1].seq == m.seq:
            number, rec = pending
            if (rec.time, rec.subject, rec.payload()) != (m.time, m.subject, m.data):
                raise NotVerified(path, number, f"differs from the message the stream stores at "
                                  f"seq {m.seq}")  # fmt: skip
            if rec.chain != head.hex():
                raise NotVerified(path, number, f"its chain is not the stream's chain({m.seq})")
            pending = next(records, None)
        if m.seq in heads:
            at, sealed_head = heads[m.seq]
            if sealed_head != head.hex():
                line = pending[0] if pending else 0
                raise NotVerified(path, line, f"the seal stored at seq {at} says chain({m.seq}) "
                                  f"is {sealed_head[:12]}..., the stream gives "
                                  f"{head.hex()[:12]}...")  # fmt: skip
            agreed += 1
    if pending is not None:
        raise NotVerified(path, pending[0], f"seq {pending[1].seq} is not in the stream")
    return LiveVerdict(read, agreed)
