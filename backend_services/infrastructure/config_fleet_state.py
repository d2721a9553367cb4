"""What the fleet synchroniser of the configuration manager holds, and what it needs
from the manager (:class:`FleetHost`).

:class:`FleetState` is shared by the resync and reconciliation part
(:mod:`~backend_services.infrastructure.config_fleet_resync`) and the public
:class:`~backend_services.infrastructure.config_fleet.FleetSync`, which commits and
follows the change feed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..clock import Clock
from ..config.fleet import DEFAULT_EMBED_LIMIT, DEFAULT_TOMBSTONE_TTL, FleetKeys
from ..config.model import ConfigVersion, Entry, VersionRecord
from ..config.versions import VersionHistory
from ..store.feed import FeedFollower
from ..store.protocol import Store
from ..tasks import Supervisor

__all__ = ["FleetHost", "FleetState"]


class FleetHost(Protocol):
    """What the synchroniser needs from the configuration manager."""

    @property
    def history(self) -> VersionHistory: ...
    @property
    def author(self) -> str | None: ...
    async def ingest(self, record: VersionRecord, *, remote: bool = False) -> bool: ...
    async def adopt(
        self,
        current: Mapping[str, Entry],
        records: list[VersionRecord],
        head: ConfigVersion | None,
        reason: str,
    ) -> None: ...
    def open_secret(self, key: str, token: str) -> Any: ...
    def new_version_id(self, version: int) -> str: ...
    async def drain(self) -> None: ...


class FleetState:
    """The synchroniser's store, keys, head revision and counters."""

    def __init__(
        self,
        host: FleetHost,
        store: Store,
        service_name: str,
        *,
        clock: Clock,
        supervisor: Supervisor,
        embed_limit: int = DEFAULT_EMBED_LIMIT,
        tombstone_ttl: float = DEFAULT_TOMBSTONE_TTL,
        block: float = 1.0,
        private: bool = False,
    ) -> None:
        self.host = host
        self._private = private  # a store only this process uses: seed it without a version
        self.store = store
        self.keys = FleetKeys(service_name)
        self._clock = clock
        self._supervisor = supervisor
        self._embed_limit = embed_limit
        self._tombstone_ttl = tombstone_ttl
        self._block = block
        self.head_revision: int | None = None
        self._follower: FeedFollower | None = None
        self._wake = asyncio.Event()
        self._remove_listener: Callable[[], None] | None = None
        self._failover = callable(getattr(store, "add_listener", None))
        self._stopping = False
        self.local_only: set[str] = set()
        """Ids of versions applied locally that the store has not confirmed."""
        self.resyncs = 0
        self.reconciles = 0
        self.remote_applied = 0

    @property
    def connected(self) -> bool:
        return bool(self.store.status().connected)

    def request_resync(self) -> None:
        self._wake.set()
