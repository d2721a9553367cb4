"""The request path against real servers: retries on another endpoint, deadlines,
breakers, the retry budget, fallbacks, passive ejection, zones and panic mode."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any

import pytest

from backend_services.client import ServiceClient
from backend_services.discovery.model import ServiceEndpoint, ServiceType
from backend_services.discovery.outliers import OutlierPolicy
from backend_services.errors import (
    CircuitBreakerException,
    ServiceUnavailableError,
    ValidationError,
)
from backend_services.infrastructure.circuit_breaker import CircuitBreakerConfig
from backend_services.infrastructure.service_discovery import ServiceDiscovery
from backend_services.retry_budget import RetryBudget

from .servers import FlakyServer, wait_for

T = ServiceType.DTESN_MEMBRANE


class Fleet:
    def __init__(self, discovery: ServiceDiscovery) -> None:
        self.discovery = discovery
        self.servers: dict[str, FlakyServer] = {}

    async def add(self, name: str, **metadata: Any) -> FlakyServer:
        server = await FlakyServer(name).start()
        self.servers[name] = server
        await self.discovery.register_service(
            ServiceEndpoint(name, T, "127.0.0.1", server.port, metadata=metadata)
        )
        return server

    async def healthy(self, n: int) -> None:
        await wait_for(lambda: len(self.discovery.usable_endpoints(T)[0]) == n)


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    discovery = ServiceDiscovery(
        redis_url=None,
        health_check_interval=60.0,
        outlier_policy=OutlierPolicy(consecutive_failures=2, base_ejection_time=30.0),
    )
    await discovery.initialize()
    f = Fleet(discovery)
    yield f
    await discovery.shutdown()
    for server in f.servers.values():
        await server.stop()


async def test_failed_idempotent_call_is_retried_on_another_endpoint(fleet: Fleet) -> None:
    """A 503 from one replica is retried on the other; the caller sees only successes."""
    bad = await fleet.add("bad")
    await fleet.add("good")
    await fleet.healthy(2)
    bad.mode = "error"
    async with ServiceClient(fleet.discovery, T, balancer="round_robin") as client:
        responses = [await client.request("GET", "/work") for _ in range(6)]
        metrics = client.get_metrics()
    assert {r.json()["server"] for r in responses} == {"good"}
    assert bad.hits >= 1
    assert metrics["retries"] >= 1
    assert metrics["failures"] == 0


async def test_non_idempotent_calls_are_not_retried(fleet: Fleet) -> None:
    """A failed POST is not repeated elsewhere; the error carries the last response."""
    bad = await fleet.add("bad")
    await fleet.add("good")
    await fleet.healthy(2)
    bad.mode = "error"
    async with ServiceClient(
        fleet.discovery, T, balancer=_Fixed("bad"), breaker_factory=_no_breaker
    ) as client:
        with pytest.raises(ServiceUnavailableError) as info:
            await client.request("POST", "/work", json={"x": 1})
    assert fleet.servers["good"].hits == 0
    assert info.value.response.status == 503  # type: ignore[attr-defined]


async def test_refused_connection_moves_to_the_next_replica(fleet: Fleet) -> None:
    """A replica that went away (connection refused) costs a retry, not a failure."""
    gone = await fleet.add("gone")
    await fleet.add("alive")
    await fleet.healthy(2)
    await gone.stop()
    async with ServiceClient(fleet.discovery, T, balancer="round_robin") as client:
        results = [(await client.request("GET", "/")).json()["server"] for _ in range(4)]
    assert set(results) == {"alive"}


async def test_hanging_replica_is_abandoned_within_the_deadline(fleet: Fleet) -> None:
    """attempt_timeout cuts a hanging try; the retry succeeds well inside the deadline."""
    hang = await fleet.add("hang")
    await fleet.add("fast")
    await fleet.healthy(2)
    hang.mode = "hang"
    async with ServiceClient(
        fleet.discovery, T, balancer=_Fixed("hang", "fast"), attempt_timeout=0.2, timeout=5.0
    ) as client:
        started = time.monotonic()
        response = await client.request("GET", "/")
        elapsed = time.monotonic() - started
    assert response.json()["server"] == "fast"
    assert elapsed < 2.0


async def test_deadline_bounds_the_whole_call(fleet: Fleet) -> None:
    """When every replica hangs, the call fails after the caller's deadline."""
    for name in ("h1", "h2"):
        await fleet.add(name)
    await fleet.healthy(2)
    for server in fleet.servers.values():
        server.mode = "hang"
    async with ServiceClient(fleet.discovery, T) as client:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError):
            await client.request("GET", "/", timeout=0.3)
        assert time.monotonic() - started < 2.0


