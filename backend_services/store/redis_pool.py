"""A connection pool whose commands wait for a free connection instead of failing.

redis-py's asyncio pool raises ``MaxConnectionsError`` ("Too many connections") the moment
more commands are in flight than it may open connections, so a burst of a few hundred
concurrent writes looked like an outage and sent a failover store to memory.
:class:`WaitingPool` queues them instead: a command that finds every connection busy
waits, first come first served, until one is given back, for at most ``wait_timeout``
seconds, and only then fails. While connections are free it costs one comparison.
(Redis Cluster clients keep their own per-node pools, which this does not cover.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import redis.exceptions as rex
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool

__all__ = ["WaitingPool", "WaitingSentinelPool"]


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
