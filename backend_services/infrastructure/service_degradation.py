"""Graceful degradation: switch features off as resources run short, and back on, stably.

::

    manager = ServiceDegradationManager("dtesn-processor", check_interval=30.0,
                                        recovery_delay=60.0)
    await manager.initialize()
    manager.register_feature(Feature("advanced_analytics", FeaturePriority.HIGH))
    if await manager.is_feature_enabled("advanced_analytics"):
        ...

Levels follow the worst resource (CPU and memory correct inside containers, event-loop
lag, optional disk, plus any monitors you register); a worse level applies at once,
recovery goes one level per ``recovery_delay`` of good readings (see
:mod:`backend_services.degradation.policy`). ``is_feature_enabled`` and ``admit`` are
lookups in tables recomputed only on a level change. With a Redis URL (argument,
``DTESN_SERVICE_REDIS_URL`` or the settings file) each manager publishes its level for
:class:`GlobalDegradationManager` and follows fleet commands (emergency shutdown).

The manager is built from parts, each in its own module (all names below stay importable
from here):

* :mod:`.degradation_state` — construction, read-only views, applying a level change;
* :mod:`.degradation_overrides` — manual and fleet overrides, the fleet floor;
* :mod:`.degradation_status` — history, status, metrics, the published fleet record;
* :mod:`.degradation_permit` — :class:`Permit`, the slot of an admitted request;
* :mod:`.degradation_sampling` — one monitoring round (built-in and user monitors);
* :mod:`.degradation_link` — publishing to and following the fleet through the store;
* :mod:`.degradation_global` — :class:`GlobalDegradationManager`, fleet-wide commands;
* this module — the lifecycle, feature gating, admission and the monitoring loop.

Pure logic (levels, thresholds, the level policy, gating, shedding, fleet records) is in
:mod:`backend_services.degradation`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from ..degradation.events import DegradationEvent
from ..degradation.gating import Feature
from ..degradation.levels import (
    DegradationLevel,
    FeaturePriority,
    ResourceThreshold,
    ResourceType,
    coerce_priority,
    coerce_resource,
)
from ..errors import RequestShedError, ValidationError
from ..log import get_logger
from ..tasks import Supervisor
from .degradation_global import GlobalDegradationManager, get_global_degradation_manager
from .degradation_link import FleetLink
from .degradation_overrides import Overrides
from .degradation_permit import Permit
from .degradation_sampling import MonitorFunction, validate_usage
from .degradation_state import DEFAULT_CHECK_INTERVAL as DEFAULT_CHECK_INTERVAL
from .degradation_state import DEFAULT_RECOVERY_DELAY as DEFAULT_RECOVERY_DELAY
from .degradation_state import LevelCallback, Listener
from .degradation_status import StatusReports

__all__ = [
    "DegradationEvent",
    "DegradationLevel",
    "Feature",
    "FeaturePriority",
    "GlobalDegradationManager",
    "Permit",
    "ResourceThreshold",
    "ResourceType",
    "ServiceDegradationManager",
    "get_global_degradation_manager",
]

_log = get_logger("service_degradation")


class ServiceDegradationManager(Overrides, StatusReports):
    """Resource-driven degradation levels, feature gating and admission for one service.

    ``check_interval``, ``recovery_delay`` and the thresholds follow the settings
    precedence: argument > ``DTESN_DEGRADATION_*`` environment > settings file > default.
    ``resource_thresholds`` takes :class:`ResourceThreshold` objects (or a mapping
    resource -> ResourceThreshold / {level: usage}).
    """

    # -- lifecycle -----------------------------------------------------------------------
    async def initialize(self) -> None:
        """Start monitoring (and fleet publishing/following when a store is configured)."""
        self._check_open()
        if self._started:
            return
        if self._store is None and self._redis_url is not None:
            from ..store.factory import open_store

            store = open_store(self._redis_url, clock=self._clock)
            await store.initialize()
            self._store = store
        self._supervisor = Supervisor(f"degradation:{self.instance_id}", clock=self._clock)
        self._started = True
        self._sampler.prime(self._clock.monotonic())
        if self._store is not None:
            self._link = FleetLink(
                self,
                self._store,
                clock=self._clock,
                supervisor=self._supervisor,
                ttl=max(3.0 * self.check_interval, 10.0),
            )
            await self._link.start()
        self._supervisor.spawn("monitor", self._monitor_loop)
        if self._sampler.lag_probe is not None:
            self._supervisor.spawn("loop-lag", self._sampler.lag_probe.run)
        _log.info(
            "degradation_started",
            service=self.service_name,
            check_interval=self.check_interval,
            recovery_delay=self.recovery_delay,
            shared=self._store is not None,
        )

    async def shutdown(self) -> None:
        """Stop every background task, withdraw the published record, close the store."""
        if self._closed:
            return
        self._closed = True
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            await asyncio.gather(self._expiry_task, return_exceptions=True)
        if self._supervisor is not None:
            await self._close_supervisor(self._supervisor)
        if self._link is not None:
            try:
                await asyncio.wait_for(self._link.withdraw(), 2.0)
            except Exception as exc:
                _log.warning("withdraw_failed", service=self.service_name, error=repr(exc))
        if self._store is not None and self._owns_store and self._started:
            await self._store.close()
        _log.info("degradation_stopped", service=self.service_name)

    async def _close_supervisor(self, supervisor: Supervisor) -> None:
        """Cancel the background tasks; cancel again any that swallowed a cancellation
        (a client library may turn one into a timeout error), for at most ~5 s."""
        closing = asyncio.ensure_future(supervisor.close())
        prefix = supervisor.owner + ":"
        for _ in range(10):
            done, _ = await asyncio.wait({closing}, timeout=0.5)
            if done:
                return
            for task in asyncio.all_tasks():
                if task.get_name().startswith(prefix) and not task.done():
                    task.cancel()
        _log.warning("shutdown_incomplete", service=self.service_name, tasks=supervisor.names)

    close = shutdown

    async def __aenter__(self) -> ServiceDegradationManager:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # -- features ------------------------------------------------------------------------
    def register_feature(self, feature: Feature) -> None:
        """Add (or replace) a feature; it is gated at the current level at once."""
        if not isinstance(feature, Feature):
            raise ValidationError("feature", feature, "a Feature")
        self._gate.register(feature)

    def unregister_feature(self, name: str) -> bool:
        """Remove a feature; False if it was not registered."""
        return self._gate.unregister(name)

    def set_feature_enabled(self, name: str, enabled: bool) -> None:
        """Switch a feature on or off by hand (it still follows the level when on)."""
        if name not in self._gate.features:
            raise ValidationError("feature_name", name, "a registered feature name")
        self._gate.set_enabled(name, bool(enabled))

    async def is_feature_enabled(self, feature_name: str) -> bool:
        """Whether ``feature_name`` runs now (unknown name: False, warned once)."""
        enabled = self._table.get(feature_name)
        if enabled is None:
            return self._unknown_feature(feature_name)
        return enabled

    def feature_enabled(self, feature_name: str) -> bool:
        """Synchronous :meth:`is_feature_enabled`."""
        enabled = self._table.get(feature_name)
        if enabled is None:
            return self._unknown_feature(feature_name)
        return enabled

    def _unknown_feature(self, name: Any) -> bool:
        self.unknown_feature_lookups += 1
        key = name if isinstance(name, str) else repr(name)
        if key not in self._warned_unknown and len(self._warned_unknown) < 10_000:
            self._warned_unknown.add(key)
            _log.warning(
                "unknown_feature",
                service=self.service_name,
                feature=key,
                hint="register_feature() it first; unknown features count as disabled",
            )
        return False

    async def execute_with_fallback(
        self, feature_name: str, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Run ``func`` if the feature is enabled, else (or if ``func`` raises) the
        feature's fallback with the same arguments. Without a fallback: a disabled feature
        raises :class:`RequestShedError`, a failure re-raises."""
        feature = self._gate.features.get(feature_name)
        if feature is None:
            self._unknown_feature(feature_name)
            raise ValidationError("feature_name", feature_name, "a registered feature name")
        fallback = feature.fallback_function
        if self._table.get(feature_name):
            try:
                return await _maybe_await(func(*args, **kwargs))
            except Exception as exc:
                if fallback is None:
                    raise
                _log.warning(
                    "feature_failed_fallback",
                    service=self.service_name,
                    feature=feature_name,
                    error=repr(exc),
                )
                return await _maybe_await(fallback(*args, **kwargs))
        if fallback is not None:
            return await _maybe_await(fallback(*args, **kwargs))
        raise RequestShedError(
            f"feature {feature_name!r} of service {self.service_name!r} is disabled at level "
            f"{self.current_level.value!r} and has no fallback",
            retry_after=self._retry_after(),
        )

    # -- admission -----------------------------------------------------------------------
    def admit(self, priority: FeaturePriority = FeaturePriority.MEDIUM) -> None:
        """Let a request of ``priority`` in, or raise :class:`RequestShedError` (with a
        retry-after hint) when the current level does not admit it. Call it before any
        work starts; it is one comparison."""
        try:
            if priority.rank <= self._admit_rank:
                return
        except AttributeError:
            priority = coerce_priority(priority)
            if priority.rank <= self._admit_rank:
                return
        self._shed(priority, None)

    def admits(self, priority: FeaturePriority | str = FeaturePriority.MEDIUM) -> bool:
        """Whether :meth:`admit` would let ``priority`` in (no counting, no exception)."""
        return coerce_priority(priority).rank <= self._admit_rank

    def admission(self, priority: FeaturePriority | str = FeaturePriority.MEDIUM) -> Permit:
        """``with manager.admission(priority):`` — admit by level and, when a concurrency
        limit is configured, by the adaptive limit; records latency on exit."""
        return Permit(self, coerce_priority(priority))

    def _retry_after(self) -> float:
        now = self._clock.monotonic()
        eta = self._policy.next_improvement_in(now)
        if eta is None:
            eta = self.check_interval + self.recovery_delay
        return max(0.001, eta)

    def _shed(self, priority: FeaturePriority, why: str | None) -> None:
        self._admission.record_shed(priority)
        retry = self._retry_after()
        level = self.current_level
        reason = why or (
            f"level {level.value!r} admits only "
            f"{', '.join(self._admission.admitted_priorities()) or 'health checks'}"
        )
        raise RequestShedError(
            f"request of priority {priority.value!r} to service {self.service_name!r} was "
            f"shed: {reason}; retry after {retry:.3f}s",
            retry_after=retry,
        )

    # -- monitors and callbacks ----------------------------------------------------------
    def register_resource_monitor(
        self,
        resource_type: ResourceType | str,
        monitor_func: MonitorFunction,
        *,
        in_thread: bool | None = None,
    ) -> None:
        """Use ``monitor_func`` (sync or async, returning usage 0..1) for a resource,
        replacing the built-in monitor of that resource. Sync monitors run in a worker
        thread unless ``in_thread=False``."""
        rt = coerce_resource(resource_type)
        if not callable(monitor_func):
            raise ValidationError("monitor_func", monitor_func, "a callable returning 0..1")
        self._sampler.register(rt, monitor_func, in_thread)

    def report_resource_usage(self, resource_type: ResourceType | str, usage: float) -> None:
        """Push a usage value (0..1) produced elsewhere (e.g. share of open breakers for
        EXTERNAL_API); it is used in the next monitoring round."""
        rt = coerce_resource(resource_type)
        value = validate_usage(usage)
        if value is None:
            raise ValidationError("usage", usage, "a number between 0 and 1")
        self._sampler.pushed[rt] = value

    def add_degradation_callback(self, callback: LevelCallback) -> None:
        """``callback(new_level)`` (sync or async) after every change to a worse level."""
        self._degradation_callbacks.append(callback)

    def add_recovery_callback(self, callback: LevelCallback) -> None:
        """``callback(new_level)`` (sync or async) after every change to a better level."""
        self._recovery_callbacks.append(callback)

    def add_listener(self, listener: Listener) -> None:
        """``listener(event)`` with a :class:`DegradationEvent` for every level change."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> bool:
        try:
            self._listeners.remove(listener)
        except ValueError:
            return False
        return True

    # -- the monitoring loop ---------------------------------------------------------------
    async def _monitor_loop(self) -> None:
        while True:
            await self.check_resources()
            await self._clock.sleep(self.check_interval)

    async def check_resources(self) -> DegradationLevel:
        """Run one monitoring round now; return the resulting level."""
        self._check_open()
        samples = await self._sampler.collect(self._clock.monotonic())
        now = self._clock.monotonic()
        self._resources.update(samples)
        change = self._policy.observe(samples, now)
        self._rounds += 1
        self._last_check = self._clock.time()
        if change is not None:
            await self._apply(change)
        elif self._policy.gate_version != self._gate_version:
            self._regate()
        self._refresh_admission()
        self._want_publish()
        return self._policy.level


async def _maybe_await(value: Any) -> Any:
    while inspect.isawaitable(value):
        value = await value
    return value
