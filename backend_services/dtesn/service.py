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

The service is built from parts: :mod:`.state` (construction, identity, readiness,
configuration), :mod:`.processing` (``/process``, ``/debug``), :mod:`.reports`
(``/health``, ``/membrane_info``, ``/metrics``), :mod:`.admin` (admin endpoints) and
:mod:`.options` (:class:`MembraneOptions`); this module adds the HTTP server's lifecycle
and middlewares, and keeps every name importable from here.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import numpy as np
from aiohttp import web

from ..errors import ValidationError
from ..log import get_logger
from ..observability.tracing import tracing_middleware
from .admin import AdminRoutes
from .options import MembraneOptions
from .processing import FEATURE_ADVANCED, FEATURE_CORE, FEATURE_DEBUG, Processing
from .protocol import MAX_BODY_BYTES, validate_membrane_config
from .replies import error_reply
from .reports import Reports
from .state import FeatureGate

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


class MembraneService(Processing, Reports):
    """One membrane: reservoir, HTTP server, metrics, configuration, fault switches.

    The shell around it (:mod:`backend_services.dtesn.runtime`) connects discovery,
    configuration and degradation; on its own the service runs with every feature on.
    """

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


def sample_inputs(steps: int, input_dim: int, seed: int = 0) -> list[list[float]]:
    """A reproducible input sequence (for demos, tests and benchmarks)."""
    rng = np.random.default_rng(seed)
    return [[float(x) for x in row] for row in rng.uniform(-1.0, 1.0, (steps, input_dim))]
