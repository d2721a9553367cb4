"""A connection pool whose commands wait for a free connection instead of failing.

redis-py's asyncio pool raises ``MaxConnectionsError`` ("Too many connections") the moment
more commands are in flight than it may open connections, so a burst of a few hundred
concurrent writes looked like an outage and sent a failover store to memory.
:class:`WaitingPool` queues them instead: a command that finds every connection busy
waits, first come first served, until one is given back, for at most ``wait_timeout``
seconds, and only then fails. While connections are free it costs one comparison.
Redis Cluster clients keep a pool per node with the same limit: :class:`WaitingCluster`
admits at most that many commands at once and queues the rest the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import redis.exceptions as rex
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool

__all__ = ["WaitingCluster", "WaitingPool", "WaitingSentinelPool"]


class WaitingPool(ConnectionPool):
    """A :class:`~redis.asyncio.connection.ConnectionPool` whose commands wait for a
    connection when all are busy (up to ``wait_timeout`` seconds; ``None``: no limit)."""

    def __init__(self, *args: Any, wait_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wait_timeout = wait_timeout
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._reserved = 0  # connections promised to woken waiters that have not run yet

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._waiters or len(self._in_use_connections) + self._reserved >= self.max_connections:
            await self._wait_turn()
            self._reserved -= 1
        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]

    async def release(self, connection: Any) -> None:
        await super().release(connection)
        self._wake()

    async def _wait_turn(self) -> None:
        """Queue until a connection is promised to this caller."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.wait_timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._reserved -= 1  # promised a connection but leaving: pass it on
                self._wake()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise rex.MaxConnectionsError(
                    f"all {self.max_connections} connections stayed busy for {self.wait_timeout} s"
                ) from None
            raise

    def _wake(self) -> None:
        while (
            self._waiters and len(self._in_use_connections) + self._reserved < self.max_connections
        ):
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter is skipped
                self._reserved += 1
                waiter.set_result(None)


class WaitingSentinelPool(WaitingPool, SentinelConnectionPool):
    """:class:`WaitingPool` for the master (or a replica) named by Sentinel."""


class WaitingCluster(RedisCluster):
    """A cluster client with at most ``max_connections`` commands in flight (what any one
    node's pool allows); the others wait their turn, up to ``wait_timeout`` seconds."""

    def __init__(self, *args: Any, wait_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limit = int(kwargs.get("max_connections", 100))
        self._turns = asyncio.Semaphore(self._limit)
        self._wait_timeout = wait_timeout

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        turns = self._turns
        if turns.locked():
            try:
                async with asyncio.timeout(self._wait_timeout):
                    await turns.acquire()
            except TimeoutError:
                raise rex.MaxConnectionsError(
                    f"all {self._limit} connections stayed busy for {self._wait_timeout} s"
                ) from None
        else:
            await turns.acquire()
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            turns.release()
