"""The control server: HTTP API, live dashboard, server-sent events and ``/metrics``.

::

    server = ControlServer(backend, token=os.environ["DTESN_CONTROL_TOKEN"])
    url = await server.start("127.0.0.1", 8080)     # dashboard at url + "/"
    ...
    await server.close()

Routes come from :data:`.openapi.OPERATIONS` (published at ``/openapi.json``); every
request is validated against the same schemas. Mutations need the bearer token and pass
the cross-site checks of :class:`.security.Guard`; every client is rate limited by a
token bucket on the injected clock (429 with ``Retry-After``); every error is a problem
document. :func:`.serve.serve` runs a server until stopped (the CLI's ``serve``
command).

**Where the pieces live.** This module holds :class:`ControlServer` itself: its
lifecycle, the application (routes from the table, middlewares for errors, rate limits
and request metrics, security headers), the binding of each operation to its handler,
the pages and its own metrics. What each operation does is in :mod:`.handlers`
(:class:`~.handlers.OperationHandlers`); reading parameters and JSON bodies and writing
JSON responses in :mod:`.messages`; the server-sent event streams in :mod:`.events`; the
fleet snapshot the watcher follows and the fleet's metric families in :mod:`.fleet_view`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from importlib import resources
from pathlib import Path

from aiohttp import web

from ..clock import Clock, resolve_clock
from ..log import get_logger
from ..observability.metrics import MetricFamily, Registry
from ..observability.tracing import tracing_middleware
from .backend import ControlBackend
from .endpoints import OPERATIONS, Operation
from .events import EventStreams
from .fleet_view import fleet_families, fleet_snapshot
from .handlers import OperationHandler, OperationHandlers
from .messages import MAX_BODY_BYTES, Args, json_response, read_body, read_params
from .openapi import build_document
from .problems import Problem, problem_for, problem_response
from .ratelimit import RateLimiter
from .security import Guard, security_headers
from .watch import FleetWatcher

__all__ = ["ControlServer", "static_dir"]

_log = get_logger("control")

_OP_IDS: dict[tuple[str, str], str] = {(op.method, op.path): op.operation_id for op in OPERATIONS}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def static_dir() -> Path:
    """The folder of the dashboard's files shipped with the package."""
    return Path(str(resources.files("backend_services.control") / "static"))


