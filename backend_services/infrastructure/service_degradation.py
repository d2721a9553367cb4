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
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import socket
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any

from ..clock import Clock, resolve_clock
from ..degradation.events import DegradationEvent
from ..degradation.fleet import (
    FleetCommand,
    InstanceRecord,
)
from ..degradation.gating import ALLOWED_PRIORITIES, Feature, FeatureGate
from ..degradation.levels import (
    DegradationLevel,
    FeaturePriority,
    ResourceThreshold,
    ResourceType,
    build_thresholds,
    coerce_level,
    coerce_priority,
    coerce_resource,
)
from ..degradation.policy import Change, DegradationPolicy
from ..degradation.shedding import AdmissionController, AimdLimit
from ..errors import LifecycleError, RequestShedError, ValidationError
from ..log import get_logger
from ..resources import LoopLagProbe
from ..settings import UNSET, Settings, Unset, load_settings, pick, resolve_redis_url
from ..store.protocol import Store
from ..tasks import Supervisor
from .degradation_global import GlobalDegradationManager, get_global_degradation_manager
from .degradation_link import FleetLink, raise_if_cancelling
from .degradation_sampling import MonitorFunction, Sampler

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

DEFAULT_CHECK_INTERVAL = 30.0
DEFAULT_RECOVERY_DELAY = 60.0

LevelCallback = Callable[[DegradationLevel], Awaitable[Any] | Any]
Listener = Callable[[DegradationEvent], Awaitable[Any] | Any]


async def _call(fn: Callable[..., Any], what: str, service: str, *args: Any) -> None:
    """Run a callback (sync or async); a failure is logged, never propagated."""
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            await result
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise_if_cancelling(exc)
        _log.exception("callback_failed", service=service, callback=what, error=repr(exc))


