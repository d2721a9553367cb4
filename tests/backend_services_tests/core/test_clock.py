"""The clock protocol and FakeClock."""

from __future__ import annotations

import asyncio

import pytest

from backend_services.clock import SYSTEM_CLOCK, Clock
from backend_services.testing import FakeClock


def test_system_and_fake_clock_satisfy_the_protocol() -> None:
    """Both clocks are Clocks."""
    assert isinstance(SYSTEM_CLOCK, Clock)
    assert isinstance(FakeClock(), Clock)


async def test_advance_wakes_sleepers_in_deadline_order() -> None:
    """Sleepers wake when due, earliest first, and see the time of their deadline."""
    clock = FakeClock(start=0.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    tasks = [asyncio.create_task(sleeper("late", 5)), asyncio.create_task(sleeper("early", 2))]
    await clock.advance(1)
    assert woke == []
    await clock.advance(3)
    assert woke == [("early", 2.0)]
    await clock.advance(10)
    assert woke == [("early", 2.0), ("late", 5.0)]
    assert clock.monotonic() == 14.0
    await asyncio.gather(*tasks)


async def test_advance_refuses_to_go_backwards() -> None:
    """A negative advance is an error naming the value."""
    clock = FakeClock()
    with pytest.raises(ValueError, match="-1"):
        await clock.advance(-1)


async def test_wall_time_moves_with_monotonic_time() -> None:
    """time() and monotonic() advance together."""
    clock = FakeClock(start=10.0, wall_start=1000.0)
    await clock.advance(2.5)
    assert clock.time() == 1002.5
    assert clock.monotonic() == 12.5


async def test_chained_sleeps_complete_within_one_advance() -> None:
    """A task that sleeps twice in a row is woken twice by one large advance."""
    clock = FakeClock(start=0.0)
    ticks: list[float] = []

    async def ticker() -> None:
        for _ in range(3):
            await clock.sleep(1)
            ticks.append(clock.monotonic())

    task = asyncio.create_task(ticker())
    await clock.advance(3)
    assert ticks == [1.0, 2.0, 3.0]
    await task
