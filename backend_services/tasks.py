"""Owned, supervised background work.

Every background loop of a component runs under a :class:`Supervisor`: it is named,
restarted with jittered exponential backoff when it crashes (the crash is logged), and
cancelled by :meth:`Supervisor.close`. Nothing dies silently and nothing is left behind.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .clock import Clock, resolve_clock
from .log import get_logger

__all__ = ["Backoff", "Supervisor"]

_log = get_logger("tasks")


@dataclass(slots=True)
class Backoff:
    """Jittered exponential backoff: ``initial * factor**n`` capped at ``maximum``,
    each delay drawn uniformly from [delay/2, delay] ("equal jitter")."""

    initial: float = 0.1
    maximum: float = 10.0
    factor: float = 2.0
    attempt: int = 0

    def next_delay(self, rng: random.Random | None = None) -> float:
        base = min(self.maximum, self.initial * (self.factor**self.attempt))
        self.attempt += 1
        r = (rng or random).random()
        return base / 2 + r * base / 2

    def reset(self) -> None:
        self.attempt = 0


class Supervisor:
    """Owns a component's background tasks."""

    def __init__(self, owner: str, *, clock: Clock | None = None) -> None:
        self.owner = owner
        self._clock = resolve_clock(clock)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.crashes: dict[str, int] = {}
        self._closed = False

    def spawn(
        self,
        name: str,
        factory: Callable[[], Awaitable[None]],
        *,
        restart: bool = True,
        backoff: Backoff | None = None,
    ) -> asyncio.Task[None]:
        """Run ``factory()`` as task ``owner:name``; if it raises, log and (with
        ``restart``) run it again after a backoff delay. Returning normally ends it."""
        if self._closed:
            raise RuntimeError(f"supervisor {self.owner!r} is closed")
        full = f"{self.owner}:{name}"
        if name in self._tasks and not self._tasks[name].done():
            raise RuntimeError(f"task {full!r} is already running")
        task = asyncio.create_task(
            self._run(name, factory, restart, backoff or Backoff()), name=full
        )
        self._tasks[name] = task
        return task

    async def _run(
        self, name: str, factory: Callable[[], Awaitable[None]], restart: bool, backoff: Backoff
    ) -> None:
        while True:
            started = self._clock.monotonic()
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.crashes[name] = self.crashes.get(name, 0) + 1
                if self._clock.monotonic() - started > backoff.maximum:
                    backoff.reset()
                delay = backoff.next_delay()
                _log.exception(
                    "task_crashed",
                    owner=self.owner,
                    task=name,
                    error=repr(exc),
                    restart=restart,
                    retry_in=round(delay, 3),
                )
                if not restart:
                    return
                await self._clock.sleep(delay)

    @property
    def names(self) -> list[str]:
        """Names of the tasks still running."""
        return [n for n, t in self._tasks.items() if not t.done()]

    async def close(self) -> None:
        """Cancel every task and wait for them to finish."""
        self._closed = True
        tasks = [t for t in self._tasks.values() if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
