"""A membrane process's wiring: the service plus the library, used as the spec's users would.

* **Configuration** — a :class:`ConfigurationManager` for ``service_name``
  (``dtesn-service``): ``membrane_depth`` and ``processing_timeout`` are read at start and
  applied live by change callbacks. With Redis, changes come from the fleet's store; on
  the in-memory default ``POST /admin/config`` writes them into this process's manager
  (so a coordinator can push configuration), and validation runs there.
* **Degradation** — a :class:`ServiceDegradationManager` with the spec's features:
  ``core_processing`` (critical), ``advanced_analytics`` (high: full depth, otherwise one
  level) and ``debug_interface`` (optional). Its resource monitors report this process's
  use (see :mod:`.monitors`), raised by any synthetic pressure a fault switch sets.
* **Discovery** — with Redis, the membrane registers itself on start and deregisters on
  stop; on the in-memory default whoever runs discovery registers it.
"""

from __future__ import annotations

from typing import Any

from ..clock import Clock, resolve_clock
from ..errors import ValidationError
from ..infrastructure.config_manager import ConfigSource, ConfigurationManager
from ..infrastructure.service_degradation import (
    Feature,
    FeaturePriority,
    ResourceType,
    ServiceDegradationManager,
)
from ..infrastructure.service_discovery import ServiceDiscovery, ServiceEndpoint, ServiceType
from ..log import get_logger
from ..observability.collectors import metrics_text
from ..settings import UNSET, Unset, resolve_redis_url
from .monitors import MonitorMode, ResourceReadings
from .protocol import CONFIG_KEYS, validate_membrane_config
from .service import (
    FEATURE_ADVANCED,
    FEATURE_CORE,
    FEATURE_DEBUG,
    MembraneOptions,
    MembraneService,
)

__all__ = ["MEMBRANE_FEATURES", "MembraneRuntime"]

_log = get_logger("dtesn")

MEMBRANE_FEATURES = (
    (FEATURE_CORE, FeaturePriority.CRITICAL),
    (FEATURE_ADVANCED, FeaturePriority.HIGH),
    (FEATURE_DEBUG, FeaturePriority.OPTIONAL),
)


