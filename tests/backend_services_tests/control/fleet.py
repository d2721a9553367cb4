"""A real small fleet in one process, sharing one in-memory store.

Discovery with two membranes (real HTTP health servers on free ports), their circuit
breakers, a degradation manager and versioned configuration — the library's own
components — and :class:`FleetOperations` over the same store, as the control server
and the command-line tool use it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from backend_services.clock import Clock
from backend_services.control.operations import FleetOperations
from backend_services.infrastructure.circuit_breaker import CircuitBreaker
from backend_services.infrastructure.service_degradation import ServiceDegradationManager
from backend_services.infrastructure.service_discovery import (
    ServiceDiscovery,
    ServiceEndpoint,
    ServiceType,
)
from backend_services.store.memory import MemoryStore

CONFIG_SERVICE = "dtesn-service"


class HealthServer:
    """A real HTTP server whose /health answers 200 (or 503 once ``healthy`` is False)."""

    def __init__(self) -> None:
        self.healthy = True
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": self.healthy}, status=200 if self.healthy else 503)

    async def start(self) -> HealthServer:
        app = web.Application()
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Fleet:
    """The components of a small fleet and the operations over them."""

    def __init__(self, clock: Clock | None = None, *, health_interval: float = 5.0) -> None:
        self.clock = clock
        self.health_interval = health_interval
        self.store = MemoryStore(clock=clock)
        self.servers = [HealthServer(), HealthServer()]
        self.discovery = ServiceDiscovery(
            health_check_interval=health_interval,
            health_check_timeout=2.0,
            max_consecutive_failures=1,
            store=self.store,
            clock=clock,
            check_jitter=0.0,
        )
        self.breakers: dict[str, CircuitBreaker] = {}
        self.degradation = ServiceDegradationManager(
            CONFIG_SERVICE, store=self.store, clock=clock, builtin_monitors=False
        )
        self.degradation.register_resource_monitor("cpu", lambda: 0.25)
        self.ops = FleetOperations(store=self.store, config_service=CONFIG_SERVICE, clock=clock)

    async def start(self) -> Fleet:
        await self.store.initialize()
        for server in self.servers:
            await server.start()
        await self.discovery.initialize()
        for i, server in enumerate(self.servers, start=1):
            name = f"membrane-{i}"
            await self.discovery.register_service(
                ServiceEndpoint(name, ServiceType.DTESN_MEMBRANE, "127.0.0.1", server.port)
            )
            cb = CircuitBreaker(name, store=self.store, clock=self.clock)
            await cb.initialize()
            # a breaker is listed fleet-wide once its state has changed: open and close it
            await cb.force_state("forced_open")
            await cb.reset()
            self.breakers[name] = cb
        await self.degradation.initialize()
        await self.ops.initialize()
        await self.ops.set_config_value(CONFIG_SERVICE, "membrane_depth", 4, "initial depth")
        await self.ops.set_config_value(CONFIG_SERVICE, "processing_timeout", 30.0, "timeout")
        await self.wait_for_health("membrane-1", "healthy")
        await self.wait_for_health("membrane-2", "healthy")
        return self

    async def wait_for_health(self, service_id: str, status: str, within: float = 10.0) -> None:
        """Wait (really: health checks are real HTTP) until discovery shows ``status``."""
        for _ in range(int(within / 0.02)):
            rows = await self.ops.list_services()
            if any(r["service_id"] == service_id and r["status"] == status for r in rows):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{service_id} did not become {status}: {rows}")

    async def close(self) -> None:
        await self.ops.close()
        await self.degradation.shutdown()
        for cb in self.breakers.values():
            await cb.close()
        await self.discovery.shutdown()
        for server in self.servers:
            await server.close()
        await self.store.close()

    async def versions(self) -> list[dict[str, Any]]:
        return await self.ops.list_config_versions(CONFIG_SERVICE)
