"""The request path of a :class:`~backend_services.client.ServiceClient`: discover ->
pick -> breaker -> call -> record, with retries, the deadline and the fallback.

:class:`RequestPath` holds the client's configuration, its per-endpoint breakers and
its counters, and runs one call (:meth:`RequestPath.call`, and the HTTP requests of
:class:`~backend_services.client.ServiceClient`) through the steps the client's module
docstring lists, plain or traced (a span per request, with the steps as children).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import aiohttp

from .balancing import Balancer, Filtered, make_balancer, panic_candidates
from .client_http import _BadStatus
from .client_interfaces import BreakerFactory, CallGuard, EndpointSource, default_breakers
from .clock import Clock, resolve_clock
from .discovery.model import ServiceEndpoint, ServiceType, coerce_service_type
from .errors import CircuitBreakerException, ServiceUnavailableError, ValidationError
from .infrastructure.circuit_breaker import CircuitBreakerConfig
from .log import get_logger
from .observability import tracing
from .retry_budget import RetryBudget

__all__ = ["RequestPath"]

T = TypeVar("T")
_log = get_logger("service_client")


class RequestPath:
    """Configuration, breakers, counters and the request path of a
    :class:`~backend_services.client.ServiceClient` (which documents the arguments)."""

    def __init__(
        self,
        discovery: EndpointSource,
        service_type: ServiceType | str,
        *,
        balancer: Balancer | str | None = None,
        prefer: str | Mapping[str, Any] | Callable[[ServiceEndpoint], bool] | None = None,
        min_matching: int = 1,
        max_attempts: int = 3,
        retry_budget: RetryBudget | None = None,
        timeout: float = 30.0,
        attempt_timeout: float | None = None,
        panic_threshold: float = 0.5,
        breaker_factory: BreakerFactory | None = None,
        breaker_config: CircuitBreakerConfig | None = None,
        fallback: Callable[..., Any] | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.service_type = coerce_service_type(service_type)
        self._source = discovery
        self._clock = resolve_clock(clock)
        inner = make_balancer(balancer, clock=self._clock)
        if prefer is not None:
            if isinstance(prefer, str):
                prefer = {"zone": prefer}
            inner = Filtered(inner, prefer, min_matching=min_matching)
        self.balancer: Balancer = inner
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValidationError("max_attempts", max_attempts, "an integer >= 1")
        if not timeout > 0:
            raise ValidationError("timeout", timeout, "seconds > 0")
        if attempt_timeout is not None and not attempt_timeout > 0:
            raise ValidationError("attempt_timeout", attempt_timeout, "seconds > 0, or None")
        if not 0.0 <= panic_threshold <= 1.0:
            raise ValidationError("panic_threshold", panic_threshold, "a fraction from 0 to 1")
        self.max_attempts = max_attempts
        self.retry_budget = retry_budget or RetryBudget()
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.panic_threshold = panic_threshold
        self._breaker_factory = breaker_factory or default_breakers(breaker_config, clock=clock)
        self._breakers: dict[str, tuple[ServiceEndpoint, CallGuard]] = {}
        self.fallback = fallback
        self._session = session
        self._own_session = session is None
        self.metrics: dict[str, int] = {
            "requests": 0,
            "successes": 0,
            "failures": 0,
            "attempts": 0,
            "retries": 0,
            "retries_denied": 0,
            "breaker_rejections": 0,
            "fallbacks": 0,
            "panics": 0,
            "no_endpoint": 0,
        }

    def get_metrics(self) -> dict[str, int]:
        """Counters of calls, attempts, retries, rejections and fallbacks."""
        return dict(self.metrics)

    # ---- the request path ------------------------------------------------------------

    def breaker_for(self, endpoint: ServiceEndpoint) -> CallGuard:
        """The circuit breaker of ``endpoint`` (created on first use)."""
        known = self._breakers.get(endpoint.service_id)
        if known is not None and known[0] == endpoint:
            return known[1]
        guard = self._breaker_factory(endpoint)
        self._breakers[endpoint.service_id] = (endpoint, guard)
        return guard

    def _prune_breakers(self, everything: Sequence[ServiceEndpoint]) -> None:
        live = {e.service_id for e in everything}
        for sid in [s for s in self._breakers if s not in live]:
            del self._breakers[sid]

    async def call(
        self,
        operation: Callable[..., Awaitable[T]],
        *args: Any,
        idempotent: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's deadline, retries included
        **kwargs: Any,
    ) -> T:
        """``await operation(endpoint, *args, **kwargs)`` on a chosen endpoint, with
        breakers, retries (idempotent calls only), the deadline and the fallback."""
        if not tracing.enabled():
            return await self._call(operation, args, kwargs, idempotent, timeout, None)
        traced_op = functools.partial(_traced_operation, operation)
        with tracing.span(tracing.SPAN_REQUEST, {"service.type": self.service_type.value}) as root:
            return await self._call(traced_op, args, kwargs, idempotent, timeout, root)

    async def _call(
        self,
        operation: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        idempotent: bool,
        timeout: float | None,  # noqa: ASYNC109 - the call's deadline, retries included
        root: Any,
    ) -> T:
        """The request path; ``root`` is the request span when traced, else ``None``."""
        traced = root is not None
        clock = self._clock
        metrics = self.metrics
        metrics["requests"] += 1
        started = clock.monotonic()
        deadline = started + (self.timeout if timeout is None else timeout)
        self.retry_budget.record_request(started)
        tried: set[str] = set()
        failures = 0
        last_error: BaseException | None = None
        source, balancer = self._source, self.balancer

        while True:
            if traced:
                with tracing.span(tracing.SPAN_DISCOVER) as step:
                    usable, everything = source.usable_endpoints(self.service_type)
                    candidates, panic = panic_candidates(usable, everything, self.panic_threshold)
                    step.set_attributes(
                        {
                            "endpoints.usable": len(usable),
                            "endpoints.total": len(everything),
                            "panic": panic,
                        }
                    )
            else:
                usable, everything = source.usable_endpoints(self.service_type)
                candidates, panic = panic_candidates(usable, everything, self.panic_threshold)
            if panic:
                metrics["panics"] += 1
            if traced:
                with tracing.span(tracing.SPAN_PICK, {"endpoints.tried": len(tried)}) as step:
                    endpoint = balancer.pick(candidates, tried)
                    if endpoint is not None:
                        step.set_attribute("endpoint.id", endpoint.service_id)
            else:
                endpoint = balancer.pick(candidates, tried)
            if endpoint is None:
                if not tried:
                    metrics["no_endpoint"] += 1
                break
            tried.add(endpoint.service_id)
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                last_error = TimeoutError(f"deadline of the call passed after {len(tried)} tries")
                break
            if self.attempt_timeout is not None:
                remaining = min(remaining, self.attempt_timeout)
            metrics["attempts"] += 1
            try:
                if traced:
                    result: T = await self._guarded_traced(
                        endpoint, operation, args, kwargs, remaining, len(tried), failures > 0
                    )
                else:
                    async with asyncio.timeout(remaining):
                        result = await self.breaker_for(endpoint).call(
                            self._attempt, endpoint, operation, args, kwargs
                        )
            except CircuitBreakerException as exc:
                metrics["breaker_rejections"] += 1
                last_error = exc
                continue
            except Exception as exc:
                last_error = exc
                failures += 1
                if not idempotent or failures >= self.max_attempts:
                    break
                if deadline - clock.monotonic() <= 0:
                    break
                if not self.retry_budget.try_retry(clock.monotonic()):
                    metrics["retries_denied"] += 1
                    if traced:
                        root.set_attribute("retry.denied", True)
                    break
                metrics["retries"] += 1
                continue
            metrics["successes"] += 1
            if len(self._breakers) > 2 * len(everything) + 16:
                self._prune_breakers(everything)
            if traced:
                root.set_attributes(
                    {
                        "outcome": "success",
                        "endpoint.id": endpoint.service_id,
                        "endpoints.tried": len(tried),
                    }
                )
            return result

        metrics["failures"] += 1
        if self.fallback is not None:
            metrics["fallbacks"] += 1
            if traced:
                root.set_attributes({"outcome": "fallback", "endpoints.tried": len(tried)})
            value = self.fallback(*args, **kwargs)
            if inspect.isawaitable(value):
                value = await value
            return value  # type: ignore[no-any-return]
        if traced:
            root.set_attributes({"outcome": "unavailable", "endpoints.tried": len(tried)})
        reason = (
            f"no {self.service_type.value} endpoint is available"
            if not tried
            else f"{self.service_type.value} call failed on {len(tried)} endpoint(s)"
            f" ({', '.join(sorted(tried))}): {last_error!r}"
        )
        error = ServiceUnavailableError(reason)
        if isinstance(last_error, _BadStatus):
            error.response = last_error.response  # type: ignore[attr-defined]
        raise error from last_error

    async def _guarded_traced(
        self,
        endpoint: ServiceEndpoint,
        operation: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        remaining: float,
        attempt: int,
        retry: bool,
    ) -> T:
        """One breaker-guarded attempt in a breaker span (a retry span after a failure);
        the span records the outcome: ``success``, ``failure`` or ``rejected``."""
        attrs: dict[str, Any] = {"attempt": attempt, "endpoint.id": endpoint.service_id}
        if retry:
            attrs["retry.attempt"] = attempt
        name = tracing.SPAN_RETRY if retry else tracing.SPAN_BREAKER
        with tracing.span(name, attrs) as step:
            try:
                async with asyncio.timeout(remaining):
                    result: T = await self.breaker_for(endpoint).call(
                        self._attempt, endpoint, operation, args, kwargs
                    )
            except CircuitBreakerException:
                step.set_attribute("outcome", "rejected")
                raise
            except BaseException:
                step.set_attribute("outcome", "failure")
                raise
            step.set_attribute("outcome", "success")
            return result

    async def _attempt(
        self,
        endpoint: ServiceEndpoint,
        operation: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        balancer, clock = self.balancer, self._clock
        balancer.on_start(endpoint)
        started = clock.monotonic()
        ok = False
        try:
            result = await operation(endpoint, *args, **kwargs)
            ok = True
            return result
        finally:
            latency = clock.monotonic() - started
            balancer.on_finish(endpoint, latency, ok)
            try:
                self._source.report_outcome(endpoint, ok, latency)
            except Exception as exc:  # pragma: no cover - reporting never breaks a call
                _log.exception("report_outcome_failed", error=repr(exc))


async def _traced_operation(
    operation: Callable[..., Awaitable[T]], endpoint: ServiceEndpoint, *args: Any, **kwargs: Any
) -> T:
    """``operation`` in a call span naming the endpoint."""
    attrs = {
        "endpoint.id": endpoint.service_id,
        "server.address": endpoint.host,
        "server.port": endpoint.port,
    }
    with tracing.span(tracing.SPAN_CALL, attrs):
        return await operation(endpoint, *args, **kwargs)
