"""The outage journal (pure) and the memory store's replica view used by failover."""

from __future__ import annotations

from backend_services.store import Append, Record, SetAdd
from backend_services.store.journal import Incr, Journal, KeyWrite
from backend_services.store.memory import MemoryStore
from backend_services.testing import FakeClock


def test_a_key_is_journaled_once_at_its_first_change() -> None:
    """Repeated writes to a key keep one entry, in the place of its first write."""
    j = Journal()
    j.key_written("a")
    j.operation(Append("s", {"i": 1}, dedupe_id="e1"))
    j.key_written("a")
    j.key_deleted("b", 123.0)
    entries = [e for _, _, e in j.batch()]
    assert [type(e).__name__ for e in entries] == ["KeyWrite", "Append", "KeyWrite"]
    assert [e.key for e in entries if isinstance(e, KeyWrite)] == ["a", "b"]
    assert len(j) == 3
    assert j.tombstones == {"b": 123.0}


def test_a_key_written_during_replay_stays_for_the_next_round() -> None:
    """done() keeps a key changed after its batch was taken, drops the rest."""
    j = Journal()
    j.key_written("a")
    j.key_written("b")
    batch = j.batch()
    j.key_written("a")  # a write lands while the batch is being replayed
    j.done(batch)
    remaining = [e for _, _, e in j.batch()]
    assert [e.key for e in remaining if isinstance(e, KeyWrite)] == ["a"]
    j.done(j.batch())
    assert not j


def test_increments_are_replayed_alone() -> None:
    """An increment is never batched with other entries (it is not idempotent)."""
    j = Journal()
    j.operation(SetAdd("idx", ("a",)))
    j.operation(Incr("n", 2))
    j.operation(SetAdd("idx", ("b",)))
    first = j.batch()
    assert [type(e).__name__ for _, _, e in first] == ["SetAdd"]
    j.done(first)
    second = j.batch()
    assert [e for _, _, e in second] == [Incr("n", 2)]
    j.done(second)
    assert len(j.batch()) == 1


def test_appends_beyond_their_stream_maxlen_are_dropped() -> None:
    """A stream keeps at most maxlen pending events (the oldest go, as trimming would)."""
    j = Journal()
    for i in range(5):
        j.operation(Append("s", {"i": i}, maxlen=3, dedupe_id=f"e{i}"))
    j.operation(Append("t", {"i": 0}, maxlen=3))
    events = [e.event["i"] for _, _, e in j.batch() if isinstance(e, Append) and e.stream == "s"]
    assert events == [2, 3, 4]
    assert j.dropped == 2
    batch = j.batch(limit=2)
    j.done(batch)
    assert len(j) == 2
    j.done(j.batch())  # replaying the rest empties it
    assert not j


async def test_mirror_record_holds_exactly_the_primary_record() -> None:
    """A mirrored record keeps the primary's version and write time; None removes it."""
    clock = FakeClock()
    m = MemoryStore(clock=clock)
    m.mirror_record("k", Record({"a": 1}, 7, 123.0), ttl=10)
    rec = await m.get("k")
    assert rec == Record({"a": 1}, 7, 123.0)
    assert m.remaining_ttl("k") == 10
    m.mirror_record("k", Record({"a": 1}, 7, 124.0), seen=True)  # read back: TTL unknown
    assert m.remaining_ttl("k") == 10
    m.mirror_record("k", Record({"a": 2}, 8, 125.0))  # a write without TTL
    assert m.remaining_ttl("k") is None
    assert await m.put("k", 3, expect_version=8) == 9
    m.mirror_record("k", None)
    assert await m.get("k") is None
    await clock.advance(11)
    assert m.remaining_ttl("missing") is None


async def test_mirror_sets_counters_and_leases() -> None:
    """Sets, counters and leases can be set to the primary's view."""
    clock = FakeClock()
    m = MemoryStore(clock=clock)
    m.mirror_members("idx", {"a", "b"})
    m.mirror_counter("n", 41)
    m.mirror_lease("l", "owner", 5)
    assert await m.members("idx") == {"a", "b"}
    assert await m.incr("n") == 42
    assert await m.acquire_lease("l", "other", 5) is False
    await clock.advance(5)
    assert await m.lease_owner("l") is None
    m.mirror_members("idx", set())
    m.mirror_lease("l", "x", 5)
    m.mirror_lease("l", None)
    assert await m.members("idx") == set()
    assert await m.lease_owner("l") is None
