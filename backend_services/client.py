"""The resilient request path: discover -> pick -> breaker -> call -> record.

:class:`ServiceClient` sends each call to one endpoint of a service type:

1. the endpoints come from discovery's local cache (healthy and not ejected by passive
   outlier detection; in *panic mode*, when too few are usable, all of them);
2. the balancer picks one (peak-EWMA by default, optionally zone/metadata-preferring);
3. the call goes through that endpoint's own circuit breaker (an open breaker makes the
   client move on to another endpoint at once, without spending a retry);
4. the outcome goes back to discovery (passive health) and the latency to the balancer;
5. a failed *idempotent* call is retried on another endpoint while the retry budget and
   the caller's deadline allow; when nothing can serve it, ``fallback`` answers, or
   :class:`~backend_services.errors.ServiceUnavailableError` is raised.

When OpenTelemetry records spans (:func:`backend_services.observability.tracing.enabled`,
read once per request), each request is a :data:`~.tracing.SPAN_REQUEST` span with the
steps as children — discover, pick, and per attempt a breaker span (a retry span for an
attempt after a failure) around the call span — and HTTP requests carry the W3C
``traceparent`` header. When it does not, the path is the plain one.

**Where the pieces live.** This module names the public API and holds
:class:`ServiceClient` itself: its HTTP requests and session. The request path — the
client's configuration, per-endpoint breakers and counters, plain and traced attempts —
is :class:`~backend_services.client_path.RequestPath`, which it extends;
:mod:`~backend_services.client_interfaces` holds what a client is plugged into
(:class:`EndpointSource`, :class:`CallGuard`, :data:`BreakerFactory`,
:func:`default_breakers`) and :mod:`~backend_services.client_http` the HTTP types
(:class:`HttpResponse`, :data:`IDEMPOTENT_METHODS`).
"""

from __future__ import annotations

from typing import Any

import aiohttp
from multidict import CIMultiDict

from .client_http import IDEMPOTENT_METHODS, HttpResponse, _BadStatus, _is_failure_status
from .client_interfaces import BreakerFactory, CallGuard, EndpointSource, default_breakers
from .client_path import RequestPath
from .discovery.model import ServiceEndpoint
from .observability import tracing

__all__ = [
    "IDEMPOTENT_METHODS",
    "BreakerFactory",
    "CallGuard",
    "EndpointSource",
    "HttpResponse",
    "ServiceClient",
    "default_breakers",
]


class ServiceClient(RequestPath):
    """Calls one service type through discovery, balancing, breakers and retries.

    ``balancer``: a :class:`~backend_services.balancing.Balancer` or a name
    (``peak_ewma`` default, ``round_robin``, ``weighted``, ``least_outstanding``).
    ``prefer``: zone name (matches ``metadata["zone"]``), a metadata dict, or a predicate;
    preferred endpoints are used while at least ``min_matching`` are usable.
    ``max_attempts`` bounds tries per call; ``retry_budget`` bounds retries overall.
    ``timeout``: the default deadline of a whole call; ``attempt_timeout`` of one try.
    ``panic_threshold``: below this share of usable endpoints, use all of them.
    ``breaker_factory(endpoint)``: the per-endpoint breaker (by default an in-process
    :class:`~backend_services.infrastructure.circuit_breaker.CircuitBreaker` per endpoint
    with ``breaker_config``). ``fallback(*args, **kwargs)``: sync or async, answers when
    nothing can.
    """

    # ---- lifecycle -------------------------------------------------------------------

    async def close(self) -> None:
        """Close the HTTP session this client created."""
        session, self._session = self._session, None
        if session is not None and self._own_session and not session.closed:
            await session.close()

    async def __aenter__(self) -> ServiceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- HTTP ------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            )
            self._own_session = True
        return session

    async def request(
        self,
        method: str,
        path: str = "/",
        *,
        idempotent: bool | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's deadline, retries included
        **kwargs: Any,
    ) -> HttpResponse:
        """An HTTP request to ``{endpoint.url}{path}`` (the endpoint's path prefixed).
        Server errors (5xx) and connection failures count as failed attempts; other
        responses are returned. ``kwargs`` go to :meth:`aiohttp.ClientSession.request`."""
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        args = (method, path)
        if not tracing.enabled():
            return await self._call(self._http, args, kwargs, idempotent, timeout, None)
        attrs = {
            "service.type": self.service_type.value,
            "http.request.method": method,
            "url.path": path,
        }
        with tracing.span(tracing.SPAN_REQUEST, attrs) as root:
            return await self._call(self._http_traced, args, kwargs, idempotent, timeout, root)

    async def _http(
        self, endpoint: ServiceEndpoint, method: str, path: str, **kwargs: Any
    ) -> HttpResponse:
        base = endpoint.path.rstrip("/")
        suffix = path if path.startswith("/") else "/" + path
        url = f"{endpoint.protocol}://{endpoint.address}{base}{suffix}"
        async with self._get_session().request(method, url, **kwargs) as response:
            body = await response.read()
            result = HttpResponse(response.status, dict(response.headers), body, endpoint)
        if _is_failure_status(result.status):
            raise _BadStatus(result)
        return result

    async def _http_traced(
        self, endpoint: ServiceEndpoint, method: str, path: str, **kwargs: Any
    ) -> HttpResponse:
        """:meth:`_http` in a call span, with the trace context in the request headers
        (a copy: the caller's headers are left as they were)."""
        attrs = {
            "endpoint.id": endpoint.service_id,
            "server.address": endpoint.host,
            "server.port": endpoint.port,
            "http.request.method": method,
            "url.path": path,
        }
        with tracing.span(tracing.SPAN_CALL, attrs) as step:
            given = kwargs.get("headers")
            headers: CIMultiDict[str] = CIMultiDict(given) if given else CIMultiDict()
            kwargs["headers"] = tracing.trace_headers(headers)
            try:
                result = await self._http(endpoint, method, path, **kwargs)
            except _BadStatus as exc:
                step.set_attribute("http.response.status_code", exc.response.status)
                raise
            step.set_attribute("http.response.status_code", result.status)
            return result
