"""A steady stream of requests through the resilient request path, each one recorded."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from ..client import HttpResponse, ServiceClient
from ..dtesn.reservoir import DeepReservoir, MembraneSpec
from ..dtesn.service import sample_inputs
from .record import Call, Recorder

__all__ = ["LocalFallback", "Traffic"]

FALLBACK_HEADER = "X-DTESN-Fallback"


class LocalFallback:
    """What answers when no membrane can: the same reservoir computed here at depth 1
    (the basic processing the spec's degradation example falls back to)."""

    def __init__(self, spec: MembraneSpec) -> None:
        self.reservoir = DeepReservoir(spec)
        self.calls = 0

    def __call__(self, method: str, path: str, **kwargs: Any) -> HttpResponse:
        self.calls += 1
        body = kwargs.get("json") or {}
        result = self.reservoir.run(np.asarray(body.get("inputs", [[0.0] * 8])), 1)
        payload = {
            "membrane_id": None,
            "fallback": True,
            "depth": result.depth,
            "degraded": True,
            "readout": result.readout.tolist(),
        }
        return HttpResponse(200, {FALLBACK_HEADER: "local"}, json.dumps(payload).encode())


class Traffic:
    """Sends ``rate`` requests per second through ``client`` until stopped."""

    def __init__(
        self,
        client: ServiceClient,
        recorder: Recorder,
        *,
        rate: float,
        now: Callable[[], float],
        steps: int = 12,
        input_dim: int = 8,
        max_in_flight: int = 64,
    ) -> None:
        self.client = client
        self.recorder = recorder
        self.rate = rate
        self.now = now
        self.bodies = [{"inputs": sample_inputs(steps, input_dim, seed=s)} for s in range(16)]
        self._slots = asyncio.Semaphore(max_in_flight)
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self.sent = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="demo:traffic")

    async def stop(self) -> None:
        """Stop sending and wait for the calls in flight."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=10.0)

    async def _run(self) -> None:
        interval = 1.0 / self.rate
        next_at = self.now()
        while True:
            next_at += interval
            if not self._slots.locked():  # else too many in flight: skip a beat, do not pile up
                await self._slots.acquire()
                body = self.bodies[self.sent % len(self.bodies)]
                self.sent += 1
                task = asyncio.create_task(self._one(body))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            delay = next_at - self.now()
            if delay < -1.0:  # fell far behind (a stall): do not burst to catch up
                next_at = self.now()
            await asyncio.sleep(max(0.0, delay))  # pacing real traffic in real time

    async def _one(self, body: dict[str, Any]) -> None:
        started = self.now()
        try:
            response = await self.client.request("POST", "/process", json=body, idempotent=True)
        except Exception as exc:
            self.recorder.call(
                Call(started, self.now() - started, "failed", error=type(exc).__name__)
            )
            return
        finally:
            self._slots.release()
        latency = self.now() - started
        if response.status != 200:
            self.recorder.call(Call(started, latency, "failed", error=f"HTTP {response.status}"))
            return
        data = response.json()
        if response.headers.get(FALLBACK_HEADER):
            self.recorder.call(Call(started, latency, "fallback", depth=1, degraded=True))
            return
        served = response.endpoint.service_id if response.endpoint else data.get("membrane_id")
        self.recorder.call(
            Call(
                started,
                latency,
                "ok",
                served_by=served,
                depth=int(data.get("depth", 0)),
                degraded=bool(data.get("degraded", False)),
            )
        )