async def test_fallback_answers_when_nothing_is_available(fleet: Fleet) -> None:
    """No endpoint at all: the fallback gets the call's own arguments (sync or async)."""
    seen: list[tuple[Any, ...]] = []

    async def fallback(*args: Any, **kwargs: Any) -> str:
        seen.append((args, kwargs))
        return "cached"

    async def op(endpoint: ServiceEndpoint, x: int, *, y: int) -> str:
        raise AssertionError("never called")

    client = ServiceClient(fleet.discovery, T, fallback=fallback)
    assert await client.call(op, 1, y=2) == "cached"
    assert seen == [((1,), {"y": 2})]
    assert client.get_metrics()["fallbacks"] == 1
    bare = ServiceClient(fleet.discovery, T)
    with pytest.raises(ServiceUnavailableError, match="no dtesn_membrane endpoint"):
        await bare.call(op, 1, y=2)


async def test_open_breaker_skips_the_endpoint_without_spending_a_retry(fleet: Fleet) -> None:
    """A breaker that refuses moves the call on at once; no retry is counted."""
    await fleet.add("open")
    await fleet.add("closed")
    await fleet.healthy(2)
    async with ServiceClient(
        fleet.discovery,
        T,
        balancer=_Fixed("open", "closed"),
        max_attempts=1,
        breaker_factory=lambda ep: _Refusing() if ep.service_id == "open" else _Pass(),
    ) as client:
        response = await client.request("GET", "/")
        metrics = client.get_metrics()
    assert response.json()["server"] == "closed"
    assert metrics["breaker_rejections"] == 1
    assert metrics["retries"] == 0
    assert fleet.servers["open"].hits == 0


async def test_default_per_endpoint_breaker_opens_on_a_failing_replica() -> None:
    """The built-in per-endpoint CircuitBreaker opens after its threshold: later calls
    skip that replica without sending to it."""
    discovery = ServiceDiscovery(
        redis_url=None,
        health_check_interval=60.0,
        outlier_policy=OutlierPolicy(consecutive_failures=100),
    )
    fleet = Fleet(discovery)
    try:
        await discovery.initialize()
        bad = await fleet.add("bad")
        await fleet.add("good")
        await fleet.healthy(2)
        bad.mode = "error"
        async with ServiceClient(
            discovery,
            T,
            balancer=_Fixed("bad", "good"),
            breaker_config=CircuitBreakerConfig(failure_threshold=2, timeout=60.0),
        ) as client:
            for _ in range(6):
                assert (await client.request("GET", "/")).json()["server"] == "good"
            metrics = client.get_metrics()
        assert bad.hits == 2
        assert metrics["breaker_rejections"] == 4
        assert metrics["retries"] == 2
    finally:
        await discovery.shutdown()
        for server in fleet.servers.values():
            await server.stop()


async def test_spent_retry_budget_stops_retries(fleet: Fleet) -> None:
    """With an empty budget a failure is final."""
    bad = await fleet.add("bad")
    await fleet.add("good")
    await fleet.healthy(2)
    bad.mode = "error"
    async with ServiceClient(
        fleet.discovery,
        T,
        balancer=_Fixed("bad", "good"),
        retry_budget=RetryBudget(0.0, min_per_second=0.0),
        breaker_factory=_no_breaker,
    ) as client:
        with pytest.raises(ServiceUnavailableError):
            await client.request("GET", "/")
        assert client.get_metrics()["retries_denied"] == 1


async def test_failing_calls_eject_the_replica(fleet: Fleet) -> None:
    """Consecutive failed calls eject a replica: traffic stops going there."""
    bad = await fleet.add("bad")
    await fleet.add("good1")
    await fleet.add("good2")
    await fleet.healthy(3)
    bad.mode = "error"
    async with ServiceClient(
        fleet.discovery, T, balancer="round_robin", breaker_factory=_no_breaker
    ) as client:
        for _ in range(12):
            await client.request("GET", "/")
        hits_at_ejection = bad.hits
        for _ in range(12):
            await client.request("GET", "/")
    assert fleet.discovery.is_ejected("bad")
    assert hits_at_ejection == 2
    assert bad.hits == hits_at_ejection
    assert fleet.discovery.get_metrics()["ejected_endpoints"] == 1


