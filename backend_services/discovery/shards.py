"""Dividing health checks between discovery processes with leases.

Instances fall into ``shards`` buckets by a stable hash of their id. Each live process
(announced by a short-lived ``sd:node:<id>`` record) holds at most its fair share of the
shard leases and checks only the instances of the shards it holds, so every instance is
checked by one process at a time. A process that stops renewing loses its shards when
the leases expire and the others take them over.
"""

from __future__ import annotations

import math
import zlib

from ..store.protocol import Store
from .records import NODES, node_key, shard_lease

__all__ = ["ShardLeases"]


class ShardLeases:
    """The shard leases one process (``node``) holds."""

    def __init__(self, store: Store, node: str, *, shards: int, ttl: float) -> None:
        self.store = store
        self.node = node
        self.shards = shards
        self.ttl = ttl
        self.held: set[int] = set()
        self.live_nodes = 1
        self._offset = zlib.crc32(node.encode()) % shards

    async def _count_nodes(self) -> int:
        await self.store.put(node_key(self.node), {"node": self.node}, ttl=self.ttl)
        await self.store.set_add(NODES, self.node)
        members = sorted(await self.store.members(NODES))
        alive = await self.store.get_many([node_key(m) for m in members])
        dead = [m for m in members if node_key(m) not in alive]
        if dead:
            await self.store.set_remove(NODES, *dead)
        return max(1, len(members) - len(dead))

    async def refresh(self) -> tuple[set[int], set[int]]:
        """Renew, release extra and take free shards; returns ``(gained, lost)``."""
        self.live_nodes = await self._count_nodes()
        fair = math.ceil(self.shards / self.live_nodes)
        lost: set[int] = set()
        for shard in sorted(self.held):
            if not await self.store.acquire_lease(shard_lease(shard), self.node, self.ttl):
                lost.add(shard)
        self.held -= lost
        while len(self.held) > fair:
            shard = max(self.held)
            await self.store.release_lease(shard_lease(shard), self.node)
            self.held.discard(shard)
            lost.add(shard)
        gained: set[int] = set()
        for i in range(self.shards):
            if len(self.held) >= fair:
                break
            shard = (self._offset + i) % self.shards
            if shard in self.held:
                continue
            if await self.store.acquire_lease(shard_lease(shard), self.node, self.ttl):
                self.held.add(shard)
                gained.add(shard)
        return gained, lost

    async def release_all(self) -> None:
        """Give every shard back and leave the list of live processes."""
        for shard in sorted(self.held):
            await self.store.release_lease(shard_lease(shard), self.node)
        self.held.clear()
        await self.store.delete(node_key(self.node))
        await self.store.set_remove(NODES, self.node)
