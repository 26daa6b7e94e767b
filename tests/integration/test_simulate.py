"""The simulator (the demo fleet of ``make run``) against a real nats-server and Postgres:

- run twice on the same stream and database, the second run carries on: fresh task ids (the
  board refuses nothing), the tasks the first run left move on, new tasks reach review and done;
- a simulated agent obeys the commands of its durable inbox: paused, it claims and spends
  nothing (it heartbeats "paused"); resumed, it claims and spends again.

Fast ticks (``tick_seconds``); every wait is on what the stream or the board shows."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio

from fleetward.schemas import Rejected, admit
from fleetward.schemas.events import (
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    Event,
    Heartbeat,
    RunStarted,
    SpendRecorded,
    TaskClaimed,
    ToolCalled,
)
from fleetward.schemas.streams import EVENTS_STREAM, HEARTBEATS_STREAM
from fleetward.services import simulate
from fleetward.services.client import FleetClient
from fleetward.services.jetstream.follower import StreamFollower
from fleetward.services.runtime.connect import Runtime
from tests.helpers import project_all, wait_for

TICK_S = 0.02
# A run waits up to ``catch_up_s`` for the projections to show what earlier runs left. Where no
# projector runs, they never move (the stream holds the roles the run grants): the run reads
# the board as it is, at once, instead of after the default 15 s.
NO_PROJECTOR = 0.0


async def board(rt: Runtime) -> dict[str, dict[str, Any]]:
    async with rt.pool.acquire() as conn:
        rows = await conn.fetch("SELECT task_id, status, assignee, claim_epoch FROM fleet.tasks")
    return {r["task_id"]: dict(r) for r in rows}


def prefix(task: str) -> str:
    return task.rsplit("-", 1)[0]


async def test_a_second_run_on_the_same_data_carries_on(rt: Runtime) -> None:
    # the first run on fresh data: no projector runs, nothing to wait for (NO_PROJECTOR)
    await simulate.run(rt, 6, ticks=40, tick_seconds=TICK_S, catch_up_s=NO_PROJECTOR)
    await project_all(rt)
    first = await board(rt)
    left = {t for t, row in first.items() if row["status"] in ("in_progress", "review")}
    assert left, "the first run left tasks in hand or in review (what a restart interrupts)"

    await simulate.run(rt, 6, ticks=40, tick_seconds=TICK_S)
    await project_all(rt)
    second = await board(rt)
    async with rt.pool.acquire() as conn:
        refused = await conn.fetch("SELECT task_id, type, reason FROM fleet.task_rejections")
        agents = await conn.fetch("SELECT agent_id, status FROM fleet.agents")
    assert [tuple(r) for r in refused] == []  # no duplicate ids, no claim the board refused

    new = {t: row for t, row in second.items() if t not in first}
    assert new, "the second run created tasks"
    assert len({prefix(t) for t in new}) == 1
    assert not {prefix(t) for t in new} & {prefix(t) for t in first}
    assert any(row["status"] in ("review", "done") for row in new.values()), new
    assert any(second[t]["status"] == "done" for t in left), "what the first run left moved on"

    assert sorted((r["agent_id"], r["status"]) for r in agents) == [
        (f"sim-{i:03d}", "active") for i in range(6)
    ]


@dataclass
class Recorded:
    """The events a follower read, with their stream sequences, in stream order."""

    items: list[tuple[int, Event]] = field(default_factory=list)
    last_seq: int = 0

    def handle(self, subject: str, data: bytes, seq: int, _ns: int) -> None:
        self.last_seq = seq
        with contextlib.suppress(Rejected):
            self.items.append((seq, admit(subject, data)))

    def by(self, agent: str, *kinds: type[Event], after: int = 0) -> list[tuple[int, Event]]:
        return [
            (seq, e)
            for seq, e in self.items
            if seq > after and isinstance(e, kinds) and getattr(e, "agent", None) == agent
        ]


@contextlib.asynccontextmanager
async def simulating(
    rt: Runtime, agents: int, seed: int
) -> AsyncIterator[tuple[Recorded, Recorded]]:
    """The simulator running with fast ticks, and what FW_EVENTS and FW_HEARTBEATS get."""
    events, beats = Recorded(), Recorded()
    stop = anyio.Event()
    follow = [
        StreamFollower(rt.nc, rt.js, EVENTS_STREAM, ("fw.>",), events.handle, start_seq=1),
        StreamFollower(rt.nc, rt.js, HEARTBEATS_STREAM, ("fw.>",), beats.handle, start_seq=1),
    ]
    async with anyio.create_task_group() as tg:
        for follower in follow:
            tg.start_soon(follower.run, stop.is_set)
        run = partial(simulate.run, rt, agents, seed=seed, tick_seconds=TICK_S,
                      stopping=stop.is_set, catch_up_s=NO_PROJECTOR)  # fmt: skip
        tg.start_soon(run)
        try:
            yield events, beats
        finally:
            stop.set()


async def test_a_paused_agent_claims_and_spends_nothing_until_resumed(rt: Runtime) -> None:
    seed = 7
    agent = next(a.agent_id for a in simulate.Fleet(4, seed=seed).agents if a.silent_after is None)
    ops = FleetClient(rt.nc, "svc:ops")  # commands come from services
    working = (SpendRecorded, ToolCalled, RunStarted, TaskClaimed)

    async with simulating(rt, 4, seed) as (events, beats):

        async def seen(kind: type[Event], after: int = 0) -> int:
            found = events.by(agent, kind, after=after)
            return found[0][0] if found else 0

        await wait_for(partial(seen, AgentRegistered), what=f"{agent} registered")
        await wait_for(partial(seen, SpendRecorded), what=f"{agent} spending")

        await ops.command(agent, "pause", reason="budget review")
        paused = await wait_for(partial(seen, AgentPaused), what=f"{agent} to pause")

        async def paused_beats() -> bool:
            said = [e for _, e in beats.by(agent, Heartbeat) if isinstance(e, Heartbeat)]
            return sum(e.message.startswith("paused: budget review") for e in said) >= 5

        await wait_for(paused_beats, what=f"5 heartbeats of {agent} saying it is paused")
        target = (await rt.js.stream_info(EVENTS_STREAM)).state.last_seq

        async def read_up_to_target() -> bool:
            return events.last_seq >= target

        await wait_for(read_up_to_target, what="every event so far read")
        assert events.by(agent, *working, after=paused) == []
        said = [e for _, e in beats.by(agent, Heartbeat) if isinstance(e, Heartbeat)]
        assert {e.status for e in said if e.message.startswith("paused")} == {"idle"}
        others = {getattr(e, "agent", None) for seq, e in events.items if seq > paused}
        assert others - {agent, None}, "the rest of the fleet went on"

        await ops.command(agent, "pause", reason="budget review")  # again: changes nothing
        await ops.command(agent, "resume", reason="budget raised")
        resumed = await wait_for(partial(seen, AgentResumed, paused), what=f"{agent} resumed")
        assert len(events.by(agent, AgentPaused)) == 1
        await wait_for(partial(seen, SpendRecorded, resumed), what=f"{agent} spending again")
        await wait_for(partial(seen, TaskClaimed, resumed), what=f"{agent} claiming again")
