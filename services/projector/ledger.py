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
``unnest``). Ids are kept per kind, so an id reused on another kind's subject is another event.
Ids stored before the ledger existed (migration 0006) are only known once a rebuild has read
them.
"""

from __future__ import annotations

from collections.abc import Callable

from fleetward.schemas import Rejected
from fleetward.services.db import Conn, q
from fleetward.services.projector.window import Admitted

Key = tuple[str, str]  # (subject kind, event id)
Record = tuple[str, str, int]  # (subject kind, event id, first sequence)


class IdLedger:
    """The ledger as one runner sees it: the database's, plus the first sequences of the ids in
    its windows not yet committed. ``reads``: the subjects its projections read (None: all the
    consumer delivers)."""

    def __init__(self, stream: str, reads: Callable[[str], bool] | None) -> None:
        self.stream, self.reads = stream, reads
        self.open: dict[Key, int] = {}  # ids of the open windows, to record at their commit
        self.committing: dict[Key, int] = {}  # ids of the windows being committed

    def clear(self) -> None:
        """Forget what is not committed (the runner re-positions: it is folded again)."""
        self.open.clear()
        self.committing.clear()

    async def repeats(self, conn: Conn, admitted: Admitted) -> set[int]:
        """The sequences of ``admitted`` whose event id was stored at an earlier sequence (of the
        same kind): copies, not to be applied. The others' ids join ``open``, unless the ledger
        has them at that very sequence already (a redelivery, a rebuild)."""
        repeats: set[int] = set()
        open_, committing, reads = self.open, self.committing, self.reads
        fresh: dict[Key, int] = {}
        for d, event in admitted:
            if isinstance(event, Rejected) or (reads is not None and not reads(d.subject)):
                continue
            key = (event.SUBJECT_KIND, event.id)
            first = open_.get(key) or committing.get(key) or fresh.get(key)
            if first is None:
                fresh[key] = d.seq
            elif first < d.seq:
                repeats.add(d.seq)
        if fresh:
            kinds, ids = ([k for k, _ in fresh], [i for _, i in fresh])
            found = await conn.fetch(q("event_ids_first"), self.stream, kinds, ids)
            for kind, id_, seq in found:
                key = (kind, id_)
                if seq < fresh[key]:  # stored before: a copy (later ones in the batch are too)
                    repeats.add(fresh[key])
                if seq <= fresh[key]:  # nothing to record
                    del fresh[key]
        self.open.update(fresh)
        return repeats

    def take(self) -> list[Record]:
        """The ids to record with the windows about to commit, sorted so that concurrent writers
        lock them in one order; they stay known until ``committed``."""
        records = sorted((kind, id_, seq) for (kind, id_), seq in self.open.items())
        self.committing.update(self.open)
        self.open = {}
        return records

    def committed(self, records: list[Record]) -> None:
        """``records`` are in the database now: no longer needed in memory."""
        committing = self.committing
        for kind, id_, _ in records:
            committing.pop((kind, id_), None)

    async def record(self, conn: Conn, records: list[Record]) -> None:
        """Write ``records`` (inside the transaction that commits their windows)."""
        if records:
            kinds, ids, seqs = (list(column) for column in zip(*records, strict=True))
            await conn.execute(q("event_ids_record"), self.stream, kinds, ids, seqs)
