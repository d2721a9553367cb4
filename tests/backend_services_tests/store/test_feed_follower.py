"""FeedFollower: delivers a stream's events in order, resyncs when told, survives errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from backend_services.errors import StoreUnavailableError, ValidationError
from backend_services.store import FeedBatch, FeedEvent
from backend_services.store.feed import FeedFollower
from backend_services.store.memory import MemoryStore
from backend_services.testing import FakeClock


class Recorder:
    """Collects what a follower delivers."""

    def __init__(self) -> None:
        self.events: list[Mapping[str, Any]] = []
        self.resyncs = 0

    def on_events(self, events: list[FeedEvent]) -> None:
        self.events.extend(e.data for e in events)

    def on_resync(self) -> None:
        self.resyncs += 1


class FlakyStore(MemoryStore):
    """A MemoryStore whose reads fail while ``down`` is set (an outage stand-in)."""

    down = False
    attempts = 0

    async def read(
        self, stream: str, after: int, *, count: int = 500, block: float | None = None
    ) -> FeedBatch:
        self.attempts += 1
        if self.down:
            raise StoreUnavailableError("connection refused")
        return await super().read(stream, after, count=count, block=block)


async def test_follows_from_the_current_end_in_order() -> None:
    """By default only events appended after start are delivered, in order."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    await store.append("s", {"i": -1})
    rec = Recorder()
    follower = FeedFollower(
        store, "s", on_events=rec.on_events, on_resync=rec.on_resync, clock=clock
    )
    follower.start()
    await clock.advance(0)
    assert follower.position == 1
    for i in range(3):
        await store.append("s", {"i": i})
        await clock.advance(0)
    assert rec.events == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert (follower.position, rec.resyncs, follower.delivered) == (4, 0, 3)
    await follower.stop()
    assert not follower.running


async def test_start_position_and_async_callbacks() -> None:
    """start=0 replays retained events; async callbacks are awaited; pages by count."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    for i in range(5):
        await store.append("s", {"i": i})
    seen: list[int] = []

    async def on_events(events: list[FeedEvent]) -> None:
        seen.append(len(events))

    async def on_resync() -> None:
        raise AssertionError("no resync expected")

    async with FeedFollower(
        store, "s", on_events=on_events, on_resync=on_resync, clock=clock, start=0, count=2
    ) as follower:
        await clock.advance(0)
        assert seen == [2, 2, 1]
        assert follower.position == 5
        assert follower.lag == 0.0
        await clock.advance(3)
        lag = follower.lag
        assert lag is not None
        assert lag < 1.0  # each empty blocking read (1 s) confirms it is current
        assert await follower.events_behind() == 0


async def test_trimmed_position_calls_on_resync_then_continues() -> None:
    """A position that was trimmed away triggers on_resync; later events still arrive."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    for i in range(10):
        await store.append("s", {"i": i}, maxlen=3)
    rec = Recorder()
    follower = FeedFollower(
        store, "s", on_events=rec.on_events, on_resync=rec.on_resync, clock=clock, start=2
    )
    follower.start()
    await clock.advance(0)
    assert rec.resyncs == 1
    assert follower.position == 10
    await store.append("s", {"i": 10})
    await clock.advance(0)
    assert rec.events == [{"i": 10}]
    await follower.stop()


async def test_failing_callback_is_logged_and_isolated(caplog: pytest.LogCaptureFixture) -> None:
    """A callback that raises is logged; the follower keeps delivering later events."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    calls: list[int] = []

    def on_events(events: list[FeedEvent]) -> None:
        calls.append(events[0].position)
        if len(calls) == 1:
            raise RuntimeError("boom")

    follower = FeedFollower(store, "s", on_events=on_events, on_resync=lambda: None, clock=clock)
    follower.start()
    await clock.advance(0)
    with caplog.at_level(logging.ERROR, logger="backend_services"):
        await store.append("s", {"i": 0})
        await clock.advance(0)
    await store.append("s", {"i": 1})
    await clock.advance(0)
    assert calls == [1, 2]
    assert any("feed_callback_failed" in r.getMessage() for r in caplog.records)
    await follower.stop()


async def test_store_errors_back_off_and_lose_nothing() -> None:
    """While reads fail the follower retries with growing delays; afterwards it delivers
    every event from where it was."""
    clock = FakeClock()
    store = FlakyStore(clock=clock)
    rec = Recorder()
    follower = FeedFollower(
        store, "s", on_events=rec.on_events, on_resync=rec.on_resync, clock=clock, block=1.0
    )
    follower.start()
    await clock.advance(0)
    store.down = True
    await store.append("s", {"i": 0})  # the blocked read returns this one
    await clock.advance(0)
    await store.append("s", {"i": 1})
    await store.append("s", {"i": 2})
    before = store.attempts
    await clock.advance(2.0)
    retries = store.attempts - before
    assert 1 <= retries <= 8  # backing off, not spinning
    assert follower.errors >= 1
    assert (follower.lag or 0.0) >= 1.5  # not current while the store is down
    assert "connection refused" in (follower.last_error or "")
    assert follower.running
    store.down = False
    await clock.advance(10.0)
    assert rec.events == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert rec.resyncs == 0
    await follower.stop()


async def test_initial_position_survives_errors_too() -> None:
    """If even the start position cannot be read, the follower retries until it can."""
    clock = FakeClock()
    store = FlakyStore(clock=clock)
    store.down = True

    async def failing_position(stream: str) -> int:
        if store.down:
            raise StoreUnavailableError("down")
        return await MemoryStore.feed_position(store, stream)

    store.feed_position = failing_position  # type: ignore[method-assign]
    rec = Recorder()
    follower = FeedFollower(
        store, "s", on_events=rec.on_events, on_resync=rec.on_resync, clock=clock
    )
    follower.start()
    await clock.advance(1)
    assert follower.position is None
    assert follower.lag is None
    store.down = False
    await store.append("s", {"i": 0})
    await clock.advance(10)
    assert follower.position == 1
    await store.append("s", {"i": 1})
    await clock.advance(0)
    assert rec.events == [{"i": 1}]
    await follower.stop()


def test_arguments_are_validated() -> None:
    """Bad stream names, block times and start positions are refused up front."""
    store = MemoryStore()
    for kwargs in ({"stream": ""}, {"block": 0}, {"start": -1}):
        args: dict[str, Any] = {"stream": "s", "on_events": print, "on_resync": print}
        args.update(kwargs)
        stream = args.pop("stream")
        with pytest.raises(ValidationError):
            FeedFollower(store, stream, **args)


class CancellationSwallowingStore(MemoryStore):
    """A store whose blocked read turns its cancellation into a store error, as client
    libraries sometimes do when a socket read is interrupted."""

    async def read(
        self, stream: str, after: int, *, count: int = 500, block: float | None = None
    ) -> FeedBatch:
        try:
            return await super().read(stream, after, count=count, block=block)
        except asyncio.CancelledError:
            raise StoreUnavailableError("connection lost while reading") from None


async def test_stop_ends_a_follower_whose_store_swallows_cancellation() -> None:
    """stop() returns even when the store reports the cancellation as a store error."""
    clock = FakeClock()
    store = CancellationSwallowingStore(clock=clock)
    rec = Recorder()
    follower = FeedFollower(
        store, "s", on_events=rec.on_events, on_resync=rec.on_resync, clock=clock, block=30.0
    )
    follower.start()
    await clock.advance(0)
    await asyncio.wait_for(follower.stop(), timeout=5)
    assert follower.errors == 0
