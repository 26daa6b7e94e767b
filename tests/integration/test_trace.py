"""The projector's timeline (services/trace.py, off by default), which `make bench`'s freshness
section reads: a traced delivery is marked as it arrives, is taken in a batch and commits, with
each step of its commit in order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetward.projections import BY_NAME
from fleetward.schemas.events import Heartbeat
from fleetward.services.jetstream.publish import publish_many
from fleetward.services.projector import runner as runner_module
from fleetward.services.projector.runner import ProjectionRunner
from fleetward.services.runtime.connect import Runtime
from fleetward.services.trace import Trace, from_env
from tests.helpers import envelope, run_to_end


def test_tracing_is_off_unless_a_file_is_named() -> None:
    assert from_env({}) is None
    assert from_env({"FLEETWARD_TRACE": ""}) is None


async def test_a_traced_delivery_is_marked_from_arrival_to_commit(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "trace.jsonl"
    trace = Trace(path, "fw.hb.probe")
    monkeypatch.setattr(runner_module, "TRACE", trace)
    beats = [Heartbeat(**envelope(a), agent=a, status="busy") for a in ("a1", "a2")]
    probe = Heartbeat(**envelope("probe"), agent="probe", message="7")
    await publish_many(rt.js, [beats[0], probe, beats[1]])
    try:
        await run_to_end(ProjectionRunner(rt, BY_NAME["utilization"]))
    finally:
        trace.close()
    marks = [json.loads(line) for line in path.read_text().splitlines()]
    (arrived,) = [m for m in marks if m["ev"] == "arrived"]
    assert arrived["message"] == "7"
    seq = arrived["seq"]
    (batch,) = [m for m in marks if m["ev"] == "batch" and seq in m["traced"]]
    (commit,) = [m for m in marks if m["ev"] == "commit" and seq in m["traced"]]
    assert batch["first"] <= seq <= batch["last"] <= commit["last"]
    steps = [arrived["t"], batch["taken"], *(commit[k] for k in (
        "began", "acquired", "fenced", "wrote", "committed")), commit["t"]]  # fmt: skip
    assert steps == sorted(steps)
    assert arrived["stored"] <= arrived["t"]
