"""What the membrane reports about itself.

* ``GET /health`` — 200 while it serves, 503 with ``ready: false`` and a ``reason``
  while starting, draining or offline (degraded);
* ``GET /membrane_info`` — kind, reservoir parameters, configured depth and timeout;
* ``GET /metrics`` — Prometheus text, or JSON with ``?format=json`` or
  ``Accept: application/json``.

Part of :class:`~backend_services.dtesn.service.MembraneService`; the state it reads is
:class:`~backend_services.dtesn.state.MembraneState`.
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from ..log import get_logger
from .metrics import prometheus_text
from .state import MembraneState

__all__ = ["Reports"]

_log = get_logger("dtesn")


class Reports(MembraneState):
    """``/health``, ``/membrane_info`` and ``/metrics``."""

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