def _seconds(name: str, value: Any, *, allow_zero: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValidationError(name, value, "seconds >= 0" if allow_zero else "seconds > 0")
    return float(value)


class Permit:
    """An admitted request's slot (``with`` / ``async with``): releases the concurrency
    slot with the request's latency on exit; an exception counts as a drop only when it
    is a timeout."""

    __slots__ = ("_clock", "_inflight", "_limit", "_manager", "_priority", "_started")

    def __init__(self, manager: ServiceDegradationManager, priority: FeaturePriority) -> None:
        self._manager = manager
        self._priority = priority
        self._clock = manager._clock
        self._limit = manager._limit
        self._inflight = 0
        self._started = 0.0

    def __enter__(self) -> Permit:
        self._manager.admit(self._priority)
        limit = self._limit
        if limit is not None:
            slot = limit.try_acquire()
            if slot is None:
                self._manager._shed(self._priority, f"concurrency limit {int(limit.limit)} reached")
            else:
                self._inflight = slot
        self._started = self._clock.monotonic()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._limit is not None:
            latency = self._clock.monotonic() - self._started
            dropped = exc_type is not None and issubclass(exc_type, TimeoutError)
            self._limit.release(latency, self._inflight, dropped=dropped)

    async def __aenter__(self) -> Permit:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class ServiceDegradationManager:
    """Resource-driven degradation levels, feature gating and admission for one service.

    ``check_interval``, ``recovery_delay`` and the thresholds follow the settings
    precedence: argument > ``DTESN_DEGRADATION_*`` environment > settings file > default.
    ``resource_thresholds`` takes :class:`ResourceThreshold` objects (or a mapping
    resource -> ResourceThreshold / {level: usage}).
    """

    def __init__(
        self,
        service_name: str,
        resource_thresholds: Mapping[Any, Any] | Iterable[ResourceThreshold] | None = None,
        check_interval: float | Unset = UNSET,
        recovery_delay: float | Unset = UNSET,
        *,
        redis_url: str | Unset | None = UNSET,
        clock: Clock | None = None,
        settings: Settings | None = None,
        config_file: str | os.PathLike[str] | None = None,
        builtin_monitors: bool = True,
        disk_path: str | os.PathLike[str] | None = None,
        cgroup_root: str | os.PathLike[str] | None = None,
        proc_cgroup: str | os.PathLike[str] | None = None,
        loop_lag_interval: float | None = 0.25,
        loop_lag_limit: float = 1.0,
        monitor_timeout: float | None = None,
        stale_after: float | None = None,
        history_size: int = 1000,
        follow_fleet_floor: bool = False,
        concurrency_limit: AimdLimit | None = None,
        store: Store | None = None,
        instance_id: str | None = None,
    ) -> None:
        if not isinstance(service_name, str) or not service_name.strip():
            raise ValidationError("service_name", service_name, "a non-empty string")
        if settings is None:
            settings = load_settings(config_file)
        deg = settings.degradation
        self.service_name = service_name
        self._clock = resolve_clock(clock)
        self.check_interval = _seconds(
            "check_interval",
            pick(check_interval, deg.check_interval, DEFAULT_CHECK_INTERVAL),
            allow_zero=False,
        )
        self.recovery_delay = _seconds(
            "recovery_delay",
            pick(recovery_delay, deg.recovery_delay, DEFAULT_RECOVERY_DELAY),
            allow_zero=True,
        )
        self.resource_thresholds: Mapping[ResourceType, ResourceThreshold] = MappingProxyType(
            build_thresholds(deg.thresholds, resource_thresholds)
        )
        if not isinstance(history_size, int) or isinstance(history_size, bool) or history_size < 1:
            raise ValidationError("history_size", history_size, "an integer >= 1")
        if stale_after is None:
            stale_after = 3 * self.check_interval
        stale = _seconds("stale_after", stale_after, allow_zero=False)
        timeout = _seconds(
            "monitor_timeout",
            monitor_timeout if monitor_timeout is not None else min(self.check_interval, 10.0),
            allow_zero=False,
        )
        self._redis_url = resolve_redis_url(redis_url, settings) if store is None else None
        self._store: Store | None = store
        self._owns_store = store is None
        self.instance_id = instance_id or (
            f"{socket.gethostname()}:{os.getpid()}:{service_name}:{uuid.uuid4().hex[:8]}"
        )
        lag_probe = None
        if builtin_monitors and loop_lag_interval is not None:
            lag_probe = LoopLagProbe(interval=loop_lag_interval, clock=self._clock)
        self._sampler = Sampler(
            clock=self._clock,
            service_name=service_name,
            builtin=builtin_monitors,
            cgroup_root=cgroup_root,
            proc_cgroup=proc_cgroup,
            disk_path=disk_path,
            lag_probe=lag_probe,
            lag_limit=_seconds("loop_lag_limit", loop_lag_limit, allow_zero=False),
            timeout=timeout,
        )
        self._policy = DegradationPolicy(
            self.resource_thresholds,
            self.recovery_delay,
            stale_after=stale,
            follow_floor=follow_fleet_floor,
        )
        self._gate = FeatureGate()
        self._table = self._gate.table  # name -> enabled now (mutated in place)
        self._gate_version = 0
        self._admission = AdmissionController()
        self._admit_rank = self._admission.admit_rank
        self._limit = concurrency_limit
        self._history: deque[DegradationEvent] = deque(maxlen=history_size)
        self._resources: dict[ResourceType, float] = {}
        self._degradation_callbacks: list[LevelCallback] = []
        self._recovery_callbacks: list[LevelCallback] = []
        self._listeners: list[Listener] = []
        self._warned_unknown: set[str] = set()
        self.unknown_feature_lookups = 0
        self._events_total = 0
        self._degradations = 0
        self._recoveries = 0
        self._rounds = 0
        self._last_check: float | None = None
        self._reason = "initial state"
        self._supervisor: Supervisor | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self._link: FleetLink | None = None
        self._fleet_override_id: str | None = None
        self.fleet_floor: DegradationLevel | None = None
        self._started = False
        self._closed = False

    # -- read-only views -----------------------------------------------------------------
    @property
    def current_level(self) -> DegradationLevel:
        return self._policy.level

    @property
    def features(self) -> Mapping[str, Feature]:
        return MappingProxyType(self._gate.features)

    @property
    def current_resources(self) -> Mapping[ResourceType, float]:
        """The latest good usage value of each monitored resource."""
        return MappingProxyType(self._resources)

    @property
    def resource_monitors(self) -> Mapping[ResourceType, MonitorFunction]:
        """User-registered monitors by resource."""
        return MappingProxyType({r: m.fn for r, m in self._sampler.monitors.items()})

    @property
    def degradation_history(self) -> tuple[DegradationEvent, ...]:
        """Level changes, oldest first (bounded by ``history_size``)."""
        return tuple(self._history)

    @property
    def forced(self) -> bool:
        return self._policy.override is not None

    @property
    def store(self) -> Store | None:
        return self._store

    # -- lifecycle -----------------------------------------------------------------------
    async def initialize(self) -> None:
        """Start monitoring (and fleet publishing/following when a store is configured)."""
        if self._closed:
            raise LifecycleError(f"degradation manager {self.service_name!r} was shut down")
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

    def _check_open(self) -> None:
        if self._closed:
            raise LifecycleError(f"degradation manager {self.service_name!r} was shut down")

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
        from .degradation_sampling import validate_usage

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

    # -- manual override -----------------------------------------------------------------
    async def force_degradation(
        self,
        level: DegradationLevel | str,
        reason: str = "Manual trigger",
        duration: float | None = None,
        *,
        source: str = "manual",
    ) -> None:
        """Set the level by hand until :meth:`clear_forced_degradation` or, with
        ``duration``, for that many seconds."""
        self._check_open()
        lv = coerce_level(level)
        now = self._clock.monotonic()
        until = None
        if duration is not None:
            until = now + _seconds("duration", duration, allow_zero=False)
        change = self._policy.force(lv, str(reason), now, until=until, source=source)
        self._schedule_expiry(until)
        if change is not None:
            await self._apply(change)
        else:
            self._refresh_admission()
            self._want_publish()

    async def clear_forced_degradation(self, reason: str = "Manual clear") -> bool:
        """End a manual override; the resource-driven level applies at once. False when
        no override was in force."""
        self._check_open()
        had = self._policy.override is not None
        change = self._policy.clear(self._clock.monotonic(), reason=str(reason))
        self._schedule_expiry(None)
        if change is not None:
            await self._apply(change)
        self._refresh_admission()
        self._want_publish()
        return had

    def _schedule_expiry(self, until: float | None) -> None:
        task, self._expiry_task = self._expiry_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if until is not None and not self._closed:
            self._expiry_task = asyncio.get_running_loop().create_task(
                self._expire_at(until), name=f"degradation:{self.service_name}:override-expiry"
            )

    async def _expire_at(self, until: float) -> None:
        await self._clock.sleep(max(0.0, until - self._clock.monotonic()))
        change = self._policy.tick(self._clock.monotonic())
        if change is not None:
            await self._apply(change)
        self._refresh_admission()

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

    def _regate(self) -> None:
        self._gate_version = self._policy.gate_version
        on, off = self._gate.apply(self._policy.level, self._policy.dependency_levels)
        if on or off:
            _log.info(
                "features_changed",
                service=self.service_name,
                level=self._policy.level.value,
                enabled=on,
                disabled=off,
            )

    def _refresh_admission(self) -> None:
        now = self._clock.monotonic()
        eta = self._policy.next_improvement_in(now)
        self._admission.set_level(self._policy.level, None if eta is None else now + eta)
        self._admit_rank = self._admission.admit_rank

    async def _apply(self, change: Change) -> None:
        self._regate()
        self._refresh_admission()
        self._reason = change.reason
        snapshot = {r.value: round(v, 6) for r, v in self._resources.items()}
        event = DegradationEvent(
            service_name=self.service_name,
            timestamp=self._clock.time(),
            old_level=change.old,
            new_level=change.new,
            reason=change.reason,
            source=change.source,
            resources=MappingProxyType(snapshot),
            forced=self._policy.override is not None,
        )
        self._history.append(event)
        self._events_total += 1
        degrading = change.is_degradation
        if degrading:
            self._degradations += 1
        else:
            self._recoveries += 1
        (_log.warning if degrading else _log.info)(
            "level_changed",
            service=self.service_name,
            old=change.old.value,
            new=change.new.value,
            reason=change.reason,
            source=change.source,
            resources=snapshot,
        )
        self._want_publish()
        callbacks = self._degradation_callbacks if degrading else self._recovery_callbacks
        kind = "degradation_callback" if degrading else "recovery_callback"
        for cb in list(callbacks):
            await _call(cb, kind, self.service_name, change.new)
        for listener in list(self._listeners):
            await _call(listener, "listener", self.service_name, event)

    # -- status ----------------------------------------------------------------------------
    def get_degradation_history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Level changes as dicts, oldest first; ``limit=N`` gives the newest N."""
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 0
        ):
            raise ValidationError("limit", limit, "None or an integer >= 0")
        events = list(self._history)
        if limit is not None:
            events = events[len(events) - limit :] if limit else []
        return [e.to_dict() for e in events]

    def get_status(self) -> dict[str, Any]:
        """Everything about the manager's state, as plain data."""
        now = self._clock.monotonic()
        ov = self._policy.override
        return {
            "service_name": self.service_name,
            "instance_id": self.instance_id,
            "current_level": self.current_level.value,
            "automatic_level": self._policy.auto_level.value,
            "reason": self._reason,
            "forced": ov is not None,
            "override": None
            if ov is None
            else {
                "level": ov.level.value,
                "reason": ov.reason,
                "source": ov.source,
                "remaining": None if ov.until is None else max(0.0, ov.until - now),
            },
            "fleet_floor": self.fleet_floor.value if self.fleet_floor else None,
            "follow_fleet_floor": self._policy.follow_floor,
            "recovery_in": self._policy.next_improvement_in(now),
            "resources": {r.value: v for r, v in self._resources.items()},
            "dependency_levels": {
                r.value: lv.value for r, lv in self._policy.dependency_levels.items()
            },
            "features": {
                name: {
                    "priority": f.priority.value,
                    "enabled": self._table.get(name, False),
                    "switched_on": f.enabled,
                    "resource_dependencies": [r.value for r in f.resource_dependencies],
                }
                for name, f in self._gate.features.items()
            },
            "allowed_priorities": sorted(
                (p.value for p in ALLOWED_PRIORITIES[self.current_level]),
                key=lambda v: FeaturePriority(v).rank,
            ),
            "thresholds": {r.value: t.as_dict() for r, t in self.resource_thresholds.items()},
            "monitors": {
                "builtin": [r.value for r in self._sampler.builtin_types()],
                "user": [r.value for r in self._sampler.monitors],
                "errors": dict(self._sampler.errors),
                "last_errors": dict(self._sampler.last_errors),
            },
            "check_interval": self.check_interval,
            "recovery_delay": self.recovery_delay,
            "last_check": self._last_check,
            "rounds": self._rounds,
            "running": self._started and not self._closed,
            "shared": self._store is not None,
        }

    def get_metrics(self) -> dict[str, Any]:
        """The spec's metrics (``current_level``, ``enabled_features``,
        ``disabled_features``, ``degradation_events``, ``resource_usage``) and more."""
        table = self._table
        enabled = sum(1 for v in table.values() if v)
        limit = self._limit
        return {
            "current_level": self.current_level.value,
            "enabled_features": enabled,
            "disabled_features": len(table) - enabled,
            "degradation_events": self._events_total,
            "resource_usage": {r.value: round(v, 4) for r, v in self._resources.items()},
            "degradations": self._degradations,
            "recoveries": self._recoveries,
            "forced": self._policy.override is not None,
            "monitor_errors": sum(self._sampler.errors.values()),
            "monitoring_rounds": self._rounds,
            "shed_requests": self._admission.shed_total,
            "shed_by_priority": dict(self._admission.shed_by_priority),
            "unknown_feature_lookups": self.unknown_feature_lookups,
            "concurrency_limit": None if limit is None else int(limit.limit),
            "inflight": None if limit is None else limit.inflight,
        }

    # -- fleet -----------------------------------------------------------------------------
    def _record(self) -> InstanceRecord:
        table = self._table
        enabled = sum(1 for v in table.values() if v)
        return InstanceRecord(
            service_name=self.service_name,
            instance_id=self.instance_id,
            level=self.current_level,
            forced=self._policy.override is not None,
            reason=self._reason,
            resources={r.value: v for r, v in self._resources.items()},
            enabled_features=enabled,
            disabled_features=len(table) - enabled,
            updated_at=self._clock.time(),
            pid=os.getpid(),
            host=socket.gethostname(),
        )

    def _want_publish(self) -> None:
        if self._link is not None:
            self._link.want_publish()

    async def apply_fleet_command(self, command: FleetCommand) -> None:
        """Apply a fleet command (idempotent per command id); an override that targets
        another service is ignored."""
        if command.kind == "floor":
            await self._apply_floor(command)
            return
        if not command.targets(self.service_name) or command.id == self._fleet_override_id:
            return
        wall = self._clock.time()
        if not command.active(wall):
            return
        self._fleet_override_id = command.id
        until = None
        if command.until is not None:
            until = self._clock.monotonic() + max(0.0, command.until - wall)
        now = self._clock.monotonic()
        change = self._policy.force(command.level, command.reason, now, until=until, source="fleet")
        self._schedule_expiry(until)
        _log.warning(
            "fleet_override",
            service=self.service_name,
            level=command.level.value,
            reason=command.reason,
            command=command.id,
            targeted=command.service is not None,
        )
        if change is not None:
            await self._apply(change)
        self._refresh_admission()
        self._want_publish()

    async def _clear_fleet_override(
        self, reason: str, *, service: str | None = None, restore: FleetCommand | None = None
    ) -> None:
        """End the override the fleet set (only when ``service`` is None or names this
        manager's service); ``restore``, a fleet-wide override still in force, applies
        instead when it is still active."""
        if service is not None and service != self.service_name:
            return
        if (
            restore is not None
            and restore.kind == "override"
            and restore.targets(self.service_name)
            and restore.active(self._clock.time())
        ):
            if restore.id != self._fleet_override_id:
                await self.apply_fleet_command(restore)
            return
        self._fleet_override_id = None
        ov = self._policy.override
        if ov is None or ov.source != "fleet":
            return
        change = self._policy.clear(self._clock.monotonic(), reason=reason, source="fleet")
        self._schedule_expiry(None)
        if change is not None:
            await self._apply(change)
        self._refresh_admission()
        self._want_publish()

    async def _apply_floor(self, command: FleetCommand | None) -> None:
        level = None
        if command is not None and command.active(self._clock.time()):
            level = command.level
        if level == self.fleet_floor:
            return
        self.fleet_floor = level
        _log.info(
            "fleet_floor",
            service=self.service_name,
            floor=level.value if level else None,
            followed=self._policy.follow_floor,
        )
        change = self._policy.set_floor(level, command.reason if command else "floor cleared")
        if change is not None:
            await self._apply(change)
        self._refresh_admission()


async def _maybe_await(value: Any) -> Any:
    while inspect.isawaitable(value):
        value = await value
    return value
