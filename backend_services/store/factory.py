"""Choosing a store: memory when no Redis URL is configured, else Redis with failover."""

from __future__ import annotations

from typing import Any

from ..clock import Clock
from .failover import FailoverStore
from .memory import MemoryStore
from .protocol import Store
from .redis import RedisStore

__all__ = ["open_store"]


def open_store(
    redis_url: str | None,
    *,
    clock: Clock | None = None,
    namespace: str = "dtesn",
    **redis_options: Any,
) -> Store:
    """The store for ``redis_url``: a :class:`~.memory.MemoryStore` when it is None, else a
    :class:`~.failover.FailoverStore` over a :class:`~.redis.RedisStore` (``namespace`` and
    ``redis_options`` go to it) that falls back to memory while Redis is unreachable.

    The store is not connected yet: ``await store.initialize()`` (or ``async with``)."""
    if redis_url is None:
        return MemoryStore(clock=clock)
    primary = RedisStore(redis_url, namespace=namespace, clock=clock, **redis_options)
    return FailoverStore(primary, MemoryStore(clock=clock), clock=clock)
