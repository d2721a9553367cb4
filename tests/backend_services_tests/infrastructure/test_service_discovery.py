"""ServiceDiscovery: the spec's example, settings, lifecycle, registration, discovery,
health transitions and callbacks (clock-driven), validation and metrics."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backend_services.discovery.model import ServiceHealth
from backend_services.errors import LifecycleError, ValidationError
from backend_services.infrastructure.service_discovery import (
    DiscoveryEvent,
    ServiceDiscovery,
    ServiceEndpoint,
    ServiceStatus,
    ServiceType,
)
from backend_services.testing import FakeClock
from tests.backend_services_tests.discovery.scripted import ScriptedProbe
from tests.backend_services_tests.discovery.servers import free_port
from tests.backend_services_tests.spec_examples import DISCOVERY as SPEC_EXAMPLE

M = ServiceType.DTESN_MEMBRANE


def _ep(sid: str = "a", service_type: ServiceType = M, port: int = 8081) -> ServiceEndpoint:
    return ServiceEndpoint(sid, service_type, "127.0.0.1", port)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=0.0)


@pytest.fixture
def probe() -> ScriptedProbe:
    return ScriptedProbe()


@pytest.fixture
async def discovery(clock: FakeClock, probe: ScriptedProbe) -> AsyncIterator[ServiceDiscovery]:
    d = ServiceDiscovery(
        redis_url=None,
        health_check_interval=10.0,
        max_consecutive_failures=3,
        clock=clock,
        probe=probe,
        check_jitter=0.0,
    )
    await d.initialize()
    yield d
    await d.shutdown()


def _spec_program(url: str, tail: str) -> str:
    body = SPEC_EXAMPLE.replace("redis://localhost:6379", url)
    return (
        "import asyncio\n\nasync def main():\n"
        + textwrap.indent(body, "    ")
        + textwrap.indent(tail, "    ")
        + "\nasyncio.run(main())\n"
    )


# ---- the spec's example ---------------------------------------------------------------


async def test_spec_example_runs_unchanged(redis_url: str) -> None:
    """The documented snippet runs as written (against a real server)."""
    namespace: dict[str, Any] = {}
    code = "async def _example():\n" + textwrap.indent(SPEC_EXAMPLE, "    ")
    code += "    return discovery, services\n"
    exec(compile(code.replace("redis://localhost:6379", redis_url), "spec", "exec"), namespace)
    discovery, services = await namespace["_example"]()
    try:
        assert services == []  # registered, STARTING: not discovered until healthy
        assert discovery.services["dtesn-memory-1"].metadata["capacity"] == 1000
        assert discovery.get_metrics()["store_backend"] == "redis"
    finally:
        await discovery.shutdown()


def test_program_without_shutdown_exits_cleanly(redis_url: str, tmp_path: Path) -> None:
    """A program that never calls shutdown() (like the spec's) ends without errors or
    warnings about unclosed sessions or pending tasks."""
    script = tmp_path / "example.py"
    script.write_text(_spec_program(redis_url, "print('discovered', len(services))\n"))
    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "discovered 0" in done.stdout
    for bad in ("Unclosed", "Task was destroyed", "Traceback", "never awaited"):
        assert bad not in done.stderr


async def test_unreachable_redis_starts_on_memory_without_hanging() -> None:
    """Nothing at the URL: initialize returns promptly, registration works in memory."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    discovery = ServiceDiscovery(redis_url=url, health_check_interval=30.0)
    try:
        await asyncio.wait_for(discovery.initialize(), timeout=10)
        assert await discovery.register_service(_ep())
        metrics = discovery.get_metrics()
        assert metrics["store_connected"] is False
        assert metrics["registered_services"] == 1
    finally:
        await asyncio.wait_for(discovery.shutdown(), timeout=20)


# ---- settings ---------------------------------------------------------------------------


def test_defaults() -> None:
    """The documented defaults apply when nothing is said."""
    d = ServiceDiscovery(redis_url=None)
    assert d.health_check_interval == 30.0
    assert d.health_check_timeout == 5.0
    assert d.max_consecutive_failures == 3
    assert d.service_ttl == 300


def test_argument_beats_environment_beats_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Precedence: constructor argument > DTESN_SERVICE_* > settings file > default."""
    config = tmp_path / "settings.json"
    config.write_text(
        json.dumps(
            {
                "service_discovery": {
                    "health_check_interval": 7,
                    "service_ttl": 90,
                    "max_consecutive_failures": 4,
                }
            }
        )
    )
    monkeypatch.setenv("DTESN_CONFIG_FILE", str(config))
    monkeypatch.setenv("DTESN_SERVICE_HEALTH_CHECK_INTERVAL", "12")
    d = ServiceDiscovery(redis_url=None)
    assert d.health_check_interval == 12.0
    assert d.service_ttl == 90.0
    assert d.max_consecutive_failures == 4
    monkeypatch.setenv("DTESN_SERVICE_MAX_FAILURES", "6")
    assert ServiceDiscovery(redis_url=None).max_consecutive_failures == 6
    assert (
        ServiceDiscovery(redis_url=None, max_consecutive_failures=2).max_consecutive_failures == 2
    )


def test_redis_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without redis_url, DTESN_SERVICE_REDIS_URL decides; None means memory only."""
    monkeypatch.setenv("DTESN_SERVICE_REDIS_URL", "redis://example.invalid:6379/0")
    assert ServiceDiscovery()._redis_url == "redis://example.invalid:6379/0"
    assert ServiceDiscovery(redis_url=None)._redis_url is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"health_check_interval": 0}, "health_check_interval"),
        ({"health_check_timeout": -1}, "health_check_timeout"),
        ({"max_consecutive_failures": 0}, "failure_threshold"),
        ({"service_ttl": 0}, "service_ttl"),
        ({"shards": 0}, "shards"),
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, Any], field: str) -> None:
    """Nonsense arguments raise ValidationError naming the field."""
    with pytest.raises(ValidationError) as info:
        ServiceDiscovery(redis_url=None, **kwargs)
    assert info.value.field == field


