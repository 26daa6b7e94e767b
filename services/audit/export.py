"""``fleetward audit export``: the stored messages of FW_EVENTS in stream order, as a file that
proves itself (services/audit/chain.py), written as they are read.

Who may export (docs/audit.md): a service's credentials (``svc:audit``; on the machine holding
the signing keys the CLI acts as it) read with a pull consumer of their own, the fast path; a
person needs the role ``auditor`` (or ``admin``) at the stream's head and reads by message gets,
the one read their credentials allow (slower). Agents may not export.

What is exported: every stored message in the range, refused ones too (``dead_letter`` names
the reasons the projector refused them for; null: applied, or not judged yet: the header's
``dead_letters_known_to``). Filters keep the records that match every filter given: ``agent``
(the subject's agent, the payload's ``agent`` or the proven actor), ``team`` (its agents in the
registry now, ``fleet.agents``), ``type`` (the payload's), ``actor`` (the proven actor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO, Literal

from fleetward.schemas import Rejected, admit
from fleetward.schemas.admission import actor_kind
from fleetward.schemas.events import AuditSealed
from fleetward.schemas.roles import person_of
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import parse, subject
from fleetward.services.audit import chain
from fleetward.services.audit.read import How, stored
from fleetward.services.client.direct import read_subjects
from fleetward.services.client.roles import read_roles
from fleetward.services.db import q
from fleetward.services.errors import FleetwardError
from fleetward.services.jetstream.reads import stream_info
from fleetward.services.runtime.connect import Runtime

AUDITOR_ROLE = "auditor"
FLUSH_EVERY = 1000  # records written at once


class Refused(FleetwardError):
    """Whoever runs the export may not (an agent, or a person without the role)."""


@dataclass(frozen=True, slots=True)
class Filters:
    """What to keep (empty: everything). ``members``: the agents of ``teams``, resolved."""

    agents: frozenset[str] = frozenset()
    teams: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    actors: frozenset[str] = frozenset()
    members: frozenset[str] = field(default=frozenset(), compare=False)

    def described(self) -> dict[str, list[str]]:
        named = {"agent": self.agents, "team": self.teams, "type": self.types,
                 "actor": self.actors}  # fmt: skip
        return {k: sorted(v) for k, v in named.items() if v}

    def keeps(self, subj: str, actor: str | None, kind: str | None, agent: str | None) -> bool:
        """Whether a message with these facts matches every filter given."""
        if self.types and kind not in self.types:
            return False
        if self.actors and actor not in self.actors:
            return False
        where = parse(subj)
        own = where.key if where is not None and where.kind == "agent" else None
        about = {a for a in (own, agent, actor) if a is not None}
        if self.agents and not about & self.agents:
            return False
        return not (self.teams and not about & self.members)


@dataclass(frozen=True, slots=True)
class Summary:
    records: int  # records written
    read: int  # messages read (the range, and the roll forward from the anchor)
    from_seq: int
    to_seq: int
    head: str  # chain(to_seq), hex


def reader_of(rt: Runtime) -> How:
    """How ``rt``'s identity reads the stream: services by consumer, people by message gets.
    ``Refused`` for anyone else."""
    kind = actor_kind(rt.actor)
    if kind == "svc":
        return "consumer"
    if kind == "user":
        return "wrapped"
    raise Refused(f"{rt.actor} may not export the audit log: a person or a service may")


async def check_may_export(rt: Runtime) -> How:
    """``reader_of``, and for a person the role ``auditor`` (or ``admin``) held at the stream's
    head (schemas/roles.py). Raises ``Refused`` at once otherwise."""
    how = reader_of(rt)
    person = person_of(rt.actor)
    if person is None:
        return how
    book = await read_roles(rt.nc)
    head = (await stream_info(rt.js, EVENTS_STREAM)).state.last_seq
    if not book.holds(person, AUDITOR_ROLE, head + 1):
        raise Refused(
            f"{rt.actor} may not export the audit log: it needs the role {AUDITOR_ROLE} "
            f"(an admin grants it: fleetward people grant {person} {AUDITOR_ROLE})"
        )
    return how


async def seals(rt: Runtime, how: How) -> list[tuple[int, AuditSealed]]:
    """Every seal of ``chain.SEALER`` on FW_EVENTS's chain, by stored sequence: (where it is
    stored, the seal), in order. Others' (refused, or not the sealer's) are passed over."""
    found = []
    where = subject("audit", EVENTS_STREAM, chain.SEALER)
    async for raw in read_subjects(rt.nc, EVENTS_STREAM, where, direct=how != "wrapped"):
        try:
            event = admit(raw.subject, raw.data)
        except Rejected:
            continue
        if isinstance(event, AuditSealed) and event.stream == EVENTS_STREAM:
            found.append((raw.seq, event))
    return found


async def anchor_at(
    rt: Runtime, how: How, before: int, first_held: int
) -> tuple[chain.Anchor, int]:
    """chain(``before``), from the latest seal at or before it that the stream can still roll
    forward from (its ``seq`` + 1 still held), else the genesis when the stream still holds
    its first message, else unanchored. Returns the anchor and the messages read."""
    if before == 0:
        return chain.Anchor(seq=0, chain=chain.GENESIS.hex(), by="genesis"), 0
    usable = [(at, s) for at, s in await seals(rt, how) if first_held - 1 <= s.seq <= before]
    by: Literal["genesis", "seal"] = "genesis"
    start, head, stored_at = 0, chain.GENESIS, None
    if usable:
        at, seal = max(usable, key=lambda found: found[1].seq)
        start, head, by, stored_at = seal.seq, bytes.fromhex(seal.head), "seal", at
    elif first_held != 1:
        start_of_own = chain.unanchored(before)
        return chain.Anchor(seq=before, chain=start_of_own.hex(), by="unanchored"), 0
    read = 0
    async for m in stored(rt.nc, EVENTS_STREAM, start + 1, before, how=how):
        head, read = chain.step(head, m.seq, m.time, m.subject, m.data), read + 1
    return chain.Anchor(seq=before, chain=head.hex(), by=by, seal_stored_seq=stored_at), read


async def seq_at(rt: Runtime, how: How, when: datetime, first: int, last: int) -> int:
    """The first sequence in ``first`` .. ``last`` stored at or after ``when`` (``last`` + 1
    when none): a binary search by message gets (time of record grows with the sequence)."""
    target = int(when.timestamp() * 1_000_000) * 1000
    lo, hi = first, last + 1
    while lo < hi:
        mid = (lo + hi) // 2
        async for m in stored(rt.nc, EVENTS_STREAM, mid, mid, how="wrapped"):
            if chain.parse_stamp(m.time) >= target:
                hi = mid
            else:
                lo = mid + 1
            break
        else:
            lo = mid + 1  # gone (retention): look later
    return lo


Bound = int | datetime  # a stream sequence, or a time


async def export(
    rt: Runtime,
    out: BinaryIO,
    *,
    start: Bound | None = None,
    end: Bound | None = None,
    fmt: chain.Format = "jsonl",
    filters: Filters = Filters(),  # frozen: one shared empty value is safe
    progress: Callable[[int, int, int], object] | None = None,
) -> Summary:
    """Write the export of FW_EVENTS from ``start`` to ``end`` to ``out``: a sequence bounds
    inclusively; a time from ``start`` inclusive to ``end`` exclusive; None the stream's first
    and last message as the export starts. ``progress(seq, first, last)`` is called after each
    batch. Raises ``Refused`` (before anything is written) when the identity may not export,
    ``FleetwardError`` when NATS or Postgres fail."""
    how = await check_may_export(rt)
    state = (await stream_info(rt.js, EVENTS_STREAM)).state
    held, last_held = max(state.first_seq, 1), state.last_seq
    first = held if start is None else start if isinstance(start, int) else (
        await seq_at(rt, how, start, held, last_held))  # fmt: skip
    last = last_held if end is None else min(end, last_held) if isinstance(end, int) else (
        await seq_at(rt, how, end, held, last_held) - 1)  # fmt: skip
    first = max(first, held)
    members: frozenset[str] = frozenset()
    async with rt.pool.acquire() as conn:
        if filters.teams:
            rows = await conn.fetch(q("audit_team_agents"), sorted(filters.teams))
            members = frozenset(r["agent_id"] for r in rows)
        rows = await conn.fetch(q("audit_dead_letters"), EVENTS_STREAM, first, last)
        refused = {r["seq"]: r["reasons"] for r in rows}
        judged = int(await conn.fetchval(q("audit_judged_to"), EVENTS_STREAM))
    keep = Filters(filters.agents, filters.teams, filters.types, filters.actors, members)
    anchor, read = await anchor_at(rt, how, first - 1, held)
    writer = chain.Writer(fmt)
    header = chain.Header(
        fleetward_audit=chain.VERSION, format=fmt, stream=EVENTS_STREAM, from_seq=first,
        to_seq=max(last, first - 1), filters=keep.described(), anchor=anchor,
        exported_by=rt.actor, exported_at=datetime.now(UTC).isoformat(),
        dead_letters_known_to=judged,
    )  # fmt: skip
    out.write(writer.header(header))
    head, pending, records = bytes.fromhex(anchor.chain), list[bytes](), 0
    everything = not keep.described()
    async for m in stored(rt.nc, EVENTS_STREAM, first, last, how=how):
        head, read = chain.step(head, m.seq, m.time, m.subject, m.data), read + 1
        if not everything:
            where = parse(m.subject)
            kind, agent = chain.peek(m.data)
            if not keep.keeps(m.subject, where.actor if where else None, kind, agent):
                continue
        rec = chain.record(m.seq, m.time, m.subject, m.data, head,
                           dead_letter=refused.get(m.seq), fmt=fmt)  # fmt: skip
        pending.append(writer.record(rec))
        records += 1
        if len(pending) >= FLUSH_EVERY:
            out.write(b"".join(pending))
            pending.clear()
            if progress is not None:
                progress(m.seq, first, last)
    out.write(b"".join(pending))
    to_seq = max(last, first - 1)
    out.write(writer.end(chain.End(end=True, records=records, to_seq=to_seq, head=head.hex())))
    out.flush()
    if progress is not None:
        progress(last, first, last)
    return Summary(records, read, first, to_seq, head.hex())
