"""The projection runner: the consumer loop of the projections of one stream.

The projections of a stream share one durable pull consumer, so each event is delivered and
admitted once however many of them read it. Each batch is folded into every projection's open
window (window.py); the windows commit together in one Postgres transaction, each on its own
checkpoint (commit.py); one AckAll acknowledges them after the commit. Copies of events stored
before (the same id) are found per batch and skipped, and the ids first seen are recorded in the
same transaction (ledger.py).

The next windows fold (pure CPU) while the previous ones commit (waiting on Postgres), on the
cached rows of the windows being committed (cache.py); if that commit fails, the runner drops
both and re-positions from the checkpoints in the database. Near the head, batches taken while
a commit is in flight join the open windows, which commit the moment it is done (group
commit): one commit per Postgres round of work rather than per batch, so a slow commit (a
loaded host) makes windows larger, not a queue of commits that falls ever further behind.
A failure that an event caused (failures.py) cannot heal by retrying: the runner folds the
failed range again in careful windows, and bisects the one that fails to dead-letter the
culprits (isolate.py).

With a ``Lease`` (lease.py; the projector always has one), the runner writes only while it
holds it: it stands by until it takes it, then positions and applies until the lease is lost
(it stands by again, writing nothing more: every commit is fenced) or it is stopped (it commits
what it holds, then gives the lease up). A window must start right after the checkpoint it
commits on (window.py ``follows``), and the consumer must lose no delivery (``_follow``): else
the window fails (``Gap``) and the runner re-positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import anyio
import asyncpg
import msgspec
from nats.aio.msg import Msg

from fleetward.projections import Projection
from fleetward.schemas.roles import RoleBook
from fleetward.schemas.streams import EVENTS_STREAM
from fleetward.schemas.subjects import wildcard
from fleetward.services import db, metrics
from fleetward.services.client.roles import read_roles
from fleetward.services.db import Conn, q
from fleetward.services.jetstream.consumer import (
    Delivery,
    PullConsumer,
    recreate_consumer,
    to_delivery,
)
from fleetward.services.projector import outbox
from fleetward.services.projector.cache import RowCache, warm
from fleetward.services.projector.commit import Fenced, Moved, Resync, commit_windows
from fleetward.services.projector.consumers import consumer_filter, durable_name, reads_subject
from fleetward.services.projector.failures import classify, needs_operator
from fleetward.services.projector.health import RunnerHealth
from fleetward.services.projector.isolate import Isolate, isolate
from fleetward.services.projector.lease import RETRY_S, Lease, LeaseLost
from fleetward.services.projector.ledger import IdLedger, Records, kinds_read
from fleetward.services.projector.window import Gap, Window, admit_batch, open_window, prepare
from fleetward.services.runtime.connect import Runtime
from fleetward.services.signals import Signal, Signals
from fleetward.services.trace import TRACE, Trace

log = logging.getLogger("fleetward.projector")

# Near the head of the stream a runner takes batches of at most this many events, and yields
# the event loop after each: folding one holds the loop for a few milliseconds (heartbeats cost
# ~50 us each), so the commit in flight, whose every round trip waits for the loop, and NATS
# reads go on between them. Far behind, it takes full batches (throughput).
HEAD_BATCH = 100


@dataclass(slots=True)
class Member:
    """One projection of a runner: where it stands, its row cache and its open window."""

    projection: Projection
    reads: Callable[[str], bool] | None  # None: it reads every subject the consumer delivers
    cache: RowCache = field(default_factory=RowCache)
    checkpoint: int = 0
    folded: int = 0  # the checkpoint its next window folds on (ahead while one commits)
    window: Window | None = None  # folded, not yet committing


class RunnerSignals(Signals):
    """What a runner announces (services/signals.py), for tests to wait on."""

    def __init__(self) -> None:
        super().__init__()
        # a projection's window committed: (projection, its checkpoint now)
        self.committed: Signal[tuple[str, int]] = Signal(self, "committed")
        # the runner is about to re-position these projections after an error (a Resync, NATS
        # or Postgres trouble), as fleetward_projection_resyncs_total counts them
        self.resynced: Signal[tuple[str, ...]] = Signal(self, "resynced")


class ProjectionRunner:
    """The consumer loop of one or more projections on one stream. They share one durable
    consumer, so each event is delivered and admitted once however many projections read it;
    each keeps its own checkpoint, and their windows commit in one transaction. ``signals``
    announce each commit and each re-positioning."""

    def __init__(
        self,
        rt: Runtime,
        *projections: Projection,
        batch_size: int = 1000,
        window_size: int = 100_000,
        window_seconds: float = 3.0,
        durable_suffix: str = "",
        health: RunnerHealth | None = None,
        lease: Lease | None = None,
    ) -> None:
        assert projections and len({p.stream for p in projections}) == 1, "one stream"
        # by name: one durable name and one checkpoint lock order, however they were given
        projections = tuple(sorted(projections, key=lambda p: p.name))
        self.rt, self.projections = rt, projections
        self.stream = projections[0].stream
        self.name = "+".join(p.name for p in projections)  # for logs
        self.filters = consumer_filter(*projections)
        self.members = [Member(p, reads_subject(p, self.filters)) for p in projections]
        self.ledger = (
            IdLedger(self.stream, kinds_read(projections))
            if any(p.id_ledger for p in projections)
            else None
        )
        # people's events are judged by the roles in force at their position (schemas/roles.py)
        self.roles: RoleBook | None = None
        # whether the consumer delivers the role events; if not, the book is read per batch
        self._sees_roles = not self.filters or wildcard("person") in self.filters
        self.batch_size = batch_size
        self.head_batch = min(HEAD_BATCH, batch_size)  # near the head (see HEAD_BATCH)
        # while far behind the stream: commit every window_size events or window_seconds
        self.window_size, self.window_seconds = max(window_size, batch_size), window_seconds
        self.durable = durable_name(*projections, suffix=durable_suffix)
        self.consumer: PullConsumer | None = None
        self.pending = -1  # messages the server had left after the last batch taken
        self._inflight: asyncio.Future[None] | None = None
        self._due = False  # the open windows commit as soon as the commit in flight is done
        # fold in careful windows up to this sequence (after a window failed for an event)
        self._careful_until = 0
        self.signals = RunnerSignals()
        self.health = health or RunnerHealth()  # what /healthz reads (health.py)
        self.lease = lease  # None: it writes without asking (tests, a rebuild)
        # the consumer's deliveries so far: the highest stream sequence, and its sequence
        self._taken, self._cseq = 0, 0
        self._traced: list[int] = []  # sequences of traced deliveries folded, not committing
        # the connection its windows commit on (one commit at a time: ``_inflight``)
        self._writer: asyncpg.Connection | None = None

    @property
    def checkpoint(self) -> int:
        """The lowest checkpoint of its projections (the consumer delivers from there on)."""
        return min(m.checkpoint for m in self.members)

    async def position(self) -> None:
        """Read the checkpoints and put the consumer right after the lowest (dropping anything
        folded or being committed: it will be delivered again)."""
        if self.lease is not None and not self.lease.held:  # the consumer is the holder's
            raise LeaseLost(f"projection {self.name}: not holding the lease")
        self.health.positioning()
        inflight, self._inflight, self._due = self._inflight, None, False
        if inflight is not None:
            with contextlib.suppress(Exception):
                await inflight
        async with self.rt.pool.acquire() as conn:
            for m in self.members:
                p = m.projection
                await conn.execute(q("checkpoint_init"), p.name, p.stream)
                m.checkpoint = m.folded = await conn.fetchval(q("checkpoint_get"), p.name)
                empty = m.checkpoint == 0 and await _tables_empty(conn, p)
                m.cache.clear(p.tables, empty=empty)
                if p.warm_start and not empty:
                    await warm(conn, p, m.cache)
                m.window = None
        if self.ledger is not None:
            self.ledger.clear()
        if self.stream == EVENTS_STREAM:  # people's events are judged by their roles
            self.roles = await read_roles(self.rt.nc, direct=True)
        if self.consumer is not None:
            await self.consumer.stop()
        await recreate_consumer(
            self.rt.js,
            self.stream,
            self.durable,
            self.filters,
            self.checkpoint,
            max_ack_pending=max(50_000, 2 * self.window_size + 4 * self.batch_size),
        )
        self.consumer = PullConsumer(self.rt.nc, self.stream, self.durable, batch=self.batch_size)
        if TRACE is not None and TRACE.subject:
            _trace_arrivals(self.consumer, TRACE)
        self._taken, self._cseq = self.checkpoint, 0  # it delivers from there, from 1
        self._traced = []
        await self.consumer.start()
        for m in self.members:
            metrics.CHECKPOINT.labels(m.projection.name).set(m.checkpoint)
        self.health.positioned()

    async def step(self, wait: float = 1.0) -> int:
        """Take one batch (waiting up to ``wait``) and fold it into the open windows, while the
        previous ones commit; start their commit unless they should grow, or, while the previous
        commit is still in flight, as soon as it is done (group commit: the windows hold what
        arrived meanwhile). Returns the batch's size (0 also when the wait ended because the
        commit in flight was done). ``flush`` commits the open windows and waits."""
        assert self.consumer is not None
        if self.consumer.gone:
            raise Resync("the consumer was deleted")
        if self._due and not self._committing():  # the commit they waited for is done
            await self._start_commit()
        batch = await self._take(wait)
        if not batch:
            if self._due and not self._committing():  # woken by the end of the commit
                await self._start_commit()
                return 0
            await self.flush()
            self.health.idle()
            return 0
        taken = time.time() if TRACE is not None else 0.0
        self.health.took()
        self._follow(batch)
        careful = batch[0].seq <= self._careful_until
        if self.roles is not None and not self._sees_roles:
            await read_roles(self.rt.nc, self.roles, direct=True)  # up to the head: past this batch
        admitted = admit_batch(batch, self.roles)
        async with self._reading() as conn:
            ledger = self.ledger
            repeats: AbstractSet[int] = frozenset()
            if ledger is not None:
                assert conn is not None
                repeats = await ledger.repeats(conn, admitted)
            for m in self.members:
                if m.window is None:
                    m.window = open_window(m.folded, m.cache, keep=careful)
                await prepare(conn, m.projection, admitted, m.window, cache=m.cache,
                              reads=m.reads, repeats=repeats, after=self._taken)  # fmt: skip
        self._taken = max(self._taken, *(d.seq for d in batch))
        tail = batch[-1]
        if TRACE is not None:
            self._trace_batch(TRACE, batch, taken)
        self.pending = tail.pending
        window = self.members[0].window
        assert window is not None
        if careful:  # one batch a window, committed (or bisected) before the next is folded
            await self.flush()
        elif not self._should_grow(window, tail):
            if self._committing() and window.events < self.window_size:
                self._due = True  # committed as soon as the commit in flight is done
            else:
                await self._start_commit()
        await asyncio.sleep(0)  # the commit in flight and NATS reads go on (HEAD_BATCH)
        return len(batch)

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[Conn | None]:
        """A connection for folding a batch (the ledger's lookup, rows to load), or None when
        no member needs one (every row cached, no ledger): no pool round trip per batch."""
        if self.ledger is None and all(m.cache.holds_all(m.projection.tables)
                                       for m in self.members):  # fmt: skip
            yield None
            return
        async with self.rt.pool.acquire() as conn:
            yield conn

    def _committing(self) -> bool:
        """A commit is in flight."""
        return self._inflight is not None and not self._inflight.done()

    async def _take(self, wait: float) -> list[Delivery]:
        """The next batch (``next_batch``); with windows due and a commit in flight, an empty
        one as soon as that commit is done, so that they commit without waiting for more."""
        consumer, inflight = self.consumer, self._inflight
        assert consumer is not None
        size = self.batch_size if self.pending >= self.batch_size else self.head_batch
        if not self._due or inflight is None or inflight.done():
            return await consumer.next_batch(size, wait)

        def wake(_: object) -> None:
            consumer.interrupt()

        inflight.add_done_callback(wake)
        try:
            return await consumer.next_batch(size, wait)
        finally:
            inflight.remove_done_callback(wake)

    def _trace_batch(self, trace: Trace, batch: list[Delivery], taken: float) -> None:
        """Mark a batch taken and folded (services/trace.py), with the traced deliveries in it."""
        traced = [d.seq for d in batch if d.subject == trace.subject]
        self._traced += traced
        trace.mark("batch", runner=self.name, taken=taken, n=len(batch), first=batch[0].seq,
                   last=batch[-1].seq, pending=batch[-1].pending, traced=traced)  # fmt: skip

    def _follow(self, batch: list[Delivery]) -> None:
        """Raise ``Gap`` unless ``batch`` continues the consumer's deliveries to this runner
        without a hole (consumer sequences one by one): a delivery that went elsewhere (another
        process pulling from this durable, a reply lost in a reconnect) would be skipped."""
        for d in batch:
            if d.cseq != self._cseq + 1:
                raise Gap(
                    f"the consumer's delivery {d.cseq} (stream sequence {d.seq}) came after "
                    f"{self._cseq}: deliveries went elsewhere"
                )
            self._cseq = d.cseq

    def isolating(self, exc: Isolate) -> None:
        """A window failed for an event it holds: fold its events again in careful windows, up
        to its last sequence (then ``position``), so that the culprits are found and
        dead-lettered (isolate.py). Counted as a re-positioning of every projection."""
        log.warning("projection %s: %s; folding again in careful windows", self.name, exc)
        self._careful_until = max(self._careful_until, exc.until)
        names = tuple(m.projection.name for m in self.members)
        for name in names:
            metrics.RESYNCS.labels(name).inc()
        self.signals.resynced.emit(names)

    def _should_grow(self, window: Window, tail: Delivery) -> bool:
        """Keep folding into the open windows: far behind the stream (more than a batch
        pending, and the newest event older than the time limit), and the windows not full."""
        behind = tail.pending >= self.batch_size and (
            time.time() - tail.time.timestamp() > self.window_seconds
        )
        return (
            behind
            and window.events < self.window_size
            and time.monotonic() - window.opened < self.window_seconds
        )

    async def _start_commit(self) -> None:
        """Commit the open windows in the background (after the previous ones are committed);
        the next windows fold on their rows meanwhile (optimistic: a failed commit
        re-positions)."""
        self._due = False
        windows = []
        for m in self.members:
            if m.window is not None:
                windows.append((m, m.window))
                m.cache.remember(m.window.rows)
                m.folded = m.window.last
                m.window = None
        if not windows:
            return
        await self._wait_inflight()
        records = {} if self.ledger is None else self.ledger.take()
        traced, self._traced = self._traced, []
        self._inflight = asyncio.ensure_future(self._commit(windows, records, traced))

    async def flush(self) -> None:
        """Commit the open windows, if any, and wait for every commit (raising what it
        raised)."""
        await self._start_commit()
        await self._wait_inflight()

    async def _wait_inflight(self) -> None:
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight

    async def _commit(
        self, windows: list[tuple[Member, Window]], records: Records, traced: list[int]
    ) -> None:
        """Commit the windows and the event ids they apply first (``records``) in one
        transaction, then acknowledge and count them. A failure an event caused (failures.py)
        bisects careful windows (isolate.py), and raises ``Isolate`` for others; any other
        failure is raised as it is. ``traced``: the traced deliveries they hold (trace.py)."""
        assert self.consumer is not None
        started = time.perf_counter()
        moved: dict[str, Moved] = {}
        steps: dict[str, float] | None = None if TRACE is None else {"began": time.time()}
        try:
            await self._transaction(windows, records, moved, bisect=False, steps=steps)
        except Resync:
            raise
        except Exception as exc:
            if classify(exc) != "event":
                raise
            if any(window.kept is None for _, window in windows):
                raise Isolate(max(window.last for _, window in windows), exc) from exc
            moved.clear()
            await self._transaction(windows, records, moved, bisect=True)
            for m, _ in windows:  # it holds the failed windows' rows, culprits included
                m.cache.clear(m.projection.tables)
        if self.ledger is not None:
            self.ledger.committed()
        last = windows[0][1].tail
        assert last is not None
        if not moved:
            await self.consumer.ack(last)
        if TRACE is not None and steps is not None:
            TRACE.mark("commit", runner=self.name, events=sum(w.events for _, w in windows),
                       last=last.seq, traced=traced, **steps)  # fmt: skip
        lag = 0.0 if last.pending == 0 else max(time.time() - last.time.timestamp(), 0.0)
        elapsed = time.perf_counter() - started
        for m, window in windows:
            name, result = m.projection.name, window.result
            if name in moved:
                continue
            m.checkpoint = window.last
            metrics.BATCH_SECONDS.labels(name).observe(elapsed)
            metrics.BATCH_SIZE.labels(name).observe(window.events)
            metrics.CHECKPOINT.labels(name).set(window.last)
            metrics.LAG_EVENTS.labels(name).set(last.pending)
            metrics.LAG_SECONDS.labels(name).set(lag)
            metrics.SKIPPED.labels(name).inc(result.skipped)
            for type_, n in result.applied.items():
                metrics.EVENTS.labels(name, type_).inc(n)
            for reason, n in result.dead.items():
                metrics.DEAD_LETTERS.labels(name, reason).inc(n)
            self.signals.committed.emit((name, window.last))
        self.health.committed(more=any(m.window is not None for m in self.members))
        if moved:  # re-position from the checkpoints now in the database
            message = "; ".join(f"{name}: {exc}" for name, exc in moved.items())
            raise Resync(message, tuple(moved))

    async def _transaction(
        self,
        windows: list[tuple[Member, Window]],
        records: Records,
        moved: dict[str, Moved],
        *,
        bisect: bool,
        steps: dict[str, float] | None = None,
    ) -> None:
        """One transaction for every window and the event ids: ``commit_windows`` on the
        runner's own connection, or ``isolate`` (``bisect``, careful windows only; each
        window's result becomes what the bisection found). The ids are facts of the stream,
        recorded whichever projections moved. ``steps`` (tracing): gets the unix time at which
        each step ended."""
        ledger = self.ledger

        async def first(conn: Conn) -> None:
            if ledger is not None:
                await ledger.record(conn, records)

        if not bisect:
            writer = await self._writing_on()
            fence = None if self.lease is None else self.lease.fence_of()
            try:
                moved.update(await commit_windows(
                    writer, [(m.projection, w) for m, w in windows], fence=fence, first=first,
                    steps=steps))  # fmt: skip
            except Fenced:
                assert self.lease is not None
                raise self.lease.fenced_out() from None
            if steps is not None:
                steps["committed"] = time.time()
            outbox.committed(writer)  # what the windows emitted is stored now: publish it
            return
        async with self.rt.pool.acquire() as conn, conn.transaction():
            if self.lease is not None:  # the fence: no commit once the lease is gone
                await self.lease.fence(conn)
            await first(conn)
            for m, window in windows:
                try:
                    window.result = await isolate(conn, m.projection, window)
                except Moved as exc:  # a rebuild of one projection must not stall the others:
                    moved[m.projection.name] = exc  # they still commit
        outbox.committed(conn)

    async def _writing_on(self) -> asyncpg.Connection:
        """The runner's writer connection (``rt.writers``), opened with the staging table of
        every table its projections write; again after it was lost."""
        conn = self._writer
        if conn is not None and not conn.is_closed():
            return conn
        self._writer = None
        conn = await self.rt.writers.connect()
        try:
            for m in self.members:
                for table in m.projection.tables:
                    await conn.execute(db.stage_sql(table))
        except BaseException:
            await self.rt.writers.release(conn)
            raise
        self._writer = conn
        return conn

    async def close(self) -> None:
        """Close the writer connection (opened again by the next commit)."""
        conn, self._writer = self._writer, None
        if conn is not None:
            await self.rt.writers.release(conn)

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Apply batches until ``stopping()``; the batches in hand are always committed first.
        With a lease: only while holding it, standing by meanwhile; given up at the end."""
        lease = self.lease
        if lease is None:
            await self._apply(stopping)
            return
        try:
            while await self._stand_by(lease, stopping):
                self._activate(True)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(lease.keep)
                    await self._apply(stopping)
                    tg.cancel_scope.cancel()
                self._activate(False)
                self._drop()
        finally:
            await lease.close()
            self._activate(False)

    def _writing(self, stopping: Callable[[], bool]) -> bool:
        return not stopping() and (self.lease is None or self.lease.held)

    async def _stand_by(self, lease: Lease, stopping: Callable[[], bool]) -> bool:
        """Try to take the lease every ``RETRY_S`` until this process holds it (True) or is
        stopped (False); meanwhile it is a standby, healthy (health.py), and says which process
        is active."""
        said = ""
        while not stopping():
            try:
                if await lease.try_take():
                    log.info("projection %s: active (this process holds the lease)", self.name)
                    return True
                holders = ", ".join(await lease.holders()) or "another process"
                self.health.standing_by(holders)
                if said != holders:
                    log.info("projection %s: standby (active: %s)", self.name, holders)
                    said = holders
            except Exception as exc:  # Postgres away: not a standby anyone can count on
                log.warning("projection %s: cannot reach the lease (%s); retrying", self.name, exc)
                self.health.failed(exc, resync=False)
                self.health.positioning()
                metrics.count_postgres_error("projector", exc)
                lease.lose(f"{type(exc).__name__}: {exc}")
                said = ""
            await anyio.sleep(RETRY_S)
        return False

    def _activate(self, active: bool) -> None:
        for m in self.members:
            metrics.ACTIVE.labels(m.projection.name).set(1 if active else 0)

    def _drop(self) -> None:
        """Forget what was folded (the lease is lost: the next holder applies it)."""
        inflight, self._inflight, self._due = self._inflight, None, False
        if inflight is not None:  # fenced: it commits nothing; what it raised is of no use now
            inflight.cancel()
            inflight.add_done_callback(lambda f: f.cancelled() or f.exception())
        for m in self.members:
            m.window = None
        if self._writer is not None:  # a commit cancelled midway may hold it: not reused
            self.rt.writers.terminate(self._writer)
            self._writer = None

    async def _apply(self, stopping: Callable[[], bool]) -> None:
        """Apply batches while ``_writing``; stopped, commit the batches in hand first."""
        backoff = 0.1
        await self._position_retrying(stopping)
        while self._writing(stopping):
            try:
                await self.step()
                if stopping():
                    await self.flush()
                backoff = 0.1
            except Isolate as exc:  # no pause: the careful windows find the culprits
                self.health.failed(exc, resync=True)
                self.isolating(exc)
                await self._position_retrying(stopping)
            except Exception as exc:  # Resync, Gap, NATS or Postgres trouble: start again
                if not self._writing(stopping) or isinstance(exc, LeaseLost):
                    log.warning("projection %s: %s; standing by", self.name, exc)
                    break
                if needs_operator(exc):  # no event caused it, and waiting will not cure it
                    log.error("projection %s: %r; re-positioning", self.name, exc)
                else:
                    log.warning("projection %s: %s; re-positioning", self.name, exc)
                self.health.failed(exc, resync=True)
                moved = exc.projections if isinstance(exc, Resync) else ()
                names = tuple(
                    m.projection.name
                    for m in self.members
                    if not moved or m.projection.name in moved
                )
                for name in names:
                    metrics.RESYNCS.labels(name).inc()
                self.signals.resynced.emit(names)
                metrics.count_postgres_error("projector", exc)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                await self._position_retrying(stopping)
        if self.consumer is not None:
            await self.consumer.stop()
        await self.close()

    async def _position_retrying(self, stopping: Callable[[], bool]) -> None:
        delay = 0.1
        while self._writing(stopping):
            try:
                await self.position()
                return
            except LeaseLost:
                return
            except Exception as exc:  # NATS or Postgres away: keep trying
                log.warning("projection %s: cannot position (%s); retrying", self.name, exc)
                self.health.failed(exc, resync=False)
                metrics.count_postgres_error("projector", exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)


def _trace_arrivals(consumer: PullConsumer, trace: Trace) -> None:
    """Mark each delivery of the traced subject as the consumer buffers it (tracing only: the
    consumer's ``on_message`` is wrapped, so an untraced process pays nothing)."""
    take = consumer.on_message

    def on_message(msg: Msg) -> None:
        take(msg)
        if msg.subject == trace.subject:
            d = to_delivery(msg)
            message = msgspec.json.decode(d.data).get("message")
            trace.mark("arrived", seq=d.seq, stored=d.time.timestamp(), message=message)

    consumer.on_message = on_message  # type: ignore[method-assign]


async def _tables_empty(conn: Conn, projection: Projection) -> bool:
    for table in projection.tables:
        if await conn.fetchval(db.any_row_sql(table)):
            return False
    return True
