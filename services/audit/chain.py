"""The audit chain and the export file format. Pure: no I/O, no clock.

**The stream chain** (what ``audit.sealed`` commits to): ``chain(0) = GENESIS`` and
``chain(n) = sha256(chain(n-1) || stored(n))``, with ``stored(n)`` = ``b"<seq>\\n<time>\\n
<subject>\\n" + data``: the stream sequence in decimal, the time of record as ``stamp`` writes it
(UTC, nanoseconds), the subject, then the message's bytes as stored. Headers are not covered.

**The file** (``fleetward audit export``): one line a record, between a header line and an end
line. Every line is its ``body`` followed by its hash, hash(i) = sha256(hash(i-1) || body(i))
with hash(0) = ``FILE_GENESIS``: in JSON lines the body is the object without its last
field ``"hash"``; in CSV the row without its last column. A changed byte fails the line it is
in, a dropped or moved line the line where it was (its successor no longer follows).

Formats: ``jsonl`` (one ``Record`` object a line), ``ocsf`` (one OCSF 1.1 API Activity object a
line, the record in ``unmapped``), ``csv`` (a ``#``-prefixed JSON header and end line around a
row of column names and one row a record). ``data`` holds the stored bytes when they are UTF-8
(in CSV: without CR or LF), else ``data_b64`` holds them in base64.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import csv
import functools
import hashlib
import io
import re
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec

from fleetward.schemas.subjects import parse

VERSION: Final = 1
GENESIS: Final = hashlib.sha256(b"fleetward audit chain v1").digest()  # chain(0)
FILE_GENESIS: Final = hashlib.sha256(b"fleetward audit file v1").digest()  # hash(0)
SEALER: Final = "svc:audit"  # the only actor whose seals readers trust
Format = Literal["jsonl", "csv", "ocsf"]
FORMATS: Final[tuple[Format, ...]] = ("jsonl", "csv", "ocsf")
COLUMNS: Final = ("seq", "time", "subject", "actor", "type", "dead_letter", "data", "data_b64",
                  "chain")  # fmt: skip
_HASH_JSON_LEN: Final = len(',"hash":"') + 64 + len('"}')
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
# A CSV cell holds a stored message (up to the server's max payload, 1 MiB by default, as
# base64): far past the csv module's default field limit (128 KiB). Raised, once, for every
# reader in this process.
_CSV_FIELD_LIMIT: Final = 1 << 27
csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))


class Record(msgspec.Struct, kw_only=True):
    """One stored message, as exported. ``actor`` is the proven actor (the subject's last
    token, contract v2; null on v1 and heartbeat subjects); ``type`` the payload's ``type``
    when it is a JSON object with a string ``type``; ``dead_letter`` the reasons the projector
    refused it for (comma-separated, null: applied, or not reached yet); ``chain`` chain(seq),
    hex."""

    seq: int
    time: str
    subject: str
    actor: str | None
    type: str | None
    dead_letter: str | None = None
    data: str | None = None
    data_b64: str | None = None
    chain: str

    def payload(self) -> bytes:
        """The stored bytes. ``ValueError`` when ``data_b64`` is not base64."""
        if self.data is not None:
            return self.data.encode()
        try:
            return base64.b64decode(self.data_b64 or "", validate=True)
        except binascii.Error as exc:
            raise ValueError(f"data_b64 is not base64 ({exc})") from None


class Anchor(msgspec.Struct, frozen=True, kw_only=True):
    """Where a file's stream chain starts: chain(``seq``) = ``chain``. ``by``: ``genesis``
    (seq 0), ``seal`` (a seal of svc:audit, stored at ``seal_stored_seq``, then rolled forward
    to ``seq``) or ``unanchored`` (no seal reaches back there: the chain is started from
    ``unanchored(seq)`` and no seal before the file's first one can confirm it)."""

    seq: int
    chain: str
    by: Literal["genesis", "seal", "unanchored"]
    seal_stored_seq: int | None = None


class Header(msgspec.Struct, kw_only=True):
    """The first line of a file."""

    fleetward_audit: int
    format: Format
    stream: str
    from_seq: int
    to_seq: int
    filters: dict[str, list[str]]
    anchor: Anchor
    exported_by: str
    exported_at: str
    dead_letters_known_to: int = 0  # the projector had judged every sequence up to this one


class End(msgspec.Struct, kw_only=True):
    """The last line of a file: how many records it holds and chain(``to_seq``)."""

    end: bool
    records: int
    to_seq: int
    head: str


class _Peek(msgspec.Struct):
    type: str | None = None
    agent: str | None = None


class _Ocsf(msgspec.Struct):
    unmapped: Record


_peek = msgspec.json.Decoder(_Peek)
_encode = msgspec.json.Encoder().encode


# Stored messages come many to a second: the whole seconds of a time are formatted and parsed
# once per second, not once per message (strptime and strftime were half of a file's check).
_SECONDS_CACHED: Final = 4096


@functools.lru_cache(maxsize=_SECONDS_CACHED)
def _second_text(secs: int) -> str:
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")


@functools.lru_cache(maxsize=_SECONDS_CACHED)
def _second_of(head: str) -> int:
    """Seconds since the epoch of ``YYYY-MM-DDTHH:MM:SS`` in UTC. ``ValueError`` otherwise."""
    when = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return calendar.timegm(when.timetuple())


def stamp(time_ns: int) -> str:
    """A time of record in the chain's one form: UTC, nanoseconds, e.g.
    ``2025-03-14T09:27:03.589000000Z``."""
    secs, ns = divmod(time_ns, 1_000_000_000)
    return _second_text(secs) + f".{ns:09d}Z"


def parse_stamp(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 UTC time as nats-server writes it (``Z``,
    0 to 9 fraction digits). ``ValueError`` on anything else."""
    if not text.endswith("Z"):
        raise ValueError(f"time {text!r} is not UTC (Z)")
    head, _, frac = text[:-1].partition(".")
    if len(frac) > 9 or (frac and not frac.isdigit()):
        raise ValueError(f"time {text!r} has a bad fraction")
    return _second_of(head) * 1_000_000_000 + int((frac + "000000000")[:9])


def stored(seq: int, time: str, subject: str, data: bytes) -> bytes:
    """The bytes of one stored message that the stream chain covers (module docstring)."""
    return b"%d\n%s\n%s\n" % (seq, time.encode(), subject.encode()) + data


def step(prev: bytes, seq: int, time: str, subject: str, data: bytes) -> bytes:
    """chain(seq) from chain(seq - 1) = ``prev``; digests are 32 bytes."""
    return hashlib.sha256(prev + stored(seq, time, subject, data)).digest()


def unanchored(seq: int) -> bytes:
    """The start of a chain from ``seq`` when no seal reaches back there (``Anchor``)."""
    return hashlib.sha256(b"fleetward audit chain v1 unanchored %d" % seq).digest()


def peek(data: bytes) -> tuple[str | None, str | None]:
    """(``type``, ``agent``) of a payload, each None when it has none (or is no JSON object)."""
    try:
        found = _peek.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):  # nested too deep
        return None, None
    return found.type, found.agent


def record(
    seq: int, time: str, subject: str, data: bytes, chain: bytes,
    *, dead_letter: str | None = None, fmt: Format = "jsonl",
) -> Record:  # fmt: skip
    """The exported record of one stored message whose chain value is ``chain``."""
    where = parse(subject)
    kind, _ = peek(data)
    text: str | None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        text = None
    if text is not None and fmt == "csv" and ("\n" in text or "\r" in text):
        text = None
    return Record(
        seq=seq, time=time, subject=subject, actor=where.actor if where else None, type=kind,
        dead_letter=dead_letter, data=text,
        data_b64=None if text is not None else base64.b64encode(data).decode(), chain=chain.hex(),
    )  # fmt: skip


# ---- lines ------------------------------------------------------------------------------------


def seal_json(body: bytes, prev: bytes) -> tuple[bytes, bytes]:
    """(line, its hash) of a JSON object ``body``: the hash appended as its last field."""
    digest = hashlib.sha256(prev + body).digest()
    return body[:-1] + b',"hash":"' + digest.hex().encode() + b'"}\n', digest


def seal_csv(body: bytes, prev: bytes) -> tuple[bytes, bytes]:
    """(line, its hash) of a CSV row ``body``: the hash appended as its last column."""
    digest = hashlib.sha256(prev + body).digest()
    return body + b"," + digest.hex().encode() + b"\n", digest


def csv_row(values: list[Any]) -> bytes:
    """One CSV row (no line end); None as an empty field."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(["" if v is None else v for v in values])
    return out.getvalue().encode()


def ocsf(rec: Record) -> dict[str, Any]:
    """``rec`` as an OCSF 1.1 API Activity (class 6003, activity 99 "Other"), the record itself
    in ``unmapped``: a refused message has status Failure and its reasons as status detail."""
    ms = parse_stamp(rec.time) // 1_000_000
    kind = "svc" if (rec.actor or "").startswith("svc:") else "user"
    return {
        "class_uid": 6003, "class_name": "API Activity", "category_uid": 6,
        "category_name": "Application Activity", "activity_id": 99,
        "activity_name": rec.type or "unknown", "type_uid": 600399, "severity_id": 1,
        "status_id": 2 if rec.dead_letter else 1,
        "status": "Failure" if rec.dead_letter else "Success",
        "status_detail": rec.dead_letter, "time": ms,
        "actor": {"user": {"name": rec.actor, "type": kind if rec.actor else None}},
        "api": {"operation": rec.type, "service": {"name": "fleetward"}},
        "metadata": {"version": "1.1.0", "sequence": rec.seq, "logged_time": ms,
                     "product": {"name": "Fleetward", "vendor_name": "Fleetward"}},
        "unmapped": msgspec.to_builtins(rec),
    }  # fmt: skip


class Writer:
    """Builds the lines of one file in order; ``hash`` is the last line's hash."""

    def __init__(self, fmt: Format) -> None:
        self.fmt = fmt
        self.hash = FILE_GENESIS

    def _json(self, obj: Any, prefix: bytes = b"") -> bytes:
        line, self.hash = seal_json(_encode(obj), self.hash)
        return prefix + line

    def header(self, header: Header) -> bytes:
        """The header line (and, in CSV, the row of column names)."""
        if self.fmt != "csv":
            return self._json(header)
        first = self._json(header, b"#")
        names, self.hash = seal_csv(csv_row([*COLUMNS]), self.hash)
        return first + names

    def record(self, rec: Record) -> bytes:
        if self.fmt == "jsonl":
            return self._json(rec)
        if self.fmt == "ocsf":
            return self._json(ocsf(rec))
        line, self.hash = seal_csv(csv_row([getattr(rec, c) for c in COLUMNS]), self.hash)
        return line

    def end(self, end: End) -> bytes:
        return self._json(end, b"#" if self.fmt == "csv" else b"")


# ---- reading lines back -------------------------------------------------------------------------


class BadLine(ValueError):
    """A line that does not verify; the message says why."""


def split_json(line: bytes) -> tuple[bytes, bytes]:
    """(body, hash) of a JSON line (without its line end). ``BadLine`` when it does not end in
    a ``"hash"`` field."""
    tail = line[-_HASH_JSON_LEN:]
    if len(line) <= _HASH_JSON_LEN or not (tail.startswith(b',"hash":"') and tail.endswith(b'"}')):
        raise BadLine('the line does not end with its "hash"')
    try:
        digest = bytes.fromhex(tail[9:-2].decode())
    except ValueError:
        raise BadLine("its hash is not hex") from None
    return line[:-_HASH_JSON_LEN] + b"}", digest


def split_csv(line: bytes) -> tuple[bytes, bytes]:
    """(body, hash) of a CSV row (without its line end)."""
    body, sep, tail = line.rpartition(b",")
    try:
        digest = bytes.fromhex(tail.decode())
    except ValueError:
        digest = b""
    if not sep or len(digest) != 32:
        raise BadLine("the row does not end with its hash")
    return body, digest


def decode_header(line: bytes) -> tuple[Header, bytes, bytes]:
    """(header, body, hash) of a file's first line. ``BadLine`` when it is none."""
    body, digest = split_json(line[1:] if line.startswith(b"#") else line)
    try:
        return msgspec.json.decode(body, type=Header), body, digest
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise BadLine(f"not a Fleetward audit header ({exc})") from None


def decode_record(fmt: Format, body: bytes) -> Record | End:
    """The record (or the end) a line's body holds. ``BadLine`` when it holds neither."""
    try:
        if fmt == "csv":
            if body.startswith(b"#"):
                return msgspec.json.decode(body[1:], type=End)
            row = next(csv.reader([body.decode()]))
            if len(row) != len(COLUMNS):
                raise BadLine(f"the row has {len(row) + 1} columns, not {len(COLUMNS) + 1}")
            cells: dict[str, Any] = {
                c: (v if v != "" else None) for c, v in zip(COLUMNS, row, strict=True)
            }
            cells["seq"] = int(cells["seq"] or "x")
            return msgspec.convert(cells, type=Record)
        if body.startswith(b'{"end"'):
            return msgspec.json.decode(body, type=End)
        if fmt == "ocsf":
            return msgspec.json.decode(body, type=_Ocsf).unmapped
        return msgspec.json.decode(body, type=Record)
    except (
        msgspec.DecodeError,
        msgspec.ValidationError,
        UnicodeDecodeError,
        ValueError,
        csv.Error,
        RecursionError,
    ) as exc:
        raise BadLine(f"not a record ({exc})") from None


def seal_of(rec: Record) -> tuple[int, str] | None:
    """(seq, head) of a record holding an ``audit.sealed`` of ``SEALER`` on this stream's
    chain, None for any other record."""
    if rec.type != "audit.sealed" or rec.actor != SEALER or rec.data is None:
        return None
    try:
        found = msgspec.json.decode(rec.data, type=_Seal)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    return found.seq, found.head


class _Seal(msgspec.Struct):
    seq: int
    head: str


RECENT: Final = 262_144  # chain values kept to check the seals a file holds against


class FileCheck:
    """Checks a file line by line, alone (``feed`` each line without its line end, then
    ``finish``); each raises ``BadLine`` at the first line that fails. What a file alone
    proves: its lines are the ones exported, in order, none missing (line hashes, sequences,
    the end line), its stream chain follows from its anchor (unfiltered files), and the seals
    of svc:audit it holds agree with its chain. Anyone can recompute hashes: that the records
    are what the stream stored is proven against the stream or its seals (``verify``)."""

    def __init__(self) -> None:
        self.header: Header | None = None
        self.hash = FILE_GENESIS
        self.chain = b""  # chain(last_seq), unfiltered files
        self.last_seq = -1
        self.records = 0
        self.ended = False
        self.seals_checked = 0
        self.seals_unchecked = 0
        self._names = False  # CSV: the row of column names is next
        self._recent: OrderedDict[int, bytes] = OrderedDict()  # popped from the front: O(1)

    @property
    def filtered(self) -> bool:
        return bool(self.header and self.header.filters)

    def _follows(self, body: bytes, digest: bytes) -> None:
        if hashlib.sha256(self.hash + body).digest() != digest:
            raise BadLine(
                "its hash does not follow: this line was changed, or the line before it is not "
                "the one exported before it (a line dropped, added or moved)"
            )
        self.hash = digest

    def feed(self, line: bytes) -> Record | None:
        """Check one more line; the record it holds, if any."""
        if self.ended:
            raise BadLine("a line after the end line")
        if self.header is None:
            self._start(line)
            return None
        if self._names:
            body, digest = split_csv(line)
            self._follows(body, digest)
            if body != csv_row([*COLUMNS]):
                raise BadLine("not the row of column names")
            self._names = False
            return None
        fmt = self.header.format
        if line.startswith(b"#") or fmt != "csv":
            body, digest = split_json(line[1:] if line.startswith(b"#") else line)
        else:
            body, digest = split_csv(line)
        self._follows(body, digest)
        found = decode_record(fmt, (b"#" + body) if line.startswith(b"#") else body)
        if isinstance(found, End):
            self._end(found)
            return None
        self._record(found)
        return found

    def _start(self, line: bytes) -> None:
        header, body, digest = decode_header(line)
        self._follows(body, digest)
        if header.fleetward_audit != VERSION:
            raise BadLine(
                f"format version {header.fleetward_audit}; this Fleetward reads {VERSION}"
            )
        anchor = header.anchor
        # a genesis anchor past 0 and a seal's were rolled forward: the stream can tell
        expected = GENESIS if anchor.by == "genesis" and anchor.seq == 0 else None
        expected = unanchored(anchor.seq) if anchor.by == "unanchored" else expected
        if expected is not None and anchor.chain != expected.hex():
            raise BadLine(f"its {anchor.by} anchor is not chain({anchor.seq})")
        try:
            self.chain = bytes.fromhex(anchor.chain)
        except ValueError:
            raise BadLine("its anchor is not hex") from None
        self.header, self.last_seq, self._names = header, anchor.seq, header.format == "csv"
        self._recent[anchor.seq] = self.chain

    def _record(self, rec: Record) -> None:
        assert self.header is not None
        if rec.seq <= self.last_seq or (not self.filtered and rec.seq != self.last_seq + 1):
            raise BadLine(
                f"seq {rec.seq} after seq {self.last_seq}: a record is missing or out of order"
            )
        if rec.seq > self.header.to_seq:
            raise BadLine(f"seq {rec.seq} is past the file's end, seq {self.header.to_seq}")
        try:
            data, canonical = rec.payload(), stamp(parse_stamp(rec.time)) == rec.time
        except ValueError as exc:
            raise BadLine(str(exc)) from None
        where = parse(rec.subject)
        if not canonical or rec.actor != (where.actor if where else None):
            raise BadLine("its time or actor is not what its stored facts give")
        if rec.type != peek(data)[0]:
            raise BadLine("its type is not the payload's")
        if self.filtered:
            if not _SHA256_HEX.fullmatch(rec.chain):
                raise BadLine("its chain is not a sha256")
        else:
            self.chain = step(self.chain, rec.seq, rec.time, rec.subject, data)
            if rec.chain != self.chain.hex():
                raise BadLine(f"its chain is not chain({rec.seq}) of the records before it")
        self._remember(rec.seq, bytes.fromhex(rec.chain))
        self._seal(rec)
        self.last_seq, self.records = rec.seq, self.records + 1

    def _remember(self, seq: int, chain: bytes) -> None:
        self._recent[seq] = chain
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    def _seal(self, rec: Record) -> None:
        seal = seal_of(rec)
        if seal is None:
            return
        seq, head = seal
        known = self._recent.get(seq)
        if known is None:
            self.seals_unchecked += 1
        elif known.hex() != head:
            raise BadLine(f"the seal it holds says chain({seq}) is {head[:12]}..., the file's "
                          f"records give {known.hex()[:12]}...")  # fmt: skip
        else:
            self.seals_checked += 1

    def _end(self, end: End) -> None:
        assert self.header is not None
        if end.records != self.records or end.to_seq != self.header.to_seq:
            raise BadLine(f"the end line counts {end.records} records to seq {end.to_seq}; the "
                          f"file holds {self.records} to seq {self.header.to_seq}")  # fmt: skip
        if not self.filtered and self.last_seq == end.to_seq and end.head != self.chain.hex():
            raise BadLine("the end line's head is not the last record's chain")
        self.ended = True

    def finish(self) -> None:
        """``BadLine`` when the file ended early (no header, or no end line)."""
        if self.header is None:
            raise BadLine("the file is empty")
        if not self.ended:
            raise BadLine("the file ends without its end line: it was cut short")
