"""Keeping the local view in step with the registry: the change feed and full reloads.

Feed events are applied in feed order; this process's own writes were applied when
made, so their feed copies are skipped before being decoded. A reload (the reader's
feed position is gone, the store switched backends) replaces the view, but instances
missing from it are kept for a short confirmation delay: after a registry reset their
owners register them again, and a reload from the fallback store during an outage is
incomplete. Those still absent afterwards are removed (see ``Upkeep``).
"""

from __future__ import annotations

from typing import Any

from ..log import get_logger
from ..store.protocol import FeedEvent
from .health import HealthState
from .model import ServiceEndpoint
from .records import FEED, RejectedRecord, read_event
from .state import DiscoveryState

__all__ = ["FeedSync"]

_log = get_logger("service_discovery")


class FeedSync(DiscoveryState):
    """Feed and reload handling of a discovery process."""

    async def _on_events(self, events: list[FeedEvent]) -> None:
        signer, view = self._signer, self._view
        for event in events:
            sid = event.data.get("id")
            if isinstance(sid, str) and not view.is_fresh(sid, event.position):
                continue  # this process wrote it and already applied it (or newer)
            try:
                doc = read_event(event.data, signer)
            except RejectedRecord as exc:
                self._reject(exc)
                continue
            self._stats["events_applied"] += 1
            self._apply_event(doc, event.position)
        if events:
            self._view.settle(events[-1].position)

    def _apply_event(self, doc: Any, position: int) -> None:
        sid: str = doc.service_id
        now = self._clock.monotonic()
        if doc.op == "register":
            endpoint: ServiceEndpoint = doc.endpoint
            previous = self._view.get(sid)
            change = self._view.upsert(
                endpoint,
                doc.health,
                owner=doc.owner,
                position=position,
                reason=doc.reason or "registered",
            )
            if change is None:
                return
            self._preserved.pop(sid, None)
            mine = self._owned.get(sid)
            if mine is not None and doc.owner != self.node_id:
                self._owned.pop(sid, None)
                _log.info("registration_taken_over", service_id=sid, owner=doc.owner)
            if doc.writer != self.node_id:
                machine = HealthState.from_health(doc.health, now)
                self._machines[sid] = machine
            if self._holds(sid):
                changed = previous is None or previous.endpoint != endpoint
                if changed or sid not in self._schedule:
                    self._schedule.schedule(endpoint, delay=None if previous is None else 0.0)
            self._after_change(change)
        elif doc.op == "health":
            change = self._view.set_health(doc.health, position=position, reason=doc.reason)
            if change is None:
                return
            if doc.writer != self.node_id and sid in self._machines:
                old = self._machines[sid]
                fresh = HealthState.from_health(doc.health, now)
                fresh.registered_at = old.registered_at
                self._machines[sid] = fresh
            self._after_change(change)
        else:
            reason = "ttl expired" if doc.op == "expire" else (doc.reason or "deregistered")
            if self._view.get(sid) is None and sid not in self._owned:
                return
            if position and not self._view.is_fresh(sid, position):
                return
            mine = self._owned.get(sid)
            if mine is not None and doc.writer != self.node_id:
                if doc.op == "expire":
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
