"""OpenTelemetry spans for the request path, free when OpenTelemetry is absent.

The request path opens one span per step — :data:`SPAN_DISCOVER`, :data:`SPAN_PICK`,
:data:`SPAN_BREAKER`, :data:`SPAN_CALL`, :data:`SPAN_RETRY` — with :func:`span`, and
carries the W3C trace context (``traceparent``/``tracestate`` headers) to the services it
calls with :func:`trace_headers`; a service continues the trace with
:func:`server_span` or the aiohttp :func:`tracing_middleware`.

Spans are recorded only when the ``opentelemetry-api`` package is installed *and* a
tracer provider is configured (the SDK's, via ``opentelemetry.trace.set_tracer_provider``
or :func:`set_tracer_provider` here). Otherwise :func:`span` returns one shared no-op
object and :func:`trace_headers` an empty dict: no allocation, no context switch, no
import of OpenTelemetry on the hot path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, Final

from aiohttp import web

try:  # the optional extra
    from opentelemetry import (  # type: ignore[import-not-found, unused-ignore]
        propagate as _propagate,
    )
    from opentelemetry import (  # type: ignore[import-not-found, unused-ignore]
        trace as _trace,
    )

    _installed = True
except ImportError:  # pragma: no cover - exercised in a subprocess test
    _propagate = None  # type: ignore[assignment, unused-ignore]
    _trace = None  # type: ignore[assignment, unused-ignore]
    _installed = False

__all__ = [
    "AVAILABLE",
    "NOOP_SPAN",
    "SPAN_BREAKER",
    "SPAN_CALL",
    "SPAN_DISCOVER",
    "SPAN_PICK",
    "SPAN_REQUEST",
    "SPAN_RETRY",
    "TRACER_NAME",
    "enabled",
    "extract_context",
    "server_span",
    "set_enabled",
    "set_tracer_provider",
    "span",
    "trace_headers",
    "tracing_middleware",
]

TRACER_NAME: Final = "backend_services"
SPAN_REQUEST: Final = "backend_services.request"
"""The whole resilient request (parent of the steps below)."""
SPAN_DISCOVER: Final = "backend_services.discover"
SPAN_PICK: Final = "backend_services.pick"
SPAN_BREAKER: Final = "backend_services.breaker"
SPAN_CALL: Final = "backend_services.call"
SPAN_RETRY: Final = "backend_services.retry"

AVAILABLE: Final[bool] = _installed
"""Whether ``opentelemetry-api`` is installed."""

_switched_on = True
_provider: Any = None  # an explicit provider (tests, embedding apps); None = the global one


class _NoopSpan:
    """Stands in for a span and its context manager when tracing is off."""

    __slots__ = ()

    def __enter__(self) -> _NoopSpan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        return None

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        return None

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        return None

    def record_exception(self, exception: BaseException) -> None:
        return None

    def is_recording(self) -> bool:
        return False


NOOP_SPAN: Final = _NoopSpan()


def set_enabled(on: bool) -> None:
    """Switch span recording and propagation on or off for this process."""
    global _switched_on
    _switched_on = bool(on)


def set_tracer_provider(provider: Any) -> None:
    """Use ``provider`` (an SDK ``TracerProvider``) instead of the global one; ``None``
    goes back to the global provider."""
    global _provider
    _provider = provider


_cached: tuple[Any, Any] = (None, None)  # (provider, its tracer or None)
_UNKNOWN: Final = object()


def _tracer() -> Any:
    """The tracer to use, or ``None`` when nothing would record (cached per provider)."""
    global _cached
    if not (AVAILABLE and _switched_on):
        return None
    provider = _provider
    if provider is None:
        # The global provider; reading the module global directly (when this version of
        # the API has it) keeps the no-provider check free of environment lookups.
        provider = getattr(_trace, "_TRACER_PROVIDER", _UNKNOWN)
        if provider is None:
            return None
        if provider is _UNKNOWN:
            provider = _trace.get_tracer_provider()
    cached_provider, tracer = _cached
    if provider is cached_provider:
        return tracer
    if isinstance(provider, (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider)):
        tracer = None
    else:
        tracer = provider.get_tracer(TRACER_NAME)
    _cached = (provider, tracer)
    return tracer


def enabled() -> bool:
    """True when spans are being recorded (installed, switched on, provider configured)."""
    return _tracer() is not None


def span(name: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """A context manager for a child span of the current one (or :data:`NOOP_SPAN`)."""
    tracer = _tracer()
    if tracer is None:
        return NOOP_SPAN
    cm: AbstractContextManager[Any] = tracer.start_as_current_span(
        name, attributes=_clean(attributes)
    )
    return cm


def trace_headers(headers: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """``headers`` (or a new dict) with the current trace context injected (W3C
    ``traceparent``); unchanged when tracing is off."""
    out: MutableMapping[str, str] = {} if headers is None else headers
    if _tracer() is not None:
        _propagate.inject(out)
    return out


def extract_context(headers: Mapping[str, str]) -> Any:
    """The OpenTelemetry context carried by incoming ``headers`` (``None`` when off)."""
    if _tracer() is None:
        return None
    return _propagate.extract(headers)


@contextmanager
def _server_span(tracer: Any, name: str, headers: Mapping[str, str], attrs: Any) -> Iterator[Any]:
    ctx = _propagate.extract(headers)
    with tracer.start_as_current_span(
        name, context=ctx, kind=_trace.SpanKind.SERVER, attributes=attrs
    ) as current:
        yield current


def server_span(
    name: str, headers: Mapping[str, str], attributes: Mapping[str, Any] | None = None
) -> AbstractContextManager[Any]:
    """A server span continuing the trace whose context ``headers`` carry."""
    tracer = _tracer()
    if tracer is None:
        return NOOP_SPAN
    return _server_span(tracer, name, headers, _clean(attributes))


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not attributes:
        return None
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, (str, bool, int, float)):
            out[key] = value
        else:
            out[key] = getattr(value, "value", None) or str(value)
    return out


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp middleware: each request runs in a server span that continues the
    caller's trace (a plain pass-through when tracing is off)."""
    tracer = _tracer()
    if tracer is None:
        return await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else request.path
    attrs = {"http.request.method": request.method, "http.route": route, "url.path": request.path}
    with _server_span(tracer, f"{request.method} {route}", request.headers, attrs) as current:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            current.set_attribute("http.response.status_code", exc.status)
            raise
        current.set_attribute("http.response.status_code", response.status)
        return response
