"""Circuit breakers shared by name: :class:`CircuitBreakerRegistry`, the process-wide
default registry, :func:`get_circuit_breaker` and the :func:`circuit_breaker` decorator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from ...breaker.config import CircuitBreakerConfig
from ...clock import Clock
from ...errors import ValidationError
from ...settings import UNSET, Unset, resolve_redis_url
from .breaker import CircuitBreaker

__all__ = [
    "CircuitBreakerRegistry",
    "circuit_breaker",
    "get_circuit_breaker",
    "get_default_registry",
]

P = ParamSpec("P")
R = TypeVar("R")


class CircuitBreakerRegistry:
    """Breakers shared by name. Asking again for a name returns the same breaker; asking
    with a different config (or fallback, or Redis URL) is an error, never ignored."""

    def __init__(self, redis_url: str | Unset | None = UNSET, *, clock: Clock | None = None):
        self._redis_url = redis_url
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    @property
    def breakers(self) -> Mapping[str, CircuitBreaker]:
        """Name -> breaker (read-only view)."""
        from types import MappingProxyType

        return MappingProxyType(self._breakers)

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __len__(self) -> int:
        return len(self._breakers)

    def get(self, name: str) -> CircuitBreaker | None:
        """The breaker called ``name``, or None."""
        return self._breakers.get(name)

    def get_or_create(
        self,
        name: str,
        config: CircuitBreakerConfig | None = None,
        fallback_function: Callable[..., Any] | None = None,
        *,
        redis_url: str | Unset | None = UNSET,
    ) -> CircuitBreaker:
        """The breaker called ``name``, created (not yet connected) if new."""
        existing = self._breakers.get(name)
        if existing is None:
            url = self._redis_url if isinstance(redis_url, Unset) else redis_url
            cb = CircuitBreaker(name, config, url, fallback_function, clock=self._clock)
            self._breakers[name] = cb
            return cb
        if config is not None and config != existing.config:
            raise ValidationError(
                "config",
                config,
                f"the config circuit breaker {name!r} already has ({existing.config!r}); "
                "one name, one config",
            )
        if fallback_function is not None and fallback_function is not existing.fallback_function:
            raise ValidationError(
                "fallback_function",
                fallback_function,
                f"the fallback circuit breaker {name!r} already has "
                f"({existing.fallback_function!r})",
            )
        if not isinstance(redis_url, Unset) and resolve_redis_url(redis_url) != existing.redis_url:
            raise ValidationError(
                "redis_url", redis_url, f"the Redis URL circuit breaker {name!r} already uses"
            )
        return existing

    async def get_or_create_circuit_breaker(
        self,
        name: str,
        config: CircuitBreakerConfig | None = None,
        fallback_function: Callable[..., Any] | None = None,
    ) -> CircuitBreaker:
        """Like :meth:`get_or_create`, and connected to the shared state."""
        cb = self.get_or_create(name, config, fallback_function)
        await cb._connect_if_needed()
        return cb

    def get_all_metrics(self) -> dict[str, dict[str, Any]]:
        """Name -> ``get_metrics()`` of every breaker."""
        return {name: cb.get_metrics() for name, cb in self._breakers.items()}

    async def reset_all(self) -> None:
        """Reset every breaker (fleet-wide for shared ones)."""
        for cb in list(self._breakers.values()):
            await cb.reset()

    async def close(self) -> None:
        """Disconnect every breaker from the shared state."""
        for cb in list(self._breakers.values()):
            await cb.close()

    shutdown = close


_DEFAULT_REGISTRY: CircuitBreakerRegistry | None = None


def get_default_registry() -> CircuitBreakerRegistry:
    """The process-wide registry behind :func:`get_circuit_breaker` and the decorator."""
    global _DEFAULT_REGISTRY
    if _DEFAULT_REGISTRY is None:
        _DEFAULT_REGISTRY = CircuitBreakerRegistry()
    return _DEFAULT_REGISTRY


async def get_circuit_breaker(
    name: str,
    config: CircuitBreakerConfig | None = None,
    fallback_function: Callable[..., Any] | None = None,
    redis_url: str | Unset | None = UNSET,
) -> CircuitBreaker:
    """The default registry's breaker called ``name``, connected to shared state."""
    cb = get_default_registry().get_or_create(name, config, fallback_function, redis_url=redis_url)
    await cb._connect_if_needed()
    return cb


def circuit_breaker(
    name: str,
    config: CircuitBreakerConfig | None = None,
    fallback_function: Callable[..., Any] | None = None,
    redis_url: str | Unset | None = UNSET,
    *,
    registry: CircuitBreakerRegistry | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: calls of the decorated function (async or sync) go through the breaker
    ``name`` of the default registry (or ``registry``). ``fallback_function`` applies to
    this function's calls (it gets their arguments). The breaker connects to shared
    state in the background on first use."""
    reg = registry if registry is not None else get_default_registry()
    cb = reg.get_or_create(name, config, redis_url=redis_url)

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        return cb.decorate(func, fallback_function)

    return decorate
