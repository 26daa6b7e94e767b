"""Windows: the batches a runner folds between two commits.

A batch is admitted once per runner (``admit_batch``: schemas.admission; a refused event becomes
a dead letter), then folded into each projection's open window (``prepare``): deliveries at or
below the window's last sequence, and copies of events stored before (the runner finds them:
ledger.py), are skipped; the rows the events touch are loaded (cache.py); the events are folded
in stream order (pure).
Nothing is written here: commit.py writes a window.

Invariant: a window starts right after the checkpoint it commits on. The first delivery it
folds past that checkpoint must follow, on its consumer, a delivery at or before it (or the
consumer's start): otherwise the events between were never folded, and committing would skip
them. ``follows`` checks it for every delivery (``Gap``: the window fails, the runner
re-positions from the checkpoints); the runner checks that the consumer lost no delivery.

Near the head of the stream a window is committed as soon as it is folded: one batch, or,
while the previous window's commit is still in flight, every batch that arrived meanwhile
(group commit: runner.py). Far behind (catching up, a rebuild), a window grows to
``window_size`` events or ``window_seconds``, so a row many of its events change is written
once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from typing import TypeVar

from fleetward.projections import Meta, Projection, Rows
from fleetward.schemas import Event, Rejected, admit, type_name
from fleetward.schemas.roles import RoleBook, judge
from fleetward.services.db import Conn
from fleetward.services.jetstream.consumer import Delivery
from fleetward.services.projector.cache import RowCache, load_rows
from fleetward.services.projector.failures import describe

PROJECTION_ERROR = "projection_error"  # a valid event the fold could not apply (a bug of ours)

M = TypeVar("M", bound=Meta)


class Gap(Exception):
    """A window would not start right after the checkpoint it commits on (or a consumer lost a
    delivery): committing it would skip events. The window fails; the runner re-positions."""


@dataclass(slots=True)
class BatchResult:
    """What a window did, for the metrics: events applied and dead-lettered (by event type and
    by reason), and deliveries skipped (redelivered, or a repeated event id)."""

    applied: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    skipped: int = 0


@dataclass(slots=True)
class Window:
    """The batches folded since the last commit, committed together (one transaction) on top of
    checkpoint ``expected``. While far behind the stream, a window spans many batches so that
    each row is written once however many of its events it holds; near the head it holds what
    arrived during the previous commit."""

    expected: int
    rows: Rows
    last: int  # the checkpoint after this window
    opened: float  # time.monotonic() of its first batch
    tail: Delivery | None = None  # its last delivery: acknowledged (AckAll) after the commit
    events: int = 0  # deliveries taken, skipped ones included
    dead: list[tuple[Delivery, str, str]] = field(default_factory=list)
    result: BatchResult = field(default_factory=BatchResult)
    # a careful window (after a commit that failed for an event) keeps what it folded, so that
    # the culprits can be found by folding parts of it again (isolate.py): the events folded, in
    # order, and the deliveries admission refused (``dead`` also holds the fold's refusals)
    kept: list[tuple[Event, Delivery]] | None = None
    refused: list[tuple[Delivery, str, str]] = field(default_factory=list)


def open_window(expected: int, cache: RowCache, *, keep: bool = False) -> Window:
    """An empty window on checkpoint ``expected``, folding on the rows ``cache`` holds;
    ``keep``: a careful window, which keeps the events it folds."""
    return Window(
        expected, Rows(base=cache.tables), expected, time.monotonic(), kept=[] if keep else None
    )


Admitted = list[tuple[Delivery, Event | Rejected]]
"""A batch with each delivery's event, or why it was refused (admitted once per runner)."""


def admit_batch(batch: list[Delivery], roles: RoleBook | None = None) -> Admitted:
    """Each delivery of ``batch`` with its admitted event, or the ``Rejected`` that refused it;
    with ``roles`` (a runner of FW_EVENTS), a person's event is also judged by the roles in force
    before its position, and role changes are noted as they pass (schemas/roles.py).
    Admission failing in any other way (a bug, or an input it was not built for, e.g. nesting
    deep enough for a ``RecursionError``) refuses the event as a ``projection_error``: no event
    may stop the runner."""
    out: Admitted = []
    for d in batch:
        try:
            event = admit(d.subject, d.data)
            if roles is not None:
                judge(event, d.seq, roles)
            out.append((d, event))
        except Rejected as r:
            out.append((d, r))
        except Exception as exc:
            out.append((d, Rejected(PROJECTION_ERROR, f"admission failed: {describe(exc)}")))
    return out