async def test_zone_preference_with_spill_over(fleet: Fleet) -> None:
    """Calls stay in the preferred zone, and spill over when it has no usable replica."""
    near = await fleet.add("near", zone="a")
    await fleet.add("far", zone="b")
    await fleet.healthy(2)
    async with ServiceClient(fleet.discovery, T, prefer="a", breaker_factory=_no_breaker) as c:
        assert {(await c.request("GET", "/")).json()["server"] for _ in range(5)} == {"near"}
        await near.stop()
        assert (await c.request("GET", "/")).json()["server"] == "far"


async def test_panic_mode_spreads_over_all_replicas() -> None:
    """With most replicas failing health checks, traffic goes to all of them (panic)."""
    discovery = ServiceDiscovery(
        redis_url=None, health_check_interval=0.05, max_consecutive_failures=1
    )
    fleet = Fleet(discovery)
    try:
        await discovery.initialize()
        for name in ("p1", "p2", "p3", "p4"):
            server = await fleet.add(name)
            if name != "p4":
                server.health_mode = "error"
        await wait_for(lambda: discovery.get_metrics()["failed_health_checks"] >= 3)
        await wait_for(lambda: len(discovery.usable_endpoints(T)[0]) == 1)
        async with ServiceClient(
            discovery, T, balancer="round_robin", breaker_factory=_no_breaker
        ) as client:
            served = {(await client.request("GET", "/")).json()["server"] for _ in range(8)}
            assert client.get_metrics()["panics"] == 8
        assert served == {"p1", "p2", "p3", "p4"}
    finally:
        await discovery.shutdown()
        for server in fleet.servers.values():
            await server.stop()


async def test_slow_replica_gets_less_traffic_with_peak_ewma(fleet: Fleet) -> None:
    """Latency reported to peak-EWMA steers calls away from a slow replica."""
    slow = await fleet.add("slow")
    fast = await fleet.add("fast")
    await fleet.healthy(2)
    slow.mode = "slow"
    slow.delay = 0.05
    async with ServiceClient(fleet.discovery, T, breaker_factory=_no_breaker) as client:
        for _ in range(40):
            await client.request("GET", "/")
    assert fast.hits > 3 * slow.hits


# ---- tiny helpers implementing the client's protocols ---------------------------------


class _Fixed:
    """Picks endpoints in a fixed order (to make the scenario deterministic)."""

    def __init__(self, *order: str) -> None:
        self.order = order

    def pick(
        self, candidates: Sequence[ServiceEndpoint], exclude: Collection[str] = ()
    ) -> ServiceEndpoint | None:
        by_id = {c.service_id: c for c in candidates}
        for sid in self.order:
            if sid in by_id and sid not in exclude:
                return by_id[sid]
        return None

    def on_start(self, endpoint: ServiceEndpoint) -> None:
        pass

    def on_finish(self, endpoint: ServiceEndpoint, latency: float, ok: bool) -> None:
        pass


class _Pass:
    async def call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return await func(*args, **kwargs)


class _Refusing:
    async def call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        raise CircuitBreakerException("endpoint:open", "open", retry_after=30.0)


def _no_breaker(endpoint: ServiceEndpoint) -> _Pass:
    return _Pass()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout": 0}, "timeout"),
        ({"attempt_timeout": -1}, "attempt_timeout"),
        ({"panic_threshold": 2}, "panic_threshold"),
        ({"balancer": "fastest"}, "balancer"),
    ],
)
def test_client_settings_are_validated(kwargs: dict[str, Any], field: str) -> None:
    """Nonsense client settings raise ValidationError naming the field."""
    discovery = ServiceDiscovery(redis_url=None)
    with pytest.raises(ValidationError) as info:
        ServiceClient(discovery, T, **kwargs)
    assert info.value.field == field


def test_service_type_by_value() -> None:
    """The service type may be given by its value; an unknown one is an error."""
    discovery = ServiceDiscovery(redis_url=None)
    assert ServiceClient(discovery, "dtesn_membrane").service_type is T
    with pytest.raises(ValidationError, match="service_type"):
        ServiceClient(discovery, "nope")
