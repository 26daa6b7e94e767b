"""Heartbeat partitions: which share of the agents a projector or watchdog process reads. Pure.

Agents publish heartbeats on ``fw.hb.<agent>`` whatever the partitioning. With ``n > 1``
partitions, FW_HEARTBEATS carries a subject transform (nats-server >= 2.10, ADR-30's
``{{partition(n,wildcards)}}``) that stores each one as ``fw.hb.<p>.<agent>``, where
``p = partition_of(agent, n)``; a process of partition ``p`` reads ``fw.hb.<p>.>`` only, so the
server sends it its agents' heartbeats and no others. With ``n == 1`` (the default) the stream
has no transform and stores ``fw.hb.<agent>``, as before partitions existed.

Invariants:
- ``partition_of`` is the server's mapping: FNV-1a (32 bits) of the agent id's UTF-8 bytes,
  modulo ``n`` (nats-server ``subjectTransform.getHashPartition``;
  tests/integration/test_partitions.py compares the two for many ids). The projector's partition
  ``i/n`` and the watchdog's ``i/n`` therefore own exactly the same agents.
- A stored heartbeat subject is turned back into the published one (``published_subject``)
  before admission: the partition token is the server's doing, never the agent's, and no
  credential Fleetward issues may publish on a four-token heartbeat subject.
"""

from __future__ import annotations

import re
from typing import Final

from fnv_hash_fast import fnv1a_32

from fleetward.schemas.subjects import kind_prefix

MAX_PARTITIONS: Final = 1024  # far more processes than one stream's consumers will ever need
HB_PREFIX: Final = kind_prefix("hb")  # fw.hb.
TRANSFORM_SOURCE: Final = f"{HB_PREFIX}*"  # what agents publish: fw.hb.<agent>
_DEST: Final = HB_PREFIX + "{{{{partition({n},1)}}}}.{{{{wildcard(1)}}}}"
_DEST_PATTERN: Final = re.compile(
    re.escape(HB_PREFIX) + r"\{\{\s*partition\(\s*(\d+)\s*,\s*1\s*\)\s*\}\}\."
    r"\{\{\s*wildcard\(\s*1\s*\)\s*\}\}"
)
_STORED: Final = re.compile(re.escape(HB_PREFIX) + r"(\d{1,4})\.([^.]+)")


def partition_of(agent: str, partitions: int) -> int:
    """The partition (0 to ``partitions - 1``) of ``agent``'s heartbeats: FNV-1a 32 of its
    UTF-8 bytes modulo ``partitions``, as nats-server's ``{{partition(n,1)}}`` computes it."""
    return fnv1a_32(agent.encode()) % partitions


def transform(partitions: int) -> tuple[str, str] | None:
    """FW_HEARTBEATS' subject transform (source, destination) for ``partitions``; None for 1
    (no transform: ``fw.hb.<agent>`` stored as published)."""
    if partitions == 1:
        return None
    return TRANSFORM_SOURCE, _DEST.format(n=partitions)


def partitions_of(found: tuple[str, str] | None) -> int | None:
    """The partition count a stream's subject transform ``found`` (source, destination) makes:
    1 for none, None for a transform that is not one ``transform`` makes."""
    if found is None:
        return 1
    src, dest = found
    matched = _DEST_PATTERN.fullmatch(dest.strip())
    if src != TRANSFORM_SOURCE or matched is None:
        return None
    return int(matched.group(1))


def stored_subject(agent: str, partitions: int) -> str:
    """The subject FW_HEARTBEATS stores ``agent``'s heartbeats on with ``partitions``, e.g.
    ``fw.hb.1.a-17`` (``fw.hb.a-17`` with one): what a direct get of its last one asks for."""
    if partitions == 1:
        return f"{HB_PREFIX}{agent}"
    return f"{HB_PREFIX}{partition_of(agent, partitions)}.{agent}"


def partition_filter(part: int) -> str:
    """The stored subjects of partition ``part``: ``fw.hb.<part>.>`` (a consumer's filter)."""
    return f"{HB_PREFIX}{part}.>"


def published_subject(stored: str) -> str:
    """The subject a message stored on ``stored`` was published on: a partitioned heartbeat's
    ``fw.hb.<p>.<agent>`` is ``fw.hb.<agent>``; any other subject is itself."""
    if stored.count(".") != 3 or not stored.startswith(HB_PREFIX):  # the hot path: one count
        return stored
    found = _STORED.fullmatch(stored)
    return stored if found is None else HB_PREFIX + found.group(2)


def heartbeat_agent(stored: str) -> str:
    """The agent a stored heartbeat subject names (``fw.hb.a-17`` or ``fw.hb.1.a-17``)."""
    return published_subject(stored)[len(HB_PREFIX) :]


def parse_partition(raw: str, setting: str) -> tuple[int, int]:
    """``"i/n"`` (a process's share of the agents) as ``(i, n)``; empty means ``(0, 1)``.
    ``ValueError`` naming ``setting`` (the flag or variable it came from) unless 0 <= i < n <=
    ``MAX_PARTITIONS``."""
    if not raw:
        return (0, 1)
    found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", raw)
    if not found or not 0 <= int(found.group(1)) < int(found.group(2)) <= MAX_PARTITIONS:
        raise ValueError(
            f"{setting}={raw!r} is not 'i/n' with 0 <= i < n <= {MAX_PARTITIONS}, e.g. '0/2'"
        )
    return int(found.group(1)), int(found.group(2))
