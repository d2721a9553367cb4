"""A health probe whose answers the test decides (for clock-driven tests, where the
behaviour under test is time, not the network)."""

from __future__ import annotations

import asyncio

from backend_services.discovery.model import ServiceEndpoint
from backend_services.discovery.probes import ProbeResult


class ScriptedProbe:
    """Answers ``ok`` per service id (default True) and records every check."""

    def __init__(self, name: str = "probe") -> None:
        self.name = name
        self.ok: dict[str, bool] = {}
        self.calls: list[str] = []

    def set(self, service_id: str, ok: bool) -> None:
        self.ok[service_id] = ok

    async def __call__(self, endpoint: ServiceEndpoint) -> ProbeResult:
        self.calls.append(endpoint.service_id)
        await asyncio.sleep(0)
        if self.ok.get(endpoint.service_id, True):
            return ProbeResult(True, 1.0, status_code=200)
        return ProbeResult(False, 1.0, "HTTP 503", 503)

    def count(self, service_id: str) -> int:
        return self.calls.count(service_id)
