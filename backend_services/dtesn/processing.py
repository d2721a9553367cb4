"""The membrane's processing endpoints.

* ``POST /process`` — readiness, request validation and the ``core_processing`` gate,
  injected faults (slow, error), then the reservoir run (in a worker thread when large),
  at reduced depth while ``advanced_analytics`` is off; the reply carries each level's
  final state and the readout, plus per-level trajectory norms while ``debug_interface``
  is on and asked for;
* ``GET /debug`` — the last debug request's trajectory norms, while ``debug_interface``
  is enabled.

Part of :class:`~backend_services.dtesn.service.MembraneService`; the state it works on is
:class:`~backend_services.dtesn.state.MembraneState`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from aiohttp import web

from ..errors import ValidationError
from .protocol import ProcessRequest, parse_process_request
from .replies import error_reply, read_json, validation_reply
from .reservoir import ReservoirResult
from .state import MembraneState

__all__ = ["FEATURE_ADVANCED", "FEATURE_CORE", "FEATURE_DEBUG", "Processing"]

FEATURE_CORE: Final = "core_processing"
FEATURE_ADVANCED: Final = "advanced_analytics"
FEATURE_DEBUG: Final = "debug_interface"
_THREAD_COST: Final = 2_000_000  # steps * sum(size**2) above which work leaves the loop


class Processing(MembraneState):
    """``/process`` and ``/debug``."""

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

    async def _debug(self, request: web.Request) -> web.Response:
        if not await self.feature_gate(FEATURE_DEBUG):
            level = self.status_provider().get("degradation_level", "degraded")
            return error_reply(503, f"{FEATURE_DEBUG} is disabled (degradation level {level})")
        return web.json_response({"membrane_id": self.membrane_id, "last": self._last_debug})
