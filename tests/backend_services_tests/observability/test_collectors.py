"""Prometheus families read from the real components at scrape time."""

from __future__ import annotations

import pytest

from backend_services.infrastructure.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerRegistry,
)
from backend_services.infrastructure.config_manager import ConfigurationManager
from backend_services.infrastructure.service_degradation import (
    DegradationLevel,
    ServiceDegradationManager,
)
from backend_services.observability.collectors import (
    breaker_families,
    metrics_text,
    register_components,
)
from backend_services.observability.metrics import Registry, render
from backend_services.testing import FakeClock

from .promtext import parse, value


async def _fail() -> None:
    raise ConnectionError("down")


async def _ok() -> str:
    return "ok"


async def test_breaker_calls_state_and_rates_are_exposed() -> None:
    """Calls by outcome, the current state as a state set, and the rates of a breaker."""
    clock = FakeClock()
    registry = CircuitBreakerRegistry(redis_url=None, clock=clock)
    cb = registry.get_or_create("membrane-1", CircuitBreakerConfig(failure_threshold=2))
    await cb.call(_ok)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await cb.call(_fail)
    with pytest.raises(Exception, match="membrane-1"):
        await cb.call(_ok)
    fams = parse(render(breaker_families(registry)))
    calls = "backend_services_circuit_breaker_calls_total"
    assert value(fams, calls, circuit="membrane-1", outcome="success") == 1
    assert value(fams, calls, circuit="membrane-1", outcome="failure") == 2
    assert value(fams, calls, circuit="membrane-1", outcome="rejected") == 1
    state = "backend_services_circuit_breaker_state"
    assert value(fams, state, circuit="membrane-1", state="open") == 1
    assert value(fams, state, circuit="membrane-1", state="closed") == 0
    rate = value(fams, "backend_services_circuit_breaker_failure_rate", circuit="membrane-1")
    assert rate == pytest.approx(cb.get_metrics()["failure_rate"])
    assert fams[calls].kind == "counter"


async def test_collection_is_lazy_and_follows_the_component() -> None:
    """A registered collector reads the breaker anew at each scrape (nothing is copied
    at registration, nothing is done per call)."""
    clock = FakeClock()
    cb = CircuitBreaker("lazy", redis_url=None, clock=clock)
    reg = Registry()
    register_components(reg, breakers=[cb])
    calls = "backend_services_circuit_breaker_calls_total"
    assert value(parse(render(reg)), calls, circuit="lazy", outcome="success") == 0
    await cb.call(_ok)
    await cb.call(_ok)
    assert value(parse(render(reg)), calls, circuit="lazy", outcome="success") == 2


async def test_degradation_level_resources_features_and_shedding() -> None:
    """Level (severity and state set), resource usage and feature counts are exposed."""
    clock = FakeClock()
    manager = ServiceDegradationManager(
        "dtesn-service", redis_url=None, clock=clock, builtin_monitors=False
    )
    manager.register_resource_monitor("cpu", lambda: 0.42)
    async with manager:
        await clock.advance(manager.check_interval)
        await manager.force_degradation(DegradationLevel.MINIMAL, reason="drill")
        fams = parse(metrics_text(degradation=manager))
    assert value(fams, "backend_services_degradation_level", service="dtesn-service") == 2
    state = "backend_services_degradation_state"
    assert value(fams, state, service="dtesn-service", level="minimal") == 1
    assert value(fams, state, service="dtesn-service", level="normal") == 0
    usage = value(
        fams, "backend_services_degradation_resource_usage", service="dtesn-service", resource="cpu"
    )
    assert usage == pytest.approx(0.42)
    assert value(fams, "backend_services_degradation_forced", service="dtesn-service") == 1
    assert "backend_services_degradation_shed_requests_total" in fams


async def test_metrics_text_joins_own_instruments_and_components() -> None:
    """metrics_text renders a process's own registry together with its components."""
    own = Registry()
    own.counter("dtesn_requests_total", "Requests.", ["outcome"]).labels(outcome="ok").inc(3)
    cb = CircuitBreaker("joined", redis_url=None, clock=FakeClock())
    fams = parse(metrics_text(own, breakers=cb))
    assert value(fams, "dtesn_requests_total", outcome="ok") == 3
    assert "backend_services_circuit_breaker_state" in fams


async def test_config_version_changes_and_rejections() -> None:
    """The config version in force, applied changes, rejected changes and key count."""
    manager = ConfigurationManager(
        "dtesn-service",
        redis_url=None,
        clock=FakeClock(),
        auto_reload=False,
        last_known_good=None,
        environ={},
    )
    manager.add_validator("membrane_depth", lambda v: isinstance(v, int) and 1 <= v <= 8)
    async with manager:
        await manager.set_config("membrane_depth", 3)
        await manager.set_config("processing_timeout", 10.0)
        with pytest.raises(ValueError, match="membrane_depth"):
            await manager.set_config("membrane_depth", 99)
        fams = parse(metrics_text(config=manager))
        version = manager.get_metrics()["version"]
    lab = {"service": "dtesn-service"}
    assert value(fams, "backend_services_config_version", **lab) == version
    assert version >= 2
    assert value(fams, "backend_services_config_changes_total", **lab) >= 2
    assert value(fams, "backend_services_config_entries", **lab) >= 2
    rejected = "backend_services_config_rejected_changes_total"
    assert value(fams, rejected, source="api", **lab) == 1
    assert value(fams, rejected, source="file", **lab) == 0
