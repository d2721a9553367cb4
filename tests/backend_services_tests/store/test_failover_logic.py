"""FailoverStore switching, journaling and reconciliation, on a FakeClock.

The primary here is an in-memory store that can be made unreachable at will (and can
lose a reply after applying a write), so every switch and replay is deterministic; the
same behaviour against a real server that is stopped and restarted is in
test_failover_redis.py.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend_services.errors import ConflictError, StoreConfigurationError, StoreUnavailableError
from backend_services.store import Append, Put, Store, StoreStatus
from backend_services.store.failover import FEED_EPOCH, FailoverStore
from backend_services.store.memory import MemoryStore
from backend_services.tasks import Backoff
from backend_services.testing import FakeClock


class FlakyPrimary:
    """A primary store that is unreachable while ``down``; with ``lose_reply`` set, the
    next commit is applied but its reply is lost (the ambiguous failure)."""

    def __init__(self, clock: FakeClock) -> None:
        self.inner = MemoryStore(clock=clock)
        self.down = False
        self.refuse = False
        self.lose_reply = 0
        self.commits = 0

    def status(self) -> StoreStatus:
        return StoreStatus(backend="redis", connected=not self.down)

    async def commit(self, ops: Any) -> Any:
        self._check()
        result = await self.inner.commit(ops)
        self.commits += 1
        if self.lose_reply:
            self.lose_reply -= 1
            raise StoreUnavailableError("connection reset after the write")
        return result

    def _check(self) -> None:
        if self.refuse:
            raise StoreConfigurationError("WRONGPASS invalid password")
        if self.down:
            raise StoreUnavailableError("connection refused")

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self._check()
            return await attr(*args, **kwargs)

        return call


async def _open(start_down: bool = False) -> tuple[FakeClock, FlakyPrimary, FailoverStore]:
    clock = FakeClock()
    primary = FlakyPrimary(clock)
    primary.down = start_down
    store = FailoverStore(
        primary,  # type: ignore[arg-type]
        clock=clock,
        backoff=Backoff(initial=1.0, maximum=4.0),
    )
    await store.initialize()
    return clock, primary, store


async def _recover(clock: FakeClock, primary: FlakyPrimary, store: FailoverStore) -> None:
    primary.down = False
    for _ in range(10):
        await clock.advance(5.0)
        if store.status().connected:
            return
    raise AssertionError(f"did not reconnect: {store.status()}")


async def test_healthy_writes_go_to_the_primary_and_are_mirrored() -> None:
    """While the primary answers it holds the data and memory mirrors it."""
    _, primary, store = await _open()
    assert await store.put("k", {"v": 1}) == 1
    assert await store.put("k", {"v": 2}, expect_version=1) == 2
    assert await store.incr("n", 3) == 3
    await store.set_add("idx", "a")
    assert await store.acquire_lease("l", "me", 10)
    rec = await primary.inner.get("k")
    mirrored = await store.memory.get("k")
    assert rec is not None
    assert mirrored is not None
    assert (mirrored.value, mirrored.version) == ({"v": 2}, 2)
    assert await store.memory.members("idx") == {"a"}
    assert await store.memory.lease_owner("l") == "me"
    assert store.status() == StoreStatus(backend="redis", connected=True)
    await store.close()


async def test_outage_serves_last_known_view_and_accepts_writes() -> None:
    """When the primary goes away nothing raises: reads show the last view, writes land
    in memory and are counted as pending."""
    _, primary, store = await _open()
    seen: list[StoreStatus] = []
    store.add_listener(seen.append)
    await store.put("k", "before")
    await store.incr("n")
    primary.down = True
    rec = await store.get("k")
    assert rec is not None
    assert (rec.value, rec.version) == ("before", 1)
    assert await store.put("k", "during", expect_version=1) == 2
    assert await store.incr("n") == 2
    await store.append("events", {"e": 1})
    status = store.status()
    assert (status.backend, status.connected, status.outages) == ("memory", False, 1)
    assert status.pending_writes == 3
    assert "connection refused" in (status.last_error or "")
    assert [s.connected for s in seen] == [False]
    await store.close()


async def test_recovery_replays_every_outage_write_once() -> None:
    """After the primary returns, each outage write is in it and nothing is pending."""
    clock, primary, store = await _open()
    seen: list[bool] = []

    async def listener(status: StoreStatus) -> None:
        seen.append(status.connected)

    store.add_listener(listener)
    await store.put("kept", 1)
    primary.down = True
    await clock.advance(0.1)  # outage writes are later than the last primary write
    await store.put("a", {"x": 1})
    await store.put("a", {"x": 2})
    await store.delete("kept")
    await store.set_add("idx", "a", "b")
    await store.set_remove("idx", "b")
    await store.incr("n", 5)
    for i in range(3):
        await store.append("events", {"i": i})
    await _recover(clock, primary, store)
    inner = primary.inner
    a = await inner.get("a")
    assert a is not None
    assert a.value == {"x": 2}
    assert await inner.get("kept") is None
    assert await inner.members("idx") == {"a"}
    assert await inner.incr("n", 0) == 5
    batch = await inner.read("events", 0)
    assert [e.data for e in batch.events] == [{"i": 0}, {"i": 1}, {"i": 2}]
    status = store.status()
    assert (status.backend, status.connected, status.outages) == ("redis", True, 1)
    assert (status.pending_writes, status.last_error) == (
        0,
        repr(StoreUnavailableError("connection refused")),
    )
    assert seen == [False, True]
    await store.close()


async def test_newer_primary_write_is_not_overwritten_by_an_older_local_one() -> None:
    """Reconciliation is last-writer-wins by write time, in both directions."""
    clock, primary, store = await _open()
    await store.put("theirs", "old")
    await store.put("mine", "old")
    primary.down = True
    await store.put("theirs", "local, older")
    await clock.advance(0.5)
    await primary.inner.put("theirs", "remote, newer")  # another instance, during our outage
    await store.put("mine", "local, newer")
    await _recover(clock, primary, store)
    theirs = await primary.inner.get("theirs")
    mine = await primary.inner.get("mine")
    assert theirs is not None
    assert mine is not None
    assert (theirs.value, mine.value) == ("remote, newer", "local, newer")
    await store.close()


async def test_lost_replies_and_interrupted_replay_duplicate_nothing() -> None:
    """An append applied whose reply was lost, and a replay cut off mid-way and retried,
    still leave each event in the stream exactly once."""
    clock, primary, store = await _open()
    primary.lose_reply = 1
    await store.append("events", {"i": 0})  # applied, reply lost → journaled too
    assert not store.status().connected
    for i in range(1, 5):
        await store.append("events", {"i": i})
    store._replay_batch = 2
    primary.lose_reply = 2  # the first two replay batches are applied but not confirmed
    await _recover(clock, primary, store)
    batch = await primary.inner.read("events", 0)
    assert [e.data["i"] for e in batch.events] == [0, 1, 2, 3, 4]
    assert store.status().pending_writes == 0
    await store.close()


async def test_feed_readers_resync_when_the_backend_switches() -> None:
    """A position from one backend makes the other say resync; positions never overlap."""
    clock, primary, store = await _open()
    await store.append("f", {"i": 0})
    position = (await store.read("f", 0)).position
    primary.down = True
    during = await store.read("f", position)
    assert during.resync is True
    assert during.position >= FEED_EPOCH
    await store.append("f", {"i": 1})
    local = await store.read("f", during.position)
    assert [e.data for e in local.events] == [{"i": 1}]
    await _recover(clock, primary, store)
    after = await store.read("f", local.position)
    assert after.resync is True
    assert after.position == 2  # the replayed event is in the primary's stream
    await store.close()


async def test_unreachable_at_start_runs_on_memory_then_moves_over() -> None:
    """An unreachable primary at start is not an error; the store switches when it appears."""
    clock, primary, store = await _open(start_down=True)
    assert store.status().connected is False
    assert store.status().outages == 0
    await store.put("k", "written before the primary existed")
    await _recover(clock, primary, store)
    rec = await primary.inner.get("k")
    assert rec is not None
    assert rec.value == "written before the primary existed"
    assert store.status().backend == "redis"
    await store.close()


async def test_configuration_errors_are_raised_not_hidden() -> None:
    """Wrong credentials at start raise StoreConfigurationError from initialize()."""
    clock = FakeClock()
    primary = FlakyPrimary(clock)
    primary.refuse = True
    store = FailoverStore(primary, clock=clock)  # type: ignore[arg-type]
    with pytest.raises(StoreConfigurationError):
        await store.initialize()
    await store.close()


async def test_conflicts_pass_through_without_an_outage() -> None:
    """A failed compare-and-set on the primary is the caller's ConflictError, not a switch."""
    _, _, store = await _open()
    await store.put("k", 1)
    with pytest.raises(ConflictError):
        await store.put("k", 2, expect_version=0)
    with pytest.raises(ConflictError):
        await store.commit([Put("k", 3, expect_version=7), Append("f", {"x": 1})])
    assert store.status().connected is True
    await store.close()


