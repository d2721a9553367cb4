"""The background work of a discovery process: health results, heartbeats, leases and
evictions.

* Health: each check result drives the instance's state machine; a transition is
  published (health record + feed event) and applied to the local view at once.
* Heartbeats: owned registrations are renewed every third of the TTL (jittered); any
  the registry lost is registered again.
* Maintenance: shard leases (which instances this process checks), deregistration of
  instances unhealthy for too long, removal of expired registrations (one process at a
  time, by lease) and of instances a reload did not confirm — all paused while
  self-preservation is active.
"""

from __future__ import annotations

import asyncio

from ..errors import StoreConfigurationError
from ..log import get_logger
from ..tasks import raise_if_cancelling
from .checker import sleep_or_wake
from .health import HealthState, Transition
from .model import ServiceEndpoint, ServiceHealth, ServiceStatus
from .probes import ProbeResult, run_probe
from .records import REAPER_LEASE
from .registry import Owned, Registration
from .state import DiscoveryState

__all__ = ["Upkeep"]

_log = get_logger("service_discovery")


class Upkeep(DiscoveryState):
    """Health, heartbeat and maintenance work of a discovery process."""

    def _probe_now(self, endpoint: ServiceEndpoint) -> None:
        """The first check of a new registration, at once."""
        if self._closed:
            return
        if endpoint.service_id in self._schedule or self._holds(endpoint.service_id):
            self._schedule.schedule(endpoint, delay=0.0)
            return
        task = asyncio.ensure_future(self._one_check(endpoint))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one_check(self, endpoint: ServiceEndpoint) -> None:
        result = await run_probe(self._probe, endpoint)
        try:
            await self._on_result(endpoint, result)
        except Exception as exc:
            _log.exception("health_result_failed", service_id=endpoint.service_id, error=repr(exc))
        if not self._holds(endpoint.service_id):
            self._machines.pop(endpoint.service_id, None)

    async def _on_result(self, endpoint: ServiceEndpoint, result: ProbeResult) -> None:
        sid = endpoint.service_id
        self._stats["health_checks"] += 1
        if not result.ok:
            self._stats["failed_health_checks"] += 1
        entry = self._view.get(sid)
        if entry is None or entry.endpoint != endpoint:
            return
        now, wall = self._clock.monotonic(), self._clock.time()
        machine = self._machines.get(sid)
        if machine is None:
            machine = self._machines[sid] = HealthState.from_health(entry.health, now)
        transition = machine.observe(
            self._policy,
            result.ok,
            now=now,
            wall=wall,
            response_time_ms=result.response_time_ms,
            error=result.error,
        )
        snapshot = machine.snapshot()
        if transition is None:
            if entry.health.status is not snapshot.status:
                return
            refresh = self._health_refresh
            if refresh is not None and now - max(machine.since, machine.shared_at) >= refresh:
                # no change for a while: share the latest check anyway, so other processes
                # see a recent last_check and response time
                machine.shared_at = now
                self._stats["health_refreshes"] += 1
                position = await self._share(snapshot, "refresh")
                self._view.set_health(snapshot, position=position, local=position > 0)
            else:
                self._view.set_health(snapshot)
            return
        await self._publish(snapshot, transition)

    async def _share(self, snapshot: ServiceHealth, reason: str) -> int:
        """Write the health record and its feed event; the event's position (0 if the
        store could not be reached)."""
        registry = self._registry
        assert registry is not None
        try:
            return await registry.publish_health(snapshot, reason=reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._stats["store_errors"] += 1
            _log.warning("health_publish_failed", service_id=snapshot.service_id, error=repr(exc))
            return 0

    async def _publish(self, snapshot: ServiceHealth, transition: Transition) -> None:
        sid = snapshot.service_id
        position = await self._share(snapshot, transition.reason)
        level = _log.info if transition.new is ServiceStatus.HEALTHY else _log.warning
        level(
            "service_status_changed",
            service_id=sid,
            old=transition.old.value,
            new=transition.new.value,
            reason=transition.reason,
        )
        change = self._view.set_health(
            snapshot, position=position, local=position > 0, reason=transition.reason
        )
        if change is not None:
            self._after_change(change)

    async def _heartbeat_loop(self) -> None:
        while True:
            gap = self._service_ttl / 3 * self._rng.uniform(0.8, 1.0)
            await sleep_or_wake(self._clock, gap, self._renew_now)
            self._renew_now.clear()
            await self._renew()
            raise_if_cancelling()

    async def _renew(self) -> None:
        """Renew owned registrations; re-register those the registry lost."""
        registry = self._registry
        if registry is None or not self._owned:
            return
        try:
            lost = await registry.renew(list(self._owned.values()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._stats["store_errors"] += 1
            _log.warning("heartbeat_failed", owned=len(self._owned), error=repr(exc))
            return
        again = {o.endpoint.service_id: o for o in lost}
        for sid in list(self._unsynced):
            owned = self._owned.get(sid)
            if owned is not None:
                again[sid] = owned
        if again:
            await asyncio.gather(*(self._restore(sid, owned) for sid, owned in again.items()))

    async def _restore(self, sid: str, owned: Owned) -> None:
        """Register again what the registry lost (concurrent calls share commits)."""
        registry = self._registry
        assert registry is not None
        if self._owned.get(sid) is not owned:
            return
        entry = self._view.get(sid)
        health = entry.health if entry is not None else ServiceHealth(sid, ServiceStatus.STARTING)
        try:
            position = await registry.register(
                Registration(
                    owned.endpoint, owned.doc, health, reason="re-registered", write_health=True
                )
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._stats["store_errors"] += 1
            self._unsynced.add(sid)
            _log.warning("re_registration_failed", service_id=sid, error=repr(exc))
            return
        self._unsynced.discard(sid)
        self._stats["registrations_restored"] += 1
        _log.info("registration_restored", service_id=sid)
        self._emit("registration_restored", sid)
        change = self._view.upsert(
            owned.endpoint,
            health,
            owner=self.node_id,
            position=position,
            local=True,
            reason="re-registered",
        )
        if change is not None:
            self._after_change(change)

    async def _maintenance_loop(self) -> None:
        while True:
            gap = self._maintenance_interval * self._rng.uniform(0.9, 1.1)
            await self._clock.sleep(gap)
            await self._maintain()
            raise_if_cancelling()

    async def _maintain(self) -> None:
        """Leases, self-preservation, evictions (one pass; errors are logged)."""
        try:
            self.view_age()
            await self._refresh_shards()
            now = self._clock.monotonic()
            self._note_preservation(self._preservation.update(now, len(self._view)))
            await self._evict_unhealthy()
            if now >= self._next_reap:
                self._next_reap = now + max(
                    self._maintenance_interval, min(self._service_ttl / 10, 30.0)
                )
                await self._reap()
            await self._drop_preserved()
        except asyncio.CancelledError:
            raise
        except StoreConfigurationError:
            raise
        except Exception as exc:
            self._stats["store_errors"] += 1
            _log.warning("maintenance_failed", error=repr(exc))

    async def _refresh_shards(self) -> None:
        shards = self._shards
        assert shards is not None
        gained, lost = await shards.refresh()
        if gained or lost:
            _log.info(
                "check_shards_changed",
                node=self.node_id,
                held=len(shards.held),
                gained=sorted(gained),
                lost=sorted(lost),
                nodes=shards.live_nodes,
            )
            self._sync_schedule()

    async def _evict_unhealthy(self) -> None:
        if self._policy.deregister_after is None:
            return
        registry = self._registry
        assert registry is not None
        now = self._clock.monotonic()
        due = [
            sid
            for sid, machine in self._machines.items()
            if machine.deregister_due(self._policy, now) and self._holds(sid)
        ]
        for sid in due:
            if not self._preservation.evictions_allowed():
                self._emit("evictions_paused", sid, detail={"reason": "unhealthy"})
                return
            entry = self._view.get(sid)
            if entry is None:
                self._machines.pop(sid, None)
                continue
            position = await registry.deregister(
                sid, entry.endpoint.service_type, reason="unhealthy"
            )
            self._stats["deregistered_unhealthy"] += 1
            self._owned.pop(sid, None)
            _log.warning("service_deregistered_unhealthy", service_id=sid)
            self._apply_removal(sid, position, "unhealthy", local=True)

    async def _reap(self) -> None:
        store, registry = self._store, self._registry
        assert store is not None
        assert registry is not None
        if not await store.acquire_lease(
            REAPER_LEASE, self.node_id, 3 * self._maintenance_interval
        ):
            return
        gone, total = await registry.expired()
        gone = [(sid, t) for sid, t in gone if sid not in self._owned]
        if not gone:
            return
        now = self._clock.monotonic()
        for sid, _ in gone:
            self._note_preservation(self._preservation.record_loss(sid, now, total))
        if not self._preservation.evictions_allowed():
            self._emit("evictions_paused", detail={"reason": "expired", "count": len(gone)})
            _log.warning("evictions_paused", expired=len(gone), registered=total)
            return
        removed = 0
        for sid, service_type in gone:
            try:
                position = await registry.deregister(
                    sid, service_type, op="expire", reason="ttl expired", only_if_absent=True
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                continue
            removed += 1
            self._apply_removal(sid, position, "ttl expired", local=True)
        self._stats["expired_services"] += removed
        if removed:
            _log.info("expired_registrations_removed", count=removed)

    async def _drop_preserved(self) -> None:
        """Instances a reload did not contain: once their confirmation delay is over and
        the registry answers, remove those still absent (unless self-preservation)."""
        store, registry = self._store, self._registry
        if not self._preserved or store is None or registry is None:
            return
        if not store.status().connected:
            return
        now = self._clock.monotonic()
        due = [sid for sid, at in self._preserved.items() if at <= now]
        if not due:
            return
        gone = [sid for sid in due if await registry.record_type(sid) is None]
        for sid in due:
            if sid not in gone:
                self._preserved.pop(sid, None)
        population = len(self._view)
        for sid in gone:
            self._note_preservation(self._preservation.record_loss(sid, now, population))
        if not self._preservation.evictions_allowed():
            if gone:
                self._emit("evictions_paused", detail={"reason": "reload", "count": len(gone)})
            return
        for sid in gone:
            self._apply_removal(sid, 0, "not in registry", local=False)
