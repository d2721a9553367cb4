"""What a :class:`~backend_services.client.ServiceClient` is plugged into: where its
endpoints come from and where outcomes go (:class:`EndpointSource`, a
:class:`~backend_services.infrastructure.service_discovery.ServiceDiscovery`), and the
per-endpoint circuit breakers (:class:`CallGuard`, made by a :data:`BreakerFactory`; by
default :func:`default_breakers`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .clock import Clock
from .discovery.model import ServiceEndpoint, ServiceType
from .infrastructure.circuit_breaker import CircuitBreaker, CircuitBreakerConfig

__all__ = ["BreakerFactory", "CallGuard", "EndpointSource", "default_breakers"]


class EndpointSource(Protocol):
    """Where the client gets endpoints and reports outcomes (a ServiceDiscovery)."""

    def usable_endpoints(
        self, service_type: ServiceType
    ) -> tuple[Sequence[ServiceEndpoint], Sequence[ServiceEndpoint]]:
        """``(usable, everything)``: healthy and not ejected, and all instances."""
        ...

    def report_outcome(self, endpoint: ServiceEndpoint, ok: bool, latency: float) -> None:
        """The outcome of one real call (passive health checking)."""
        ...


class CallGuard(Protocol):
    """The per-endpoint circuit breaker, as the client uses it."""

    async def call(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``func`` if permitted; raise CircuitBreakerException when not."""
        ...


BreakerFactory = Callable[[ServiceEndpoint], CallGuard]


def default_breakers(
    config: CircuitBreakerConfig | None = None, *, clock: Clock | None = None
) -> BreakerFactory:
    """One in-process :class:`CircuitBreaker` per endpoint (``endpoint:<id>``), with
    ``config`` (the settings' defaults when ``None``)."""

    def make(endpoint: ServiceEndpoint) -> CallGuard:
        return CircuitBreaker(
            f"endpoint:{endpoint.service_id}", config, redis_url=None, clock=clock
        )

    return make
