"""Waiting for a Redis feed reader to reach XREAD BLOCK (instead of sleeping for it)."""

from __future__ import annotations

import asyncio
import time

from backend_services.store.redis import RedisStore


async def until_blocked(store: RedisStore, within: float = 5.0) -> None:
    """Return once a read of ``store`` is waiting in XREAD BLOCK (bounded real time)."""
    deadline = time.monotonic() + within
    while not store._xreads:
        assert time.monotonic() < deadline, "no read reached XREAD BLOCK"
        await asyncio.sleep(0.001)
