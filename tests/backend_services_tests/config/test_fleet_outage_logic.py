"""The fleet across a store outage, deterministically: two managers, one shared store that
goes away and comes back empty, on a FakeClock.

Each manager talks to the shared store through its own FailoverStore; the store is an
in-memory one that can be made unreachable and "restarted" empty, and each failover's
reconnect backoff is chosen so the order in which the processes come back is fixed. The
same story against a real server in separate processes is in test_fleet_redis.py.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from backend_services.errors import StoreUnavailableError
from backend_services.infrastructure.config_manager import ConfigurationManager
from backend_services.store.failover import FailoverStore
from backend_services.store.memory import MemoryStore
from backend_services.store.protocol import StoreStatus
from backend_services.tasks import Backoff
from backend_services.testing import FakeClock

SERVICE = "outage-svc"


class SharedServer:
    """The shared store: unreachable while ``down``; :meth:`restart_empty` loses all data."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.data = MemoryStore(clock=clock)
        self.down = False

    def restart_empty(self) -> None:
        self.data = MemoryStore(clock=self.clock)
        self.down = False


class Connection:
    """One process's connection to the :class:`SharedServer` (the failover's primary)."""

    def __init__(self, server: SharedServer) -> None:
        self.server = server

    def status(self) -> StoreStatus:
        return StoreStatus(backend="redis", connected=not self.server.down)

    async def initialize(self) -> None:
        self._check()

    async def close(self) -> None:
        return None

    def _check(self) -> None:
        if self.server.down:
            raise StoreUnavailableError("connection refused")

    def __getattr__(self, name: str) -> Any:
        attr = getattr(MemoryStore, name)
        if not inspect.iscoroutinefunction(attr):
            return getattr(self.server.data, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self._check()
            return await getattr(self.server.data, name)(*args, **kwargs)

        return call


async def _manager(
    clock: FakeClock, server: SharedServer, name: str, retry: float
) -> ConfigurationManager:
    store = FailoverStore(
        Connection(server),  # type: ignore[arg-type]
        clock=clock,
        backoff=Backoff(initial=retry, maximum=retry),
    )
    cm = ConfigurationManager(
        SERVICE,
        store=store,
        clock=clock,
        environ={},
        last_known_good=None,
        feed_block=0.5,
        author=name,
    )
    await cm.initialize()
    return cm


async def _run(clock: FakeClock, seconds: float) -> None:
    for _ in range(int(seconds / 0.1)):
        await clock.advance(0.1)


class TestStoreBackEmpty:
    @pytest.mark.parametrize("first", ["newer", "older"])
    async def test_outage_changes_reach_the_process_that_reconciled_first(self, first: str) -> None:
        """The process back first reconciles alone; the other's outage changes, replayed
        under that head afterwards, still reach it: both end equal, newest write wins."""
        clock = FakeClock(start=1_000.0)
        server = SharedServer(clock)
        # back 0.5-1 s after the store, or 4-8 s after it
        older = await _manager(clock, server, "older", retry=1.0 if first == "older" else 8.0)
        newer = await _manager(clock, server, "newer", retry=1.0 if first == "newer" else 8.0)
        early, late = (newer, older) if first == "newer" else (older, newer)
        try:
            await older.bulk_update({"base": 1, "x": 0})
            await _run(clock, 2)
            assert await newer.get_all_config() == {"base": 1, "x": 0}

            server.down = True
            await older.set_config("x", 1)  # older ...
            await older.set_config("y", 3)
            await clock.advance(1)
            await newer.set_config("x", 2)  # ... newer: must win
            await newer.set_config("z", 4)
            await newer.delete_config("base")
            assert await older.get_config("x") == 1

            server.restart_empty()
            await _run(clock, 2)  # only one is back: it reconciles alone
            assert early.get_metrics()["store_reconciles"] == 1
            assert late.get_metrics()["store_connected"] is False
            await _run(clock, 20)  # the other is back, replays, and both settle

            expected = {"x": 2, "y": 3, "z": 4}
            assert await late.get_all_config() == expected
            assert await early.get_all_config() == expected
            assert late.version == early.version
        finally:
            await late.shutdown()
            await early.shutdown()