def fold(
    projection: Projection, items: list[tuple[Event, M]], rows: Rows
) -> list[tuple[Event, M, str, str]]:
    """Apply events in order; returns the ones the fold refused as (event, meta, reason,
    detail): a ``Rejected`` the fold raises (a rule it judges in stream order, e.g. an agent's
    lifecycle: projections/lifecycle.py) with its own reason, anything else it raises as a
    ``projection_error``."""
    failed = []
    apply = projection.apply
    for event, meta in items:
        try:
            apply(rows, event, meta)
        except Rejected as r:
            failed.append((event, meta, r.reason, r.detail))
        except Exception as exc:  # one bad event must not stop the projection
            failed.append((event, meta, PROJECTION_ERROR, f"{type(exc).__name__}: {exc}"))
    return failed


async def prepare(
    conn: Conn | None,
    projection: Projection,
    admitted: Admitted,
    window: Window,
    *,
    cache: RowCache | None = None,
    reads: Callable[[str], bool] | None = None,
    repeats: Set[int] = frozenset(),
    after: int | None = None,
) -> Window:
    """Fold an admitted batch into ``window``: the deliveries on subjects the projection
    ``reads`` (all when None), past the window's last sequence and not ``repeats`` (sequences of
    copies of earlier events: ledger.py). ``after``: the highest stream sequence the consumer
    delivered before this batch (``follows``; None: not checked). Reads rows only (``conn``
    may be None when ``cache`` holds every row the fold can read)."""
    if after is not None:
        follows(window, admitted, after)
    result, dead = window.result, window.dead
    items: list[tuple[Event, Delivery]] = []
    last = window.last
    for d, event in admitted:
        if d.seq <= last:
            result.skipped += 1  # applied before (a redelivery)
            continue
        last = d.seq
        if reads is not None and not reads(d.subject):
            continue  # another projection's subject (see consumer_filter)
        if isinstance(event, Rejected):
            dead.append((d, event.reason, event.detail))
            result.dead[event.reason] += 1
            if window.kept is not None:
                window.refused.append((d, event.reason, event.detail))
            continue
        if d.seq in repeats:
            result.skipped += 1  # a copy of an event stored before
            continue
        items.append((event, d))
    window.last = last
    window.events += len(admitted)
    window.tail = admitted[-1][0]
    if window.kept is not None:
        window.kept += items
    await load_rows(conn, projection, items, window.rows, cache)
    tally(items, fold(projection, items, window.rows), dead, result)
    return window


def follows(window: Window, admitted: Admitted, after: int) -> None:
    """Raise ``Gap`` unless every delivery of ``admitted`` past the window's last sequence
    comes right after it: the consumer delivered nothing past it before (``after``: the highest
    stream sequence it delivered before this batch). A delivery at or before the last sequence
    is a redelivery, skipped by ``prepare``. Pure."""
    last, taken = window.last, after
    for d, _ in admitted:
        if d.seq > last:
            if taken > last:
                raise Gap(
                    f"delivery {d.seq} would start after {taken}, but the window commits on "
                    f"{window.expected} and has folded up to {last}: events would be skipped"
                )
            last = d.seq
        taken = max(taken, d.seq)


def tally(
    items: list[tuple[Event, Delivery]],
    failed: list[tuple[Event, Delivery, str, str]],
    dead: list[tuple[Delivery, str, str]],
    result: BatchResult,
) -> None:
    """Count what folding ``items`` did: the ones in ``failed`` join ``dead`` (by reason), the
    rest count as applied (by event type)."""
    applied = Counter(type(event) for event, _ in items)
    for event, d, reason, detail in failed:
        dead.append((d, reason, detail))
        applied[type(event)] -= 1
        result.dead[reason] += 1
    for type_, n in applied.items():
        if n:
            result.applied[type_name(type_)] += n
