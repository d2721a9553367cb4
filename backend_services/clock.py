"""Time, as every component reads it.

No component calls :func:`time.monotonic`, :func:`time.time` or :func:`asyncio.sleep`
directly: each takes a ``clock=`` keyword and reads time through it, so tests can
drive time with :class:`backend_services.testing.FakeClock` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock", "resolve_clock"]


@runtime_checkable
class Clock(Protocol):
    """Monotonic time for durations, wall time for records, and an async sleep."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (only differences mean anything)."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch (for timestamps people read)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.time`, :func:`asyncio.sleep`."""

    __slots__ = ()

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


def resolve_clock(clock: Clock | None) -> Clock:
    """The given clock, or the shared system clock when ``None``."""
    return SYSTEM_CLOCK if clock is None else clock
