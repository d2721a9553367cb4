"""The fleet's index of breaker names (``cb:names``) and the circuit list built on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from backend_services.control.operations import FleetOperations
from backend_services.errors import StoreUnavailableError
from backend_services.infrastructure.cb.fleet import EVENTS_STREAM, NAMES_KEY
from backend_services.infrastructure.circuit_breaker import CircuitBreaker
from backend_services.store.memory import MemoryStore
from backend_services.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(clock: FakeClock) -> AsyncIterator[MemoryStore]:
    s = MemoryStore(clock=clock)
    await s.initialize()
    yield s
    await s.close()


@pytest.fixture
async def ops(store: MemoryStore, clock: FakeClock) -> AsyncIterator[FleetOperations]:
    o = FleetOperations(store=store, clock=clock)
    await o.initialize()
    yield o
    await o.close()


async def test_joining_the_fleet_registers_the_name(store: MemoryStore, clock: FakeClock) -> None:
    """A shared breaker's name is in the index as soon as it is initialized."""
    cb = CircuitBreaker("payments", store=store, clock=clock)
    await cb.initialize()
    try:
        assert await store.members(NAMES_KEY) == {"payments"}
    finally:
        await cb.close()


async def test_a_breaker_that_never_transitioned_is_listed_closed(
    store: MemoryStore, clock: FakeClock, ops: FleetOperations
) -> None:
    """A breaker that joined but never changed state is listed as closed at version 0."""
    cb = CircuitBreaker("inventory", store=store, clock=clock)
    await cb.initialize()
    try:
        rows = await ops.list_circuits()
    finally:
        await cb.close()
    assert [(r["name"], r["state"], r["version"]) for r in rows] == [("inventory", "closed", 0)]
    assert set(rows[0]) == {
        "name",
        "state",
        "open_until",
        "open_remaining",
        "openings",
        "trigger",
        "origin",
        "changed_at",
        "version",
    }


async def test_a_breaker_is_still_listed_after_the_feed_was_trimmed(
    store: MemoryStore, clock: FakeClock, ops: FleetOperations
) -> None:
    """Once the change feed no longer holds a breaker's events, it is still listed with
    its shared state."""
    cb = CircuitBreaker("search", store=store, clock=clock)
    await cb.initialize()
    try:
        await cb.force_state("forced_open")
        for i in range(20):
            await store.append(EVENTS_STREAM, {"name": f"noise-{i}"}, maxlen=2)
        batch = await store.read(EVENTS_STREAM, 0, count=1000)
        assert all(e.data.get("name") != "search" for e in batch.events)
        rows = await ops.list_circuits()
    finally:
        await cb.close()
    assert [(r["name"], r["state"]) for r in rows] == [("search", "forced_open")]
    assert rows[0]["version"] >= 1


async def test_listing_is_sorted_and_empty_without_breakers(
    store: MemoryStore, clock: FakeClock, ops: FleetOperations
) -> None:
    """No breaker: an empty list; several: sorted by name, each once."""
    assert await ops.list_circuits() == []
    breakers = [CircuitBreaker(n, store=store, clock=clock) for n in ("b", "a", "b")]
    for cb in breakers:
        await cb.initialize()
    try:
        await breakers[0].force_state("forced_open")
        rows = await ops.list_circuits()
    finally:
        for cb in breakers:
            await cb.close()
    assert [(r["name"], r["state"]) for r in rows] == [("a", "closed"), ("b", "forced_open")]


class _SetAddDown(MemoryStore):
    """A store whose ``set_add`` fails (as while the backend does not answer)."""

    async def set_add(self, key: str, *members: str) -> int:
        raise StoreUnavailableError("set_add refused")


async def test_the_first_state_write_registers_when_joining_could_not(clock: FakeClock) -> None:
    """If registering on join fails, the breaker still starts, and its first state
    write adds its name to the index in the same commit."""
    store = _SetAddDown(clock=clock)
    await store.initialize()
    cb = CircuitBreaker("orders", store=store, clock=clock)
    try:
        await cb.initialize()
        assert await store.members(NAMES_KEY) == set()
        await cb.force_state("forced_open")
        assert await store.members(NAMES_KEY) == {"orders"}
    finally:
        await cb.close()
        await store.close()
