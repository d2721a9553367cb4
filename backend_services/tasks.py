"""Owned, supervised background work.

Every background loop of a component runs under a :class:`Supervisor`: it is named,
restarted with jittered exponential backoff when it crashes (the crash is logged with the
owner and task name, and counted in :attr:`Supervisor.crashes`), and cancelled by
:meth:`Supervisor.close`. Nothing dies silently and nothing is left behind. All waiting
goes through the injected clock, so tests drive restarts with a fake clock.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .clock import Clock, resolve_clock
from .errors import ValidationError
from .log import get_logger

__all__ = ["Backoff", "Supervisor", "call_isolated", "cancel_and_wait", "raise_if_cancelling"]

_log = get_logger("tasks")


@dataclass(slots=True)
class Backoff:
    """Jittered exponential backoff: ``initial * factor**n`` capped at ``maximum``,
    each delay drawn uniformly from [delay/2, delay] ("equal jitter").

    ``rng`` (default: the ``random`` module) draws the jitter; pass a seeded
    :class:`random.Random` for reproducible delays. Once the cap is reached the attempt
    count stops growing, so a loop may back off forever without overflowing.
    """

    initial: float = 0.1
    maximum: float = 10.0
    factor: float = 2.0
    attempt: int = 0
    rng: random.Random | None = None

    def __post_init__(self) -> None:
        for name in ("initial", "maximum", "factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValidationError(f"Backoff.{name}", value, "a finite number")
            if not math.isfinite(value):
                raise ValidationError(f"Backoff.{name}", value, "a finite number")
        if self.initial <= 0:
            raise ValidationError("Backoff.initial", self.initial, "a number > 0")
        if self.maximum < self.initial:
            raise ValidationError(
                "Backoff.maximum", self.maximum, f"a number >= initial ({self.initial})"
            )
        if self.factor < 1:
            raise ValidationError("Backoff.factor", self.factor, "a number >= 1")

    @property
    def base(self) -> float:
        """The un-jittered delay the next call will draw from (``[base/2, base]``)."""
        try:
            grown = self.initial * float(self.factor) ** self.attempt
        except OverflowError:
            return self.maximum
        return min(self.maximum, grown)

    def next_delay(self, rng: random.Random | None = None) -> float:
        """The next delay (seconds); each call moves one step up the curve."""
        base = self.base
        if base < self.maximum:
            self.attempt += 1
        r = (rng or self.rng or random).random()
        return base / 2 + r * base / 2

    def reset(self) -> None:
        """Back to the first (shortest) delay."""
        self.attempt = 0


class Supervisor:
    """Owns a component's background tasks.

    ``spawn(name, factory)`` runs ``await factory()`` as task ``"<owner>:<name>"``. When it
    raises, the crash is logged (event ``task_crashed`` with ``owner`` and ``task``) and,
    unless ``restart=False``, ``factory()`` runs again after a :class:`Backoff` delay slept
    on the clock; the backoff starts over when a run lasted longer than its maximum delay.
    Returning normally ends the task for good. ``await close()`` cancels every task and
    waits for them; afterwards ``spawn`` raises :class:`RuntimeError`. An error raised
    while a task is being cancelled (a client library turning the cancellation into its
    own exception) ends the task as cancelled: it is not a crash and is not restarted.
    """

    def __init__(self, owner: str, *, clock: Clock | None = None) -> None:
        self.owner = owner
        self._clock = resolve_clock(clock)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.crashes: dict[str, int] = {}
        self._closed = False

    def spawn(
        self,
        name: str,
        factory: Callable[[], Awaitable[object]],
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
        self,
        name: str,
        factory: Callable[[], Awaitable[object]],
        restart: bool,
        backoff: Backoff,
    ) -> None:
        while True:
            started = self._clock.monotonic()
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A client library may turn our cancellation into its own error (a
                # timeout, a lost connection): that is a stop, not a crash.
                raise_if_cancelling(exc)
                self.crashes[name] = self.crashes.get(name, 0) + 1
                if self._clock.monotonic() - started > backoff.maximum:
                    backoff.reset()
                delay = backoff.next_delay() if restart else None
                _log.exception(
                    "task_crashed",
                    owner=self.owner,
                    task=name,
                    error=repr(exc),
                    crashes=self.crashes[name],
                    restart=restart,
                    retry_in=None if delay is None else round(delay, 3),
                )
                if delay is None:
                    return
                await self._clock.sleep(delay)

    @property
    def names(self) -> list[str]:
        """Names of the tasks still running."""
        return [n for n, t in self._tasks.items() if not t.done()]

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    async def close(self) -> None:
        """Cancel every task and wait for them to finish (idempotent).

        Called from inside one of its own tasks (a loop that shuts its component down),
        it waits for the others and then cancels the calling task too: the caller's code
        after ``await close()`` runs up to its next ``await``.
        """
        self._closed = True
        current = asyncio.current_task()
        await cancel_and_wait([t for t in self._tasks.values() if t is not current])
        own = current is not None and current in self._tasks.values()
        self._tasks.clear()
        if own and current is not None:
            current.cancel()


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], *, every: float = 0.25, attempts: int = 40
) -> None:
    """Cancel ``tasks`` and wait until they have all ended.

    A client library can swallow a cancellation (``asyncio.wait_for`` on Python 3.11 loses
    one that races with its own completion), leaving a loop running after ``cancel()``; so
    the cancel is repeated every ``every`` seconds until each task is done, ``attempts``
    times at most. A task still running after that is reported, never waited on forever.
    """
    pending = {t for t in tasks if not t.done()}
    for _ in range(attempts):
        if not pending:
            return
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=every)
    for t in pending:
        _log.error("task_not_cancellable", task=t.get_name())


def raise_if_cancelling(exc: BaseException | None = None) -> None:
    """Re-raise as a cancellation when the current task is being cancelled. A client
    library may turn a cancellation into its own error (a timeout, a lost connection);
    loops that survive such errors call this so that shutdown still stops them."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


async def call_isolated(
    fn: Callable[..., Any], args: tuple[Any, ...], on_error: Callable[[Exception], None]
) -> None:
    """Run a user callback ``fn(*args)``, sync or async. If it raises, ``on_error(exc)`` is
    called inside the handler (so a log there keeps the traceback) and nothing propagates;
    a cancellation does."""
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            await result
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise_if_cancelling(exc)
        on_error(exc)
