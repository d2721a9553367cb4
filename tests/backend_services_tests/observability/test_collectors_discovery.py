"""Prometheus families read from a real service discovery at scrape time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from backend_services.infrastructure.service_discovery import (
    ServiceDiscovery,
    ServiceEndpoint,
    ServiceType,
)
from backend_services.observability.collectors import metrics_text

from .promtext import parse, value


@pytest.fixture
async def health_server() -> AsyncIterator[int]:
    """A real HTTP server answering /health with 200."""

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_discovery_instances_health_latency_and_store(health_server: int) -> None:
    """Registered and healthy instances by type, per-instance health and check latency,
    counters, view age and the store connection state are exposed."""
    async with ServiceDiscovery(redis_url=None, health_check_interval=30.0) as discovery:
        await discovery.register_service(
            ServiceEndpoint("m1", ServiceType.DTESN_MEMBRANE, "127.0.0.1", health_server)
        )
        await discovery.register_service(
            ServiceEndpoint("m2", ServiceType.DTESN_MEMBRANE, "127.0.0.1", 1)
        )
        for _ in range(200):  # the first probes run at once, over real sockets
            health = discovery.service_health.get("m1")
            if health is not None and str(getattr(health.status, "value", "")) == "healthy":
                break
            await asyncio.sleep(0.02)
        fams = parse(metrics_text(discovery=discovery))
    assert value(fams, "backend_services_discovery_instances", service_type="dtesn_membrane") == 2
    assert (
        value(fams, "backend_services_discovery_healthy_instances", service_type="dtesn_membrane")
        == 1
    )
    assert value(fams, "backend_services_discovery_instance_up", service_id="m1") == 1
    assert value(fams, "backend_services_discovery_instance_up", service_id="m2") == 0
    latency = value(
        fams, "backend_services_discovery_health_check_latency_seconds", service_id="m1"
    )
    assert 0 <= latency < 5
    assert value(fams, "backend_services_discovery_health_checks_total") >= 2
    assert "backend_services_discovery_view_age_seconds" in fams
    assert value(fams, "backend_services_store_connected", component="discovery") == 1