def test_malformed_environment_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed DTESN_SERVICE_* variable names itself and the value."""
    monkeypatch.setenv("DTESN_SERVICE_MAX_FAILURES", "three")
    with pytest.raises(ValidationError, match="DTESN_SERVICE_MAX_FAILURES"):
        ServiceDiscovery(redis_url=None)


# ---- registration and discovery --------------------------------------------------------


async def test_register_returns_before_the_first_check_which_happens_at_once(
    discovery: ServiceDiscovery, probe: ScriptedProbe, clock: FakeClock
) -> None:
    """A new instance is STARTING, probed immediately (not after an interval), and only
    discovered once healthy."""
    probe.ok["a"] = True
    assert await discovery.register_service(_ep("a"))
    health = await discovery.get_service_health("a")
    assert health is not None
    assert health.status is ServiceStatus.STARTING
    assert await discovery.discover_services(M) == []
    await clock.advance(0)
    assert probe.count("a") == 1
    assert [e.service_id for e in await discovery.discover_services(M)] == ["a"]


async def test_discovery_filters_by_type_and_health(
    discovery: ServiceDiscovery, probe: ScriptedProbe, clock: FakeClock
) -> None:
    """discover_services(type) gives healthy instances of that type; None gives all."""
    probe.set("down", False)
    for ep in (_ep("m1"), _ep("m2"), _ep("c1", ServiceType.CACHE_SERVICE), _ep("down")):
        await discovery.register_service(ep)
    await clock.advance(30)
    assert {e.service_id for e in await discovery.discover_services(M)} == {"m1", "m2"}
    assert {e.service_id for e in await discovery.discover_services()} == {"m1", "m2", "c1"}
    assert [e.service_id for e in await discovery.discover_services(ServiceType.CACHE_SERVICE)] == [
        "c1"
    ]
    assert discovery.get_metrics()["discovery_requests"] == 3


async def test_get_service_and_unknown_ids(discovery: ServiceDiscovery) -> None:
    """get_service/get_service_health return None for unknown ids; deregistering one
    returns False."""
    await discovery.register_service(_ep("a"))
    assert await discovery.get_service("a") == _ep("a")
    assert await discovery.get_service("nope") is None
    assert await discovery.get_service_health("nope") is None
    assert await discovery.deregister_service("nope") is False
    assert await discovery.deregister_service("a") is True
    assert await discovery.get_service("a") is None


async def test_reregistration_updates_the_endpoint(
    discovery: ServiceDiscovery, clock: FakeClock
) -> None:
    """Registering an id again replaces its endpoint (a moved instance) and re-checks it."""
    await discovery.register_service(_ep("a", port=1000))
    await clock.advance(0)
    await discovery.register_service(_ep("a", port=2000))
    assert discovery.services["a"].port == 2000
    await clock.advance(0)
    assert [e.port for e in await discovery.discover_services(M)] == [2000]


async def test_views_are_read_only(discovery: ServiceDiscovery) -> None:
    """services and service_health are live read-only mappings."""
    await discovery.register_service(_ep("a"))
    services, health = discovery.services, discovery.service_health
    assert list(services) == ["a"]
    assert isinstance(health["a"], ServiceHealth)
    with pytest.raises(TypeError):
        services["b"] = _ep("b")  # type: ignore[index]
    await discovery.register_service(_ep("b"))
    assert len(services) == 2


async def test_bad_input_is_rejected(discovery: ServiceDiscovery) -> None:
    """Only ServiceEndpoint objects are registered; ids must be strings."""
    with pytest.raises(ValidationError, match="endpoint"):
        await discovery.register_service({"service_id": "a"})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="service_id"):
        await discovery.deregister_service("")
    assert len(discovery.services) == 0


async def test_metrics_have_the_spec_keys(
    discovery: ServiceDiscovery, probe: ScriptedProbe, clock: FakeClock
) -> None:
    """get_metrics() has the spec's counters with the right values."""
    probe.set("b", False)
    await discovery.register_service(_ep("a"))
    await discovery.register_service(_ep("b"))
    await clock.advance(0)
    await discovery.discover_services(M)
    metrics = discovery.get_metrics()
    assert metrics["registered_services"] == 2
    assert metrics["healthy_services"] == 1
    assert metrics["failed_health_checks"] == 1
    assert metrics["discovery_requests"] == 1
    assert metrics["store_backend"] == "memory"


