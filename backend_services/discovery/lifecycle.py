"""Starting and stopping a discovery process: connecting to the store, loading the
registry, starting the background work; and at shutdown deregistering this process's
registrations, releasing its leases and closing what it opened.
"""

from __future__ import annotations

import asyncio

from ..errors import LifecycleError
from ..log import get_logger
from ..store.feed import FeedFollower
from ..store.protocol import Store
from ..tasks import cancel_and_wait
from .records import FEED, REAPER_LEASE
from .registry import Registry
from .shards import ShardLeases
from .sync import FeedSync
from .upkeep import Upkeep

__all__ = ["Lifecycle"]

_log = get_logger("service_discovery")


class Lifecycle(FeedSync, Upkeep):
    """``initialize()`` and ``shutdown()`` of a discovery process."""

    namespace: str
    _redis_url: str | None

    async def initialize(self) -> None:
        """Connect to the store, load the registry and start the background work.
        A wrong password/ACL or untrusted certificate raises StoreConfigurationError."""
        if self._closed:
            raise LifecycleError("ServiceDiscovery.initialize(): already shut down")
        if self._initialized:
            return
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if self._initialized:
                return
            store = self._store
            if store is None:
                store = await self._open_store()
            self._store = store
            self._registry = Registry(store, self._signer, self.node_id, ttl=self._service_ttl)
            self._shards = ShardLeases(
                store,
                self.node_id,
                shards=self._shard_count,
                ttl=3 * self._maintenance_interval,
            )
            position = await store.feed_position(FEED)
            await self._resync(position)
            self._follower = FeedFollower(
                store,
                FEED,
                on_events=self._on_events,
                on_resync=self._on_resync,
                clock=self._clock,
                block=self._follower_block,
                start=position,
                supervisor=self._supervisor,
            )
            self._follower.start()
            await self._maintain()
            self._supervisor.spawn("checks", self._schedule.run)
            self._supervisor.spawn("heartbeat", self._heartbeat_loop)
            self._supervisor.spawn("maintenance", self._maintenance_loop)
            self._supervisor.spawn("keeper", self._keeper, restart=False)
            self._initialized = True
            _log.info(
                "discovery_started",
                node=self.node_id,
                store=store.status().backend,
                services=len(self._view),
                signed=self._signer.can_sign,
            )

    async def _open_store(self) -> Store:
        url = self._redis_url
        if url is None:
            from ..store.memory import MemoryStore

            store: Store = MemoryStore(clock=self._clock)
        else:
            from ..store.factory import open_store

            store = open_store(url, clock=self._clock, namespace=self.namespace)
        await store.initialize()
        return store

    async def shutdown(self) -> None:
        """Deregister this process's registrations, release leases, stop everything."""
        if self._closed:
            return
        self._closed = True
        if self._initialized:
            await self._deregister_owned()
            if self._shards is not None:
                try:
                    await asyncio.wait_for(self._shards.release_all(), timeout=5.0)
                except Exception as exc:
                    _log.warning("lease_release_failed", error=repr(exc))
            if self._store is not None:
                try:
                    await self._store.release_lease(REAPER_LEASE, self.node_id)
                except Exception as exc:
                    _log.warning("lease_release_failed", error=repr(exc))
        await self._stop_tasks()
        await self._release_resources()
        _log.info("discovery_stopped", node=self.node_id)

    close = shutdown

    async def _deregister_owned(self) -> None:
        registry = self._registry
        if registry is None or not self._owned:
            return
        owned = list(self._owned.values())
        self._owned.clear()
        entries = [(o.endpoint.service_id, o.endpoint.service_type) for o in owned]
        try:
            positions = await asyncio.wait_for(
                registry.deregister_many(entries, reason="shutdown"), timeout=10.0
            )
        except Exception as exc:
            _log.warning("deregistration_failed", count=len(entries), error=repr(exc))
            return
        for (sid, _), position in zip(entries, positions, strict=True):
            self._apply_removal(sid, position, "shutdown", local=True)

    async def _stop_tasks(self) -> None:
        if self._registry is not None:
            self._registry.close()
        if self._follower is not None:
            await self._follower.stop()
        await self._supervisor.close()
        await cancel_and_wait(list(self._tasks))
        for callbacks in (self._up, self._down, self._listeners):
            await callbacks.drain()

    async def _release_resources(self) -> None:
        await self._prober.close()
        store, own = self._store, self._own_store
        if store is not None and own:
            try:
                await store.close()
            except Exception as exc:
                _log.warning("store_close_failed", error=repr(exc))

    async def _keeper(self) -> None:
        """Holds resources for a program that never calls shutdown(): when the event loop
        cancels the remaining tasks at exit, close the session and the store."""
        try:
            await asyncio.Event().wait()
        finally:
            if not self._closed:
                self._closed = True
                await self._release_resources()
