"""Idempotence by event id, forever (DESIGN 3.1): the ledger of FW_EVENTS.

A copy of an event (the same id) may be stored again: under another Nats-Msg-Id, or after the
stream's duplicate window. It must apply once however late it comes, and live as in a rebuild.
``fleetward.event_ids`` holds, per stream and subject kind, the first sequence at which each
event id was stored; an event applies iff its sequence is that first one.

Invariants:
- Every reader of a subject kind reads all of it in order (projections read whole kinds,
  ``fw.<kind>.>``), so whoever records an id first records its first sequence; the verdict
  depends on nothing but the stream: the same live, in a rebuild, and however windows fall.
- The ledger is written in the same transaction as the checkpoints, and never emptied: a
  rebuild finds the ids recorded at the sequences it meets again (not copies).
- Only admitted events are judged; a refused one (dead-lettered) takes no id.
- Ids of the windows not yet committed are kept in memory (``pending``): the next window is
  folded while the previous commits, before its ids are in the database.

Cost: one query per batch for the ids not in memory, and one insert per commit (arrays through
``unnest``). Ids are kept per kind, so an id reused on another kind's subject is another event;
task events per task (``scope``: the task's boundary, ``fw.task.<task>``, over all of its
subjects, v1 and v2, every actor's): an agent folding one task's events can skip the same
copies the board skips (services/client/taskstate.py), so the two never disagree. (The
boundary's name is its v1 subject, the scope recorded before contract v2: the ledger's rows
keep their meaning.)
Ids stored before the ledger existed (migration 0006) are only known once a rebuild has read
them.
"""

from __future__ import annotations

from collections.abc import Iterable

from fleetward.projections import Projection
from fleetward.schemas import Rejected
from fleetward.schemas.events import Event
from fleetward.schemas.subjects import boundary_of, parse
from fleetward.services.db import Conn, q
from fleetward.services.projector.window import Admitted

Key = tuple[str, str]  # (subject kind, event id)
Records = dict[Key, int]  # the first sequence of each id


def kinds_read(projections: Iterable[Projection]) -> frozenset[str]:
    """The subject kinds ``projections`` read (their subjects are ``fw.<kind>.>``)."""
    found = (parse(subject) for p in projections for subject in p.subjects)
    return frozenset(parsed[0] for parsed in found if parsed is not None)


def scope(event: Event) -> str:
    """Where an event id must be unique: its subject kind, or for a task its boundary."""
    return boundary_of(event) if event.SUBJECT_KIND == "task" else event.SUBJECT_KIND


class IdLedger:
    """The ledger as one runner sees it: the database's, plus the first sequences of the ids in
    its windows not yet committed. ``kinds``: the subject kinds its projections read. One commit
    at a time: ``take`` only when none is in flight."""

    def __init__(self, stream: str, kinds: frozenset[str]) -> None:
        self.stream, self.kinds = stream, kinds
        self.open: Records = {}  # ids of the open windows, to record at their commit
        self.committing: Records = {}  # ids of the windows being committed

    def clear(self) -> None:
        """Forget what is not committed (the runner re-positions: it is folded again)."""
        self.open = {}
        self.committing = {}

    async def repeats(self, conn: Conn, admitted: Admitted) -> set[int]:
        """The sequences of ``admitted`` whose event id was stored at an earlier sequence (of the
        same kind): copies, not to be applied. The others' ids join ``open``, unless the ledger
        has them at that very sequence already (a redelivery, a rebuild). Memory is consulted
        before the database, so ids of a commit that ends meanwhile are seen in one of them."""
        repeats: set[int] = set()
        open_, committing, kinds = self.open, self.committing, self.kinds
        fresh: list[Key] = []
        for d, event in admitted:
            if isinstance(event, Rejected) or event.SUBJECT_KIND not in kinds:
                continue
            key = (scope(event), event.id)
            first = open_.get(key) or committing.get(key)
            if first is None:
                open_[key] = d.seq
                fresh.append(key)
            elif first < d.seq:
                repeats.add(d.seq)
        if fresh:
            kinds_, ids = [k for k, _ in fresh], [i for _, i in fresh]
            for kind, id_, seq in await conn.fetch(q("event_ids_first"), self.stream, kinds_, ids):
                key = (kind, id_)
                ours = open_[key]
                if seq < ours:  # stored before: a copy (later ones in the batch are too)
                    repeats.add(ours)
                if seq <= ours:  # nothing to record
                    del open_[key]
        return repeats

    def take(self) -> Records:
        """The ids to record with the windows about to commit; they stay known until
        ``committed``."""
        assert not self.committing, "one commit at a time"
        self.committing, self.open = self.open, {}
        return self.committing

    def committed(self) -> None:
        """The ids taken are in the database now: no longer needed in memory."""
        self.committing = {}

    async def record(self, conn: Conn, records: Records) -> None:
        """Write ``records`` (inside the transaction that commits their windows; the statement
        inserts them in key order, so that concurrent writers lock them in one order)."""
        if records:
            kinds, ids = [k for k, _ in records], [i for _, i in records]
            seqs = list(records.values())
            await conn.execute(q("event_ids_record"), self.stream, kinds, ids, seqs)
