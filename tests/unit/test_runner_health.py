"""A runner's health (services/projector/health.py) on a clock moved by hand, and the answer
/healthz gives for it (services/metrics/http.py)."""

from __future__ import annotations

import json

from fleetward.services.metrics.health import HealthChecks
from fleetward.services.projector.health import RunnerHealth


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def started(clock: Clock, stall_after: float = 10.0) -> RunnerHealth:
    health = RunnerHealth(stall_after=stall_after, clock=clock)
    health.positioning()
    health.positioned()
    return health


def test_not_positioned_is_a_problem_at_once() -> None:
    health = RunnerHealth(clock=Clock())
    assert health.problems("agents") == ["projection agents: not positioned yet"]
    health.failed(ConnectionRefusedError("Postgres refused"), resync=False)
    assert health.problems("agents") == [
        "projection agents: not positioned (last error: ConnectionRefusedError: Postgres refused)"
    ]
    health.positioned()
    assert health.problems("agents") == []


def test_events_held_without_a_commit_past_the_limit_are_a_stall() -> None:
    clock = Clock()
    health = started(clock)
    health.took()
    clock.now += 9
    health.took()  # more events: the wait still counts from the first
    assert health.problems("agents") == []
    clock.now += 2
    assert health.problems("agents") == [
        "projection agents: no commit for 11 s with events waiting"
    ]
    health.committed(more=True)  # the next window, folded meanwhile, waits from now
    assert health.problems("agents") == []
    clock.now += 11
    assert len(health.problems("agents")) == 1
    health.committed(more=False)
    clock.now += 1000
    assert health.problems("agents") == []  # nothing held: never stalled


def test_re_positioning_in_a_loop_is_a_problem_until_a_commit_or_nothing_to_do() -> None:
    clock = Clock()
    health = started(clock)
    for _ in range(2):
        health.failed(RuntimeError("relation does not exist"), resync=True)
    assert health.problems("tasks") == []
    health.failed(RuntimeError("relation does not exist"), resync=True)
    assert health.problems("tasks") == [
        "projection tasks: re-positioned 3 times without a commit "
        "(last error: RuntimeError: relation does not exist)"
    ]
    health.committed(more=False)
    assert health.problems("tasks") == []
    for _ in range(3):
        health.failed(RuntimeError("x"), resync=True)
    health.idle()
    assert health.problems("tasks") == []


def test_a_runners_problems_fail_the_projector_check_with_their_reasons() -> None:
    health = HealthChecks()
    problems = ['projection agents: no commit for 61 s ("quoted")']
    health.register("projector", lambda: (False, "; ".join(problems)))
    health.register("nats", lambda: (True, "connected"))
    body = json.loads(health.report().json())
    assert body["ok"] is False
    assert body["problems"] == ['projector: projection agents: no commit for 61 s ("quoted")']
    assert body["checks"]["nats"] == {"ok": True, "reason": "connected"}


def test_a_standby_is_healthy_until_it_positions_to_write() -> None:
    health = RunnerHealth()
    assert health.problems("spend")  # not positioned
    health.standing_by("host-a pid 7")
    assert health.problems("spend") == []
    health.positioning()  # it took the lease: from now on judged as a writer
    assert health.standby is None
    assert health.problems("spend")
