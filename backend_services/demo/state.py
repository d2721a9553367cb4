"""The state of a demo run (:class:`~backend_services.demo.scenario.Scenario`) and what
its parts and the phases share: the membrane fleet and the coordinator's settings, time
and output (events, notes, bounded waits), and which membranes are healthy and serving.

The parts are :class:`~backend_services.demo.watching.Watching` (callbacks and the status
line) and :class:`~backend_services.demo.wiring.Wiring` (setting up the coordinator's
components); the public class adds the run and its report.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..client import ServiceClient
from ..infrastructure.circuit_breaker import CircuitBreaker, CircuitBreakerConfig
from ..infrastructure.config_manager import ConfigurationManager
from ..infrastructure.service_discovery import (
    ServiceDiscovery,
    ServiceEndpoint,
    ServiceStatus,
    ServiceType,
)
from ..store.protocol import Store
from .constants import KIND, LEVELS, SEED
from .fleet import Fleet
from .record import Event, Recorder
from .summary import Marks
from .traffic import Traffic
from .view import ProgressView

__all__ = ["ScenarioState"]


class ScenarioState:
    """Everything one demo run holds (see the module docstring)."""

    def __init__(
        self,
        *,
        redis_url: str | None,
        membranes: int = 3,
        rate: float = 60.0,
        view: ProgressView | None = None,
        dashboard: int | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.dashboard = dashboard
        self.dashboard_url: str | None = None
        self.linger = 0.0
        self.store: Store | None = None
        self.ids = [f"dtesn-{KIND}-{i}" for i in range(1, membranes + 1)]
        self.rate = rate
        self.view = view or ProgressView()
        self.rec = Recorder()
        self.marks = Marks()
        self._t0 = time.monotonic()
        args = ["--levels", str(LEVELS), "--seed", str(SEED), "--monitors", "process"]
        args += ["--last-known-good", "none"]
        if redis_url:
            args += ["--redis", redis_url]
        env = {
            "DTESN_DEGRADATION_CHECK_INTERVAL": "0.2",
            "DTESN_DEGRADATION_RECOVERY_DELAY": "0.8",
            "DTESN_SERVICE_HEALTH_CHECK_INTERVAL": "0.5",
            "DTESN_SERVICE_HEALTH_CHECK_TIMEOUT": "0.5",
            "DTESN_SERVICE_MAX_FAILURES": "2",
        }
        self.fleet = Fleet(self.ids, kind=KIND, args=args, env=env)
        self.breaker_config = CircuitBreakerConfig(
            failure_threshold=3,
            timeout=2.0,
            half_open_max_calls=2,
            success_threshold=2,
            request_timeout=2.0,
            slow_call_threshold=0.25,
            slow_call_rate_threshold=0.5,
            minimum_throughput=5,
            window_size=10,
        )
        self.breakers: dict[str, CircuitBreaker] = {}
        self.breaker_state: dict[str, str] = {}
        self.levels: dict[str, str] = dict.fromkeys(self.ids, "normal")
        self.discovery: ServiceDiscovery | None = None
        self.config: ConfigurationManager | None = None
        self.client: ServiceClient | None = None
        self.traffic: Traffic | None = None
        self._watch: asyncio.Task[None] | None = None
        self._closing = False
        self._pushes: set[asyncio.Task[None]] = set()

    # --- time and output ----------------------------------------------------------------

    def t(self) -> float:
        return time.monotonic() - self._t0

    def say(self, text: str, style: str = "") -> None:
        self.view.event(self.t(), text, style)

    def note(self, kind: str, subject: str, detail: str, style: str = "") -> None:
        self.rec.event(Event(self.t(), kind, subject, detail))
        self.say(f"{subject}: {detail}", style)

    async def until(self, condition: Callable[[], bool], within: float) -> float | None:
        """Wait (real time, bounded) until ``condition()``; its time, or None."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if condition():
                return self.t()
            await asyncio.sleep(0.05)
        return self.t() if condition() else None

    # --- the phases ---------------------------------------------------------------------

    def healthy(self) -> set[str]:
        assert self.discovery is not None
        return {
            sid
            for sid, h in self.discovery.service_health.items()
            if h.status == ServiceStatus.HEALTHY
        }

    def endpoint(self, mid: str, port: int) -> ServiceEndpoint:
        return ServiceEndpoint(
            service_id=mid,
            service_type=ServiceType.DTESN_MEMBRANE,
            host="127.0.0.1",
            port=port,
            metadata={"membrane_type": KIND, "capacity": 1000, "levels": LEVELS},
        )

    def serving(self) -> set[str]:
        """Membranes healthy in discovery with their breaker closed."""
        return {m for m in self.healthy() if self.breaker_state.get(m) == "closed"}