async def test_reconnect_backs_off_while_the_primary_stays_down() -> None:
    """Reconnect attempts grow further apart (jittered exponential backoff)."""
    clock, primary, store = await _open()
    primary.down = True
    attempts: list[float] = []
    real = primary.inner.server_time

    async def probe() -> float:
        attempts.append(clock.monotonic())
        primary._check()
        return await real()

    primary.server_time = probe  # type: ignore[method-assign]
    await store.put("k", 1)  # notices the outage
    for _ in range(30):
        await clock.advance(1.0)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(attempts) >= 5
    assert gaps[-1] > gaps[0]
    assert max(gaps) <= 4.0
    await store.close()


def test_failover_store_is_a_store() -> None:
    """FailoverStore satisfies the Store protocol."""
    clock = FakeClock()
    assert isinstance(FailoverStore(FlakyPrimary(clock), clock=clock), Store)  # type: ignore[arg-type]


_KEYS = st.sampled_from(["a", "b", "c"])
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _KEYS, st.integers(0, 99)),
        st.tuples(st.just("delete"), _KEYS, st.just(0)),
        st.tuples(st.just("add"), _KEYS, st.integers(0, 3)),
        st.tuples(st.just("remove"), _KEYS, st.integers(0, 3)),
        st.tuples(st.just("incr"), _KEYS, st.integers(-3, 3)),
        st.tuples(st.just("append"), _KEYS, st.integers(0, 99)),
        st.tuples(st.just("down"), st.just(""), st.just(0)),
        st.tuples(st.just("up"), st.just(""), st.just(0)),
        st.tuples(st.just("lose_reply"), st.just(""), st.just(0)),
    ),
    max_size=40,
)


