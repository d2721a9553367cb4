"""Fixtures for the control server: a running server on a free port, an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from backend_services.control.server import ControlServer
from backend_services.testing import FakeClock

from .fleet import Fleet

TOKEN = "t0ken-for-tests-0123456789"

StartServer = Callable[..., Awaitable[ControlServer]]


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock for rate limits, the watcher and heartbeats."""
    return FakeClock()


@pytest.fixture
async def fleet(clock: FakeClock) -> AsyncIterator[Fleet]:
    """A real small fleet on one in-memory store: two membranes with health servers,
    their breakers, a degradation manager, configuration, and the operations."""
    running = await Fleet(clock).start()
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def start_server(fleet: Fleet, clock: FakeClock) -> AsyncIterator[StartServer]:
    """Start control servers (closed at teardown); keyword arguments go to ControlServer."""
    servers: list[ControlServer] = []

    async def start(backend: Any = None, **kwargs: Any) -> ControlServer:
        kwargs.setdefault("clock", clock)
        server = ControlServer(backend or fleet.ops, **kwargs)
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client."""
    async with aiohttp.ClientSession() as session:
        yield session
