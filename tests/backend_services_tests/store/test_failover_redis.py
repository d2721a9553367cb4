"""FailoverStore against a real server that is stopped and restarted mid-test.

The waits here are for real network events (a server going away or coming back) and are
bounded; the reconnect backoff is kept short so recovery is quick.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from backend_services.errors import StoreConfigurationError
from backend_services.store import FeedEvent
from backend_services.store.factory import open_store
from backend_services.store.failover import FailoverStore
from backend_services.store.feed import FeedFollower
from backend_services.store.memory import MemoryStore
from backend_services.store.redis import RedisStore
from backend_services.tasks import Backoff
from backend_services.testing import RedisServer

FAST = Backoff(initial=0.02, maximum=0.2)


def _failover(url: str, namespace: str) -> FailoverStore:
    primary = RedisStore(url, namespace=namespace, socket_timeout=1.0, connect_timeout=0.5)
    return FailoverStore(primary, MemoryStore(), backoff=FAST)


async def _until(check: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    """Wait (bounded, real time) for something a real server does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_writes_during_an_outage_all_reach_redis_once(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Redis stops while a writer keeps writing and restarts: no write raises, and every
    write made during and after the outage is in Redis afterwards, each event once."""
    server = redis_server_factory()
    ns = f"t{uuid.uuid4().hex[:10]}"
    store = _failover(server.url, ns)
    await store.initialize()
    written: list[tuple[int, bool]] = []  # (sequence number, written while disconnected)
    failures: list[Exception] = []
    stop = asyncio.Event()

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            outage = not store.status().connected
            try:
                await store.put(f"k{i}", {"i": i})
                await store.append("events", {"i": i})
                await store.set_add("idx", f"k{i}")
            except Exception as exc:
                failures.append(exc)
                raise
            written.append((i, outage))
            i += 1
            await asyncio.sleep(0.002)

    task = asyncio.create_task(writer())
    await _until(lambda: len(written) >= 20, "writes before the outage")
    await asyncio.to_thread(server.stop)
    await _until(lambda: not store.status().connected, "the outage to be noticed")
    before = len(written)
    await _until(lambda: len(written) >= before + 30, "writes during the outage")
    assert store.status().pending_writes > 0
    await asyncio.to_thread(server.start)
    await _until(lambda: store.status().connected, "the reconnect")
    after = len(written)
    await _until(lambda: len(written) >= after + 20, "writes after the recovery")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert failures == []
    status = store.status()
    assert (status.connected, status.outages, status.pending_writes) == (True, 1, 0)
    await store.close()

    # The restarted server lost what it held before (nothing is persisted); everything
    # written from the outage on must be there, each event exactly once.
    first_outage = next(i for i, outage in written if outage)
    expected = [i for i, _ in written if i >= first_outage]
    check = RedisStore(server.url, namespace=ns)
    await check.initialize()
    records = await check.get_many([f"k{i}" for i in expected])
    assert {k: r.value for k, r in records.items()} == {f"k{i}": {"i": i} for i in expected}
    events: list[Any] = []
    position = 0
    while True:
        batch = await check.read("events", position)
        if not batch.events:
            break
        events += [e.data["i"] for e in batch.events]
        position = batch.position
    assert sorted(events) == sorted(set(events))  # nothing duplicated
    assert set(expected) <= set(events)  # nothing lost
    assert {f"k{i}" for i in expected} <= await check.members("idx")
    await check.close()


async def test_unreachable_at_start_then_moves_to_redis(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """With Redis down at start the store runs on memory; when Redis appears it moves
    there and what was written meanwhile is in Redis."""
    server = redis_server_factory()
    await asyncio.to_thread(server.stop)
    ns = f"t{uuid.uuid4().hex[:10]}"
    store = _failover(server.url, ns)
    await asyncio.wait_for(store.initialize(), 5)  # never hangs
    assert store.status().backend == "memory"
    assert await store.put("early", "written on memory") == 1
    await store.append("events", {"early": True})
    await asyncio.to_thread(server.start)
    await _until(lambda: store.status().connected, "the move to Redis")
    assert store.status().backend == "redis"
    check = RedisStore(server.url, namespace=ns)
    await check.initialize()
    rec = await check.get("early")
    assert rec is not None
    assert rec.value == "written on memory"
    assert [e.data for e in (await check.read("events", 0)).events] == [{"early": True}]
    await check.close()
    await store.close()


async def test_wrong_password_is_a_configuration_error(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A wrong password makes initialize() raise at once instead of falling back."""
    server = redis_server_factory(password="right")
    store = _failover(server.url_for(password="wrong"), "t")
    with pytest.raises(StoreConfigurationError):
        await asyncio.wait_for(store.initialize(), 5)
    await store.close()


async def test_open_store_picks_memory_or_redis_with_failover(redis_url: str) -> None:
    """No URL gives the embedded MemoryStore; a URL gives Redis with memory fallback."""
    assert isinstance(open_store(None), MemoryStore)
    store = open_store(redis_url, namespace=f"t{uuid.uuid4().hex[:10]}")
    assert isinstance(store, FailoverStore)
    async with store:
        await store.put("k", 1)
        assert store.status().backend == "redis"
        assert isinstance(store.primary, RedisStore)
        rec = await store.primary.get("k")
        assert rec is not None
        assert rec.value == 1


async def test_feed_follower_resyncs_across_an_outage(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A follower on a failover store keeps delivering through an outage and is told to
    resync at each switch of backend."""
    server = redis_server_factory()
    store = _failover(server.url, f"t{uuid.uuid4().hex[:10]}")
    await store.initialize()
    seen: list[int] = []
    resyncs: list[bool] = []

    def on_events(events: list[FeedEvent]) -> None:
        seen.extend(e.data["i"] for e in events)

    follower = FeedFollower(
        store, "f", on_events=on_events, on_resync=lambda: resyncs.append(True), block=0.05
    )
    follower.start()
    await _until(lambda: follower.position is not None, "the follower to start")
    await store.append("f", {"i": 1})
    await _until(lambda: seen == [1], "the first event")
    await asyncio.to_thread(server.stop)
    await _until(lambda: not store.status().connected, "the outage to be noticed")
    await _until(lambda: len(resyncs) == 1, "the resync after the switch to memory")
    await store.append("f", {"i": 2})
    await _until(lambda: 2 in seen, "an event during the outage")
    await asyncio.to_thread(server.start)
    await _until(lambda: store.status().connected, "the reconnect")
    await _until(lambda: len(resyncs) == 2, "the resync after the switch back")
    await store.append("f", {"i": 3})
    await _until(lambda: 3 in seen, "an event after the recovery")
    assert seen == [1, 2, 3]
    assert len(resyncs) == 2
    assert follower.running
    await follower.stop()
    await store.close()


async def test_a_committed_value_is_encoded_once_for_redis_and_the_mirror(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Put's value is turned into JSON once; Redis and the memory mirror hold the same."""
    import backend_services.store.redis as redis_store
    import backend_services.store.redis_codec as redis_codec
    import backend_services.store.values as values
    from backend_services.store.protocol import Append, Put, SetAdd

    encoded: list[Any] = []
    real = values.dumps

    def counting(value: Any) -> str:
        encoded.append(value)
        return real(value)

    monkeypatch.setattr(values, "dumps", counting)
    monkeypatch.setattr(redis_store, "dumps", counting)
    monkeypatch.setattr(redis_codec, "dumps", counting)
    doc = {"endpoint": {"host": "10.0.0.1", "port": 80}, "tags": ["a", 1, None]}
    async with _failover(redis_url, f"enc{uuid.uuid4().hex[:6]}") as store:
        result = await store.commit(
            [Put("svc:1", doc, ttl=30), SetAdd("idx", ("1",)), Append("ev", {"id": "1"})]
        )
        assert encoded.count(doc) == 1  # (the event is encoded on its own)
        primary = await store.primary.get("svc:1")
        mirrored = await store.memory.get("svc:1")
        assert primary is not None
        assert mirrored is not None
        assert primary.value == mirrored.value == doc
        assert primary.version == mirrored.version == result.versions["svc:1"]
        await store.put("svc:2", [doc])
        assert (await store.primary.get("svc:2")).value == [doc]  # type: ignore[union-attr]
        assert (await store.memory.get("svc:2")).value == [doc]  # type: ignore[union-attr]