# ---- lifecycle -------------------------------------------------------------------------


async def test_async_with_and_use_after_shutdown(clock: FakeClock) -> None:
    """async with initializes and shuts down; use after shutdown is a LifecycleError."""
    async with ServiceDiscovery(redis_url=None, clock=clock, probe=ScriptedProbe()) as d:
        await d.register_service(_ep("a"))
    with pytest.raises(LifecycleError):
        await d.register_service(_ep("b"))
    with pytest.raises(LifecycleError):
        await d.initialize()
    await d.shutdown()  # idempotent


async def test_shutdown_deregisters_and_stops_every_task(clock: FakeClock) -> None:
    """shutdown() removes this process's registrations from the store and leaves no task."""
    d = ServiceDiscovery(redis_url=None, clock=clock, probe=ScriptedProbe())
    await d.initialize()
    await d.register_service(_ep("a"))
    store = d.store
    assert store is not None
    await d.shutdown()
    assert await store.get("sd:svc:a") is None
    assert await store.members("sd:idx:dtesn_membrane") == set()
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert [t.get_name() for t in leftover if "discovery" in t.get_name()] == []


async def test_register_initializes_on_demand(clock: FakeClock) -> None:
    """register_service before initialize() initializes first."""
    d = ServiceDiscovery(redis_url=None, clock=clock, probe=ScriptedProbe())
    try:
        assert await d.register_service(_ep("a"))
        assert d.get_metrics()["registered_services"] == 1
    finally:
        await d.shutdown()


