"""The check schedule on a fake clock: first check at once, interval with jitter,
check-soon, unscheduling, bounded concurrency, isolated result handlers."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from backend_services.discovery.checker import CheckSchedule
from backend_services.discovery.model import ServiceEndpoint, ServiceType
from backend_services.discovery.probes import ProbeResult
from backend_services.testing import FakeClock


def _ep(sid: str) -> ServiceEndpoint:
    return ServiceEndpoint(sid, ServiceType.CACHE_SERVICE, "127.0.0.1", 9)


class Script:
    """A probe that records when each endpoint was checked (time is what is tested)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, float]] = []
        self.gate: asyncio.Event | None = None
        self.fail_with: Exception | None = None

    async def __call__(self, endpoint: ServiceEndpoint) -> ProbeResult:
        self.calls.append((endpoint.service_id, self.clock.monotonic()))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return ProbeResult(True, 1.0)

    def times(self, sid: str) -> list[float]:
        return [t for s, t in self.calls if s == sid]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=0.0)


Running = Callable[..., tuple[CheckSchedule, Script, list[ProbeResult]]]


@pytest.fixture
async def running(clock: FakeClock) -> AsyncIterator[Running]:
    tasks: list[asyncio.Task[None]] = []

    def make(**kwargs: Any) -> tuple[CheckSchedule, Script, list[ProbeResult]]:
        script = Script(clock)
        results: list[ProbeResult] = []

        async def on_result(endpoint: ServiceEndpoint, result: ProbeResult) -> None:
            results.append(result)

        schedule = CheckSchedule(script, on_result, clock=clock, rng=random.Random(7), **kwargs)
        tasks.append(asyncio.create_task(schedule.run()))
        return schedule, script, results

    yield make
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_first_check_at_once_then_every_interval(clock: FakeClock, running: Running) -> None:
    """A new endpoint is checked immediately, then about every interval (jitter 10%)."""
    schedule, script, results = running(interval=10.0, jitter=0.1)
    schedule.schedule(_ep("a"), delay=0.0)
    await clock.advance(0)
    assert script.times("a") == [0.0]
    await clock.advance(100)
    times = script.times("a")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 9 <= len(gaps) <= 11
    assert all(9.0 <= g <= 11.0 for g in gaps)
    assert len(set(gaps)) > 1  # jittered
    assert len(results) == len(times)


async def test_spread_start_stays_within_one_interval(clock: FakeClock, running: Running) -> None:
    """delay=None starts each endpoint at a random point inside the first interval."""
    schedule, script, _ = running(interval=10.0)
    for i in range(20):
        schedule.schedule(_ep(f"e{i}"), delay=None)
    await clock.advance(10)
    firsts = [script.times(f"e{i}")[0] for i in range(20)]
    assert all(0 <= t <= 10 for t in firsts)
    assert len(set(firsts)) > 10


async def test_check_soon_and_unschedule(clock: FakeClock, running: Running) -> None:
    """check_soon moves the next check to now; unscheduled endpoints are not checked."""
    schedule, script, _ = running(interval=30.0, jitter=0.0)
    schedule.schedule(_ep("a"), delay=0.0)
    await clock.advance(5)
    assert schedule.check_soon("a")
    await clock.advance(0)
    assert script.times("a") == [0.0, 5.0]
    schedule.unschedule("a")
    assert not schedule.check_soon("a")
    await clock.advance(100)
    assert script.times("a") == [0.0, 5.0]
    assert "a" not in schedule


async def test_concurrency_is_bounded(clock: FakeClock, running: Running) -> None:
    """With max_in_flight=2, the third due check waits until one finishes."""
    schedule, script, results = running(interval=10.0, max_in_flight=2)
    script.gate = asyncio.Event()
    for sid in "abc":
        schedule.schedule(_ep(sid), delay=0.0)
    await clock.advance(0)
    assert len(script.calls) == 2
    script.gate.set()
    await clock.advance(0)
    assert len(script.calls) == 3
    assert len(results) == 3


async def test_a_crashing_probe_is_a_failed_check(clock: FakeClock, running: Running) -> None:
    """An exception from the probe becomes a failed result and the schedule goes on."""
    schedule, script, results = running(interval=10.0, jitter=0.0)
    script.fail_with = RuntimeError("boom")
    schedule.schedule(_ep("a"), delay=0.0)
    await clock.advance(25)
    assert len(results) == 3
    assert not results[0].ok
    assert "boom" in (results[0].error or "")


async def test_failing_result_handler_is_isolated(clock: FakeClock) -> None:
    """A handler that raises is logged; checks continue on schedule."""
    script = Script(clock)

    async def broken(endpoint: ServiceEndpoint, result: ProbeResult) -> None:
        raise ValueError("handler bug")

    schedule = CheckSchedule(script, broken, interval=10.0, jitter=0.0, clock=clock)
    task = asyncio.create_task(schedule.run())
    try:
        schedule.schedule(_ep("a"), delay=0.0)
        await clock.advance(35)
        assert script.times("a") == [0.0, 10.0, 20.0, 30.0]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
