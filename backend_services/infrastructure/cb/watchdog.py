"""Request timeouts without a timer per call: one watchdog per event loop, clock and timeout.

A call protected by a request timeout registers its task and start time in the
watchdog's ``inflight`` dict (one dict store) and removes it when it ends (one delete).
All calls of one watchdog share one timeout, so insertion order is deadline order: the
watchdog only ever looks at the oldest entry. It sleeps (on the injected clock) until
that entry's deadline — or for one timeout when nothing is in flight, which is exactly
soon enough for any call that starts meanwhile — then cancels each overdue task and
remembers it in ``expired``; the call's own wrapper turns that cancellation into
:class:`TimeoutError` (like :func:`asyncio.timeout`: ``uncancel()``, and a cancellation
from elsewhere still wins).

Watchdogs are shared by every breaker with the same timeout and clock on a loop, and
run under a :class:`~backend_services.tasks.Supervisor`; one ends with its loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from ...clock import Clock
from ...log import get_logger
from ...tasks import Supervisor

__all__ = ["TIMEOUT_MESSAGE", "Watchdog", "current_task_of", "watchdog_for"]

_log = get_logger("circuit_breaker")

TIMEOUT_MESSAGE: Final = "circuit breaker request timeout"


def _task_lookup() -> Callable[[asyncio.AbstractEventLoop | None], asyncio.Task[object] | None]:
    table = getattr(asyncio.tasks, "_current_tasks", None)
    if isinstance(table, dict):
        # The interpreter's own loop -> running-task table: one dict lookup, no loop query.
        return table.get
    return asyncio.current_task  # pragma: no cover - interpreters without the table


current_task_of: Final = _task_lookup()
"""``current_task_of(loop)``: the task running on ``loop`` now, or ``None`` (also when
``loop`` is not the running loop, or is ``None``)."""


class Watchdog:
    """Cancels tasks whose registered call has run longer than ``timeout``."""

    __slots__ = ("__weakref__", "_supervisor", "clock", "expired", "inflight", "key", "timeout")

    def __init__(self, clock: Clock, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout
        self.key = (id(clock), timeout)
        self.inflight: dict[asyncio.Task[object], float] = {}
        # task -> (start of the expired call, the task's cancel count before we cancelled)
        self.expired: dict[asyncio.Task[object], tuple[float, int]] = {}
        self._supervisor = Supervisor(f"circuit_breaker.watchdog[{timeout:g}s]", clock=clock)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        async def run() -> None:
            try:
                await self._run()
            except asyncio.CancelledError:  # the loop is shutting down, or close()
                registry = _REGISTRIES.get(loop)
                if registry is not None and registry.get(self.key) is self:
                    del registry[self.key]
                    if not registry:
                        del _REGISTRIES[loop]
                raise

        self._supervisor.spawn("run", run, restart=True)

    async def _run(self) -> None:
        clock = self.clock
        mono = clock.monotonic
        inflight = self.inflight
        expired = self.expired
        timeout = self.timeout
        while True:
            now = mono()
            wake = now + timeout
            while inflight:
                task, start = next(iter(inflight.items()))
                deadline = start + timeout
                if deadline > now:
                    wake = deadline
                    break
                del inflight[task]
                if not task.done():
                    expired[task] = (start, task.cancelling())
                    task.cancel(TIMEOUT_MESSAGE)
            await clock.sleep(wake - now)

    async def close(self) -> None:
        await self._supervisor.close()


# loop -> {(id(clock), timeout): watchdog}. A watchdog removes itself when its task ends
# (at the latest when its loop shuts down), and the loop's entry goes with its last one.
_REGISTRIES: dict[asyncio.AbstractEventLoop, dict[tuple[int, float], Watchdog]] = {}


def watchdog_for(loop: asyncio.AbstractEventLoop, clock: Clock, timeout: float) -> Watchdog:
    """The running watchdog for ``timeout`` and ``clock`` on ``loop`` (the running
    loop), started if there is none."""
    registry = _REGISTRIES.get(loop)
    if registry is None:
        registry = _REGISTRIES[loop] = {}
    key = (id(clock), timeout)
    dog = registry.get(key)
    if dog is None or dog.clock is not clock:
        dog = Watchdog(clock, timeout)
        registry[key] = dog
        dog.start(loop)
    return dog
