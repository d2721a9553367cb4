"""The state of a :class:`~backend_services.dtesn.service.MembraneService` and what its
parts share: construction (reservoir, depth and timeout, metrics, fault switches, the
hooks the runtime sets), identity, readiness and configuration changes.

The parts are :class:`~backend_services.dtesn.processing.Processing` (``/process`` and
``/debug``) and :class:`~backend_services.dtesn.reports.Reports` (``/health``,
``/membrane_info``, ``/metrics``); the public class combines them and adds the HTTP
server's lifecycle and middlewares.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

import psutil
from aiohttp import web

from ..clock import Clock, resolve_clock
from ..log import get_logger
from .faults import FaultState
from .metrics import MembraneMetrics
from .options import MembraneOptions
from .protocol import validate_membrane_config
from .reservoir import DeepReservoir, MembraneSpec

__all__ = ["FeatureGate", "MembraneState"]

_log = get_logger("dtesn")

FeatureGate = Callable[[str], Awaitable[bool]]


async def _always_enabled(name: str) -> bool:
    return True


class MembraneState:
    """Everything one membrane service holds (see the module docstring)."""

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

    def _build_app(self) -> web.Application:
        """The HTTP application with every route (built by the full service)."""
        raise NotImplementedError