# ---- health transitions and callbacks ----------------------------------------------------


async def test_unhealthy_after_max_failures_and_back(
    discovery: ServiceDiscovery, probe: ScriptedProbe, clock: FakeClock
) -> None:
    """Three failed checks (one per interval) take an instance out; one pass brings it back;
    each callback fires exactly once per transition."""
    ups: list[str] = []
    downs: list[str] = []
    discovery.add_service_up_callback(ups.append)
    discovery.add_service_down_callback(downs.append)
    await discovery.register_service(_ep("a"))
    await clock.advance(0)
    assert ups == ["a"]
    probe.set("a", False)
    await clock.advance(20)  # checks at t=10, 20: two failures
    assert (await discovery.get_service_health("a")).status is ServiceStatus.HEALTHY  # type: ignore[union-attr]
    await clock.advance(10)  # third failure
    health = await discovery.get_service_health("a")
    assert health is not None
    assert health.status is ServiceStatus.UNHEALTHY
    assert health.consecutive_failures == 3
    assert downs == ["a"]
    await clock.advance(30)  # more failures: no more callbacks
    assert downs == ["a"]
    probe.set("a", True)
    await clock.advance(10)
    assert ups == ["a", "a"]
    assert [e.service_id for e in await discovery.discover_services(M)] == ["a"]


async def test_async_and_failing_callbacks_are_isolated(
    discovery: ServiceDiscovery, clock: FakeClock
) -> None:
    """An async callback runs; a raising callback is counted and does not stop others."""
    seen: list[str] = []

    def broken(service_id: str) -> None:
        raise RuntimeError("callback bug")

    async def async_cb(service_id: str) -> None:
        await asyncio.sleep(0)
        seen.append(service_id)

    discovery.add_service_up_callback(broken)
    discovery.add_service_up_callback(async_cb)
    await discovery.register_service(_ep("a"))
    await clock.advance(0)
    assert seen == ["a"]
    assert discovery.get_metrics()["callback_failures"] == 1


async def test_listener_sees_rich_events(discovery: ServiceDiscovery, clock: FakeClock) -> None:
    """add_listener receives registered / status_changed / deregistered events."""
    events: list[DiscoveryEvent] = []
    discovery.add_listener(events.append)
    await discovery.register_service(_ep("a"))
    await clock.advance(0)
    await discovery.deregister_service("a")
    kinds = [(e.kind, e.service_id) for e in events if e.service_id == "a"]
    assert kinds == [("registered", "a"), ("status_changed", "a"), ("deregistered", "a")]
    assert events[1].new is ServiceStatus.HEALTHY


async def test_startup_grace_and_deregister_after(clock: FakeClock) -> None:
    """Failures in the grace period keep STARTING; an instance unhealthy for
    deregister_after seconds is removed from the registry."""
    probe = ScriptedProbe()
    probe.set("a", False)
    d = ServiceDiscovery(
        redis_url=None,
        health_check_interval=10.0,
        max_consecutive_failures=2,
        startup_grace=25.0,
        deregister_after=60.0,
        check_jitter=0.0,
        clock=clock,
        probe=probe,
    )
    await d.initialize()
    try:
        await d.register_service(_ep("a"))
        await clock.advance(20)  # checks at 0, 10, 20: all inside the grace
        assert (await d.get_service_health("a")).status is ServiceStatus.STARTING  # type: ignore[union-attr]
        await clock.advance(20)  # checks at 30, 40 count
        assert (await d.get_service_health("a")).status is ServiceStatus.UNHEALTHY  # type: ignore[union-attr]
        await clock.advance(70)
        assert await d.get_service("a") is None
        assert d.get_metrics()["deregistered_unhealthy"] == 1
        store = d.store
        assert store is not None
        assert await store.get("sd:svc:a") is None
    finally:
        await d.shutdown()
