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
document. :func:`serve` runs a server until stopped (the CLI's ``serve`` command).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections import Counter as _Tally
from collections.abc import Awaitable, Callable, Iterable, Mapping
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from ..clock import Clock, resolve_clock
from ..errors import ValidationError
from ..log import get_logger
from ..observability.metrics import CONTENT_TYPE, MetricFamily, Registry, render
from ..observability.tracing import tracing_middleware
from .backend import ControlBackend
from .openapi import DEGRADATION_LEVELS, OPERATIONS, Operation, build_document
from .problems import Problem, problem_for, problem_response
from .ratelimit import RateLimiter
from .schema import validate
from .security import Guard, security_headers
from .watch import FleetWatcher

__all__ = ["ControlServer", "static_dir"]

_log = get_logger("control")

MAX_BODY_BYTES = 64 * 1024
_OP_IDS: dict[tuple[str, str], str] = {(op.method, op.path): op.operation_id for op in OPERATIONS}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Args = dict[str, Any]


def static_dir() -> Path:
    """The folder of the dashboard's files shipped with the package."""
    return Path(str(resources.files("backend_services.control") / "static"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _json(data: Any, status: int = 200) -> web.Response:
    body = json.dumps(_jsonable(data), separators=(",", ":")).encode()
    return web.Response(status=status, body=body, content_type="application/json")


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
        self.max_streams_per_client = max_streams_per_client
        self.heartbeat = heartbeat
        self.watcher = FleetWatcher(self._snapshot, interval=watch_interval, clock=self._clock)
        self.registry = registry or Registry()
        self._streams: _Tally[str] = _Tally()
        self._closing = asyncio.Event()
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
        self._closing.set()
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
        handlers: dict[str, Callable[[web.Request, Args, Args], Awaitable[Any]]] = {
            "getHealth": self._health,
            "getMetrics": self._metrics,
            "getOverview": self._overview,
            "watchEvents": self._events,
            "listTransitions": self._transitions,
            "listServices": self._list_services,
            "getService": self._get_service,
            "listCircuits": self._list_circuits,
            "getCircuit": self._get_circuit,
            "openCircuit": self._circuit_action("open"),
            "closeCircuit": self._circuit_action("close"),
            "resetCircuit": self._circuit_action("reset"),
            "listDegradation": self._list_degradation,
            "getDegradation": self._get_degradation,
            "forceDegradation": self._force_degradation,
            "clearDegradation": self._clear_degradation,
            "getConfig": self._get_config,
            "getConfigValue": self._get_config_value,
            "setConfigValue": self._set_config_value,
            "listConfigVersions": self._list_config_versions,
            "createConfigSnapshot": self._snapshot_config,
            "diffConfig": self._diff_config,
            "rollbackConfig": self._rollback_config,
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

    def _bind(
        self, op: Operation, fn: Callable[[web.Request, Args, Args], Awaitable[Any]]
    ) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            if not op.public:
                self.guard.check(request, mutating=op.mutating)
            args = self._params(request, op)
            body = await self._body(request, op) if op.body is not None else {}
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
            return _json(result)

        return handler

    def _params(self, request: web.Request, op: Operation) -> Args:
        args: Args = {}
        for param in op.params:
            if param.location == "path":
                raw: str | None = request.match_info.get(param.name)
            else:
                raw = request.query.get(param.name)
            where = f"{param.location}.{param.name}"
            if raw is None:
                if param.required:
                    raise ValidationError(where, None, "a required parameter")
                args[param.name] = None
                continue
            value: Any = raw
            if param.schema.get("type") == "integer":
                try:
                    value = int(raw.strip())
                except ValueError:
                    raise ValidationError(where, raw, "an integer") from None
            args[param.name] = validate(value, param.schema, where)
        return args

    async def _body(self, request: web.Request, op: Operation) -> Args:
        assert op.body is not None
        raw = await request.read()
        if not raw.strip():
            if op.body_required:
                raise ValidationError("body", None, "a JSON object body")
            return {}
        if request.content_type != "application/json":
            raise Problem(
                415,
                f"the body must be JSON (Content-Type: application/json), "
                f"not {request.content_type!r}",
            )
        try:
            doc = json.loads(raw, parse_constant=_no_constants)
        except (ValueError, RecursionError) as exc:
            raise Problem(400, f"the body is not valid JSON: {exc}") from None
        validated: Args = validate(doc, op.body, "body")
        return validated

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
        return _json(doc)

    # --- handlers ---------------------------------------------------------------------

    async def _health(self, request: web.Request, args: Args, body: Args) -> Any:
        return {"status": "ok", "watch_errors": self.watcher.errors}

    async def _metrics(self, request: web.Request, args: Args, body: Args) -> web.StreamResponse:
        return web.Response(
            body=render(self.registry).encode(), headers={"Content-Type": CONTENT_TYPE}
        )

    async def _overview(self, request: web.Request, args: Args, body: Args) -> Any:
        return await self.watcher.refresh()

    async def _transitions(self, request: web.Request, args: Args, body: Args) -> Any:
        return [t.as_dict() for t in self.watcher.recent(args["limit"])]

    async def _list_services(self, request: web.Request, args: Args, body: Args) -> Any:
        return await self.backend.list_services(args["service_type"], args["status"])

    async def _get_service(self, request: web.Request, args: Args, body: Args) -> Any:
        return _found(
            await self.backend.get_service(args["service_id"]), "service", args["service_id"]
        )

    async def _list_circuits(self, request: web.Request, args: Args, body: Args) -> Any:
        return await self.backend.list_circuits()

    async def _get_circuit(self, request: web.Request, args: Args, body: Args) -> Any:
        return _found(await self.backend.get_circuit(args["name"]), "circuit", args["name"])

    def _circuit_action(self, action: str) -> Callable[[web.Request, Args, Args], Awaitable[Any]]:
        async def run(request: web.Request, args: Args, body: Args) -> Any:
            reason = body.get("reason") or f"{action} via control API"
            result = await self.backend.circuit_action(
                args["name"], action, reason, duration=body.get("duration")
            )
            return _found(result, "circuit", args["name"])

        return run

    async def _list_degradation(self, request: web.Request, args: Args, body: Args) -> Any:
        return await self.backend.list_degradation()

    async def _get_degradation(self, request: web.Request, args: Args, body: Args) -> Any:
        return _found(
            await self.backend.get_degradation(args["service"]), "service", args["service"]
        )

    async def _force_degradation(self, request: web.Request, args: Args, body: Args) -> Any:
        result = await self.backend.force_degradation(
            args["service"],
            body["level"],
            body.get("reason") or "forced via control API",
            body.get("duration"),
        )
        return _found(result, "service", args["service"])

    async def _clear_degradation(self, request: web.Request, args: Args, body: Args) -> Any:
        result = await self.backend.clear_degradation(
            args["service"], body.get("reason") or "cleared via control API"
        )
        return _found(result, "service", args["service"])

    def _service(self, args: Args) -> str:
        return str(args.get("service") or self.backend.config_service)

    async def _get_config(self, request: web.Request, args: Args, body: Args) -> Any:
        return await self.backend.get_config(self._service(args))

    async def _get_config_value(self, request: web.Request, args: Args, body: Args) -> Any:
        result = await self.backend.get_config_value(self._service(args), args["key"])
        return _found(result, "configuration key", args["key"])

    async def _set_config_value(self, request: web.Request, args: Args, body: Args) -> Any:
        return await self.backend.set_config_value(
            self._service(args), args["key"], body["value"], body.get("description") or ""
        )

    async def _list_config_versions(self, request: web.Request, args: Args, body: Args) -> Any:
        return await self.backend.list_config_versions(self._service(args), args["limit"])

    async def _snapshot_config(self, request: web.Request, args: Args, body: Args) -> Any:
        return await self.backend.snapshot_config(
            self._service(args), body.get("description") or ""
        )

    async def _diff_config(self, request: web.Request, args: Args, body: Args) -> Any:
        service = self._service(args)
        old, new = args["from"], args["to"]
        if new is None:
            newest = await self.backend.list_config_versions(service, 1)
            if not newest:
                raise Problem(404, f"service {service!r} has no configuration versions yet")
            new = str(newest[-1].get("id"))
        result = await self.backend.diff_config(service, old, new)
        return _found(result, "version", f"{old}..{new}")

    async def _rollback_config(self, request: web.Request, args: Args, body: Args) -> Any:
        result = await self.backend.rollback_config(
            self._service(args), body["version"], body.get("description") or ""
        )
        return _found(result, "version", body["version"])

    # --- live events ------------------------------------------------------------------

    async def _events(self, request: web.Request, args: Args, body: Args) -> web.StreamResponse:
        client = self._client(request)
        if self._streams[client] >= self.max_streams_per_client:
            raise Problem(
                429,
                f"too many open event streams from this client "
                f"(at most {self.max_streams_per_client})",
                headers={"Retry-After": "5"},
            )
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        self._streams[client] += 1
        sub = self.watcher.subscribe()
        try:
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")
            await _send(response, "snapshot", self.watcher.overview())
            closing = asyncio.ensure_future(self._closing.wait())
            try:
                while not self._closing.is_set():
                    getter = asyncio.ensure_future(sub.get())
                    beat = asyncio.ensure_future(self._clock.sleep(self.heartbeat))
                    done, _ = await asyncio.wait(
                        {getter, beat, closing}, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in (getter, beat):
                        if not task.done():
                            task.cancel()
                    if getter in done:
                        event, data = getter.result()
                        await _send(response, event, data)
                    elif beat in done:
                        await response.write(b": keep-alive\n\n")
            finally:
                closing.cancel()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.watcher.unsubscribe(sub)
            self._streams[client] -= 1
            if self._streams[client] <= 0:
                del self._streams[client]
        return response

    async def _snapshot(self) -> dict[str, Any]:
        services, circuits, degradation = await asyncio.gather(
            self.backend.list_services(),
            self.backend.list_circuits(),
            self.backend.list_degradation(),
        )
        service = self.backend.config_service
        config: dict[str, Any] | None
        try:
            state = await self.backend.get_config(service)
            versions = await self.backend.list_config_versions(service, 50)
            config = {
                "service": service,
                "version": state.get("version"),
                "version_id": state.get("version_id"),
                "versions": versions,
            }
        except Exception as exc:
            _log.warning("config_snapshot_failed", service=service, error=repr(exc))
            config = None
        result: dict[str, Any] = _jsonable(
            {
                "services": services,
                "circuits": circuits,
                "degradation": degradation,
                "config": config,
            }
        )
        return result

    def _fleet_families(self) -> list[MetricFamily]:
        """The fleet as of the watcher's last snapshot (no I/O at scrape time)."""
        snap = self.watcher.overview(transitions=0)
        instances = MetricFamily(
            "backend_services_fleet_instances",
            "gauge",
            "Registered instances by type and health status, fleet-wide.",
        )
        tally: _Tally[tuple[str, str]] = _Tally(
            (str(s.get("service_type")), str(s.get("status"))) for s in snap["services"]
        )
        for (stype, status), n in sorted(tally.items()):
            instances.add(n, {"service_type": stype, "status": status})
        circuits = MetricFamily(
            "backend_services_fleet_circuit_state",
            "gauge",
            "1 for each shared circuit breaker's current state, fleet-wide.",
        )
        for c in snap["circuits"]:
            circuits.add(1, {"circuit": str(c.get("name")), "state": str(c.get("state"))})
        levels = MetricFamily(
            "backend_services_fleet_degradation_level",
            "gauge",
            "Worst degradation level per service, 0 normal .. 4 offline.",
        )
        for d in snap["degradation"]:
            level = str(d.get("level"))
            if level in DEGRADATION_LEVELS:
                levels.add(DEGRADATION_LEVELS.index(level), {"service": str(d.get("service"))})
        version = MetricFamily(
            "backend_services_fleet_config_version",
            "gauge",
            "Configuration version in force, per configuration service.",
        )
        config = snap.get("config") or {}
        if isinstance(config.get("version"), int):
            version.add(config["version"], {"service": str(config.get("service"))})
        return [instances, circuits, levels, version]

    def _collect(self) -> list[MetricFamily]:
        streams = MetricFamily(
            "backend_services_control_event_streams", "gauge", "Open server-sent event streams."
        ).add(sum(self._streams.values()))
        transitions = MetricFamily(
            "backend_services_control_transitions_recorded",
            "gauge",
            "Transitions kept for the timeline.",
        ).add(len(self.watcher.transitions))
        return [streams, transitions, *self._fleet_families(), *self.backend.metric_families()]


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


def _found(result: Any, what: str, name: str) -> Any:
    if result is None:
        raise Problem(404, f"no {what} named {name!r}")
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def _send(response: web.StreamResponse, event: str, data: Any) -> None:
    payload = json.dumps(_jsonable(data), separators=(",", ":"))
    await response.write(f"event: {event}\ndata: {payload}\n\n".encode())
