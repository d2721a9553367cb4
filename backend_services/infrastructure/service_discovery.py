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

The class is built in layers under ``backend_services.discovery``: ``state`` (what a
process holds), ``sync`` (the change feed and reloads), ``upkeep`` (health results,
heartbeats, leases, evictions), ``lifecycle`` (``initialize``/``shutdown``) and
``registering`` (registration writes); this module adds the constructor and the reads.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import aiohttp

from ..clock import Clock, resolve_clock
from ..discovery.events import DiscoveryEvent
from ..discovery.health import HealthPolicy
from ..discovery.model import (
    DEFAULT_HEALTH_PATH,
    ServiceEndpoint,
    ServiceHealth,
    ServiceStatus,
    ServiceType,
    coerce_service_type,
)
from ..discovery.outliers import OutlierDetector, OutlierPolicy
from ..discovery.preservation import PreservationPolicy
from ..discovery.probes import Probe, Prober
from ..discovery.registering import Registrations
from ..discovery.registry_view import RegistryView
from ..discovery.signing import REGISTRATION_KEY_ENV, RecordSigner
from ..errors import ValidationError
from ..log import get_logger
from ..settings import UNSET, Unset, load_settings, pick, resolve_redis_url
from ..store.protocol import Store

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

DEFAULT_HEALTH_CHECK_INTERVAL = 30.0
DEFAULT_HEALTH_CHECK_TIMEOUT = 5.0
DEFAULT_MAX_CONSECUTIVE_FAILURES = 3
DEFAULT_SERVICE_TTL = 300.0
DEFAULT_SHARDS = 16


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValidationError(name, value, "a number of seconds > 0")
    return float(value)


def _refresh_period(value: float | Unset | None, interval: float) -> float | None:
    if isinstance(value, Unset):
        return max(30.0, 5 * interval)
    return None if value is None else _positive("health_refresh", value)


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


class ServiceDiscovery(Registrations):
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
    ``maintenance_interval``, ``session`` (an aiohttp session for the checks),
    ``health_refresh`` (seconds without a status change after which the checking process
    shares its latest check anyway, so every process sees a recent ``last_check``; default
    the larger of 30 s and five check intervals, ``None``: only on changes).
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
        health_refresh: float | Unset | None = UNSET,
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
        ttl = _positive("service_ttl", pick(service_ttl, sd.service_ttl, DEFAULT_SERVICE_TTL))
        policy = HealthPolicy(
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
        self.namespace = namespace
        interval = self.health_check_interval
        super().__init__(
            clock=self._clock,
            policy=policy,
            signer=RecordSigner(key, require=require_signed, verify_keys=verify_keys),
            node_id=node_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            store=store,
            prober=Prober(
                timeout=self.health_check_timeout,
                health_path=health_check_path,
                concurrency=check_concurrency,
                clock=self._clock,
                session=session,
            ),
            probe=probe,
            check_interval=interval,
            health_refresh=_refresh_period(health_refresh, interval),
            check_jitter=check_jitter,
            check_concurrency=check_concurrency,
            service_ttl=ttl,
            shards=shards,
            maintenance_interval=(
                _positive("maintenance_interval", maintenance_interval)
                if maintenance_interval is not None
                else min(5.0, interval, ttl / 3)
            ),
            outlier_policy=outlier_policy,
            preservation_policy=preservation_policy,
        )

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

    async def __aenter__(self) -> ServiceDiscovery:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def discover_services(
        self, service_type: ServiceType | None = None
    ) -> list[ServiceEndpoint]:
        """Healthy instances of ``service_type`` (of every type for ``None``)."""
        self._discovery_requests += 1
        cached = self._healthy_lists.get(service_type)
        if cached is not None:
            return cached.copy()
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

    def get_metrics(self) -> dict[str, Any]:
        """Counters and gauges (the spec's four keys first)."""
        store = self._store
        status = store.status() if store is not None else None
        now = self._clock.monotonic()
        return {
            "registered_services": len(self._view),
            "healthy_services": self._view.healthy_count,
            "failed_health_checks": self._stats["failed_health_checks"],
            "discovery_requests": self._discovery_requests,
            "health_checks": self._stats["health_checks"],
            "health_refreshes": self._stats["health_refreshes"],
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

    def __repr__(self) -> str:
        return (
            f"ServiceDiscovery(node={self.node_id!r}, services={len(self._view)}, "
            f"healthy={self._view.healthy_count})"
        )
