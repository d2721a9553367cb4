"""MemoryStore specifics: clock-driven expiry and blocking, bounded memory, feed rebasing,
and the all-or-nothing property of commit under random operations."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend_services.errors import ConflictError, ValidationError
from backend_services.store import Append, Check, Delete, Put, SetAdd, SetRemove, Store
from backend_services.store.memory import MemoryStore
from backend_services.store.memory_feed import DEDUPE_MEMORY
from backend_services.testing import FakeClock


def test_memory_store_satisfies_the_protocol() -> None:
    """MemoryStore is a Store."""
    assert isinstance(MemoryStore(), Store)


async def test_expired_keys_are_purged_without_being_read() -> None:
    """Keys whose TTL passed are dropped on later writes even if nobody reads them."""
    clock = FakeClock()
    s = MemoryStore(clock=clock)
    for i in range(100):
        await s.put(f"k{i}", i, ttl=1)
    await clock.advance(2)
    await s.put("trigger", 0)
    assert len(s._records) == 1


async def test_ttl_boundary_is_exact_on_the_fake_clock() -> None:
    """A key lives until exactly its TTL; updated_at is the clock's wall time."""
    clock = FakeClock()
    s = MemoryStore(clock=clock)
    await s.put("k", 1, ttl=10)
    await clock.advance(9.999)
    rec = await s.get("k")
    assert rec is not None
    assert rec.updated_at == clock.time() - 9.999
    await clock.advance(0.001)
    assert await s.get("k") is None
    assert await s.server_time() == clock.time()


async def test_lease_renewal_extends_from_renewal_time() -> None:
    """Renewing a lease restarts its TTL from the renewal moment."""
    clock = FakeClock()
    s = MemoryStore(clock=clock)
    await s.acquire_lease("l", "a", 10)
    await clock.advance(8)
    assert await s.acquire_lease("l", "a", 10)
    await clock.advance(8)
    assert await s.lease_owner("l") == "a"
    await clock.advance(2)
    assert await s.lease_owner("l") is None


async def test_cancelled_blocking_reader_leaves_no_sleeper_or_waiter() -> None:
    """Cancelling or waking a blocked read cleans up its timer and its wake-up signal."""
    clock = FakeClock()
    s = MemoryStore(clock=clock)
    reader = asyncio.create_task(s.read("f", 0, block=100))
    await clock.advance(0)
    assert clock.sleepers == 1
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await clock.advance(0)
    assert clock.sleepers == 0
    assert s.feeds._streams["f"].waiters == []
    woken = asyncio.create_task(s.read("f", 0, block=100))
    await asyncio.sleep(0)
    await s.append("f", {"x": 1})
    assert (await woken).position == 1
    await clock.advance(0)
    assert clock.sleepers == 0


async def test_close_releases_blocked_readers() -> None:
    """close() makes blocked readers return an empty batch at once."""
    s = MemoryStore(clock=FakeClock())
    reader = asyncio.create_task(s.read("f", 0, block=100))
    await asyncio.sleep(0)
    await s.close()
    batch = await reader
    assert (batch.events, batch.position) == ([], 0)


async def test_dedupe_memory_is_bounded() -> None:
    """A stream remembers a bounded number of dedupe ids (the oldest are forgotten)."""
    s = MemoryStore()
    for i in range(DEDUPE_MEMORY + 5):
        await s.commit([Append("f", {"i": i}, maxlen=10, dedupe_id=f"id{i}")])
    seen = s.feeds._streams["f"].seen
    assert len(seen) == DEDUPE_MEMORY
    assert "id0" not in seen
    assert f"id{DEDUPE_MEMORY + 4}" in seen


async def test_feed_reset_rebases_positions_and_forces_resync() -> None:
    """After feeds.reset(base), old positions resync and new events number from base+1."""
    s = MemoryStore()
    await s.append("f", {"i": 0})
    s.feeds.reset(1_000)
    batch = await s.read("f", 1)
    assert (batch.resync, batch.position) == (True, 1_000)
    assert await s.feed_position("f") == 1_000
    assert await s.append("f", {"i": 1}) == 1_001
    assert (await s.read("f", 1_000)).events[0].data == {"i": 1}


async def test_events_are_copies() -> None:
    """Mutating an appended or read event does not change the stream."""
    s = MemoryStore()
    event: dict[str, Any] = {"l": [1]}
    await s.append("f", event)
    event["l"].append(2)
    first = await s.read("f", 0)
    first.events[0].data["l"].append(3)
    assert (await s.read("f", 0)).events[0].data == {"l": [1]}


async def test_bad_operations_are_refused_before_anything_applies() -> None:
    """An invalid operation anywhere in a commit fails it whole, naming the problem."""
    s = MemoryStore()
    with pytest.raises(ValidationError) as err:
        await s.commit([Put("a", 1), Append("f", {"x": {1, 2}})])
    assert err.value.field == "f"
    with pytest.raises(ValidationError):
        await s.commit([Put("a", 1), Put("b", float("nan"))])
    with pytest.raises(ValidationError):
        await s.commit([Put("a", 1, expect_version=-1)])
    with pytest.raises(ValidationError):
        await s.read("f", -1)
    assert await s.get("a") is None
    assert await s.feed_position("f") == 0


_keys = st.sampled_from(["a", "b", "c"])
_ops = st.one_of(
    st.builds(Put, _keys, st.integers(), st.one_of(st.none(), st.integers(0, 3))),
    st.builds(Delete, _keys, st.one_of(st.none(), st.integers(0, 3))),
    st.builds(Check, _keys, st.integers(0, 3)),
    st.builds(SetAdd, _keys, st.tuples(st.sampled_from("xyz"))),
    st.builds(SetRemove, _keys, st.tuples(st.sampled_from("xyz"))),
    st.builds(Append, _keys, st.fixed_dictionaries({"n": st.integers()})),
)


async def _snapshot(s: MemoryStore) -> tuple[Any, ...]:
    recs = await s.get_many(["a", "b", "c"])
    return (
        {k: (r.value, r.version) for k, r in recs.items()},
        [await s.members(k) for k in "abc"],
        [await s.feed_position(k) for k in "abc"],
    )


@given(st.lists(st.lists(_ops, min_size=1, max_size=5), max_size=12))
def test_commit_is_all_or_nothing_under_random_operations(commits: list[list[Any]]) -> None:
    """A rejected commit leaves everything as it was; an accepted one applies every op."""

    async def run() -> None:
        s = MemoryStore(clock=FakeClock())
        for ops in commits:
            before = await _snapshot(s)
            try:
                result = await s.commit(ops)
            except ConflictError:
                assert await _snapshot(s) == before
                continue
            last = {op.key: op for op in ops if isinstance(op, Put | Delete)}
            for key, op in last.items():
                rec = await s.get(key)
                if isinstance(op, Delete):
                    assert rec is None
                else:
                    assert rec is not None
                    assert rec.version == result.versions[key]
            appended = {op.stream for op in ops if isinstance(op, Append)}
            for key in appended:
                assert result.positions[key] == await s.feed_position(key)

    asyncio.run(run())
