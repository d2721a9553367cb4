"""One behaviour suite for every Store implementation (memory, Redis, failover over Redis).

Time-based behaviour: the memory store runs on a FakeClock that the test advances; the
Redis-backed stores use millisecond TTLs measured by the server's clock, observed by
polling with a bounded real-time wait.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from backend_services.errors import ConflictError, ValidationError
from backend_services.store import (
    Append,
    Check,
    Delete,
    Put,
    PutIfNewer,
    SetAdd,
    SetRemove,
    Store,
)
from backend_services.store.failover import FailoverStore
from backend_services.store.memory import MemoryStore
from backend_services.store.redis import RedisStore
from backend_services.testing import FakeClock

KINDS = ["memory", "redis", "failover"]


@dataclass
class Env:
    """A store under test and the means to let its time pass."""

    kind: str
    store: Store
    clock: FakeClock | None  # None: time is the real server's

    async def eventually(self, seconds: float, check: Callable[[], Awaitable[bool]]) -> bool:
        """Let ``seconds`` pass on the store's clock, then report whether ``check`` holds
        (for a real server: poll until it holds, at most 5 s of real time)."""
        if self.clock is not None:
            await self.clock.advance(seconds)
            return await check()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while loop.time() < deadline:
            if await check():
                return True
            await asyncio.sleep(0.005)
        return await check()

    async def wait_for(self, aw: Awaitable[object]) -> object:
        """Await something that finishes on a real event (bounded)."""
        return await asyncio.wait_for(aw, timeout=5.0)


def _namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


async def _open(kind: str, request: pytest.FixtureRequest) -> Env:
    if kind == "memory":
        clock = FakeClock()
        return Env(kind, MemoryStore(clock=clock), clock)
    url = request.getfixturevalue("redis_url")
    redis = RedisStore(url, namespace=_namespace())
    if kind == "redis":
        return Env(kind, redis, None)
    if kind == "failover":
        return Env(kind, FailoverStore(redis, MemoryStore()), None)
    raise AssertionError(f"unknown store kind {kind!r}")


@pytest.fixture(params=KINDS)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    """A fresh, initialized store of each kind."""
    e = await _open(request.param, request)
    await e.store.initialize()
    try:
        yield e
    finally:
        await e.store.close()


# ---- records, versions, compare-and-set -------------------------------------------------


async def test_versions_start_at_one_and_count_writes(env: Env) -> None:
    """A new key is version 1; each write adds 1; the record carries value and write time."""
    s = env.store
    assert await s.get("doc") is None
    assert await s.put("doc", {"a": 1}) == 1
    assert await s.put("doc", {"a": 2}) == 2
    rec = await s.get("doc")
    assert rec is not None
    assert (rec.value, rec.version) == ({"a": 2}, 2)
    assert abs(rec.updated_at - await s.server_time()) < 60


async def test_get_many_returns_only_present_keys(env: Env) -> None:
    """get_many maps each existing key to its record and leaves missing keys out."""
    s = env.store
    await s.put("a", 1)
    await s.put("b", [1, 2])
    got = await s.get_many(["a", "b", "missing"])
    assert {k: (r.value, r.version) for k, r in got.items()} == {"a": (1, 1), "b": ([1, 2], 1)}
    assert await s.get_many([]) == {}


async def test_cas_must_not_exist_and_expected_version(env: Env) -> None:
    """expect_version=0 creates only; expect_version=n writes only at version n."""
    s = env.store
    assert await s.put("k", "v1", expect_version=0) == 1
    with pytest.raises(ConflictError) as err:
        await s.put("k", "again", expect_version=0)
    assert (err.value.key, err.value.expected, err.value.actual) == ("k", 0, 1)
    assert "'k'" in str(err.value)
    assert await s.put("k", "v2", expect_version=1) == 2
    with pytest.raises(ConflictError):
        await s.put("k", "stale", expect_version=1)
    rec = await s.get("k")
    assert rec is not None
    assert (rec.value, rec.version) == ("v2", 2)


async def test_delete_reports_existence_and_honours_cas(env: Env) -> None:
    """delete is True only for an existing key; a wrong expect_version deletes nothing."""
    s = env.store
    assert await s.delete("nope") is False
    await s.put("k", 1)
    with pytest.raises(ConflictError):
        await s.delete("k", expect_version=5)
    assert await s.get("k") is not None
    assert await s.delete("k", expect_version=1) is True
    assert await s.get("k") is None
    assert await s.put("k", 2) == 1


async def test_values_round_trip_as_json_and_are_copies(env: Env) -> None:
    """Values come back as JSON would give them; mutating them never changes the store."""
    s = env.store
    value = {"list": [1, 2.5, "x", None, True], "tuple": (1, 2), "nested": {"n": {}}}
    await s.put("k", value)
    value["list"].append("mutated")  # type: ignore[attr-defined]
    rec = await s.get("k")
    assert rec is not None
    assert rec.value == {"list": [1, 2.5, "x", None, True], "tuple": [1, 2], "nested": {"n": {}}}
    rec.value["nested"]["n"]["x"] = 1
    again = await s.get("k")
    assert again is not None
    assert again.value["nested"] == {"n": {}}
    for scalar in ("text", 0, -3, 1.5, True, False, None, "", "ünïcødé"):
        await s.put("scalar", scalar)
        got = await s.get("scalar")
        assert got is not None
        assert got.value == scalar
        assert type(got.value) is type(scalar)


async def test_invalid_input_is_a_validation_error_naming_it(env: Env) -> None:
    """A non-JSON value names its key; an empty key or a bad TTL is refused; nothing stored."""
    s = env.store
    with pytest.raises(ValidationError) as err:
        await s.put("bad-value", {"x": object()})
    assert "bad-value" in str(err.value)
    with pytest.raises(ValidationError):
        await s.put("", 1)
    with pytest.raises(ValidationError):
        await s.put("k", 1, ttl=-1)
    with pytest.raises(ValidationError):
        await s.acquire_lease("lease", "me", 0)
    assert await s.get("bad-value") is None
    assert await s.get("k") is None


# ---- TTL ------------------------------------------------------------------------------


async def test_ttl_expires_on_the_store_clock(env: Env) -> None:
    """A key written with a TTL is there at first and gone once the TTL has passed."""
    s = env.store
    await s.put("eph", "v", ttl=0.2)
    await s.put("keep", "v")
    assert await s.get("eph") is not None

    async def gone() -> bool:
        return await s.get("eph") is None

    assert await env.eventually(0.25, gone)
    assert await s.get("keep") is not None
    assert await s.put("eph", "again") == 1  # recreated: versions start over


async def test_put_without_ttl_makes_a_key_persistent(env: Env) -> None:
    """Re-writing a key without a TTL removes its earlier expiry."""
    s = env.store
    await s.put("k", 1, ttl=0.2)
    await s.put("k", 2)
    await s.put("probe", 0, ttl=0.2)

    async def probe_gone() -> bool:
        return await s.get("probe") is None

    assert await env.eventually(0.25, probe_gone)
    rec = await s.get("k")
    assert rec is not None
    assert rec.value == 2


# ---- sets and counters -----------------------------------------------------------------


async def test_sets_add_remove_and_list_members(env: Env) -> None:
    """set_add/set_remove report how many members changed; members lists the set."""
    s = env.store
    assert await s.members("idx") == set()
    assert await s.set_add("idx", "a", "b") == 2
    assert await s.set_add("idx", "b", "c") == 1
    assert await s.set_remove("idx", "a", "zz") == 1
    assert await s.members("idx") == {"b", "c"}
    await s.commit([SetAdd("idx", ("d",)), SetRemove("idx", ("b", "c"))])
    assert await s.members("idx") == {"d"}
    assert await s.set_remove("idx", "d") == 1
    assert await s.members("idx") == set()


async def test_counters_increment_from_zero(env: Env) -> None:
    """incr starts from 0 and adds the amount (also negative)."""
    s = env.store
    assert await s.incr("n") == 1
    assert await s.incr("n", 5) == 6
    assert await s.incr("n", -2) == 4
    assert await s.incr("other", 3) == 3


# ---- leases -----------------------------------------------------------------------------


async def test_lease_acquire_renew_and_refuse_others(env: Env) -> None:
    """One owner holds a lease; it may renew; another is refused while it is held."""
    s = env.store
    assert await s.lease_owner("leader") is None
    assert await s.acquire_lease("leader", "a", 30) is True
    assert await s.acquire_lease("leader", "b", 30) is False
    assert await s.acquire_lease("leader", "a", 30) is True
    assert await s.lease_owner("leader") == "a"


async def test_lease_expires_and_can_be_taken_over(env: Env) -> None:
    """An expired lease has no owner and another owner may take it."""
    s = env.store
    assert await s.acquire_lease("leader", "a", 0.2) is True

    async def free() -> bool:
        return await s.lease_owner("leader") is None

    assert await env.eventually(0.25, free)
    assert await s.acquire_lease("leader", "b", 30) is True
    assert await s.lease_owner("leader") == "b"
    assert await s.release_lease("leader", "a") is False


async def test_lease_release_only_by_its_owner(env: Env) -> None:
    """release_lease by a non-owner is refused; by the owner it frees the lease."""
    s = env.store
    await s.acquire_lease("lock", "a", 30)
    assert await s.release_lease("lock", "b") is False
    assert await s.lease_owner("lock") == "a"
    assert await s.release_lease("lock", "a") is True
    assert await s.lease_owner("lock") is None
    assert await s.release_lease("lock", "a") is False


# ---- atomic commit ----------------------------------------------------------------------


async def test_commit_applies_everything_and_reports_it(env: Env) -> None:
    """A commit writes, deletes, changes sets and appends at once, reporting versions and
    positions."""
    s = env.store
    await s.put("old", 1)
    result = await s.commit(
        [
            Put("a", {"x": 1}, expect_version=0),
            Put("b", 2),
            Delete("old", expect_version=1),
            SetAdd("idx", ("a", "b")),
            Append("changes", {"key": "a"}),
        ]
    )
    assert result.versions == {"a": 1, "b": 1, "old": 0}
    assert result.positions == {"changes": 1}
    assert await s.get("old") is None
    assert await s.members("idx") == {"a", "b"}
    assert await s.feed_position("changes") == 1


async def test_commit_is_all_or_nothing(env: Env) -> None:
    """One failed condition raises ConflictError naming it, and nothing is applied."""
    s = env.store
    await s.put("b", "existing")
    ops = [
        Put("a", 1),
        SetAdd("idx", ("a",)),
        Append("changes", {"key": "a"}),
        Put("b", "overwrite", expect_version=0),
    ]
    with pytest.raises(ConflictError) as err:
        await s.commit(ops)
    assert (err.value.key, err.value.expected, err.value.actual) == ("b", 0, 1)
    assert await s.get("a") is None
    assert await s.members("idx") == set()
    assert await s.feed_position("changes") == 0
    rec = await s.get("b")
    assert rec is not None
    assert rec.value == "existing"


async def test_commit_check_is_a_condition_only(env: Env) -> None:
    """Check guards a commit without writing its key."""
    s = env.store
    await s.put("guard", "g")
    result = await s.commit([Check("guard", 1), Check("absent", 0), Put("x", 1)])
    assert result.versions == {"x": 1}
    with pytest.raises(ConflictError):
        await s.commit([Check("guard", 2), Put("x", 2)])
    rec = await s.get("x")
    assert rec is not None
    assert rec.version == 1


# ---- change feeds -----------------------------------------------------------------------


async def test_feed_numbers_events_and_reads_in_order(env: Env) -> None:
    """Positions are 1, 2, 3 per stream; read returns events after a position in order."""
    s = env.store
    assert await s.feed_position("f") == 0
    assert [await s.append("f", {"i": i}) for i in range(3)] == [1, 2, 3]
    assert await s.append("g", {"other": True}) == 1
    batch = await s.read("f", 0)
    assert [(e.position, e.data) for e in batch.events] == [
        (1, {"i": 0}),
        (2, {"i": 1}),
        (3, {"i": 2}),
    ]
    assert (batch.position, batch.resync) == (3, False)
    assert await s.feed_position("f") == 3


async def test_feed_resumes_from_a_position_in_pages(env: Env) -> None:
    """A reader resumes after its position and pages with count; at the end it stays put."""
    s = env.store
    for i in range(5):
        await s.append("f", {"i": i})
    first = await s.read("f", 1, count=2)
    assert [e.position for e in first.events] == [2, 3]
    assert first.position == 3
    rest = await s.read("f", first.position)
    assert [e.data["i"] for e in rest.events] == [3, 4]
    empty = await s.read("f", rest.position)
    assert (empty.events, empty.position, empty.resync) == ([], 5, False)
    assert (await s.read("never", 0)).events == []


async def test_feed_blocking_read_wakes_on_a_new_event(env: Env) -> None:
    """A blocked reader returns as soon as an event arrives."""
    s = env.store
    await s.append("f", {"i": 0})
    reader = asyncio.create_task(s.read("f", 1, block=30))
    await asyncio.sleep(0.05 if env.clock is None else 0)
    assert not reader.done()
    await s.append("f", {"i": 1})
    batch = await env.wait_for(reader)
    assert batch.events[0].data == {"i": 1}  # type: ignore[attr-defined]


async def test_feed_blocking_read_times_out_empty(env: Env) -> None:
    """A blocked reader with nothing new returns an empty batch after ``block`` seconds."""
    s = env.store
    await s.append("f", {"i": 0})
    reader = asyncio.create_task(s.read("f", 1, block=0.1))

    async def done() -> bool:
        return reader.done()

    assert await env.eventually(0.1, done)
    batch = reader.result()
    assert (batch.events, batch.position, batch.resync) == ([], 1, False)


async def test_feed_trimmed_position_asks_for_resync(env: Env) -> None:
    """When a reader's position was trimmed away, it is told to resync and continues from
    the returned position."""
    s = env.store
    for i in range(300):
        await s.append("f", {"i": i}, maxlen=10)
    batch = await s.read("f", 0)
    assert batch.resync is True
    assert batch.position <= 300
    await s.append("f", {"i": 300}, maxlen=10)
    after = await s.read("f", batch.position)
    assert after.resync is False
    assert after.events[-1].data == {"i": 300}
    assert after.position == 301


async def test_feed_position_beyond_the_end_asks_for_resync(env: Env) -> None:
    """A position newer than the stream's end (the stream was reset) means resync."""
    s = env.store
    await s.append("f", {"i": 0})
    batch = await s.read("f", 50)
    assert (batch.resync, batch.position) == (True, 1)
    fresh = await s.read("unknown", 7)
    assert (fresh.resync, fresh.position) == (True, 0)


