"""The state of a degradation manager
(:class:`~backend_services.infrastructure.service_degradation.ServiceDegradationManager`)
and what its parts share: construction (settings precedence, validation), the read-only
views, and how a level change is applied (feature tables regated, admission refreshed,
history, log, fleet publish, callbacks and listeners).

The parts are :class:`~backend_services.infrastructure.degradation_overrides.Overrides`
(manual and fleet overrides, the fleet floor) and
:class:`~backend_services.infrastructure.degradation_status.StatusReports` (status,
metrics, history, the published record); the public class combines them and adds the
lifecycle, feature gating, admission and the monitoring loop.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from ..clock import Clock, resolve_clock
from ..degradation.events import DegradationEvent
from ..degradation.gating import Feature, FeatureGate
from ..degradation.levels import (
    DegradationLevel,
    ResourceThreshold,
    ResourceType,
    build_thresholds,
)
from ..degradation.policy import Change, DegradationPolicy
from ..degradation.shedding import AdmissionController, AimdLimit
from ..errors import LifecycleError, ValidationError
from ..log import get_logger
from ..resources import LoopLagProbe
from ..settings import UNSET, Settings, Unset, load_settings, pick, resolve_redis_url
from ..store.protocol import Store
from ..tasks import Supervisor, call_isolated
from .degradation_link import FleetLink
from .degradation_sampling import MonitorFunction, Sampler

__all__ = [
    "DEFAULT_CHECK_INTERVAL",
    "DEFAULT_RECOVERY_DELAY",
    "DegradationState",
    "LevelCallback",
    "Listener",
    "validate_seconds",
]

_log = get_logger("service_degradation")

DEFAULT_CHECK_INTERVAL = 30.0
DEFAULT_RECOVERY_DELAY = 60.0

LevelCallback = Callable[[DegradationLevel], Awaitable[Any] | Any]
Listener = Callable[[DegradationEvent], Awaitable[Any] | Any]


def _failed(what: str, service: str) -> Callable[[Exception], None]:
    def log(exc: Exception) -> None:
        _log.exception("callback_failed", service=service, callback=what, error=repr(exc))

    return log


def validate_seconds(name: str, value: Any, *, allow_zero: bool) -> float:
    """``value`` as a finite number of seconds (> 0, or >= 0 with ``allow_zero``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValidationError(name, value, "seconds >= 0" if allow_zero else "seconds > 0")
    return float(value)


class DegradationState:
    """Everything one degradation manager holds (see the module docstring)."""

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
        self.check_interval = validate_seconds(
            "check_interval",
            pick(check_interval, deg.check_interval, DEFAULT_CHECK_INTERVAL),
            allow_zero=False,
        )
        self.recovery_delay = validate_seconds(
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
        stale = validate_seconds("stale_after", stale_after, allow_zero=False)
        timeout = validate_seconds(
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
            lag_limit=validate_seconds("loop_lag_limit", loop_lag_limit, allow_zero=False),
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

    def _check_open(self) -> None:
        if self._closed:
            raise LifecycleError(f"degradation manager {self.service_name!r} was shut down")

    def _feature_counts(self) -> tuple[int, int]:
        """(enabled, disabled) registered features at the current level."""
        table = self._table
        enabled = sum(1 for v in table.values() if v)
        return enabled, len(table) - enabled

    # -- applying a level change -----------------------------------------------------------
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
        failed = _failed(kind, self.service_name)
        for cb in list(callbacks):
            await call_isolated(cb, (change.new,), failed)
        failed = _failed("listener", self.service_name)
        for listener in list(self._listeners):
            await call_isolated(listener, (event,), failed)

    def _want_publish(self) -> None:
        if self._link is not None:
            self._link.want_publish()
