"""Active checks against real HTTP servers: up, failing, hanging, down, TCP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from backend_services.discovery.model import ServiceEndpoint, ServiceType
from backend_services.discovery.probes import Prober
from backend_services.errors import ValidationError

from .servers import FlakyServer, free_port


@pytest.fixture
async def server() -> AsyncIterator[FlakyServer]:
    srv = await FlakyServer().start()
    yield srv
    await srv.stop()


def _ep(port: int, **kwargs: object) -> ServiceEndpoint:
    return ServiceEndpoint("s", ServiceType.DTESN_MEMBRANE, "127.0.0.1", port, **kwargs)  # type: ignore[arg-type]


async def test_healthy_server_passes(server: FlakyServer) -> None:
    """A 200 from /health passes, with a response time and the status code."""
    prober = Prober(timeout=2.0)
    try:
        result = await prober.check(_ep(server.port))
    finally:
        await prober.close()
    assert result.ok
    assert result.status_code == 200
    assert result.response_time_ms > 0
    assert server.health_hits == 1


async def test_server_error_fails(server: FlakyServer) -> None:
    """A 503 fails the check and says so."""
    server.mode = "error"
    prober = Prober(timeout=2.0)
    try:
        result = await prober.check(_ep(server.port))
    finally:
        await prober.close()
    assert not result.ok
    assert result.error == "HTTP 503"


async def test_hanging_server_times_out(server: FlakyServer) -> None:
    """A server that never answers fails after the per-check timeout."""
    server.mode = "hang"
    prober = Prober(timeout=0.2)
    try:
        result = await prober.check(_ep(server.port))
    finally:
        await prober.close()
    assert not result.ok
    assert result.error is not None
    assert "timed out" in result.error
    assert result.response_time_ms < 2000


async def test_stopped_server_is_refused() -> None:
    """Nothing listening: the check fails with a connection error."""
    prober = Prober(timeout=1.0)
    try:
        result = await prober.check(_ep(free_port()))
    finally:
        await prober.close()
    assert not result.ok
    assert result.error is not None


async def test_per_endpoint_health_path(server: FlakyServer) -> None:
    """metadata['health_path'] is the path requested."""
    prober = Prober(timeout=1.0, health_path="/healthz")
    try:
        await prober.check(_ep(server.port))
        await prober.check(_ep(server.port, metadata={"health_path": "/ready"}))
    finally:
        await prober.close()
    assert server.paths == ["/healthz", "/ready"]


async def test_tcp_protocol_uses_connect(server: FlakyServer) -> None:
    """A non-HTTP endpoint passes when the port accepts, fails when it does not."""
    prober = Prober(timeout=1.0)
    try:
        assert (await prober.check(_ep(server.port, protocol="tcp"))).ok
        assert not (await prober.check(_ep(free_port(), protocol="tcp"))).ok
    finally:
        await prober.close()
    assert server.health_hits == 0


async def test_concurrency_is_bounded(server: FlakyServer) -> None:
    """At most `concurrency` checks are in flight; one session serves them all."""
    server.mode = "slow"
    server.delay = 0.05
    prober = Prober(timeout=2.0, concurrency=3)
    try:
        results = await asyncio.gather(*(prober.check(_ep(server.port)) for _ in range(12)))
        session = prober._session
    finally:
        await prober.close()
    assert all(r.ok for r in results)
    assert server.peak_in_flight == 3
    assert session is not None


async def test_server_coming_back_passes_again(server: FlakyServer) -> None:
    """Down then up on the same port: fail, then pass (the session recovers)."""
    prober = Prober(timeout=1.0)
    try:
        assert (await prober.check(_ep(server.port))).ok
        await server.stop()
        assert not (await prober.check(_ep(server.port))).ok
        await server.start()
        assert (await prober.check(_ep(server.port))).ok
    finally:
        await prober.close()


def test_validation() -> None:
    """Bad prober settings are rejected naming the field."""
    with pytest.raises(ValidationError, match="health_check_timeout"):
        Prober(timeout=0)
    with pytest.raises(ValidationError, match="health_path"):
        Prober(health_path="health")
    with pytest.raises(ValidationError, match="check_concurrency"):
        Prober(concurrency=0)


async def test_closed_prober_opens_no_new_session(server: FlakyServer) -> None:
    """After close(), checks fail at once instead of opening a new session."""
    prober = Prober(timeout=1.0)
    assert (await prober.check(_ep(server.port))).ok
    await prober.close()
    result = await prober.check(_ep(server.port))
    assert not result.ok
    assert result.error == "health checker is closed"
    assert prober._session is None
