"""Service discovery: registration, discovery, real health checking, shared state.

The spec's component::

    discovery = ServiceDiscovery(redis_url="redis://localhost:6379",
                                 health_check_interval=30.0, max_consecutive_failures=3)
    await discovery.initialize()
    await discovery.register_service(ServiceEndpoint("dtesn-memory-1",
                                     ServiceType.DTESN_MEMBRANE, "localhost", 8081))
    services = await discovery.discover_services(ServiceType.DTESN_MEMBRANE)

How it works:

* Registrations live in the shared store (Redis, or memory when none is configured) with a
  TTL lease the owning process renews by heartbeat (about a third of the TTL, jittered)
  and re-creates by itself when the registry lost it. ``shutdown()`` deregisters them.
* Every change goes to a change feed; each process keeps a local cache fed by it, so
  ``discover_services()`` is answered from memory (per-type index, no scan). A reader
  whose feed position is gone reloads everything.
* Health checks are real (HTTP GET of the health path, TCP connect otherwise), divided
  between processes by shard leases, and their transitions are shared through the store.
  Passive outlier detection ejects endpoints that fail real calls
  (:class:`~backend_services.client.ServiceClient` reports them).
* Self-preservation pauses evictions when a large share disappears at once.
* With a registration key (``DTESN_SERVICE_REGISTRATION_KEY``) every document is signed,
  and documents without a valid signature are ignored and reported.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import aiohttp

from ..clock import Clock, resolve_clock
from ..discovery.checker import CheckSchedule, raise_if_cancelling, sleep_or_wake
from ..discovery.events import CallbackSet, DiscoveryEvent
from ..discovery.health import HealthPolicy, HealthState, Transition
from ..discovery.model import (
    DEFAULT_HEALTH_PATH,
    ServiceEndpoint,
    ServiceHealth,
    ServiceStatus,
    ServiceType,
    coerce_service_type,
)
from ..discovery.outliers import OutlierDetector, OutlierPolicy
from ..discovery.preservation import PreservationPolicy, SelfPreservation
from ..discovery.probes import Probe, Prober, ProbeResult
from ..discovery.records import FEED, REAPER_LEASE, RejectedRecord, read_event, shard_of
from ..discovery.registry import Owned, Registration, Registry
from ..discovery.registry_view import RegistryView, ViewChange
from ..discovery.shards import ShardLeases
from ..discovery.signing import RecordSigner
from ..errors import (
    AuthorizationError,
    LifecycleError,
    StoreConfigurationError,
    ValidationError,
)
from ..log import get_logger
from ..settings import UNSET, Unset, load_settings, pick, resolve_redis_url
from ..store.feed import FeedFollower
from ..store.protocol import FeedEvent, Store
from ..tasks import Supervisor

__all__ = [
    "REGISTRATION_KEY_ENV",
    "DiscoveryEvent",
    "ServiceDiscovery",
    "ServiceEndpoint",
    "ServiceHealth",
    "ServiceStatus",
    "ServiceType",
]

_log = get_logger("service_discovery")

REGISTRATION_KEY_ENV = "DTESN_SERVICE_REGISTRATION_KEY"
"""Environment variable holding the key that signs and verifies registry documents."""

DEFAULT_HEALTH_CHECK_INTERVAL = 30.0
DEFAULT_HEALTH_CHECK_TIMEOUT = 5.0
DEFAULT_MAX_CONSECUTIVE_FAILURES = 3
DEFAULT_SERVICE_TTL = 300.0
DEFAULT_SHARDS = 16


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValidationError(name, value, "a number of seconds > 0")
    return float(value)


class _ReadOnly(Mapping[str, Any]):
    """A live read-only mapping over the local cache."""

    def __init__(self, view: RegistryView, health: bool) -> None:
        self._view = view
        self._health = health

    def __getitem__(self, key: str) -> Any:
        entry = self._view.get(key)
        if entry is None:
            raise KeyError(key)
        return entry.health if self._health else entry.endpoint

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._view))

    def __len__(self) -> int:
        return len(self._view)

    def __repr__(self) -> str:
        return repr(dict(self))


class ServiceDiscovery:
    """Registry, discovery and health checking of DTESN services (see module docstring).

    Positional arguments are the spec's; each not given comes from the environment
    (``DTESN_SERVICE_*``), else the settings file, else the default shown.
    ``redis_url=None`` keeps everything in this process.

    Keyword-only options: ``health_check_path`` (``/health``), ``success_threshold``
    (successes to come back), ``startup_grace`` (seconds in which failures do not count),
    ``deregister_after`` (seconds unhealthy before deregistration; ``None``: never),
    ``check_concurrency``, ``check_jitter``, ``registration_key`` (``None``: unsigned),
    ``verify_keys`` (old keys still accepted), ``require_signed`` (default: when a key is
    set), ``outlier_policy``, ``preservation_policy``, ``store`` (a
    :class:`~backend_services.store.protocol.Store` to use instead of opening one),
    ``node_id``, ``probe`` (replaces the HTTP/TCP prober), ``shards``,
    ``maintenance_interval``, ``session`` (an aiohttp session for the checks).
    """

    def __init__(
        self,
        redis_url: str | Unset | None = UNSET,
        health_check_interval: float | Unset = UNSET,
        health_check_timeout: float | Unset = UNSET,
        max_consecutive_failures: int | Unset = UNSET,
        service_ttl: float | Unset = UNSET,
        *,
        clock: Clock | None = None,
        config_file: str | None = None,
        health_check_path: str = DEFAULT_HEALTH_PATH,
        success_threshold: int = 1,
        startup_grace: float = 0.0,
        deregister_after: float | None = None,
        check_concurrency: int = 100,
        check_jitter: float = 0.1,
        registration_key: str | bytes | Unset | None = UNSET,
        verify_keys: Sequence[str | bytes] = (),
        require_signed: bool | None = None,
        outlier_policy: OutlierPolicy | None = None,
        preservation_policy: PreservationPolicy | None = None,
        store: Store | None = None,
        namespace: str = "dtesn",
        node_id: str | None = None,
        probe: Probe | None = None,
        shards: int = DEFAULT_SHARDS,
        maintenance_interval: float | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        settings = load_settings(config_file)
        sd = settings.discovery
        self._clock = resolve_clock(clock)
        self._redis_url = None if store is not None else resolve_redis_url(redis_url, settings)
        self.health_check_interval = _positive(
            "health_check_interval",
            pick(health_check_interval, sd.health_check_interval, DEFAULT_HEALTH_CHECK_INTERVAL),
        )
        self.health_check_timeout = _positive(
            "health_check_timeout",
            pick(health_check_timeout, sd.health_check_timeout, DEFAULT_HEALTH_CHECK_TIMEOUT),
        )
        failures = pick(
            max_consecutive_failures, sd.max_consecutive_failures, DEFAULT_MAX_CONSECUTIVE_FAILURES
        )
        self._service_ttl = _positive("service_ttl", pick(service_ttl, sd.service_ttl, 300.0))
        self._policy = HealthPolicy(
            failure_threshold=failures,
            success_threshold=success_threshold,
            startup_grace=startup_grace,
            deregister_after=deregister_after,
        )
        if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 4096:
            raise ValidationError("shards", shards, "an integer from 1 to 4096")
        if registration_key is UNSET:
            key: str | bytes | None = os.environ.get(REGISTRATION_KEY_ENV) or None
        else:
            key = registration_key
        self._signer = RecordSigner(key, require=require_signed, verify_keys=verify_keys)
        self.namespace = namespace
        self.node_id = node_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._store: Store | None = store
        self._own_store = store is None
        self._prober = Prober(
            timeout=self.health_check_timeout,
            health_path=health_check_path,
            concurrency=check_concurrency,
            clock=self._clock,
            session=session,
        )
        self._probe: Probe = probe or self._prober
        self._schedule = CheckSchedule(
            self._probe,
            self._on_result,
            interval=self.health_check_interval,
            jitter=check_jitter,
            max_in_flight=check_concurrency,
            clock=self._clock,
        )
        self._shard_count = shards
        self._maintenance_interval = (
            _positive("maintenance_interval", maintenance_interval)
            if maintenance_interval is not None
            else min(5.0, self.health_check_interval, self._service_ttl / 3)
        )
        self._confirm_delay = max(2.0, 2 * self._maintenance_interval)
        self._view = RegistryView()
        self._machines: dict[str, HealthState] = {}
        self._owned: dict[str, Owned] = {}
        self._unsynced: set[str] = set()
        self._preserved: dict[str, float] = {}
        self._outlier_policy = outlier_policy or OutlierPolicy()
        self._detectors: dict[ServiceType, OutlierDetector] = {}
        self._preservation = SelfPreservation(preservation_policy)
        self._up = CallbackSet("service_up")
        self._down = CallbackSet("service_down")
        self._listeners = CallbackSet("listeners")
        self._supervisor = Supervisor("service_discovery", clock=self._clock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._registry: Registry | None = None
        self._shards: ShardLeases | None = None
        self._follower: FeedFollower | None = None
        self._renew_now = asyncio.Event()
        self._init_lock: asyncio.Lock | None = None
        self._initialized = False
        self._closed = False
        self._last_connected = self._clock.monotonic()
        self._next_reap = 0.0
        self._rng = random.Random()
        self._stats = {
            "discovery_requests": 0,
            "health_checks": 0,
            "failed_health_checks": 0,
            "rejected_records": 0,
            "events_applied": 0,
            "resyncs": 0,
            "registrations_restored": 0,
            "expired_services": 0,
            "deregistered_unhealthy": 0,
            "store_errors": 0,
        }

    # ---- read-only attributes ----------------------------------------------------------

    @property
    def max_consecutive_failures(self) -> int:
        return self._policy.failure_threshold

    @property
    def service_ttl(self) -> float:
        return self._service_ttl

    @property
    def services(self) -> Mapping[str, ServiceEndpoint]:
        """Read-only view: id -> endpoint of every known instance."""
        return _ReadOnly(self._view, health=False)

    @property
    def service_health(self) -> Mapping[str, ServiceHealth]:
        """Read-only view: id -> health of every known instance."""
        return _ReadOnly(self._view, health=True)

    @property
    def store(self) -> Store | None:
        """The shared store (after ``initialize()``)."""
        return self._store

    @property
    def self_preservation(self) -> bool:
        """True while evictions are paused."""
        return self._preservation.active

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

    # ---- lifecycle ---------------------------------------------------------------------

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

    async def __aenter__(self) -> ServiceDiscovery:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def _deregister_owned(self) -> None:
        registry = self._registry
        if registry is None or not self._owned:
            return
        owned = list(self._owned.values())
        self._owned.clear()
        semaphore = asyncio.Semaphore(100)

        async def one(o: Owned) -> None:
            async with semaphore:
                sid = o.endpoint.service_id
                try:
                    position = await registry.deregister(
                        sid, o.endpoint.service_type, reason="shutdown"
                    )
                except Exception as exc:
                    _log.warning("deregistration_failed", service_id=sid, error=repr(exc))
                    return
                self._apply_removal(sid, position, "shutdown", local=True)

        try:
            await asyncio.wait_for(asyncio.gather(*(one(o) for o in owned)), timeout=10.0)
        except TimeoutError:
            _log.warning("deregistration_timed_out", remaining=len(owned))

    async def _stop_tasks(self) -> None:
        if self._registry is not None:
            self._registry.close()
        if self._follower is not None:
            await self._follower.stop()
        await self._supervisor.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
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

    def _require_open(self, what: str) -> None:
        if self._closed:
            raise LifecycleError(f"ServiceDiscovery.{what}(): discovery has been shut down")

    # ---- registration ------------------------------------------------------------------

    def _check_credentials(self, what: str) -> None:
        if self._signer.require and not self._signer.can_sign:
            raise AuthorizationError(
                f"{what}: this registry requires signed registrations and no registration "
                f"key is configured; expected {REGISTRATION_KEY_ENV} (or registration_key=) "
                "to hold the registry's key"
            )

    async def register_service(self, endpoint: ServiceEndpoint) -> bool:
        """Register (or update) an instance. It starts ``STARTING`` and is checked at
        once; this returns without waiting for that check."""
        self._require_open("register_service")
        if not isinstance(endpoint, ServiceEndpoint):
            raise ValidationError("endpoint", endpoint, "a ServiceEndpoint")
        self._check_credentials("register_service")
        await self.initialize()
        registry = self._registry
        assert registry is not None
        sid = endpoint.service_id
        now, wall = self._clock.monotonic(), self._clock.time()
        existing = self._view.get(sid)
        same = existing is not None and existing.endpoint == endpoint
        if same and existing is not None:
            health = existing.health
        else:
            health = ServiceHealth(sid, ServiceStatus.STARTING)
            self._machines[sid] = HealthState(sid, registered_at=now, since=now)
        doc = registry.registration(endpoint, wall)
        owned = Owned(endpoint, doc)
        previous_type = existing.endpoint.service_type if existing is not None else None
        self._owned[sid] = owned
        position = 0
        try:
            position = await registry.register(
                Registration(
                    endpoint,
                    doc,
                    health,
                    previous_type=previous_type,
                    replaces=existing is not None and not same,
                )
            )
            self._unsynced.discard(sid)
        except StoreConfigurationError:
            self._owned.pop(sid, None)
            raise
        except Exception as exc:
            self._stats["store_errors"] += 1
            self._unsynced.add(sid)
            self._renew_now.set()
            _log.warning("registration_deferred", service_id=sid, error=repr(exc))
        change = self._view.upsert(
            endpoint, health, owner=self.node_id, position=position, local=position > 0
        )
        if change is not None:
            self._after_change(change)
        _log.info(
            "service_registered",
            service_id=sid,
            type=endpoint.service_type.value,
            address=endpoint.address,
        )
        if not same:
            self._probe_now(endpoint)
        return True

    async def deregister_service(self, service_id: str) -> bool:
        """Remove an instance; ``False`` when it is unknown."""
        self._require_open("deregister_service")
        if not isinstance(service_id, str) or not service_id:
            raise ValidationError("service_id", service_id, "a non-empty string")
        self._check_credentials("deregister_service")
        await self.initialize()
        registry = self._registry
        assert registry is not None
        entry = self._view.get(service_id)
        owned = self._owned.pop(service_id, None)
        self._unsynced.discard(service_id)
        if entry is not None:
            service_type: ServiceType | None = entry.endpoint.service_type
        elif owned is not None:
            service_type = owned.endpoint.service_type
        else:
            service_type = await registry.record_type(service_id)
        if service_type is None:
            return False
        position = await registry.deregister(service_id, service_type)
        self._apply_removal(service_id, position, "deregistered", local=True)
        _log.info("service_deregistered", service_id=service_id)
        return True

    # ---- discovery (hot path: memory only) ---------------------------------------------

    async def discover_services(
        self, service_type: ServiceType | None = None
    ) -> list[ServiceEndpoint]:
        """Healthy instances of ``service_type`` (of every type for ``None``)."""
        self._stats["discovery_requests"] += 1
        if service_type is not None and service_type.__class__ is not ServiceType:
            service_type = coerce_service_type(service_type)
        return self._view.healthy(service_type)

    async def get_service(self, service_id: str) -> ServiceEndpoint | None:
        """The endpoint of ``service_id``, or ``None`` when unknown."""
        entry = self._view.get(service_id)
        return entry.endpoint if entry is not None else None

    async def get_service_health(self, service_id: str) -> ServiceHealth | None:
        """The health of ``service_id``, or ``None`` when unknown."""
        entry = self._view.get(service_id)
        return entry.health if entry is not None else None

    def usable_endpoints(
        self, service_type: ServiceType
    ) -> tuple[Sequence[ServiceEndpoint], Sequence[ServiceEndpoint]]:
        """``(healthy and not ejected, every instance)`` of ``service_type`` (for
        :class:`~backend_services.client.ServiceClient`)."""
        healthy = self._view.healthy_view(service_type)
        detector = self._detectors.get(service_type)
        if detector is not None and detector.any_ejected(self._clock.monotonic()):
            now = self._clock.monotonic()
            healthy = [e for e in healthy if not detector.is_ejected(e.service_id, now)]
        return healthy, self._view.instances(service_type)

    def report_outcome(self, endpoint: ServiceEndpoint, ok: bool, latency: float) -> None:
        """The outcome of a real call to ``endpoint`` (passive health checking)."""
        service_type = endpoint.service_type
        detector = self._detectors.get(service_type)
        if detector is None:
            if ok:
                return
            detector = self._detectors[service_type] = OutlierDetector(self._outlier_policy)
        ejection = detector.record(
            endpoint.service_id, ok, self._clock.monotonic(), self._view.count(service_type)
        )
        if ejection is not None:
            _log.warning(
                "endpoint_ejected",
                service_id=endpoint.service_id,
                seconds=round(ejection.until - self._clock.monotonic(), 3),
                times=ejection.times,
            )
            self._emit("ejected", endpoint.service_id, detail={"times": ejection.times})
            self._schedule.check_soon(endpoint.service_id)

    def is_ejected(self, service_id: str) -> bool:
        """True while passive outlier detection keeps ``service_id`` out of balancing."""
        entry = self._view.get(service_id)
        if entry is None:
            return False
        detector = self._detectors.get(entry.endpoint.service_type)
        return detector is not None and detector.is_ejected(service_id, self._clock.monotonic())

    # ---- callbacks, events, metrics ----------------------------------------------------

    def add_service_up_callback(self, callback: Callable[[str], Any]) -> None:
        """``callback(service_id)`` (sync or async) when an instance becomes healthy."""
        self._up.add(callback)

    def add_service_down_callback(self, callback: Callable[[str], Any]) -> None:
        """``callback(service_id)`` (sync or async) when an instance stops being healthy
        (unhealthy, deregistered or expired)."""
        self._down.add(callback)

    def add_listener(self, callback: Callable[[DiscoveryEvent], Any]) -> None:
        """``callback(event)`` for every :class:`DiscoveryEvent`."""
        self._listeners.add(callback)

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

    def get_metrics(self) -> dict[str, Any]:
        """Counters and gauges (the spec's four keys first)."""
        store = self._store
        status = store.status() if store is not None else None
        now = self._clock.monotonic()
        return {
            "registered_services": len(self._view),
            "healthy_services": self._view.healthy_count,
            "failed_health_checks": self._stats["failed_health_checks"],
            "discovery_requests": self._stats["discovery_requests"],
            "health_checks": self._stats["health_checks"],
            "owned_registrations": len(self._owned),
            "scheduled_checks": len(self._schedule),
            "shards_held": len(self._shards.held) if self._shards is not None else 0,
            "ejected_endpoints": sum(d.ejected_count(now) for d in self._detectors.values()),
            "ejections": sum(d.ejections_total for d in self._detectors.values()),
            "self_preservation": self._preservation.active,
            "preserved_services": len(self._preserved),
            "rejected_records": self._stats["rejected_records"],
            "events_applied": self._stats["events_applied"],
            "resyncs": self._stats["resyncs"],
            "registrations_restored": self._stats["registrations_restored"],
            "expired_services": self._stats["expired_services"],
            "deregistered_unhealthy": self._stats["deregistered_unhealthy"],
            "store_errors": self._stats["store_errors"],
            "callback_failures": self._up.failures + self._down.failures,
            "view_age_seconds": round(self.view_age(), 3),
            "store_backend": status.backend if status else None,
            "store_connected": status.connected if status else None,
        }

    # ---- the local view and its changes ------------------------------------------------

    def _after_change(self, change: ViewChange) -> None:
        old, new = change.old, change.new
        if old is new:
            return
        sid = change.service_id
        healthy = ServiceStatus.HEALTHY
        if new is healthy:
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

    # ---- health checks -----------------------------------------------------------------

    def _probe_now(self, endpoint: ServiceEndpoint) -> None:
        """The first check of a new registration, at once."""
        if endpoint.service_id in self._schedule or self._holds(endpoint.service_id):
            self._schedule.schedule(endpoint, delay=0.0)
            return
        task = asyncio.ensure_future(self._one_check(endpoint))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one_check(self, endpoint: ServiceEndpoint) -> None:
        try:
            result = await self._probe(endpoint)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            result = ProbeResult(False, 0.0, f"probe crashed: {exc!r}")
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
            if entry.health.status is snapshot.status:
                self._view.set_health(snapshot)
            return
        await self._publish(snapshot, transition)

    async def _publish(self, snapshot: ServiceHealth, transition: Transition) -> None:
        registry = self._registry
        assert registry is not None
        sid = snapshot.service_id
        position = 0
        try:
            position = await registry.publish_health(snapshot, reason=transition.reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._stats["store_errors"] += 1
            _log.warning("health_publish_failed", service_id=sid, error=repr(exc))
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

    # ---- background loops --------------------------------------------------------------

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

    def __repr__(self) -> str:
        return (
            f"ServiceDiscovery(node={self.node_id!r}, services={len(self._view)}, "
            f"healthy={self._view.healthy_count})"
        )
