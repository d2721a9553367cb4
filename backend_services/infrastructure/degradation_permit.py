"""The slot of an admitted request: ``with manager.admission(priority):`` admits by level
and, when a concurrency limit is configured, by the adaptive limit, and records the
request's latency on exit."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from ..degradation.levels import FeaturePriority

if TYPE_CHECKING:
    from .service_degradation import ServiceDegradationManager

__all__ = ["Permit"]


class Permit:
    """An admitted request's slot (``with`` / ``async with``): releases the concurrency
    slot with the request's latency on exit; an exception counts as a drop only when it
    is a timeout."""

    __slots__ = ("_clock", "_inflight", "_limit", "_manager", "_priority", "_started")

    def __init__(self, manager: ServiceDegradationManager, priority: FeaturePriority) -> None:
        self._manager = manager
        self._priority = priority
        self._clock = manager._clock
        self._limit = manager._limit
        self._inflight = 0
        self._started = 0.0

    def __enter__(self) -> Permit:
        self._manager.admit(self._priority)
        limit = self._limit
        if limit is not None:
            slot = limit.try_acquire()
            if slot is None:
                self._manager._shed(self._priority, f"concurrency limit {int(limit.limit)} reached")
            else:
                self._inflight = slot
        self._started = self._clock.monotonic()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._limit is not None:
            latency = self._clock.monotonic() - self._started
            dropped = exc_type is not None and issubclass(exc_type, TimeoutError)
            self._limit.release(latency, self._inflight, dropped=dropped)

    async def __aenter__(self) -> Permit:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
