"""The DTESN membrane service: a deep reservoir behind an aiohttp HTTP server.

Endpoints:

* ``GET /health`` — 200 ``{"status": "healthy", "ready": true, ...}`` while it serves,
  503 with ``ready: false`` and a ``reason`` while starting, draining or offline;
* ``POST /process`` — a sequence of input vectors → final state of each level and the
  readout (see :mod:`backend_services.dtesn.protocol`);
* ``GET /membrane_info`` — kind, reservoir parameters, configured depth, features;
* ``GET /metrics`` — Prometheus text (JSON with ``?format=json`` or ``Accept: application/json``);
* ``GET /debug`` — the last request's per-level trajectory norms, while ``debug_interface``
  is enabled;
* ``GET|POST /admin/config`` and ``/admin/faults`` — see :mod:`backend_services.dtesn.admin`.

Bad requests get a 4xx JSON reply ``{"error": ..., "field": ..., "expected": ...}``.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import psutil
from aiohttp import web

from ..clock import Clock, resolve_clock
from ..errors import ValidationError
from ..log import get_logger
from ..observability.tracing import tracing_middleware
from .admin import AdminRoutes
from .faults import FaultState
from .metrics import MembraneMetrics, prometheus_text
from .protocol import (
    DEFAULT_MAX_STEPS,
    MAX_BODY_BYTES,
    ProcessRequest,
    parse_process_request,
    validate_membrane_config,
)
from .replies import error_reply, read_json, validation_reply
from .reservoir import DeepReservoir, MembraneKind, MembraneSpec, ReservoirResult

__all__ = [
    "FEATURE_ADVANCED",
    "FEATURE_CORE",
    "FEATURE_DEBUG",
    "FeatureGate",
    "MembraneOptions",
    "MembraneService",
    "sample_inputs",
    "validate_membrane_config",
]

_log = get_logger("dtesn")

FEATURE_CORE: Final = "core_processing"
FEATURE_ADVANCED: Final = "advanced_analytics"
FEATURE_DEBUG: Final = "debug_interface"
_THREAD_COST: Final = 2_000_000  # steps * sum(size**2) above which work leaves the loop

FeatureGate = Callable[[str], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class MembraneOptions:
    """How to run one membrane."""

    kind: MembraneKind = MembraneKind.MEMORY
    membrane_id: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    levels: int = 4
    seed: int = 0
    input_dim: int = 8
    output_dim: int = 4
    membrane_depth: int | None = None
    processing_timeout: float = 30.0
    max_steps: int = DEFAULT_MAX_STEPS
    enable_faults: bool = False
    admin_token: str | None = None
    drain_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValidationError("port", self.port, "an integer in 0..65535 (0 = any free)")
        if not isinstance(self.max_steps, int) or not 1 <= self.max_steps <= 100_000:
            raise ValidationError("max_steps", self.max_steps, "an integer in 1..100000")
        if self.membrane_id is not None and not (0 < len(self.membrane_id) <= 128):
            raise ValidationError("membrane_id", self.membrane_id, "1..128 characters")


async def _always_enabled(name: str) -> bool:
    return True


class MembraneService:
    """One membrane: reservoir, HTTP server, metrics, configuration, fault switches.

    The shell around it (:mod:`backend_services.dtesn.runtime`) connects discovery,
    configuration and degradation; on its own the service runs with every feature on.
    """

    def __init__(
        self,
        options: MembraneOptions | None = None,
        *,
        clock: Clock | None = None,
        feature_gate: FeatureGate | None = None,
        on_crash: Callable[[], None] | None = None,
    ) -> None:
        self.options = options or MembraneOptions()
        self._clock = resolve_clock(clock)
        self.spec = MembraneSpec.for_kind(
            self.options.kind,
            levels=self.options.levels,
            input_dim=self.options.input_dim,
            output_dim=self.options.output_dim,
            seed=self.options.seed,
        )
        self.reservoir = DeepReservoir(self.spec)
        depth = self.options.membrane_depth or self.spec.depth
        self.depth = int(validate_membrane_config("membrane_depth", depth, self.spec.depth))
        self.processing_timeout = float(
            validate_membrane_config("processing_timeout", self.options.processing_timeout, 0)
        )
        self.metrics = MembraneMetrics()
        self.faults = FaultState()
        self.feature_gate: FeatureGate = feature_gate or _always_enabled
        self.status_provider: Callable[[], dict[str, Any]] = dict
        self.config_writer: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self.extra_metrics: Callable[[], str] | None = None
        self._on_crash = on_crash or (lambda: os._exit(70))
        self._rng = random.Random(self.options.seed)
        self._unhung = asyncio.Event()
        self._unhung.set()
        self._ready = False
        self._draining = False
        self._not_ready_reason = "starting"
        self._started_at = self._clock.monotonic()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._last_debug: dict[str, Any] | None = None
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)
        self._membrane_id = self.options.membrane_id or (
            f"dtesn-{self.spec.kind.value}-{self.options.port or os.getpid()}"
        )
        self.app = self._build_app()

    # --- identity ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("membrane not started: no port yet")
        return self._port

    @property
    def membrane_id(self) -> str:
        """The service id (default ``dtesn-KIND-PORT``, or ``-PID`` on a random port)."""
        return self._membrane_id

    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self.port}"

    @property
    def ready(self) -> bool:
        return self._ready and not self._draining

    def set_ready(self, ready: bool, reason: str = "") -> None:
        """Mark the membrane ready (health 200) or not (503 with ``reason``)."""
        self._ready = ready
        self._not_ready_reason = reason or ("ready" if ready else "not ready")

    # --- configuration ----------------------------------------------------------------

    def apply_config(self, key: str, value: Any) -> None:
        """Apply a validated configuration value now (used by change callbacks)."""
        checked = validate_membrane_config(key, value, self.spec.depth)
        old = self.depth if key == "membrane_depth" else self.processing_timeout
        if key == "membrane_depth":
            self.depth = int(checked)
        else:
            self.processing_timeout = float(checked)
        if old != checked:
            _log.info("config_applied", membrane=self.membrane_id, key=key, old=old, new=checked)

    # --- lifecycle --------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_BODY_BYTES,
            middlewares=[tracing_middleware, self._errors, self._hang_gate],
        )
        app.router.add_get("/health", self._health)
        app.router.add_post("/process", self._process_handler)
        app.router.add_get("/membrane_info", self._info)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/debug", self._debug)
        AdminRoutes(self).register(app)
        return app

    async def start(self) -> None:
        """Bind the port and start serving (ready at once; the runtime may hold it back)."""
        if self._runner is not None:
            return
        family = socket.AF_INET6 if ":" in self.options.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.options.host, self.options.port))
        except OSError as exc:
            sock.close()
            raise ValidationError(
                "port", self.options.port, f"a free port on {self.options.host} ({exc.strerror})"
            ) from None
        self._port = int(sock.getsockname()[1])
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner
        self._started_at = self._clock.monotonic()
        _log.info("membrane_started", membrane=self.membrane_id, url=self.url)

    async def stop(self) -> None:
        """Stop gracefully: health goes 503, in-flight calls finish (bounded), server closes."""
        if self._runner is None:
            return
        self._draining = True
        self._not_ready_reason = "draining"
        self._unhung.set()
        waited = 0.0
        while self.metrics.in_flight and waited < self.options.drain_seconds:
            await asyncio.sleep(0.02)  # real in-flight HTTP calls, bounded
            waited += 0.02
        runner, self._runner = self._runner, None
        await runner.cleanup()
        _log.info("membrane_stopped", membrane=self.membrane_id)

    async def __aenter__(self) -> MembraneService:
        await self.start()
        self.set_ready(True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- middlewares ------------------------------------------------------------------

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return error_reply(
                413, f"request body too large; expected at most {MAX_BODY_BYTES} bytes"
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_reply(exc.status, exc.reason, path=request.path)

    @web.middleware
    async def _hang_gate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith("/admin/"):
            await self._unhung.wait()
        return await handler(request)

    # --- handlers ---------------------------------------------------------------------

    def resource_usage(self) -> dict[str, float]:
        """This process's own resource use (and any synthetic pressure switched on)."""
        with self._proc.oneshot():
            rss = self._proc.memory_info().rss
            cpu = self._proc.cpu_percent(None) / 100.0
        return {
            "cpu": round(cpu, 4),
            "rss_bytes": float(rss),
            "pressure": self.faults.pressure,
        }

    async def _health(self, request: web.Request) -> web.Response:
        status = self.status_provider()
        offline = status.get("degradation_level") == "offline"
        ready = self.ready and not offline
        reason = "offline (degraded)" if offline and self.ready else self._not_ready_reason
        body = {
            "status": "healthy" if ready else "unhealthy",
            "ready": ready,
            "reason": "ready" if ready else reason,
            "membrane_id": self.membrane_id,
            "kind": self.spec.kind.value,
            "depth": self.depth,
            "uptime_s": round(self._clock.monotonic() - self._started_at, 3),
            "in_flight": self.metrics.in_flight,
            "faults": self.faults.as_dict() if self.faults.active else {},
            **status,
        }
        return web.json_response(body, status=200 if ready else 503)

    async def _process_handler(self, request: web.Request) -> web.Response:
        started = self._clock.monotonic()
        self.metrics.in_flight += 1
        try:
            response, outcome, steps, degraded = await self._process(request, started)
        finally:
            self.metrics.in_flight -= 1
        self.metrics.record(
            outcome, self._clock.monotonic() - started, steps=steps, degraded=degraded
        )
        return response

    async def _process(
        self, request: web.Request, started: float
    ) -> tuple[web.Response, str, int, bool]:
        if not self.ready:
            return (
                error_reply(503, f"membrane not ready: {self._not_ready_reason}"),
                "unavailable",
                0,
                False,
            )
        try:
            parsed = parse_process_request(
                await read_json(request),
                input_dim=self.spec.input_dim,
                max_steps=self.options.max_steps,
                max_depth=self.spec.depth,
            )
        except ValidationError as exc:
            return validation_reply(exc), "invalid", 0, False
        if not await self.feature_gate(FEATURE_CORE):
            level = self.status_provider().get("degradation_level", "offline")
            return (
                error_reply(503, f"membrane is degraded to {level}: core processing is off"),
                "unavailable",
                0,
                False,
            )
        timeout = self.processing_timeout
        faults = self.faults
        if faults.slow > 0.0:
            if faults.slow >= timeout:
                await self._clock.sleep(timeout)
                return self._timeout_reply(timeout), "timeout", 0, False
            await self._clock.sleep(faults.slow)
        if faults.error_rate > 0.0 and self._rng.random() < faults.error_rate:
            return error_reply(500, "injected fault: error"), "error", 0, False

        advanced = await self.feature_gate(FEATURE_ADVANCED)
        depth = min(parsed.depth or self.depth, self.depth)
        full_depth = depth
        if not advanced:
            depth = 1
        debug = parsed.debug and await self.feature_gate(FEATURE_DEBUG)
        result = await self._compute(parsed, depth, debug)
        elapsed = self._clock.monotonic() - started
        if elapsed > timeout:
            return self._timeout_reply(timeout), "timeout", 0, False
        body = self._result_body(parsed, result, elapsed, degraded=depth < full_depth)
        if parsed.debug:
            body["debug"] = (
                {"trajectory_norms": result.trajectory_norms}
                if debug
                else {"unavailable": f"{FEATURE_DEBUG} is disabled"}
            )
        if debug:
            self._last_debug = {
                "request_id": parsed.request_id,
                "depth": result.depth,
                "steps": result.steps,
                "trajectory_norms": result.trajectory_norms,
            }
        return web.json_response(body), "ok", result.steps, depth < full_depth

    def _timeout_reply(self, timeout: float) -> web.Response:
        return error_reply(504, f"processing exceeded processing_timeout={timeout:g}s")

    async def _compute(self, parsed: ProcessRequest, depth: int, debug: bool) -> ReservoirResult:
        cost = parsed.inputs.shape[0] * sum(p.size**2 for p in self.spec.levels[:depth])
        if cost > _THREAD_COST:
            return await asyncio.to_thread(
                self.reservoir.run, parsed.inputs, depth, trajectory=debug
            )
        return self.reservoir.run(parsed.inputs, depth, trajectory=debug)

    def _result_body(
        self, parsed: ProcessRequest, result: ReservoirResult, elapsed: float, *, degraded: bool
    ) -> dict[str, Any]:
        return {
            "membrane_id": self.membrane_id,
            "kind": self.spec.kind.value,
            "request_id": parsed.request_id,
            "steps": result.steps,
            "depth": result.depth,
            "configured_depth": self.depth,
            "degraded": degraded,
            "levels": [
                {"level": i, "size": int(state.shape[0]), "state": state.tolist()}
                for i, state in enumerate(result.states)
            ],
            "readout": result.readout.tolist(),
            "elapsed_ms": round(elapsed * 1000, 3),
        }

    def info(self) -> dict[str, Any]:
        """What ``GET /membrane_info`` returns."""
        return {
            "membrane_id": self.membrane_id,
            "kind": self.spec.kind.value,
            "input_dim": self.spec.input_dim,
            "output_dim": self.spec.output_dim,
            "seed": self.spec.seed,
            "max_depth": self.spec.depth,
            "membrane_depth": self.depth,
            "processing_timeout": self.processing_timeout,
            "max_steps": self.options.max_steps,
            "levels": [
                {
                    "level": i,
                    "size": p.size,
                    "leak_rate": p.leak_rate,
                    "spectral_radius": p.spectral_radius,
                    "density": p.density,
                    "input_scaling": p.input_scaling,
                }
                for i, p in enumerate(self.spec.levels)
            ],
            "faults_enabled": self.options.enable_faults,
            "pid": os.getpid(),
            **self.status_provider(),
        }

    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response(self.info())

    def metrics_dict(self) -> dict[str, Any]:
        """What ``GET /metrics?format=json`` returns."""
        return {
            "membrane_id": self.membrane_id,
            "kind": self.spec.kind.value,
            "uptime_s": round(self._clock.monotonic() - self._started_at, 3),
            "membrane_depth": self.depth,
            "processing_timeout": self.processing_timeout,
            **self.metrics.as_dict(),
            "resources": self.resource_usage(),
            **self.status_provider(),
        }

    async def _metrics(self, request: web.Request) -> web.Response:
        wants_json = request.query.get("format") == "json" or (
            "application/json" in request.headers.get("Accept", "")
        )
        if wants_json:
            return web.json_response(self.metrics_dict())
        usage = self.resource_usage()
        text = prometheus_text(
            self.metrics,
            labels={"membrane": self.membrane_id, "kind": self.spec.kind.value},
            gauges={
                "depth": ("Configured membrane depth.", float(self.depth)),
                "processing_timeout_seconds": (
                    "Configured processing timeout.",
                    self.processing_timeout,
                ),
                "ready": ("1 while the membrane serves.", 1.0 if self.ready else 0.0),
                "cpu_usage": ("CPU used by this process (1.0 = one core).", usage["cpu"]),
                "resident_memory_bytes": ("Resident memory of this process.", usage["rss_bytes"]),
                "uptime_seconds": (
                    "Seconds since the server started.",
                    self._clock.monotonic() - self._started_at,
                ),
            },
        )
        if self.extra_metrics is not None:
            try:
                text += self.extra_metrics()
            except Exception as exc:  # the membrane's own metrics still go out
                _log.warning("extra_metrics_failed", error=repr(exc))
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def _debug(self, request: web.Request) -> web.Response:
        if not await self.feature_gate(FEATURE_DEBUG):
            level = self.status_provider().get("degradation_level", "degraded")
            return error_reply(503, f"{FEATURE_DEBUG} is disabled (degradation level {level})")
        return web.json_response({"membrane_id": self.membrane_id, "last": self._last_debug})


def sample_inputs(steps: int, input_dim: int, seed: int = 0) -> list[list[float]]:
    """A reproducible input sequence (for demos, tests and benchmarks)."""
    rng = np.random.default_rng(seed)
    return [[float(x) for x in row] for row in rng.uniform(-1.0, 1.0, (steps, input_dim))]
