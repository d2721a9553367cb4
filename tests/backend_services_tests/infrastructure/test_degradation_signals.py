"""Monitors built from circuit breakers and discovery health feed degradation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from backend_services.infrastructure.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerException,
)
from backend_services.infrastructure.degradation_signals import (
    open_breaker_share,
    unhealthy_share,
)
from backend_services.infrastructure.service_degradation import (
    DegradationLevel,
    Feature,
    FeaturePriority,
    ResourceThreshold,
    ResourceType,
    ServiceDegradationManager,
)
from backend_services.testing import FakeClock


async def fail() -> None:
    raise ConnectionError("dependency down")


async def trip(cb: CircuitBreaker) -> None:
    with pytest.raises((ConnectionError, CircuitBreakerException)):
        await cb.call(fail)


class TestBreakers:
    async def test_open_breakers_degrade_their_dependents(self) -> None:
        """Two of four real breakers open -> EXTERNAL_API usage 0.5; with a dependents
        scope only the feature needing the API is switched off."""
        clock = FakeClock()
        config = CircuitBreakerConfig(failure_threshold=1, timeout=60.0)
        breakers = {n: CircuitBreaker(n, config, redis_url=None, clock=clock) for n in "abcd"}
        monitor = open_breaker_share(breakers)
        assert monitor() == 0.0
        await trip(breakers["a"])
        await trip(breakers["b"])
        assert monitor() == 0.5
        assert open_breaker_share(list(breakers.values()))() == 0.5
        assert open_breaker_share([])() == 0.0

        m = ServiceDegradationManager(
            "shop",
            [
                ResourceThreshold(
                    ResourceType.EXTERNAL_API, 0.25, 0.5, 0.75, 1.0, scope="dependents"
                )
            ],
            check_interval=10,
            clock=clock,
            redis_url=None,
            builtin_monitors=False,
        )
        m.register_feature(
            Feature("pay", FeaturePriority.MEDIUM, resource_dependencies=["external_api"])
        )
        m.register_feature(Feature("browse", FeaturePriority.MEDIUM))
        m.register_resource_monitor(ResourceType.EXTERNAL_API, monitor, in_thread=False)
        await m.check_resources()
        assert m.current_level is DegradationLevel.NORMAL
        assert await m.is_feature_enabled("browse")
        assert not await m.is_feature_enabled("pay")
        await m.shutdown()


@dataclass
class Endpoint:
    service_type: Any


@dataclass
class Health:
    status: str


class Discovery:
    """The two documented read-only views of ServiceDiscovery."""

    def __init__(self, entries: dict[str, tuple[str, str]]) -> None:
        self.services = {k: Endpoint(t) for k, (t, _) in entries.items()}
        self.service_health = {k: Health(s) for k, (_, s) in entries.items()}


class TestDiscovery:
    def test_unhealthy_share_by_type(self) -> None:
        """Share of checked instances that failed, per type; starting/unknown left out."""
        d = Discovery(
            {
                "c1": ("cache_service", "healthy"),
                "c2": ("cache_service", "unhealthy"),
                "c3": ("cache_service", "starting"),
                "m1": ("dtesn_membrane", "unhealthy"),
            }
        )
        assert unhealthy_share(d, "cache_service")() == 0.5
        assert unhealthy_share(d)() == pytest.approx(2 / 3)
        assert unhealthy_share(d, "api_gateway")() == 0.0
