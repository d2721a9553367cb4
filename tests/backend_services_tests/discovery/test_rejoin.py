"""An endpoint that was ejected by passive outlier detection while it was down rejoins
load balancing as soon as active health checks see it healthy again, and its open
breaker then gets its trial calls and closes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from backend_services.client import CallGuard, ServiceClient
from backend_services.discovery.model import ServiceEndpoint, ServiceType
from backend_services.discovery.outliers import OutlierDetector, OutlierPolicy
from backend_services.infrastructure.circuit_breaker import CircuitBreaker, CircuitBreakerConfig
from backend_services.infrastructure.service_discovery import ServiceDiscovery
from backend_services.testing import FakeClock

from .servers import FlakyServer, wait_for

T = ServiceType.DTESN_MEMBRANE


@pytest.fixture
async def discovery() -> AsyncIterator[ServiceDiscovery]:
    sd = ServiceDiscovery(
        redis_url=None,
        health_check_interval=0.1,
        health_check_timeout=0.5,
        max_consecutive_failures=1,
        check_jitter=0.0,
        outlier_policy=OutlierPolicy(consecutive_failures=1, base_ejection_time=300.0),
    )
    await sd.initialize()
    yield sd
    await sd.shutdown()


def test_readmit_ends_an_ejection_and_clears_the_failure_run() -> None:
    """readmit() ends a current ejection early, keeps the ejection count, and is a
    no-op (False) for an endpoint not ejected at that moment."""
    detector = OutlierDetector(OutlierPolicy(consecutive_failures=2, base_ejection_time=10.0))
    detector.record("a", False, 0.0, 3)
    assert detector.record("a", False, 0.0, 3) is not None
    assert detector.is_ejected("a", 1.0)
    assert detector.readmit("a", 1.0) is True
    assert not detector.is_ejected("a", 1.0)
    assert detector.ejected_count(1.0) == 0
    assert detector.times_ejected("a") == 1
    assert detector.record("a", False, 2.0, 3) is None  # the failure run starts again
    assert detector.readmit("a", 2.0) is False
    assert detector.readmit("unknown", 2.0) is False


async def test_restarted_endpoint_is_readmitted_and_its_breaker_closes(
    discovery: ServiceDiscovery,
) -> None:
    """A replica killed mid-traffic is ejected and its breaker opens; once it comes back
    and passes health checks it is usable again (not held out by the old ejection) and
    its breaker, its open time elapsed, gets a trial call, closes, and serves."""
    clock = FakeClock()
    config = CircuitBreakerConfig(
        failure_threshold=1, timeout=2.0, half_open_max_calls=1, success_threshold=1
    )
    breakers: dict[str, CircuitBreaker] = {}

    def make(endpoint: ServiceEndpoint) -> CallGuard:
        return breakers.setdefault(
            endpoint.service_id,
            CircuitBreaker(endpoint.service_id, config, redis_url=None, clock=clock),
        )

    servers = {name: await FlakyServer(name).start() for name in ("a", "b", "c")}
    try:
        for name, server in servers.items():
            await discovery.register_service(ServiceEndpoint(name, T, "127.0.0.1", server.port))
        await wait_for(lambda: len(discovery.usable_endpoints(T)[0]) == 3)
        b = servers["b"]
        async with ServiceClient(
            discovery, T, balancer="round_robin", breaker_factory=make
        ) as client:
            await b.stop()
            for _ in range(6):
                assert (await client.request("GET", "/")).status == 200
            assert discovery.is_ejected("b")
            assert breakers["b"].state.value == "open"
            await wait_for(lambda: discovery.service_health["b"].status.value != "healthy")

            await b.start()
            await wait_for(lambda: discovery.service_health["b"].status.value == "healthy")
            assert not discovery.is_ejected("b")
            assert "b" in {e.service_id for e in discovery.usable_endpoints(T)[0]}

            await clock.advance(2.5)
            hits = b.hits
            for _ in range(6):
                assert (await client.request("GET", "/")).status == 200
        assert b.hits > hits
        assert breakers["b"].state.value == "closed"
    finally:
        for server in servers.values():
            await server.stop()
