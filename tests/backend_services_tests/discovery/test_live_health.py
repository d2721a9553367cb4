"""Health checking real servers in real time: down, hanging, slow, and back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from backend_services.discovery.model import ServiceEndpoint, ServiceStatus, ServiceType
from backend_services.infrastructure.service_discovery import ServiceDiscovery

from .servers import FlakyServer, wait_for

M = ServiceType.DTESN_MEMBRANE


@pytest.fixture
async def server() -> AsyncIterator[FlakyServer]:
    srv = await FlakyServer("live").start()
    yield srv
    await srv.stop()


@pytest.fixture
async def discovery() -> AsyncIterator[ServiceDiscovery]:
    d = ServiceDiscovery(
        redis_url=None,
        health_check_interval=0.05,
        health_check_timeout=0.2,
        max_consecutive_failures=2,
    )
    await d.initialize()
    yield d
    await d.shutdown()


def _status(d: ServiceDiscovery, sid: str = "live") -> ServiceStatus | None:
    health = d.service_health.get(sid)
    return health.status if health is not None else None


async def test_server_going_down_and_coming_back(
    discovery: ServiceDiscovery, server: FlakyServer
) -> None:
    """Connection refused takes the instance out; the same port answering brings it back,
    with one down and one more up callback."""
    ups: list[str] = []
    downs: list[str] = []
    discovery.add_service_up_callback(ups.append)
    discovery.add_service_down_callback(downs.append)
    await discovery.register_service(ServiceEndpoint("live", M, "127.0.0.1", server.port))
    await wait_for(lambda: _status(discovery) is ServiceStatus.HEALTHY)
    await server.stop()
    await wait_for(lambda: _status(discovery) is ServiceStatus.UNHEALTHY)
    assert await discovery.discover_services(M) == []
    await server.start()
    await wait_for(lambda: _status(discovery) is ServiceStatus.HEALTHY)
    assert (ups, downs) == (["live", "live"], ["live"])


async def test_hanging_server_fails_by_timeout(
    discovery: ServiceDiscovery, server: FlakyServer
) -> None:
    """A health endpoint that never answers counts as failed after the check timeout."""
    await discovery.register_service(ServiceEndpoint("live", M, "127.0.0.1", server.port))
    await wait_for(lambda: _status(discovery) is ServiceStatus.HEALTHY)
    server.mode = "hang"
    await wait_for(lambda: _status(discovery) is ServiceStatus.UNHEALTHY)
    health = discovery.service_health["live"]
    assert "timed out" in health.metadata["last_error"]


async def test_slow_but_in_time_stays_healthy(
    discovery: ServiceDiscovery, server: FlakyServer
) -> None:
    """Slow answers inside the timeout are passes (response time is recorded)."""
    server.mode = "slow"
    server.delay = 0.05
    await discovery.register_service(ServiceEndpoint("live", M, "127.0.0.1", server.port))
    await wait_for(lambda: _status(discovery) is ServiceStatus.HEALTHY)
    await wait_for(lambda: server.health_hits >= 5)
    assert _status(discovery) is ServiceStatus.HEALTHY
    assert discovery.service_health["live"].response_time_ms >= 40


async def test_error_status_is_a_failure(discovery: ServiceDiscovery, server: FlakyServer) -> None:
    """503 from the health path counts as failed, 200 again as passed."""
    await discovery.register_service(ServiceEndpoint("live", M, "127.0.0.1", server.port))
    await wait_for(lambda: _status(discovery) is ServiceStatus.HEALTHY)
    server.mode = "error"
    await wait_for(lambda: _status(discovery) is ServiceStatus.UNHEALTHY)
    server.mode = "ok"
    await wait_for(lambda: _status(discovery) is ServiceStatus.HEALTHY)
