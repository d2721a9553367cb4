"""The state behind :class:`~backend_services.infrastructure.service_discovery.ServiceDiscovery`
and the helpers its parts share: how a change of the local view becomes callbacks,
events and self-preservation bookkeeping, and which instances this process checks.

The parts are :class:`~backend_services.discovery.sync.FeedSync` (the change feed and
reloads) and :class:`~backend_services.discovery.upkeep.Upkeep` (health results,
heartbeats, leases, evictions), combined by
:class:`~backend_services.discovery.lifecycle.Lifecycle` (start and stop) and
:class:`~backend_services.discovery.registering.Registrations` (registration writes),
which the public class extends.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from ..clock import Clock
from ..log import get_logger
from ..store.feed import FeedFollower
from ..store.protocol import Store
from ..tasks import Supervisor
from .checker import CheckSchedule
from .events import CallbackSet, DiscoveryEvent
from .health import HealthPolicy, HealthState
from .model import ServiceStatus, ServiceType
from .outliers import OutlierDetector, OutlierPolicy
from .preservation import PreservationPolicy, SelfPreservation
from .probes import Probe, Prober, ProbeResult
from .records import RejectedRecord, shard_of
from .registry import Owned, Registry
from .registry_view import RegistryView, ViewChange
from .shards import ShardLeases
from .signing import RecordSigner

__all__ = ["DiscoveryState"]

_log = get_logger("service_discovery")


class DiscoveryState:
    """Everything one discovery process holds (see the module docstring)."""

    def __init__(
        self,
        *,
        clock: Clock,
        policy: HealthPolicy,
        signer: RecordSigner,
        node_id: str,
        store: Store | None,
        prober: Prober,
        probe: Probe | None,
        check_interval: float,
        health_refresh: float | None,
        check_jitter: float,
        check_concurrency: int,
        service_ttl: float,
        shards: int,
        maintenance_interval: float,
        outlier_policy: OutlierPolicy | None,
        preservation_policy: PreservationPolicy | None,
    ) -> None:
        self._clock = clock
        self._policy = policy
        self._signer = signer
        self.node_id = node_id
        self._store: Store | None = store
        self._own_store = store is None
        self._prober = prober
        self._probe: Probe = probe or prober
        self._schedule = CheckSchedule(
            self._probe,
            self._on_result,
            interval=check_interval,
            jitter=check_jitter,
            max_in_flight=check_concurrency,
            clock=clock,
        )
        self._service_ttl = service_ttl
        self._shard_count = shards
        self._maintenance_interval = maintenance_interval
        self._confirm_delay = max(2.0, 2 * maintenance_interval)
        self._view = RegistryView()
        self._healthy_lists = self._view.healthy_lists
        self._discovery_requests = 0
        self._machines: dict[str, HealthState] = {}
        self._owned: dict[str, Owned] = {}
        # ids whose register_service() call is between its write and applying it locally:
        # the feed copy of that write is left to the call
        self._registering: dict[str, int] = {}
        self._unsynced: set[str] = set()
        self._preserved: dict[str, float] = {}
        self._outlier_policy = outlier_policy or OutlierPolicy()
        self._detectors: dict[ServiceType, OutlierDetector] = {}
        self._preservation = SelfPreservation(preservation_policy)
        self._up = CallbackSet("service_up")
        self._down = CallbackSet("service_down")
        self._listeners = CallbackSet("listeners")
        self._supervisor = Supervisor("service_discovery", clock=clock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._registry: Registry | None = None
        self._shards: ShardLeases | None = None
        self._follower: FeedFollower | None = None
        self._renew_now = asyncio.Event()
        self._init_lock: asyncio.Lock | None = None
        self._initialized = False
        self._closed = False
        self._last_connected = clock.monotonic()
        self._next_reap = 0.0
        self._rng = random.Random()
        self._health_refresh = health_refresh
        self._stats = {
            "health_checks": 0,
            "health_refreshes": 0,
            "failed_health_checks": 0,
            "rejected_records": 0,
            "events_applied": 0,
            "resyncs": 0,
            "registrations_restored": 0,
            "expired_services": 0,
            "deregistered_unhealthy": 0,
            "store_errors": 0,
        }

    def view_age(self) -> float:
        """Seconds the local view may lag the fleet (0 while the feed is current)."""
        now = self._clock.monotonic()
        store = self._store
        if store is None or not self._initialized:
            return 0.0
        if store.status().connected:
            self._last_connected = now
            lag = self._follower.lag if self._follower is not None else None
            return lag or 0.0
        return now - self._last_connected

    _follower_block = 1.0

    async def _on_result(self, endpoint: Any, result: ProbeResult) -> None:
        """A check result (implemented by the health part)."""
        raise NotImplementedError

    def _emit(
        self,
        kind: str,
        service_id: str | None = None,
        old: ServiceStatus | None = None,
        new: ServiceStatus | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        if len(self._listeners):
            self._listeners.fire(
                DiscoveryEvent(kind, service_id, old, new, self._clock.time(), detail or {})
            )

    def _after_change(self, change: ViewChange) -> None:
        old, new = change.old, change.new
        if old is new:
            return
        sid = change.service_id
        healthy = ServiceStatus.HEALTHY
        if new is healthy:
            if old is not None:
                self._readmit(sid)
            self._up.fire(sid)
        elif old is healthy:
            self._down.fire(sid)
        if new is ServiceStatus.UNHEALTHY or change.reason == "ttl expired":
            population = len(self._view) + (1 if new is None else 0)
            self._note_preservation(
                self._preservation.record_loss(sid, self._clock.monotonic(), population)
            )
        if old is None:
            kind = "registered"
        elif new is None:
            kind = "expired" if change.reason == "ttl expired" else "deregistered"
        else:
            kind = "status_changed"
        self._emit(kind, sid, old, new, {"reason": change.reason} if change.reason else None)

    def _readmit(self, sid: str) -> None:
        """An endpoint back to healthy after failing active checks is no longer kept out
        of balancing by an earlier passive ejection (it may be a fresh process)."""
        entry = self._view.get(sid)
        detector = self._detectors.get(entry.endpoint.service_type) if entry else None
        if detector is not None and detector.readmit(sid, self._clock.monotonic()):
            _log.info("endpoint_readmitted", service_id=sid)
            self._emit("readmitted", sid)

    def _note_preservation(self, changed: bool | None) -> None:
        if changed is None:
            return
        if changed:
            _log.warning(
                "self_preservation_started",
                node=self.node_id,
                threshold=self._preservation.policy.threshold,
            )
            self._emit("self_preservation_started")
        else:
            _log.info("self_preservation_ended", node=self.node_id)
            self._emit("self_preservation_ended")

    def _reject(self, exc: RejectedRecord) -> None:
        self._stats["rejected_records"] += 1
        _log.warning("record_rejected", what=exc.what, service_id=exc.service_id, reason=exc.reason)
        self._emit(
            "record_rejected", exc.service_id, detail={"what": exc.what, "reason": exc.reason}
        )

    def _apply_removal(self, sid: str, position: int, reason: str, *, local: bool) -> None:
        change = self._view.remove(sid, position=position, local=local, reason=reason)
        self._forget(sid)
        if change is not None:
            self._after_change(change)

    def _forget(self, sid: str) -> None:
        self._schedule.unschedule(sid)
        self._machines.pop(sid, None)
        self._preserved.pop(sid, None)
        for detector in self._detectors.values():
            detector.forget(sid)

    def _holds(self, sid: str) -> bool:
        shards = self._shards
        return shards is not None and shard_of(sid, self._shard_count) in shards.held

    def _sync_schedule(self) -> None:
        """Make the check schedule match the held shards and the view."""
        for sid in self._schedule.scheduled():
            if sid not in self._view or not self._holds(sid):
                self._schedule.unschedule(sid)
                if sid not in self._owned:
                    self._machines.pop(sid, None)
        for sid, entry in self._view.entries().items():
            if sid not in self._schedule and self._holds(sid):
                if sid not in self._machines:
                    self._machines[sid] = HealthState.from_health(
                        entry.health, self._clock.monotonic()
                    )
                self._schedule.schedule(entry.endpoint, delay=None)
