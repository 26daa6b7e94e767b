"""Task leases (DESIGN 3.3, 3.4), pure: which claims have lapsed. No I/O; the watchdog feeds it
each task's row as the task mirror folds it (mirror.py: the task state machine, ``step``) with
the stream sequence of every event stored on the task's subjects, and heartbeats with their
stream time; it asks what is due at a given ``now``, and publishes the lease expiries.

A lease belongs to the claim that holds the task (holder, epoch and the claim's event id, as the
row has them) and lasts while the row says the task is held. Its deadline is ``lease_s`` after
its last renewal: the row's ``last_progress_at`` (the claim, progress, a block, the work back
after a rejected review) or a heartbeat of the holder naming the task, whichever is later. When
the task is no longer held by that claim (submitted, released, expired, revoked, the claim
voided by the board, cancelled, or claimed anew) the lease ends, so a claim the board refuses
never replaces the holder's lease, and an event that does not fit the task opens none. A lease's
length enters through ``limits.period`` (clamped), so a deadline always fits a ``datetime``.
Deadlines sit in a heap with lazy deletion: a renewal pushes a new entry and the stale one is
skipped when it surfaces, so each check costs only the leases actually due.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta

from fleetward.projections.base import Row
from fleetward.projections.tasks import holder
from fleetward.schemas import deterministic_id
from fleetward.services.watchdog.core.limits import period


@dataclass(slots=True)
class Lease:
    task: str
    agent: str
    epoch: int
    claim: str | None  # the claim's event id
    lease: timedelta
    deadline: datetime
    task_seq: int  # the last stream sequence seen on the task's subjects (v1 or v2)
    version: int = 0  # new on every renewal (unique in the book); older heap entries are stale
    reported: bool = False  # its lapse was handed out (again only after news of the task)
    released: bool = False  # released another way (its holder went offline): never reported


@dataclass(frozen=True, slots=True)
class Lapse:
    """A lease that lapsed: publish ``task.lease_expired`` for it, with ``expected_seq`` as
    Nats-Expected-Last-Subject-Sequence (anything newer on the task means: judge again)."""

    task: str
    agent: str
    epoch: int
    deadline: datetime
    expected_seq: int

    @property
    def event_id(self) -> str:
        """The same for every watchdog replica, so the stream keeps one expiry per lapse."""
        return deterministic_id("lease", self.task, str(self.epoch))


class LeaseBook:
    def __init__(self) -> None:
        self.leases: dict[str, Lease] = {}
        self._heap: list[tuple[datetime, str, int]] = []
        self._versions = itertools.count(1)

    def __len__(self) -> int:
        return len(self.leases)

    def _renew(self, lease: Lease, at: datetime) -> None:
        lease.version = next(self._versions)
        lease.reported = False
        lease.deadline = at + lease.lease
        heapq.heappush(self._heap, (lease.deadline, lease.task, lease.version))

    def heartbeat(self, agent: str, task: str, at: datetime) -> None:
        """A heartbeat of ``agent`` naming ``task`` at stream time ``at``."""
        lease = self.leases.get(task)
        if lease is not None and lease.agent == agent and at + lease.lease > lease.deadline:
            self._renew(lease, at)

    def next_due(self) -> float | None:
        """When the earliest deadline falls (seconds since the epoch), or None."""
        return self._heap[0][0].timestamp() if self._heap else None

    def observe(self, task: str, row: Row | None, seq: int) -> None:
        """``row`` is ``task``'s row (None: no such task) after an event stored at ``seq`` on
        its subjects, whether or not the event fitted the task; in stream order. At start, the
        row loaded from the board with its ``last_seq``."""
        lease = self.leases.get(task)
        agent = holder(row)
        if row is None or agent is None or not row["lease_s"]:
            if lease is not None:
                del self.leases[task]  # the task is no longer held
            return
        claim = (agent, row["claim_epoch"], row["claim_id"])
        if lease is not None and (lease.agent, lease.epoch, lease.claim) != claim:
            del self.leases[task]  # held by another claim now
            lease = None
        renewed = row["last_progress_at"] or row["claimed_at"] or row["updated_at"]
        if lease is None:
            length = timedelta(seconds=period(row["lease_s"]))
            lease = Lease(task, *claim, length, renewed, seq)
            self.leases[task] = lease
            self._renew(lease, renewed)
            return
        lease.task_seq = max(lease.task_seq, seq)
        if renewed + lease.lease > lease.deadline:
            self._renew(lease, renewed)  # the holder reported on the task
        elif lease.reported and not lease.released:  # its expiry was refused or is on its
            lease.reported = False  # way: judge it again
            heapq.heappush(self._heap, (lease.deadline, task, lease.version))

    def due(self, now: datetime) -> list[Lapse]:
        """Leases whose deadline is at or before ``now``. Each is reported once until the
        book sees a newer event for its task (then it is judged again)."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            deadline, task, version = heapq.heappop(self._heap)
            lease = self.leases.get(task)
            if lease is None or lease.version != version or lease.reported or lease.released:
                continue  # renewed, ended, replaced or released since this entry was pushed
            lease.reported = True
            out.append(Lapse(task, lease.agent, lease.epoch, deadline, lease.task_seq))
        return out

    def again(self, lapse: Lapse) -> None:
        """Report ``lapse`` again at the next check (its expiry could not be published)."""
        lease = self.leases.get(lapse.task)
        if lease is not None and (lease.agent, lease.epoch) == (lapse.agent, lapse.epoch):
            lease.reported = False
            heapq.heappush(self._heap, (lapse.deadline, lease.task, lease.version))

    def release(self, task: str) -> None:
        """Stop judging ``task``'s lease: it is being released another way (its holder went
        offline). Ends with the claim, as every lease does."""
        lease = self.leases.get(task)
        if lease is not None:
            lease.released = True

    def holders(self, agent: str) -> list[Lease]:
        """The leases an agent holds."""
        return [lease for lease in self.leases.values() if lease.agent == agent]
