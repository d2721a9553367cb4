"""Resource monitors built from other components' signals.

Register them for DATABASE, CACHE or EXTERNAL_API (optionally with a threshold of
``scope="dependents"`` so only the features that need the dependency are switched off)::

    manager.register_resource_monitor(
        ResourceType.EXTERNAL_API, open_breaker_share(registry), in_thread=False
    )
    manager.register_resource_monitor(
        ResourceType.CACHE, unhealthy_share(discovery, ServiceType.CACHE_SERVICE),
        in_thread=False,
    )

Both read in-process state only (no I/O), so they are cheap enough to run inline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["BREAKER_STATE_WEIGHT", "open_breaker_share", "unhealthy_share"]

BREAKER_STATE_WEIGHT: Mapping[str, float] = {
    "closed": 0.0,
    "half_open": 0.5,
    "open": 1.0,
    "forced_open": 1.0,
    "isolated": 1.0,
}
"""How much each breaker state counts as 'unavailable' (other states count 0)."""


def _value(state: Any) -> str:
    return str(getattr(state, "value", state)).lower()


def _breaker_states(source: Any) -> list[str]:
    if hasattr(source, "get_all_metrics"):
        return [_value(m.get("circuit_state")) for m in source.get_all_metrics().values()]
    items: Iterable[Any] = source.values() if isinstance(source, Mapping) else source
    return [_value(b.state) for b in items]


def open_breaker_share(source: Any) -> Callable[[], float]:
    """A monitor: the share (0..1) of circuit breakers that are open (half-open counts
    half). ``source``: a breaker registry, a mapping of breakers, or an iterable."""

    def monitor() -> float:
        states = _breaker_states(source)
        if not states:
            return 0.0
        return sum(BREAKER_STATE_WEIGHT.get(s, 0.0) for s in states) / len(states)

    return monitor


def unhealthy_share(discovery: Any, service_type: Any = None) -> Callable[[], float]:
    """A monitor: the share (0..1) of known instances (of ``service_type``, if given)
    whose last health check failed. Instances still starting, stopping or unknown are
    left out; no checked instance at all reads as 0."""
    wanted = None if service_type is None else _value(service_type)

    def monitor() -> float:
        services = discovery.services
        healthy = unhealthy = 0
        for service_id, health in discovery.service_health.items():
            if wanted is not None:
                endpoint = services.get(service_id)
                if endpoint is None or _value(endpoint.service_type) != wanted:
                    continue
            status = _value(health.status)
            if status == "healthy":
                healthy += 1
            elif status == "unhealthy":
                unhealthy += 1
        total = healthy + unhealthy
        return unhealthy / total if total else 0.0

    return monitor
