"""Which durable consumer feeds which projections: one per stream, named after its projections,
filtered to their one subject or reading the whole stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache

from fleetward.projections import Projection
from fleetward.schemas.streams import projector_durable


def durable_name(*projections: Projection, suffix: str = "") -> str:
    """The durable consumer of a runner of ``projections``, e.g. ``fw_agents_tasks``."""
    return projector_durable([p.name for p in projections], suffix)


def consumer_filter(*projections: Projection) -> tuple[str, ...]:
    """The filter subjects of a consumer that feeds ``projections`` (all on one stream): their
    one subject, or none at all (the whole stream) when they read several. nats-server delivers
    from a consumer with several filter subjects over a stream of many subjects at a small
    fraction of its usual rate (measured: 4,000 against 72,000 messages/s; nats-server issues
    4888, 7014), so the runner drops the subjects a projection does not read instead."""
    subjects = {s for p in projections for s in p.subjects}
    return tuple(subjects) if len(subjects) == 1 else ()


@cache
def _subject_test(subjects: tuple[str, ...]) -> Callable[[str], bool]:
    prefixes = tuple(s.removesuffix(">") for s in subjects)
    assert all(p.endswith(".") and "*" not in p for p in prefixes), "only 'a.b.>' subjects"
    return lambda subject: subject.startswith(prefixes)


def reads_subject(projection: Projection, filters: tuple[str, ...]) -> Callable[[str], bool] | None:
    """A test for the subjects ``projection`` reads, when a consumer with ``filters`` delivers
    others too; None when it delivers only those."""
    return None if filters == projection.subjects else _subject_test(projection.subjects)


def by_stream(projections: Iterable[Projection]) -> list[tuple[Projection, ...]]:
    """Projections grouped by stream, in their given order: one runner each (a projection that
    runs ``alone``, a heartbeat partition, is a group of its own)."""
    groups: dict[str, list[Projection]] = {}
    for p in projections:
        groups.setdefault(p.name if p.alone else p.stream, []).append(p)
    return [tuple(g) for g in groups.values()]


def runner_durable(projection: Projection, running: Iterable[Projection]) -> str:
    """The durable consumer that feeds ``projection`` in a projector running ``running``."""
    group = next(g for g in by_stream(running) if projection in g)
    return durable_name(*group)