class ControlServer:
    """The aiohttp application of the control plane, with its lifecycle."""

    def __init__(
        self,
        backend: ControlBackend,
        *,
        token: str | None = None,
        protect_reads: bool = False,
        rate: float = 20.0,
        burst: float = 60.0,
        max_streams_per_client: int = 8,
        allowed_origins: Iterable[str] = (),
        watch_interval: float = 1.0,
        heartbeat: float = 15.0,
        registry: Registry | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.backend = backend
        self._clock = resolve_clock(clock)
        self.guard = Guard(token, protect_reads=protect_reads, allowed_origins=allowed_origins)
        self.limiter = RateLimiter(rate, burst)
        self.watcher = FleetWatcher(
            partial(fleet_snapshot, backend), interval=watch_interval, clock=self._clock
        )
        self.streams = EventStreams(
            self.watcher,
            max_per_client=max_streams_per_client,
            heartbeat=heartbeat,
            clock=self._clock,
        )
        self.registry = registry or Registry()
        self.handlers = OperationHandlers(backend, self.watcher, self.registry)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.url = ""
        self._requests = self.registry.counter(
            "backend_services_control_requests_total",
            "Control API requests by operation and status code.",
            ["operation", "status"],
        )
        self._limited = self.registry.counter(
            "backend_services_control_rate_limited_total",
            "Requests refused by the per-client rate limit.",
        )
        self._auth_failures = self.registry.counter(
            "backend_services_control_auth_failures_total",
            "Requests refused for missing or wrong credentials or origin.",
        )
        self.registry.register_collector(self._collect)
        self.app = self._build_app()

    @property
    def max_streams_per_client(self) -> int:
        """Open event streams allowed per client."""
        return self.streams.max_per_client

    @max_streams_per_client.setter
    def max_streams_per_client(self, value: int) -> None:
        self.streams.max_per_client = value

    @property
    def heartbeat(self) -> float:
        """Seconds between keep-alive comments on an idle event stream."""
        return self.streams.heartbeat

    @heartbeat.setter
    def heartbeat(self, value: float) -> None:
        self.streams.heartbeat = value

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving; returns the base URL (``http://host:port``)."""
        await self.watcher.start()
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        try:
            await self._runner.setup()
            self._site = web.TCPSite(self._runner, host, port)
            await self._site.start()
        except BaseException:
            await self.close()
            raise
        sockets = getattr(self._site._server, "sockets", None) or ()
        bound = sockets[0].getsockname() if sockets else None
        real_port = bound[1] if bound else port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{real_port}"
        _log.info("control_server_started", url=self.url, token=self.guard.has_token)
        return self.url

    async def close(self) -> None:
        """Stop serving: end event streams, stop the watcher, close the listener."""
        self.streams.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.watcher.close()

    shutdown = close

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the application ----------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._errors, self._rate_limit, tracing_middleware],
            client_max_size=MAX_BODY_BYTES,
        )
        handlers: dict[str, OperationHandler] = {
            **self.handlers.by_operation(),
            "watchEvents": self._events,
        }
        for op in OPERATIONS:
            app.router.add_route(op.method, op.path, self._bind(op, handlers[op.operation_id]))
        app.router.add_get("/openapi.json", self._openapi)
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", static_dir(), show_index=False, follow_symlinks=False)
        app.on_response_prepare.append(self._headers)
        return app

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for key, value in security_headers().items():
            response.headers.setdefault(key, value)
        if not request.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")

    def _client(self, request: web.Request) -> str:
        return request.remote or "unknown"

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            problem = problem_for(exc)
            if problem is None:
                _log.exception(
                    "control_request_failed",
                    method=request.method,
                    path=request.path,
                    error=repr(exc),
                )
                problem = Problem(500, "the server failed to handle this request; see its log")
            if problem.status in (401, 403):
                self._auth_failures.inc()
            response = problem_response(problem, request.path)
        op = _operation_of(request)
        self._requests.labels(operation=op, status=str(response.status)).inc()
        return response

    @web.middleware
    async def _rate_limit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        decision = self.limiter.check(self._client(request), self._clock.monotonic())
        if not decision.allowed:
            self._limited.inc()
            wait = max(1, math.ceil(decision.retry_after))
            raise Problem(
                429,
                f"too many requests from this client; retry in {wait} s "
                f"(limit {self.limiter.rate:g}/s, burst {self.limiter.burst:g})",
                headers={"Retry-After": str(wait)},
                retry_after=wait,
            )
        return await handler(request)

    def _bind(self, op: Operation, fn: OperationHandler) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            if not op.public:
                self.guard.check(request, mutating=op.mutating)
            args = read_params(request, op)
            body = await read_body(request, op) if op.body is not None else {}
            result = await fn(request, args, body)
            if isinstance(result, web.StreamResponse):
                return result
            if op.mutating:
                _log.info(
                    "control_action",
                    operation=op.operation_id,
                    target={k: v for k, v in args.items() if k != "service" or v},
                    client=self._client(request),
                )
                with contextlib.suppress(Exception):
                    await self.watcher.refresh()
            return json_response(result)

        return handler

    # --- pages ----------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(static_dir() / "index.html")

    async def _openapi(self, request: web.Request) -> web.StreamResponse:
        from .. import __version__

        doc = build_document(protect_reads=self.guard.protect_reads, version=__version__)
        doc["paths"]["/openapi.json"] = {
            "get": {
                "operationId": "getOpenAPI",
                "summary": "This document",
                "tags": ["meta"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        }
        return json_response(doc)

    # --- live events ------------------------------------------------------------------

    async def _events(self, request: web.Request, args: Args, body: Args) -> web.StreamResponse:
        return await self.streams.serve(request, self._client(request))

    # --- metrics ----------------------------------------------------------------------

    def _collect(self) -> list[MetricFamily]:
        streams = MetricFamily(
            "backend_services_control_event_streams", "gauge", "Open server-sent event streams."
        ).add(self.streams.open)
        transitions = MetricFamily(
            "backend_services_control_transitions_recorded",
            "gauge",
            "Transitions kept for the timeline.",
        ).add(len(self.watcher.transitions))
        return [
            streams,
            transitions,
            *fleet_families(self.watcher.overview(transitions=0)),
            *self.backend.metric_families(),
        ]


def _operation_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    path = resource.canonical
    if path == "/":
        return "dashboard"
    if path == "/openapi.json":
        return "getOpenAPI"
    if path.startswith("/static"):
        return "static"
    return _OP_IDS.get((request.method, path), "unmatched")
