"""The Redis connection pool queues commands beyond its size instead of failing them."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions as rex

from backend_services.store.redis import RedisStore
from backend_services.store.redis_pool import WaitingPool


async def test_a_burst_beyond_the_pool_size_is_queued_not_failed(redis_url: str) -> None:
    """Three hundred concurrent writes through a store limited to four connections all
    succeed, and the store never reports an outage."""
    store = RedisStore(redis_url, namespace=f"t{uuid.uuid4().hex[:10]}", max_connections=4)
    await store.initialize()
    try:
        versions = await asyncio.gather(*(store.put(f"k{i}", i) for i in range(300)))
        assert versions == [1] * 300
        assert store.status().connected
        assert store.status().outages == 0
        pool = store._client.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 4
    finally:
        await store.close()


async def test_waiting_commands_are_served_in_arrival_order(redis_url: str) -> None:
    """With the only connection taken, queued commands get it one after another, first
    come first served, as it is given back."""
    pool = WaitingPool.from_url(redis_url, max_connections=1, wait_timeout=5.0)
    client = aioredis.Redis.from_pool(pool)
    try:
        held = await pool.get_connection()
        order: list[int] = []

        async def command(i: int) -> None:
            await client.set(f"order:{i}", i)
            order.append(i)

        tasks = [asyncio.create_task(command(i)) for i in range(5)]
        await asyncio.sleep(0)
        assert not any(t.done() for t in tasks)
        assert len(pool._waiters) == 5
        await pool.release(held)
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3, 4]
        assert pool._reserved == 0
    finally:
        await client.aclose()


async def test_a_cancelled_waiter_passes_its_turn_on(redis_url: str) -> None:
    """A queued command that is cancelled, even right after being woken, does not keep
    the connection from the next one in line."""
    pool = WaitingPool.from_url(redis_url, max_connections=1, wait_timeout=5.0)
    client = aioredis.Redis.from_pool(pool)
    try:
        held = await pool.get_connection()
        first = asyncio.create_task(client.ping())
        second = asyncio.create_task(client.set("after", 1))
        await asyncio.sleep(0)
        await pool.release(held)  # wakes `first`...
        first.cancel()  # ...which leaves before running
        assert await asyncio.wait_for(second, 5)
        with pytest.raises(asyncio.CancelledError):
            await first
        assert pool._reserved == 0
        assert not pool._waiters
    finally:
        await client.aclose()


async def test_a_wait_past_its_limit_fails_as_too_many_connections(redis_url: str) -> None:
    """When no connection comes back within the wait limit, the command fails with the
    pool's own error (which the store reports as unavailable)."""
    pool = WaitingPool.from_url(redis_url, max_connections=1, wait_timeout=0)
    client: Any = aioredis.Redis.from_pool(pool)
    try:
        held = await pool.get_connection()
        with pytest.raises(rex.MaxConnectionsError, match="all 1 connections stayed busy"):
            await client.ping()
        assert not pool._waiters
        await pool.release(held)
        assert await client.ping()
    finally:
        await client.aclose()
