"""The public API: every public name is re-exported from ``backend_services``."""

from __future__ import annotations

import importlib

import pytest

import backend_services

COMPONENT_MODULES = [
    "backend_services.infrastructure.service_discovery",
    "backend_services.infrastructure.circuit_breaker",
    "backend_services.infrastructure.service_degradation",
    "backend_services.infrastructure.config_manager",
    "backend_services.errors",
    "backend_services.client",
    "backend_services.balancing",
]


def test_all_lists_each_name_once() -> None:
    """__all__ lists each name once (ruff keeps it sorted)."""
    names = list(backend_services.__all__)
    assert len(names) == len(set(names))


def test_every_name_in_all_resolves() -> None:
    """Each name in __all__ is an attribute of the package."""
    missing = [n for n in backend_services.__all__ if not hasattr(backend_services, n)]
    assert missing == []


@pytest.mark.parametrize("module_name", COMPONENT_MODULES)
def test_component_public_names_are_re_exported(module_name: str) -> None:
    """Every name a component module lists in __all__ is in the package's __all__,
    and is the same object."""
    module = importlib.import_module(module_name)
    assert module.__all__, f"{module_name} has an empty __all__"
    for name in module.__all__:
        assert name in backend_services.__all__, f"{module_name}.{name} is not re-exported"
        assert getattr(backend_services, name) is getattr(module, name)


def test_api_contract_names_are_present() -> None:
    """The names API.md pins are importable from the package."""
    pinned = {
        "ServiceType",
        "ServiceStatus",
        "ServiceEndpoint",
        "ServiceHealth",
        "ServiceDiscovery",
        "CircuitState",
        "CircuitBreakerConfig",
        "CircuitBreaker",
        "CircuitBreakerException",
        "CircuitBreakerRegistry",
        "get_circuit_breaker",
        "circuit_breaker",
        "DegradationLevel",
        "FeaturePriority",
        "ResourceType",
        "Feature",
        "ResourceThreshold",
        "ServiceDegradationManager",
        "GlobalDegradationManager",
        "get_global_degradation_manager",
        "ConfigSource",
        "ConfigurationManager",
        "get_config_manager",
        "BackendServicesError",
    }
    assert pinned <= set(backend_services.__all__)


def test_enums_have_lower_case_values() -> None:
    """Enum values are the lower-case strings that metrics dicts hold."""
    for enum_name in (
        "ServiceType",
        "ServiceStatus",
        "CircuitState",
        "DegradationLevel",
        "FeaturePriority",
        "ResourceType",
        "ConfigSource",
    ):
        for member in getattr(backend_services, enum_name):
            assert member.value == member.value.lower(), f"{enum_name}.{member.name}"


def test_severity_enums_compare_by_severity() -> None:
    """DegradationLevel and FeaturePriority order by severity, not alphabetically."""
    level = backend_services.DegradationLevel
    assert level.NORMAL < level.PARTIAL < level.MINIMAL < level.EMERGENCY < level.OFFLINE
    assert sorted(level, reverse=True)[0] is level.OFFLINE
