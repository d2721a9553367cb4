"""The local cache of the registry every process keeps (pure, no I/O).

Fed by the change feed (and by this process's own writes, applied at once), it answers
``discover_services()`` from memory: instances are indexed by type, and the list of
healthy endpoints of each type is built once and reused until that type changes, so a
lookup never looks at unrelated instances.

Ordering: every change carries the position of its event in the feed. A change is applied
only when it is newer than what the view already holds for that id: this process's own
writes are applied before the feed delivers them, and the feed's copy is then skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from .model import ServiceEndpoint, ServiceHealth, ServiceStatus, ServiceType

__all__ = ["Entry", "RegistryView", "ViewChange"]


class Entry:
    """One instance in the view."""

    __slots__ = ("endpoint", "health", "owner")

    def __init__(self, endpoint: ServiceEndpoint, health: ServiceHealth, owner: str | None):
        self.endpoint = endpoint
        self.health = health
        self.owner = owner

    @property
    def status(self) -> ServiceStatus:
        return self.health.status


@dataclass(frozen=True, slots=True)
class ViewChange:
    """A change of one instance as the view saw it (``None`` status = absent)."""

    service_id: str
    endpoint: ServiceEndpoint
    old: ServiceStatus | None
    new: ServiceStatus | None
    reason: str = ""


class RegistryView:
    """Instances by id and by type, with cached healthy lists per type."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._by_type: dict[ServiceType, dict[str, Entry]] = {t: {} for t in ServiceType}
        self._healthy: dict[ServiceType | None, list[ServiceEndpoint]] = {}
        self._all: dict[ServiceType, list[ServiceEndpoint]] = {}
        self._ahead: dict[str, int] = {}
        self._floor = 0
        self._healthy_count = 0

    # ---- reads (the hot path) ----------------------------------------------------------

    @property
    def healthy_lists(self) -> dict[ServiceType | None, list[ServiceEndpoint]]:
        """The cache of healthy lists by type (read-only for callers: a missing type
        means "not built yet", use :meth:`healthy`)."""
        return self._healthy

    def healthy(self, service_type: ServiceType | None) -> list[ServiceEndpoint]:
        """Healthy endpoints of ``service_type`` (all types for ``None``); a fresh list."""
        cached = self._healthy.get(service_type)
        if cached is None:
            cached = self._build_healthy(service_type)
        return cached.copy()

    def _build_healthy(self, service_type: ServiceType | None) -> list[ServiceEndpoint]:
        source: Iterable[Entry] = (
            self._entries.values() if service_type is None else self._by_type[service_type].values()
        )
        built = [e.endpoint for e in source if e.health.status is ServiceStatus.HEALTHY]
        self._healthy[service_type] = built
        return built

    def instances(self, service_type: ServiceType) -> list[ServiceEndpoint]:
        """Every endpoint of ``service_type`` whatever its status (cached; do not mutate)."""
        cached = self._all.get(service_type)
        if cached is None:
            cached = self._all[service_type] = [
                e.endpoint for e in self._by_type[service_type].values()
            ]
        return cached

    def healthy_view(self, service_type: ServiceType) -> list[ServiceEndpoint]:
        """Like :meth:`healthy` but the cached list itself (do not mutate)."""
        cached = self._healthy.get(service_type)
        return cached if cached is not None else self._build_healthy(service_type)

    def get(self, service_id: str) -> Entry | None:
        return self._entries.get(service_id)

    def status(self, service_id: str) -> ServiceStatus | None:
        entry = self._entries.get(service_id)
        return entry.health.status if entry is not None else None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, service_id: object) -> bool:
        return service_id in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def entries(self) -> Mapping[str, Entry]:
        return self._entries

    def count(self, service_type: ServiceType | None = None) -> int:
        if service_type is None:
            return len(self._entries)
        return len(self._by_type[service_type])

    @property
    def healthy_count(self) -> int:
        return self._healthy_count

    # ---- writes ----------------------------------------------------------------------

    def is_fresh(self, service_id: str, position: int) -> bool:
        """True when a change at feed ``position`` is newer than what the view holds for
        ``service_id`` (so it would be applied)."""
        if position <= 0:
            return True
        if position <= self._floor:
            return False
        ahead = self._ahead.get(service_id)
        return ahead is None or position > ahead

    def _mark(self, service_id: str, position: int, local: bool) -> None:
        if local and position > 0:
            self._ahead[service_id] = max(position, self._ahead.get(service_id, 0))

    def _invalidate(self, service_type: ServiceType) -> None:
        self._healthy.pop(service_type, None)
        self._healthy.pop(None, None)
        self._all.pop(service_type, None)

    def upsert(
        self,
        endpoint: ServiceEndpoint,
        health: ServiceHealth,
        *,
        owner: str | None = None,
        position: int = 0,
        local: bool = False,
        reason: str = "registered",
    ) -> ViewChange | None:
        """Add or replace an instance. Returns the change, or ``None`` when stale."""
        sid = endpoint.service_id
        if not self.is_fresh(sid, position):
            return None
        self._mark(sid, position, local)
        old = self._entries.get(sid)
        old_status = old.health.status if old is not None else None
        if old is not None:
            self._count(old.health.status, -1)
            if old.endpoint.service_type is not endpoint.service_type:
                self._by_type[old.endpoint.service_type].pop(sid, None)
                self._invalidate(old.endpoint.service_type)
        entry = Entry(endpoint, health, owner)
        self._entries[sid] = entry
        self._by_type[endpoint.service_type][sid] = entry
        self._count(health.status, +1)
        if old is None or old.endpoint != endpoint or old_status is not health.status:
            self._invalidate(endpoint.service_type)
        return ViewChange(sid, endpoint, old_status, health.status, reason)

    def set_health(
        self, health: ServiceHealth, *, position: int = 0, local: bool = False, reason: str = ""
    ) -> ViewChange | None:
        """Replace an instance's health. ``None`` when unknown or stale."""
        sid = health.service_id
        entry = self._entries.get(sid)
        if entry is None or not self.is_fresh(sid, position):
            return None
        self._mark(sid, position, local)
        old = entry.health.status
        entry.health = health
        if old is not health.status:
            self._count(old, -1)
            self._count(health.status, +1)
            self._invalidate(entry.endpoint.service_type)
        return ViewChange(sid, entry.endpoint, old, health.status, reason)

    def remove(
        self, service_id: str, *, position: int = 0, local: bool = False, reason: str = "removed"
    ) -> ViewChange | None:
        """Drop an instance. ``None`` when unknown or stale."""
        if not self.is_fresh(service_id, position):
            return None
        self._mark(service_id, position, local)
        entry = self._entries.pop(service_id, None)
        if entry is None:
            return None
        self._by_type[entry.endpoint.service_type].pop(service_id, None)
        self._count(entry.health.status, -1)
        self._invalidate(entry.endpoint.service_type)
        return ViewChange(service_id, entry.endpoint, entry.health.status, None, reason)

    def replace_all(
        self,
        snapshot: Iterable[tuple[ServiceEndpoint, ServiceHealth, str | None]],
        *,
        floor: int = 0,
    ) -> list[ViewChange]:
        """Replace the whole view with a full reload taken when the feed was at
        ``floor`` (older events are ignored from now on); returns what changed."""
        fresh = {ep.service_id: (ep, h, o) for ep, h, o in snapshot}
        changes: list[ViewChange] = []
        self._ahead.clear()
        self._floor = floor
        for sid in [s for s in self._entries if s not in fresh]:
            change = self.remove(sid, reason="resync")
            if change is not None:
                changes.append(change)
        for ep, health, owner in fresh.values():
            old = self._entries.get(ep.service_id)
            if (
                old is not None
                and old.endpoint == ep
                and old.health.status is health.status
                and old.owner == owner
            ):
                old.health = health
                continue
            change = self.upsert(ep, health, owner=owner, reason="resync")
            if change is not None:
                changes.append(change)
        return changes

    def settle(self, position: int) -> None:
        """The feed has been applied up to ``position``: forget older local marks."""
        if self._ahead:
            for sid in [s for s, p in self._ahead.items() if p <= position]:
                del self._ahead[sid]

    def _count(self, status: ServiceStatus, delta: int) -> None:
        if status is ServiceStatus.HEALTHY:
            self._healthy_count += delta
