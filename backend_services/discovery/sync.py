"""Keeping the local view in step with the registry: the change feed and full reloads.

Feed events are applied in feed order; this process's own writes are applied where they
are made, so their feed copies are skipped before being decoded (also when the copy
arrives before the write's reply). A reload (the reader's
feed position is gone, the store switched backends) replaces the view, but instances
missing from it are kept for a short confirmation delay: after a registry reset their
owners register them again, and a reload from the fallback store during an outage is
incomplete. Those still absent afterwards are removed (see ``Upkeep``).
"""

from __future__ import annotations

from ..log import get_logger
from ..store.protocol import FeedEvent
from .health import HealthState
from .model import ServiceEndpoint, ServiceHealth
from .records import FEED, EventDoc, RejectedRecord, read_event
from .state import DiscoveryState

__all__ = ["FeedSync"]

_log = get_logger("service_discovery")


class FeedSync(DiscoveryState):
    """Feed and reload handling of a discovery process."""

    async def _on_events(self, events: list[FeedEvent]) -> None:
        signer, view, registering = self._signer, self._view, self._registering
        for event in events:
            data = event.data
            sid = data.get("id")
            if isinstance(sid, str):
                if not view.is_fresh(sid, event.position):
                    continue  # this process wrote it and already applied it (or newer)
                if (
                    sid in registering
                    and data.get("writer") == self.node_id
                    and data.get("op") == "register"
                ):
                    continue  # its register_service() call applies it, with its position
            try:
                doc = read_event(event.data, signer)
            except RejectedRecord as exc:
                self._reject(exc)
                continue
            self._stats["events_applied"] += 1
            self._apply_event(doc, event.position)
        if events:
            self._view.settle(events[-1].position)

    def _apply_event(self, doc: EventDoc, position: int) -> None:
        if doc.op == "register":
            assert doc.endpoint is not None
            assert doc.health is not None
            self._apply_register(doc, doc.endpoint, doc.health, position)
        elif doc.op == "health":
            assert doc.health is not None
            self._apply_health(doc, doc.health, position)
        else:
            self._apply_gone(doc, position)

    def _apply_register(
        self, doc: EventDoc, endpoint: ServiceEndpoint, health: ServiceHealth, position: int
    ) -> None:
        sid = doc.service_id
        previous = self._view.get(sid)
        change = self._view.upsert(
            endpoint, health, owner=doc.owner, position=position, reason=doc.reason or "registered"
        )
        if change is None:
            return
        self._preserved.pop(sid, None)
        if sid in self._owned and doc.owner != self.node_id:
            self._owned.pop(sid, None)
            _log.info("registration_taken_over", service_id=sid, owner=doc.owner)
        if doc.writer != self.node_id:
            self._machines[sid] = HealthState.from_health(health, self._clock.monotonic())
        if self._holds(sid):
            moved = previous is None or previous.endpoint != endpoint
            if moved or sid not in self._schedule:
                self._schedule.schedule(endpoint, delay=None if previous is None else 0.0)
        self._after_change(change)

    def _apply_health(self, doc: EventDoc, health: ServiceHealth, position: int) -> None:
        sid = doc.service_id
        change = self._view.set_health(health, position=position, reason=doc.reason)
        if change is None:
            return
        old = self._machines.get(sid)
        if doc.writer != self.node_id and old is not None:
            # another process checked it: continue from what it found
            fresh = HealthState.from_health(health, self._clock.monotonic())
            fresh.registered_at = old.registered_at
            self._machines[sid] = fresh
        self._after_change(change)

    def _apply_gone(self, doc: EventDoc, position: int) -> None:
        sid = doc.service_id
        reason = "ttl expired" if doc.op == "expire" else (doc.reason or "deregistered")
        if self._view.get(sid) is None and sid not in self._owned:
            return
        if position and not self._view.is_fresh(sid, position):
            return
        if sid in self._owned and doc.writer != self.node_id:
            if doc.op == "expire":
                # the registry expired it while this process is alive: register it again
                self._unsynced.add(sid)
                self._renew_now.set()
                _log.warning("registration_expired_while_alive", service_id=sid)
                return
            self._owned.pop(sid, None)
            _log.warning("registration_removed_elsewhere", service_id=sid, reason=reason)
        self._apply_removal(sid, position, reason, local=False)

    async def _on_resync(self) -> None:
        store = self._store
        assert store is not None
        position = await store.feed_position(FEED)
        await self._resync(position)
        self._renew_now.set()

    async def _resync(self, position: int) -> None:
        """Reload the whole registry. Instances missing from the reload are kept for a
        short confirmation delay (their owners re-register after a registry reset, and
        a reload from the fallback store during an outage is incomplete), then removed
        if still absent (subject to self-preservation)."""
        registry = self._registry
        assert registry is not None
        snapshot = await registry.snapshot()
        self._stats["resyncs"] += 1
        for rejected in snapshot.rejected:
            self._reject(rejected)
        entries = list(snapshot.entries)
        present = {ep.service_id for ep, _, _ in entries}
        confirm_at = self._clock.monotonic() + self._confirm_delay
        kept = 0
        for sid in [sid for sid in self._view if sid not in present]:
            entry = self._view.get(sid)
            assert entry is not None
            entries.append((entry.endpoint, entry.health, entry.owner))
            if sid in self._owned:
                self._unsynced.add(sid)
            else:
                self._preserved.setdefault(sid, confirm_at)
                kept += 1
        changes = self._view.replace_all(entries, floor=position)
        for change in changes:
            if change.new is None:
                self._forget(change.service_id)
            self._after_change(change)
        self._sync_schedule()
        self._emit(
            "resync",
            detail={"services": len(self._view), "position": position, "unconfirmed": kept},
        )
