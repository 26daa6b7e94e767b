"""The clock a test moves by hand (services/clock.py): a sleeper wakes at each move, not with
time."""

from __future__ import annotations

import anyio
import pytest

from fleetward.services.clock import ManualClock


async def test_a_sleeper_wakes_at_the_next_move_whatever_its_size() -> None:
    clock = ManualClock(100.0)
    woke: list[float] = []

    async def loop() -> None:
        for _ in range(2):
            await clock.sleep(3600.0)
            woke.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(loop)
        await anyio.wait_all_tasks_blocked()
        assert woke == []  # no move, no wake-up
        clock.advance(0.001)
        await anyio.wait_all_tasks_blocked()
        clock.set(200.0)
    assert woke == [100.001, 200.0]


def test_it_never_goes_back() -> None:
    clock = ManualClock(100.0)
    clock.set(100.0)  # staying put is a move (it wakes sleepers)
    with pytest.raises(ValueError, match="does not go back"):
        clock.set(99.0)
    assert clock.now() == 100.0
