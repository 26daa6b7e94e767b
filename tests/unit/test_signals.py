"""Test signals (services/signals.py): waiting wakes on emits, never on time."""

from __future__ import annotations

import anyio
import pytest

from fleetward.services.signals import Signal, Signals


class Pair(Signals):
    def __init__(self) -> None:
        super().__init__()
        self.a: Signal[int] = Signal(self, "a")
        self.b: Signal[str] = Signal(self, "b")


def test_an_emit_with_nobody_waiting_only_counts_and_keeps_the_last_value() -> None:
    signals = Pair()  # outside an event loop: emitting must not need one
    signals.a.emit(1)
    signals.a.emit(2)
    assert (signals.a.count, signals.a.last) == (2, 2)
    assert (signals.b.count, signals.b.last) == (0, None)


async def test_a_waiter_wakes_on_each_emit_of_any_signal_until_its_condition_holds() -> None:
    signals = Pair()
    state = {"n": 0}
    checks = 0

    def reached() -> bool:
        nonlocal checks
        checks += 1
        return state["n"] >= 2

    async def work() -> None:
        await anyio.wait_all_tasks_blocked()  # the waiter is asleep: only an emit wakes it
        state["n"] = 1
        signals.a.emit(1)
        await anyio.wait_all_tasks_blocked()
        state["n"] = 2
        signals.b.emit("two")

    async with anyio.create_task_group() as tg:
        tg.start_soon(work)
        await signals.wait_for(reached, what="n to reach 2")
    assert checks == 3  # at once, after the first emit, after the second


async def test_a_condition_that_already_holds_returns_at_once() -> None:
    await Pair().wait_for(lambda: True)


async def test_a_wait_that_is_never_satisfied_fails_naming_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match="the impossible"):
        await Pair().wait_for(lambda: False, timeout=0.01, what="the impossible")


def test_a_recording_gets_what_is_emitted_while_it_is_open() -> None:
    signals = Pair()
    signals.a.emit(1)
    with signals.a.recording() as seen, signals.a.recording() as also:
        signals.a.emit(2)
        signals.a.emit(3)
    signals.a.emit(4)
    assert seen == also == [2, 3]
