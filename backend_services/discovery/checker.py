"""The schedule of active health checks.

Each scheduled endpoint is checked every ``interval`` seconds (each gap drawn from
``interval x [1 - jitter, 1 + jitter]`` so checks of many endpoints spread out), a newly
scheduled one at once. Checks run concurrently up to the probe's own bound; when they
fall behind, the schedule waits for free slots rather than piling up tasks. Results go to
``on_result``; a failing ``on_result`` is logged and does not stop the schedule.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Awaitable, Callable

from ..clock import Clock, resolve_clock
from ..log import get_logger
from .model import ServiceEndpoint
from .probes import Probe, ProbeResult, run_probe

__all__ = ["CheckSchedule", "sleep_or_wake"]

_log = get_logger("service_discovery")

ResultHandler = Callable[[ServiceEndpoint, ProbeResult], Awaitable[None]]


async def sleep_or_wake(clock: Clock, seconds: float, wake: asyncio.Event) -> None:
    """Sleep ``seconds`` on ``clock``, or less if ``wake`` is set meanwhile."""
    if wake.is_set():
        return
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waker = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        waker.cancel()


class CheckSchedule:
    """Runs checks on a schedule; :meth:`run` is the loop (run it under a supervisor)."""

    def __init__(
        self,
        probe: Probe,
        on_result: ResultHandler,
        *,
        interval: float,
        jitter: float = 0.1,
        max_in_flight: int = 100,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._probe = probe
        self._on_result = on_result
        self.interval = interval
        self.jitter = max(0.0, min(jitter, 0.5))
        self._clock = resolve_clock(clock)
        self._rng = rng or random.Random()
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._endpoints: dict[str, ServiceEndpoint] = {}
        self._due: dict[str, int] = {}
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._wake = asyncio.Event()

    def __contains__(self, service_id: object) -> bool:
        return service_id in self._endpoints

    def __len__(self) -> int:
        return len(self._endpoints)

    def next_gap(self) -> float:
        """Seconds until the next check of an endpoint (with jitter)."""
        spread = self.interval * self.jitter
        return self.interval + self._rng.uniform(-spread, spread)

    def schedule(self, endpoint: ServiceEndpoint, *, delay: float | None = 0.0) -> None:
        """Check ``endpoint`` after ``delay`` seconds (``None``: a random point within one
        interval, to spread a batch), then every interval."""
        sid = endpoint.service_id
        self._endpoints[sid] = endpoint
        if delay is None:
            delay = self._rng.uniform(0.0, self.interval)
        self._push(sid, self._clock.monotonic() + delay)

    def check_soon(self, service_id: str) -> bool:
        """Move a scheduled endpoint's next check to now; False when not scheduled."""
        if service_id not in self._endpoints:
            return False
        self._push(service_id, self._clock.monotonic())
        return True

    def unschedule(self, service_id: str) -> None:
        """Stop checking ``service_id``."""
        self._endpoints.pop(service_id, None)
        self._due.pop(service_id, None)

    def scheduled(self) -> list[str]:
        """Ids currently on the schedule."""
        return list(self._endpoints)

    def _push(self, sid: str, at: float) -> None:
        seq = next(self._seq)
        self._due[sid] = seq
        heapq.heappush(self._heap, (at, seq, sid))
        self._wake.set()

    async def run(self) -> None:
        """The scheduling loop (never returns; cancel to stop)."""
        try:
            while True:
                await self._wait_for_due()
                _, seq, sid = heapq.heappop(self._heap)
                if self._due.get(sid) != seq:
                    continue  # superseded or unscheduled
                if sid in self._running:
                    self._push(sid, self._clock.monotonic() + self.next_gap())
                    continue
                await self._slots.acquire()
                endpoint = self._endpoints.get(sid)
                if endpoint is None or self._due.get(sid) != seq:
                    self._slots.release()
                    continue
                self._due.pop(sid, None)
                self._running.add(sid)
                task = asyncio.create_task(self._check(endpoint), name=f"health-check:{sid}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _wait_for_due(self) -> None:
        while True:
            self._wake.clear()
            while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][1]:
                heapq.heappop(self._heap)
            if self._heap:
                delay = self._heap[0][0] - self._clock.monotonic()
                if delay <= 0:
                    return
                await sleep_or_wake(self._clock, delay, self._wake)
            else:
                await self._wake.wait()

    async def _check(self, endpoint: ServiceEndpoint) -> None:
        sid = endpoint.service_id
        started = self._clock.monotonic()
        try:
            result = await run_probe(self._probe, endpoint)
        finally:
            self._slots.release()
            self._running.discard(sid)
        current = self._endpoints.get(sid)
        if current is not None and sid not in self._due:
            self._push(sid, started + self.next_gap())
        try:
            await self._on_result(endpoint, result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.exception("health_result_failed", service_id=sid, error=repr(exc))
