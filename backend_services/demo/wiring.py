"""Setting up the demo coordinator's components: discovery, configuration, a breaker per
membrane, the resilient client with its local fallback, the traffic generator and the
optional live dashboard, all on one shared state (Redis, or one in-memory store).

Part of :class:`~backend_services.demo.scenario.Scenario`; it connects the callbacks of
:class:`~backend_services.demo.watching.Watching`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from ..client import ServiceClient
from ..dtesn.reservoir import MembraneSpec
from ..infrastructure.circuit_breaker import CircuitBreaker
from ..infrastructure.config_manager import ConfigSource, ConfigurationManager
from ..infrastructure.service_discovery import (
    ServiceDiscovery,
    ServiceEndpoint,
    ServiceType,
)
from ..retry_budget import RetryBudget
from ..store.memory import MemoryStore
from .constants import KIND, LEVELS, SEED, SERVICE_NAME
from .record import Event
from .state import ScenarioState
from .traffic import LocalFallback, Traffic
from .watching import Watching

__all__ = ["Wiring"]


class _Guard:
    """A membrane's breaker, recording each attempt's outcome for the failover figures."""

    def __init__(self, breaker: CircuitBreaker, mid: str, scenario: ScenarioState) -> None:
        self.breaker = breaker
        self.mid = mid
        self.scenario = scenario

    async def call(self, func: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        try:
            return await self.breaker.call(func, *args, **kwargs)
        except Exception as exc:
            if type(exc).__name__ != "CircuitBreakerException":
                self.scenario.rec.event(
                    Event(self.scenario.t(), "attempt_failed", self.mid, type(exc).__name__)
                )
            raise


class Wiring(Watching):
    """The coordinator's components, set up for one run."""

    # --- set-up -----------------------------------------------------------------------

    def _new_breaker(self, mid: str) -> CircuitBreaker:
        breaker = CircuitBreaker(f"membrane:{mid}", config=self.breaker_config, **self._shared())
        breaker.add_listener(self._on_breaker_event, "state_transition")
        self.breakers[mid] = breaker
        self.breaker_state[mid] = str(breaker.state.value)
        return breaker

    def _breaker_for(self, endpoint: ServiceEndpoint) -> _Guard:
        mid = endpoint.service_id
        breaker = self.breakers.get(mid) or self._new_breaker(mid)
        return _Guard(breaker, mid, self)

    async def setup(self, stack: contextlib.AsyncExitStack) -> None:
        if self.dashboard is not None and not self.redis_url:
            # one in-memory store shared by the coordinator's components, so the
            # dashboard can show them
            self.store = MemoryStore()
            await self.store.initialize()
            stack.push_async_callback(self.store.close)
        self.discovery = ServiceDiscovery(
            **self._shared(),
            health_check_interval=0.5,
            health_check_timeout=0.5,
            max_consecutive_failures=2,
        )
        await self.discovery.initialize()
        stack.push_async_callback(self.discovery.shutdown)
        self.discovery.add_service_up_callback(self._on_up)
        self.discovery.add_service_down_callback(self._on_down)
        self.discovery.add_listener(self._on_discovery_event)

        self.config = ConfigurationManager(SERVICE_NAME, **self._shared(), last_known_good=None)
        await self.config.initialize()
        stack.push_async_callback(self.config.shutdown)
        await self.config.bulk_update(
            {"membrane_depth": LEVELS, "processing_timeout": 5.0},
            source=ConfigSource.API,
            description="demo baseline",
        )
        if not self.redis_url:
            self.config.add_global_change_callback(self._push_config)

        for mid in self.ids:
            breaker = self._new_breaker(mid)
            if self.redis_url or self.store is not None:
                await breaker.initialize()
                await breaker.reset()
                stack.push_async_callback(breaker.close)
        spec = MembraneSpec.for_kind(KIND, levels=LEVELS, seed=SEED)
        self.client = ServiceClient(
            self.discovery,
            ServiceType.DTESN_MEMBRANE,
            balancer="round_robin",
            max_attempts=3,
            retry_budget=RetryBudget(0.5, min_per_second=20.0),
            timeout=5.0,
            attempt_timeout=2.0,
            breaker_factory=self._breaker_for,
            fallback=LocalFallback(spec),
        )
        stack.push_async_callback(self.client.close)
        stack.push_async_callback(self.fleet.stop_all)
        self.traffic = Traffic(self.client, self.rec, rate=self.rate, now=self.t)
        if self.dashboard is not None:
            await self._start_dashboard(stack)

    def _shared(self) -> dict[str, Any]:
        """Where the coordinator's components keep shared state."""
        if self.redis_url:
            return {"redis_url": self.redis_url}
        if self.store is not None:
            return {"store": self.store}
        return {"redis_url": None}

    async def _start_dashboard(self, stack: contextlib.AsyncExitStack) -> None:
        from ..control.operations import FleetOperations
        from ..control.server import ControlServer

        ops = FleetOperations(self.redis_url, store=self.store, config_service=SERVICE_NAME)
        await ops.initialize()
        stack.push_async_callback(ops.close)
        server = ControlServer(ops, watch_interval=0.5)
        base = await server.start("127.0.0.1", self.dashboard or 0)
        stack.push_async_callback(server.close)
        self.dashboard_url = base + "/"
        where = "" if self.redis_url else " (degradation levels live in the membranes: --redis)"
        self.view.line(f"  live dashboard: {self.dashboard_url}{where}")