async def test_append_dedupe_id_skips_a_repeat(env: Env) -> None:
    """An Append whose dedupe_id the stream already took adds nothing."""
    s = env.store
    first = await s.commit([Append("f", {"i": 1}, dedupe_id="evt-1")])
    again = await s.commit([Append("f", {"i": 1}, dedupe_id="evt-1")])
    other = await s.commit([Append("f", {"i": 2}, dedupe_id="evt-2")])
    assert first.positions == {"f": 1}
    assert again.positions.get("f", 1) <= 1
    assert other.positions == {"f": 2}
    batch = await s.read("f", 0)
    assert [e.data for e in batch.events] == [{"i": 1}, {"i": 2}]


# ---- reconciliation writes -----------------------------------------------------------------


async def test_put_if_newer_is_last_writer_wins(env: Env) -> None:
    """PutIfNewer writes when absent or older, skips (-1) when not newer, never conflicts."""
    s = env.store
    r = await s.commit([PutIfNewer("k", "first", updated_at=1000.0)])
    assert r.versions == {"k": 1}
    rec = await s.get("k")
    assert rec is not None
    assert (rec.value, rec.updated_at) == ("first", 1000.0)
    assert (await s.commit([PutIfNewer("k", "older", updated_at=999.0)])).versions == {"k": -1}
    assert (await s.commit([PutIfNewer("k", "same", updated_at=1000.0)])).versions == {"k": -1}
    assert (await s.commit([PutIfNewer("k", "newer", updated_at=1001.0)])).versions == {"k": 2}
    rec = await s.get("k")
    assert rec is not None
    assert (rec.value, rec.version) == ("newer", 2)


async def test_put_if_newer_tombstone_deletes_only_older(env: Env) -> None:
    """A PutIfNewer tombstone deletes an older record and leaves a newer one alone."""
    s = env.store
    await s.commit([PutIfNewer("old", 1, updated_at=100.0), PutIfNewer("new", 1, updated_at=300.0)])
    result = await s.commit(
        [
            PutIfNewer("old", None, updated_at=200.0, deleted=True),
            PutIfNewer("new", None, updated_at=200.0, deleted=True),
        ]
    )
    assert result.versions == {"old": 0, "new": -1}
    assert await s.get("old") is None
    assert await s.get("new") is not None


async def test_status_reports_a_connected_backend(env: Env) -> None:
    """status() names the backend in use and says it is connected."""
    st = env.store.status()
    assert st.connected is True
    assert st.backend in ("memory", "redis")
    assert st.pending_writes == 0
    assert isinstance(await env.store.server_time(), float)