async def _apply(s: Any, step: tuple[str, str, int]) -> None:
    kind, key, n = step
    if kind == "put":
        await s.put(key, n)
    elif kind == "delete":
        await s.delete(key)
    elif kind == "add":
        await s.set_add(key, str(n))
    elif kind == "remove":
        await s.set_remove(key, str(n))
    elif kind == "incr":
        await s.incr(key, n)
    elif kind == "append":
        await s.append(key, {"n": n})


async def _state(s: Any) -> tuple[Any, ...]:
    recs = await s.get_many(["a", "b", "c"])
    events = [[e.data["n"] for e in (await s.read(k, 0)).events] for k in "abc"]
    return (
        {k: r.value for k, r in recs.items()},
        [await s.members(k) for k in "abc"],
        [await s.incr(k, 0) for k in "abc"],
        events,
    )


@given(_STEPS)
def test_any_outage_pattern_ends_with_the_primary_as_if_none_happened(
    steps: list[tuple[str, str, int]],
) -> None:
    """Whatever the order of writes, outages, recoveries and lost replies, once the
    primary is back it holds what a store that never failed would hold, and no call
    raised."""

    async def run() -> None:
        clock, primary, store = await _open()
        reference = MemoryStore(clock=clock)
        for step in steps:
            await clock.advance(0.01)
            if step[0] == "down":
                primary.down = True
            elif step[0] == "up":
                primary.down = False
                await clock.advance(5.0)
            elif step[0] == "lose_reply":
                primary.lose_reply = 1
            else:
                await _apply(store, step)
                await _apply(reference, step)
        await _recover(clock, primary, store)
        assert store.status().pending_writes == 0
        assert await _state(primary.inner) == await _state(reference)
        await store.close()

    asyncio.run(run())
