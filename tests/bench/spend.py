"""Spend benchmark (issue 14): how far 100 agents spending at once overshoot a $10 budget, with
reservations through the guard, next to the check-after-the-fact design in the same run.

Each agent repeats a step: estimate its cost (0.05 to 0.50 USD), do the work (a pause of 50 to
200 ms standing for a model call), record what it really cost (the estimate times 0.8 to 1.2),
until it may not go on.

- **check after** (the baseline: record, then compare; no guard): before each step an agent
  compares what the whole scope has recorded so far with the limit, read from an in-process
  total updated as each spend's publish is acknowledged, so the check never lags the stream.
  Every step already under way when the limit is crossed still lands.
- **reservations**: before each step an agent reserves its estimate from the guard
  (``AgentClient.reserve``), which grants it only while the budget's remaining amount minus the
  open reservations covers it, and names the reservation in its spend; a refusal stops it.

Overshoot is what the scope recorded beyond the limit (0 when it stayed under).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

import anyio
from nats.js.errors import NotFoundError

from fleetward.schemas import new_id
from fleetward.schemas.events import AgentRegistered, BudgetSet, Event, SpendRecorded
from fleetward.schemas.roles import ROLE_AUTHORITY
from fleetward.schemas.streams import COMMANDS_STREAM, EVENTS_STREAM
from fleetward.services.client import AgentClient, FleetClient
from fleetward.services.errors import ReservationRefused
from fleetward.services.guard.core import GUARD
from fleetward.services.guard.service import Guard
from fleetward.services.jetstream.connection import connect_as
from fleetward.services.jetstream.publish import publish, publish_many
from fleetward.services.runtime.connect import Runtime
from tests.helpers import creds, envelope

LIMIT_USD = 10.0
STEP_USD = (0.05, 0.50)  # an estimate, USD
ERROR = (0.8, 1.2)  # what a step really costs, times its estimate
WORK_S = (0.05, 0.20)  # a step's model call, seconds


@dataclass(frozen=True)
class SpendFigures:
    overshoot_usd: float  # recorded beyond the limit (0: under it)
    spent_usd: float
    largest_step_usd: float
    steps: int


async def run_spend_bench(
    rt: Runtime, agents: int = 100, *, reserve: bool, seed: int = 1
) -> SpendFigures:
    """``agents`` agents of one team spend against a team budget of ``LIMIT_USD`` per day,
    with reservations through a guard running here (``reserve``) or checking after the fact."""
    run = new_id()[-8:]
    team = f"spend-{run}"
    names = [f"spender-{run}-{i:03d}" for i in range(agents)]
    async with FleetClient(
        await connect_as(rt.nats_url, creds(rt, ROLE_AUTHORITY), ROLE_AUTHORITY), ROLE_AUTHORITY
    ) as authority:
        await authority.ensure_roles("bench", ["budget-admin"], "the spend benchmark")
    events = [
        *(AgentRegistered(**envelope(n), agent=n, name=n, owner="bench", team=team) for n in names),
        BudgetSet(**envelope("user:bench"), budget=f"b-{run}", scope="team", scope_id=team,
                  window="day", limit_usd=LIMIT_USD),
    ]  # fmt: skip
    await publish_many(rt.js, events)
    rng = random.Random(seed)
    recorded = Decimal(0)
    largest = 0.0
    steps = 0
    clients = [await AgentClient.connect(rt.nats_url, creds(rt, n)) for n in names]

    async def step(agent: AgentClient, estimate: float, reservation: str | None) -> None:
        nonlocal recorded, largest, steps
        await anyio.sleep(rng.uniform(*WORK_S))
        cost = round(estimate * rng.uniform(*ERROR), 6)
        await agent.spend(model="bench", cost_usd=cost, reservation=reservation)
        recorded += Decimal(repr(cost))
        largest, steps = max(largest, cost), steps + 1

    async def checking_after(agent: AgentClient) -> None:
        while recorded < Decimal(repr(LIMIT_USD)):
            await step(agent, rng.uniform(*STEP_USD), None)

    async def reserving(agent: AgentClient) -> None:
        while True:
            estimate = round(rng.uniform(*STEP_USD), 6)
            try:
                async with agent.reserve(usd=estimate, ttl_s=60) as r:
                    await step(agent, estimate, r.reservation)
            except ReservationRefused:
                return

    try:
        if reserve:
            stop = anyio.Event()
            guard = Guard(rt, name=f"guard_bench_{run}")
            async with anyio.create_task_group() as tg:
                tg.start_soon(guard.run, stop.is_set)
                await guard.signals.wait_for(lambda: guard.core.ready, 60, "the guard")
                await guard.signals.wait_for(
                    lambda: f"b-{run}" in guard.core.budgets, 60, "the budget"
                )
                async with anyio.create_task_group() as spenders:
                    for client in clients:
                        spenders.start_soon(reserving, client)
                stop.set()
        else:
            async with anyio.create_task_group() as spenders:
                for client in clients:
                    spenders.start_soon(checking_after, client)
    finally:
        for client in clients:
            await client.close()
    over = max(Decimal(0), recorded - Decimal(repr(LIMIT_USD)))
    return SpendFigures(float(over), float(recorded), largest, steps)


async def run_pause_latency(
    rt: Runtime, rounds: int = 40, agents: int = 10, *, commands: bool = False
) -> tuple[list[float], list[float]]:
    """Seconds from a crossing spend stored to the last of its scope's pauses stored
    (``agent.paused`` by the guard), and, with ``commands`` (a projector must be running), to
    the last of their durable ``pause`` commands stored on FW_COMMANDS (both by the streams'
    time of record), for ``rounds`` team budgets of ``agents`` agents each, one guard running
    here: one figure per crossing in each list (the second empty without ``commands``)."""
    run = new_id()[-8:]
    teams = {f"pause-{run}-{r:02d}": [f"p-{run}-{r:02d}-{i:02d}" for i in range(agents)]
             for r in range(rounds)}  # fmt: skip
    async with FleetClient(
        await connect_as(rt.nats_url, creds(rt, ROLE_AUTHORITY), ROLE_AUTHORITY), ROLE_AUTHORITY
    ) as authority:
        await authority.ensure_roles("bench", ["budget-admin"], "the spend benchmark")
    events: list[Event] = []
    for team, names in teams.items():
        events += [AgentRegistered(**envelope(n), agent=n, name=n, owner="bench", team=team)
                   for n in names]  # fmt: skip
        events.append(BudgetSet(**envelope("user:bench"), budget=f"b-{team}", scope="team",
                                scope_id=team, window="day", limit_usd=1.0))  # fmt: skip
    await publish_many(rt.js, events)
    lags: list[float] = []
    to_commands: list[float] = []
    stop = anyio.Event()
    guard = Guard(rt, name=f"guard_pause_{run}")
    async with anyio.create_task_group() as tg:
        tg.start_soon(guard.run, stop.is_set)
        await guard.signals.wait_for(lambda: guard.core.ready, 60, "the guard")
        last_budget = f"b-{list(teams)[-1]}"
        await guard.signals.wait_for(lambda: last_budget in guard.core.budgets, 60, "budgets")
        for names in teams.values():
            crossing = SpendRecorded(**envelope(names[0]), agent=names[0], model="bench",
                                     cost_usd=1.5)  # fmt: skip
            ack = await publish(rt.js, crossing)
            stored = (await rt.js.get_msg(EVENTS_STREAM, ack.seq, direct=True)).time
            last = await _last_stored(rt, EVENTS_STREAM, [f"fw.agent.{n}.{GUARD}" for n in names])
            assert stored is not None
            lags.append(last - stored.timestamp())
            if commands:
                told = await _last_stored(rt, COMMANDS_STREAM, [f"fw.cmd.{n}.>" for n in names])
                to_commands.append(told - stored.timestamp())
        stop.set()
    return lags, to_commands


async def _last_stored(rt: Runtime, stream: str, subjects: list[str]) -> float:
    """When the last of ``subjects``' first messages was stored (seconds since the epoch):
    each subject (pattern) gets one message here (a pause, or the pause command)."""
    times: dict[str, float] = {}
    with anyio.fail_after(30):
        while len(times) < len(subjects):
            for subj in subjects:
                if subj in times:
                    continue
                try:
                    # (FW_COMMANDS answers message gets only)
                    msg = await rt.js.get_last_msg(stream, subj, direct=stream == EVENTS_STREAM)
                except NotFoundError:
                    continue
                if msg.time is not None:
                    times[subj] = msg.time.timestamp()
            await anyio.sleep(0.01)
    return max(times.values())