class MembraneRuntime:
    """Runs one :class:`MembraneService` with discovery, configuration and degradation."""

    def __init__(
        self,
        options: MembraneOptions,
        *,
        redis_url: str | Unset | None = UNSET,
        register: bool = True,
        service_name: str = "dtesn-service",
        monitors: MonitorMode = "system",
        last_known_good: str | Unset | None = UNSET,
        clock: Clock | None = None,
    ) -> None:
        self.options = options
        self.redis_url = resolve_redis_url(redis_url)
        self.register = register
        self.service_name = service_name
        self._clock = resolve_clock(clock)
        self.service = MembraneService(options, clock=clock, feature_gate=self._feature_enabled)
        self.service.status_provider = self.status
        self.service.extra_metrics = self._component_metrics
        self.readings = ResourceReadings(
            monitors, lambda: self.service.faults.pressure, clock=self._clock
        )
        self.degradation = ServiceDegradationManager(
            self.service.membrane_id,
            redis_url=self.redis_url,
            clock=clock,
            builtin_monitors=monitors == "system",
        )
        for name, priority in MEMBRANE_FEATURES:
            self.degradation.register_feature(Feature(name, priority))
        self.degradation.register_resource_monitor(
            ResourceType.CPU, self.readings.cpu, in_thread=False
        )
        if monitors != "system":
            self.degradation.register_resource_monitor(
                ResourceType.MEMORY, self.readings.memory, in_thread=False
            )
        # In memory, configuration is this process's own (pushed by a coordinator): nothing
        # to keep on disk. With Redis, the last known good configuration is kept locally
        # (where the configuration manager keeps it, unless told otherwise).
        if not self.redis_url:
            last_known_good = None
        self.config = ConfigurationManager(
            service_name, redis_url=self.redis_url, clock=clock, last_known_good=last_known_good
        )
        self.discovery: ServiceDiscovery | None = None
        self.registered = False
        self._started = False
        self._stopped = False

    @property
    def shared_state(self) -> str:
        return "redis" if self.redis_url else "memory"

    async def _feature_enabled(self, name: str) -> bool:
        return self.degradation.feature_enabled(name)

    def _component_metrics(self) -> str:
        """Prometheus text of the library's components inside this membrane."""
        return metrics_text(
            degradation=self.degradation, config=self.config, discovery=self.discovery
        )

    def status(self) -> dict[str, Any]:
        """What /health, /membrane_info and /metrics add about the library's view."""
        return {
            "degradation_level": self.degradation.current_level.value,
            "features": {
                name: self.degradation.feature_enabled(name) for name, _ in MEMBRANE_FEATURES
            },
            "resource_usage": {
                r.value: round(v, 4) for r, v in self.degradation.current_resources.items()
            },
            "shared_state": self.shared_state,
            "registered": self.registered,
        }

    # --- configuration ------------------------------------------------------------------

    def _validator(self, key: str) -> Any:
        def check(value: Any) -> bool:
            validate_membrane_config(key, value, self.service.spec.depth)
            return True

        return check

    def _on_change(self, key: str, new: Any, old: Any) -> None:
        if new is None:
            return
        try:
            self.service.apply_config(key, new)
        except ValidationError as exc:
            _log.warning("config_rejected", membrane=self.service.membrane_id, error=str(exc))

    async def _load_config(self) -> None:
        for key in CONFIG_KEYS:
            self.config.add_validator(key, self._validator(key))
            self.config.add_change_callback(key, self._on_change)
            value = await self.config.get_config(key)
            if value is not None:
                self._on_change(key, value, None)

    async def _write_config(self, values: dict[str, Any]) -> None:
        if self.redis_url:
            raise ValidationError(
                "config",
                sorted(values),
                "changes through the shared configuration (backend-services config set), "
                "not one membrane, when configuration lives in Redis",
            )
        await self.config.bulk_update(values, source=ConfigSource.API, description="admin")

    # --- lifecycle ----------------------------------------------------------------------

    def endpoint(self) -> ServiceEndpoint:
        svc = self.service
        return ServiceEndpoint(
            service_id=svc.membrane_id,
            service_type=ServiceType.DTESN_MEMBRANE,
            host=self.options.host,
            port=svc.port,
            metadata={
                "membrane_type": svc.spec.kind.value,
                "levels": svc.spec.depth,
                "input_dim": svc.spec.input_dim,
                "capacity": self.options.max_steps,
            },
        )

    async def start(self) -> None:
        """Connect the library, start serving, then register and report ready."""
        await self.config.initialize()
        await self._load_config()
        self.service.config_writer = self._write_config
        self.readings.prime()
        await self.degradation.initialize()
        await self.service.start()
        if self.redis_url and self.register:
            self.discovery = ServiceDiscovery(redis_url=self.redis_url, clock=self._clock)
            await self.discovery.initialize()
            await self.discovery.register_service(self.endpoint())
            self.registered = True
        self.service.set_ready(True)
        self._started = True
        _log.info(
            "membrane_ready",
            membrane=self.service.membrane_id,
            shared_state=self.shared_state,
            depth=self.service.depth,
        )

    async def stop(self) -> None:
        """Health goes 503, deregister, finish in-flight calls, release everything."""
        if self._stopped:
            return
        self._stopped = True
        self.service.set_ready(False, "draining")
        discovery, self.discovery = self.discovery, None
        if discovery is not None:
            try:
                await discovery.deregister_service(self.service.membrane_id)
            finally:
                self.registered = False
                await discovery.shutdown()
        await self.service.stop()
        await self.degradation.shutdown()
        await self.config.shutdown()
