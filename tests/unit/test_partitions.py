"""The pure side of heartbeat partitions: subjects, the transform, and who owns which agent."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleetward import projections
from fleetward.projections.utilization import Utilization, partition
from fleetward.schemas.admission import admit, sender_of
from fleetward.schemas.events import Heartbeat
from fleetward.schemas.ids import new_id
from fleetward.schemas.partitions import (
    heartbeat_agent,
    partition_of,
    partitions_of,
    published_subject,
    stored_subject,
    transform,
)
from fleetward.services.config import WatchdogSettings, parse_partition
from fleetward.services.errors import FleetwardError
from fleetward.services.jetstream.publish import encode
from fleetward.services.projector.consumers import by_stream
from fleetward.services.projector.partitions import expand
from fleetward.services.watchdog.core.judge import Judge

AGENTS = [f"a-{i}" for i in range(500)]


def test_a_stored_heartbeat_subject_is_judged_as_the_one_published() -> None:
    assert published_subject("fw.hb.3.a-17") == "fw.hb.a-17"
    assert published_subject("fw.hb.a-17") == "fw.hb.a-17"
    assert published_subject("fw.task.t-1.a-17") == "fw.task.t-1.a-17"
    assert published_subject("fw.hb.x.a-17") == "fw.hb.x.a-17"  # no partition token: no form
    assert heartbeat_agent("fw.hb.3.a-17") == heartbeat_agent("fw.hb.a-17") == "a-17"
    beat = Heartbeat(id=new_id(), actor="a-17", at=datetime.now(UTC), agent="a-17", status="busy")
    stored = stored_subject("a-17", 4)
    assert stored != "fw.hb.a-17"
    assert admit(stored, encode(beat)) == beat
    assert sender_of(stored, b"not json") == "a-17"


def test_the_transform_names_its_partition_count() -> None:
    assert transform(1) is None and partitions_of(None) == 1
    for n in (2, 3, 16, 1024):
        assert partitions_of(transform(n)) == n
    assert partitions_of(("fw.hb.*", "fw.hb.{{wildcard(1)}}")) is None  # not Fleetward's


def test_the_watchdog_and_the_projector_own_the_same_agents() -> None:
    for parts in (2, 3, 5):
        for part in range(parts):
            judge = Judge(WatchdogSettings(partition=(part, parts)))
            fold = partition(part, parts)
            owned = {a for a in AGENTS if judge.owns(a)}
            assert owned == {a for a in AGENTS if fold.owns(a)}
            assert owned == {a for a in AGENTS if partition_of(a, parts) == part}


def test_utilization_runs_as_one_runner_per_partition() -> None:
    running = expand(projections.ALL, 3)
    names = [p.name for p in running]
    assert "utilization" not in names
    assert [n for n in names if n.startswith("utilization")] == [
        "utilization_p0of3", "utilization_p1of3", "utilization_p2of3"]  # fmt: skip
    alone = [g for g in by_stream(running) if g[0].name.startswith("utilization")]
    assert [len(g) for g in alone] == [1, 1, 1]  # each its own consumer and checkpoint
    assert [p.subjects for g in alone for p in g] == [("fw.hb.0.>",), ("fw.hb.1.>",),
                                                      ("fw.hb.2.>",)]  # fmt: skip
    assert expand(projections.ALL, 1) == projections.ALL
    assert [p.name for p in expand(projections.ALL, 3, (1, 3))] == ["utilization_p1of3"]
    assert isinstance(expand(projections.ALL, 1, (0, 1))[0], Utilization)


@pytest.mark.parametrize("raw", ["1/1", "2/2", "-1/2", "0/0", "a/b", "0/2000"])
def test_a_partition_out_of_range_is_refused_in_one_line(raw: str) -> None:
    with pytest.raises(FleetwardError, match=r"--partition=.* is not 'i/n'"):
        parse_partition(raw, "--partition")


def test_a_partition_count_other_than_the_streams_is_refused() -> None:
    with pytest.raises(FleetwardError, match="stored in 2 partition"):
        expand(projections.ALL, 2, (0, 3))
