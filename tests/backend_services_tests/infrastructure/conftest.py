"""Fixtures for the degradation fleet tests: a fake clock, one in-memory store that stands
for the fleet's Redis, and a factory of managers on that clock (shut down after). Test
files that define their own ``clock`` or ``store`` fixture override these."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from backend_services.infrastructure.service_degradation import ServiceDegradationManager
from backend_services.store.memory import MemoryStore
from backend_services.testing import FakeClock

Factory = Callable[..., ServiceDegradationManager]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(clock: FakeClock) -> AsyncIterator[MemoryStore]:
    s = MemoryStore(clock=clock)
    await s.initialize()
    yield s
    await s.close()


@pytest.fixture
async def make(clock: FakeClock) -> AsyncIterator[Factory]:
    made: list[ServiceDegradationManager] = []

    def factory(name: str, **kw: Any) -> ServiceDegradationManager:
        kw.setdefault("clock", clock)
        kw.setdefault("builtin_monitors", False)
        kw.setdefault("check_interval", 10.0)
        kw.setdefault("recovery_delay", 60.0)
        if "store" not in kw:
            kw.setdefault("redis_url", None)
        m = ServiceDegradationManager(name, **kw)
        made.append(m)
        return m

    yield factory
    for m in made:
        await m.shutdown()
