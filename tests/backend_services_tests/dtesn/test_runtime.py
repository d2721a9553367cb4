"""A membrane wired to the library: configuration applied live, features gated by the
degradation level, its own resource use reported, registration with a shared registry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from backend_services.dtesn.monitors import ResourceReadings
from backend_services.dtesn.runtime import MembraneRuntime
from backend_services.dtesn.service import MembraneOptions, sample_inputs
from backend_services.infrastructure.service_discovery import (
    ServiceDiscovery,
    ServiceStatus,
    ServiceType,
)
from backend_services.testing import FakeClock

Factory = Callable[..., Any]


@pytest.fixture
async def runtime(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Factory]:
    monkeypatch.setenv("DTESN_DEGRADATION_CHECK_INTERVAL", "1")
    monkeypatch.setenv("DTESN_DEGRADATION_RECOVERY_DELAY", "2")
    started: list[MembraneRuntime] = []

    async def factory(clock: FakeClock | None = None, **kwargs: Any) -> MembraneRuntime:
        redis_url = kwargs.pop("redis_url", None)
        options = MembraneOptions(enable_faults=True, **kwargs)
        rt = MembraneRuntime(
            options,
            redis_url=redis_url,
            monitors="pressure",
            last_known_good=None,
            clock=clock,
        )
        await rt.start()
        started.append(rt)
        return rt

    yield factory
    for rt in started:
        await rt.stop()


async def _process(http: aiohttp.ClientSession, rt: MembraneRuntime) -> dict[str, Any]:
    async with http.post(
        f"{rt.service.url}/process", json={"inputs": sample_inputs(4, 8), "debug": True}
    ) as resp:
        assert resp.status == 200
        return dict(await resp.json())


class TestConfiguration:
    async def test_admin_config_goes_through_the_configuration_manager(
        self, runtime: Factory, http: aiohttp.ClientSession
    ):
        """In memory, POST /admin/config becomes a versioned change applied by callback."""
        rt = await runtime(membrane_id="cfg-1", levels=4)
        before = rt.config.version
        async with http.post(
            f"{rt.service.url}/admin/config", json={"membrane_depth": 2, "processing_timeout": 3}
        ) as resp:
            assert resp.status == 200
        assert rt.config.version == before + 1
        assert await rt.config.get_config("membrane_depth") == 2
        assert (rt.service.depth, rt.service.processing_timeout) == (2, 3.0)
        assert (await _process(http, rt))["depth"] == 2

    async def test_a_change_made_on_the_manager_applies_live(self, runtime: Factory):
        """set_config on the membrane's manager changes the depth without a restart."""
        rt = await runtime(membrane_id="cfg-2", levels=3)
        await rt.config.set_config("membrane_depth", 1)
        await rt.config.drain()
        assert rt.service.depth == 1

    async def test_invalid_values_are_refused_by_the_validator(
        self, runtime: Factory, http: aiohttp.ClientSession
    ):
        """A depth beyond the reservoir is rejected by the manager's validator too."""
        rt = await runtime(membrane_id="cfg-3", levels=3)
        with pytest.raises(ValueError, match="membrane_depth"):
            await rt.config.set_config("membrane_depth", 7)
        assert rt.service.depth == 3


