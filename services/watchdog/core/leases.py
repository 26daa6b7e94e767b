"""Task leases (DESIGN 3.3), pure: which claims have lapsed. No I/O; the watchdog feeds it events
with their stream time and sequence, asks what is due at a given ``now``, and publishes the
lease expiries.

A claim opens a lease of ``lease_s`` from the stream time of the claim. Progress, a block, or a
heartbeat of the holder naming the task renews it; a rejected review (the task comes back to
its holder) opens it again. Submission, release, lease expiry, a revoke or a refusal of the
claim, approval and cancellation end it. A lease's length enters through ``limits.period``
(clamped), so a deadline always fits a ``datetime``. Deadlines sit in a heap with lazy deletion:
a renewal pushes a new entry and the stale one is skipped when it surfaces, so each check costs
only the leases actually due.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta

from fleetward.schemas import Event, deterministic_id
from fleetward.schemas.events import (
    Heartbeat,
    TaskBlocked,
    TaskCancelled,
    TaskClaimed,
    TaskClaimRefused,
    TaskLeaseExpired,
    TaskProgressed,
    TaskReleased,
    TaskReviewed,
    TaskRevoked,
    TaskSubmitted,
)
from fleetward.services.watchdog.core.limits import period


@dataclass(slots=True)
class Lease:
    task: str
    agent: str
    epoch: int
    lease: timedelta
    deadline: datetime
    task_seq: int  # the last stream sequence seen on the task's subject
    version: int = 0  # new on every renewal (unique in the book); older heap entries are stale
    reported: bool = False  # its lapse was handed out (again only after news of the task)


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

    def load(self, lease: Lease) -> None:
        """A held task as the board last saw it (at the watchdog's start); its ``deadline``
        is the time of its last renewal."""
        self.leases[lease.task] = lease
        self._renew(lease, lease.deadline)

    def heartbeat(self, agent: str, task: str, at: datetime) -> None:
        """A heartbeat of ``agent`` naming ``task`` at stream time ``at``."""
        lease = self.leases.get(task)
        if lease is not None and lease.agent == agent and at + lease.lease > lease.deadline:
            self._renew(lease, at)

    def next_due(self) -> float | None:
        """When the earliest deadline falls (seconds since the epoch), or None."""
        return self._heap[0][0].timestamp() if self._heap else None

    def observe(self, event: Event, at: datetime, seq: int) -> None:
        """Take one event, with its stream time and sequence, in stream order."""
        if isinstance(event, Heartbeat):
            if event.task:
                self.heartbeat(event.agent, event.task, at)
            return
        task = getattr(event, "task", None)
        if task is None:
            return
        lease = self.leases.get(task)
        if lease is not None:
            lease.task_seq = max(lease.task_seq, seq)
            if lease.reported:  # its expiry was refused or is on its way: judge it again
                lease.reported = False
                heapq.heappush(self._heap, (lease.deadline, task, lease.version))
        match event:
            case TaskClaimed():
                length = timedelta(seconds=period(event.lease_s))
                new = Lease(task, event.agent, event.epoch, length, at, seq)
                self.leases[task] = new
                self._renew(new, at)
            case TaskProgressed() | TaskBlocked() if self._holds(lease, event.agent, event.epoch):
                assert lease is not None
                self._renew(lease, at)
            case TaskReviewed(verdict="reject") if lease is not None and lease.agent == event.agent:
                self._renew(lease, at)  # the work is back with its holder, same epoch
            case TaskSubmitted() if self._holds(lease, event.agent, event.epoch):
                assert lease is not None
                lease.version = next(self._versions)  # no deadline while under review
                lease.deadline = datetime.max.replace(tzinfo=at.tzinfo)
            case TaskReleased() | TaskLeaseExpired() | TaskRevoked() | TaskClaimRefused() if (
                self._holds(lease, event.agent, event.epoch)
            ):
                del self.leases[task]
            case TaskReviewed(verdict="approve") | TaskCancelled():
                self.leases.pop(task, None)

    @staticmethod
    def _holds(lease: Lease | None, agent: str, epoch: int) -> bool:
        return lease is not None and lease.agent == agent and lease.epoch == epoch

    def due(self, now: datetime) -> list[Lapse]:
        """Leases whose deadline is at or before ``now``. Each is reported once until the
        book sees a newer event for its task (then it is judged again)."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            deadline, task, version = heapq.heappop(self._heap)
            lease = self.leases.get(task)
            if lease is None or lease.version != version or lease.reported:
                continue  # renewed, ended or replaced since this entry was pushed
            lease.reported = True
            out.append(Lapse(task, lease.agent, lease.epoch, deadline, lease.task_seq))
        return out

    def again(self, lapse: Lapse) -> None:
        """Report ``lapse`` again at the next check (its expiry could not be published)."""
        lease = self.leases.get(lapse.task)
        if lease is not None and (lease.agent, lease.epoch) == (lapse.agent, lapse.epoch):
            lease.reported = False
            heapq.heappush(self._heap, (lapse.deadline, lease.task, lease.version))

    def forget(self, task: str) -> None:
        """Stop watching ``task`` (its lease is being released another way)."""
        self.leases.pop(task, None)

    def holders(self, agent: str) -> list[Lease]:
        """The leases an agent holds (to release them all when it goes offline)."""
        return [lease for lease in self.leases.values() if lease.agent == agent]
