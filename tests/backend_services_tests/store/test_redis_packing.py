"""C command packing: the same bytes on the wire as the client's own packing."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection

from backend_services.store.redis import RedisStore
from backend_services.store.redis_packing import fast_packing
from backend_services.store.values import FrozenJSON

CASES: list[tuple[Any, ...]] = [
    ("EVALSHA", "ab" * 20, 2, "k1", "k2", "", "é ü", FrozenJSON('{"a":[1,2]}'), b"\x00\xff", -5),
    ("PING",),
    ("CONFIG GET", "maxmemory-policy"),  # a two-word command is split by the client
    ("SET", "a", 1.5),  # floats are formatted by the client
    ("XADD", "s", "*", "d", 10**30),
]


@pytest.mark.parametrize("args", CASES)
def test_fast_packing_sends_the_same_bytes(args: tuple[Any, ...]) -> None:
    """Every command packs to exactly the bytes the client's own packing gives."""
    fast, plain = fast_packing(Connection)(), Connection()
    assert b"".join(fast.pack_command(*args)) == b"".join(plain.pack_command(*args))


def test_fast_packing_keeps_the_clients_errors() -> None:
    """Arguments the client refuses (bool, None) are still refused."""
    fast = fast_packing(Connection)()
    for bad in (True, None):
        with pytest.raises(Exception, match="Invalid input"):
            fast.pack_command("SET", "a", bad)


async def test_a_standalone_store_uses_fast_packing(redis_url: str) -> None:
    """A store on one server packs in C and still round-trips values and commits."""
    async with RedisStore(redis_url, namespace="pack") as store:
        pool = store._client.connection_pool
        assert pool.connection_class is fast_packing(Connection)
        await store.put("k", {"v": ["é", 1]})
        record = await store.get("k")
        assert record is not None
        assert record.value == {"v": ["é", 1]}