class TestDegradation:
    async def test_pressure_switches_features_off_and_recovery_brings_them_back(
        self, runtime: Factory, http: aiohttp.ClientSession
    ):
        """At EMERGENCY the membrane answers at depth 1 without debug; it recovers stepwise."""
        clock = FakeClock()
        rt = await runtime(clock=clock, membrane_id="deg-1", levels=4)
        assert (await _process(http, rt))["depth"] == 4
        rt.service.faults = rt.service.faults.__class__(pressure=0.93)
        await clock.advance(1.0)
        assert rt.degradation.current_level.value == "emergency"
        out = await _process(http, rt)
        assert (out["depth"], out["degraded"]) == (1, True)
        assert "unavailable" in out["debug"]
        async with http.get(f"{rt.service.url}/health") as resp:
            health = await resp.json()
        assert health["degradation_level"] == "emergency"
        assert health["features"] == {
            "core_processing": True,
            "advanced_analytics": False,
            "debug_interface": False,
        }
        rt.service.faults = rt.service.faults.__class__()
        levels = []
        for _ in range(12):
            await clock.advance(1.0)
            if not levels or levels[-1] != rt.degradation.current_level.value:
                levels.append(rt.degradation.current_level.value)
        assert levels == ["emergency", "minimal", "partial", "normal"]
        assert (await _process(http, rt))["depth"] == 4

    async def test_offline_fails_health_and_refuses_work(
        self, runtime: Factory, http: aiohttp.ClientSession
    ):
        """At OFFLINE health is 503 (discovery routes around it) and /process is 503."""
        clock = FakeClock()
        rt = await runtime(clock=clock, membrane_id="deg-2")
        rt.service.faults = rt.service.faults.__class__(pressure=0.99)
        await clock.advance(1.0)
        async with http.get(f"{rt.service.url}/health") as resp:
            assert resp.status == 503
            assert "offline" in (await resp.json())["reason"]
        async with http.post(
            f"{rt.service.url}/process", json={"inputs": sample_inputs(2, 8)}
        ) as resp:
            assert resp.status == 503

    async def test_own_resource_use_is_reported(
        self, runtime: Factory, http: aiohttp.ClientSession
    ):
        """/metrics carries the process's own memory and the manager's readings."""
        clock = FakeClock()
        rt = await runtime(clock=clock, membrane_id="deg-3")
        rt.service.faults = rt.service.faults.__class__(pressure=0.5)
        await clock.advance(1.0)
        async with http.get(f"{rt.service.url}/metrics?format=json") as resp:
            data = await resp.json()
        assert data["resources"]["rss_bytes"] > 0
        assert data["resource_usage"] == {"cpu": 0.5, "memory": 0.5}
        async with http.get(f"{rt.service.url}/metrics") as resp:
            text = await resp.text()
        assert (
            'dtesn_membrane_requests_total{kind="memory",membrane="deg-3",outcome="ok"} 0' in text
        )
        assert "backend_services_degradation" in text  # the library's own collectors too


class TestReadings:
    def test_process_cpu_is_measured_by_deltas_after_priming(self):
        """Process mode measures CPU between readings, never below the pressure."""
        clock = FakeClock()
        pressure = [0.0]
        readings = ResourceReadings("process", lambda: pressure[0], clock=clock)
        readings.prime()
        assert 0.0 <= readings.cpu() <= 1.0
        pressure[0] = 0.8
        assert readings.cpu() >= 0.8
        assert readings.memory() >= 0.8

    def test_unknown_mode_is_refused(self):
        """Only system, process and pressure exist."""
        with pytest.raises(ValueError, match="system, process, pressure"):
            ResourceReadings("cgroup", lambda: 0.0)  # type: ignore[arg-type]


class TestRegistration:
    async def test_registers_with_shared_discovery_and_deregisters_on_stop(
        self, runtime: Factory, redis_url: str
    ):
        """With Redis the membrane registers itself (seen healthy elsewhere) and leaves."""
        discovery = ServiceDiscovery(
            redis_url=redis_url, health_check_interval=0.2, health_check_timeout=1.0
        )
        await discovery.initialize()
        try:
            rt = await runtime(membrane_id="reg-1", redis_url=redis_url)
            assert rt.registered
            for _ in range(200):  # registration travels through Redis: bounded real wait
                health = discovery.service_health.get("reg-1")
                if health is not None and health.status == ServiceStatus.HEALTHY:
                    break
                await asyncio.sleep(0.025)
            found = await discovery.discover_services(ServiceType.DTESN_MEMBRANE)
            assert [e.service_id for e in found] == ["reg-1"]
            assert found[0].metadata["membrane_type"] == "memory"
            await rt.stop()
            for _ in range(200):
                if "reg-1" not in discovery.services:
                    break
                await asyncio.sleep(0.025)
            assert "reg-1" not in discovery.services
        finally:
            await discovery.shutdown()
