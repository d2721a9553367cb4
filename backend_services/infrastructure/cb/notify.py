"""Listeners and fallbacks of circuit breakers: isolated, sync or async.

* :class:`Listeners` — who wants which events; a listener that raises is logged and
  never breaks a call; an async listener runs as a task of the running loop.
* :func:`current_failure` — inside a fallback, why it was called.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any

from ...breaker.events import CircuitBreakerEvent, EventKind
from ...log import get_logger

__all__ = ["Listener", "Listeners", "current_failure", "run_fallback", "run_fallback_sync"]

_log = get_logger("circuit_breaker")

Listener = Callable[[CircuitBreakerEvent], Awaitable[Any] | Any]

_FAILURE: ContextVar[BaseException | None] = ContextVar("circuit_breaker_failure", default=None)


def current_failure() -> BaseException | None:
    """Inside a ``fallback_function``: why it was called — the
    :class:`~backend_services.errors.CircuitBreakerException` of a call that was not
    permitted, the exception the call raised, or :class:`TimeoutError` for a request
    timeout. ``None`` outside a fallback."""
    return _FAILURE.get()


async def run_fallback(
    fallback: Callable[..., Any],
    reason: BaseException,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> Any:
    """Call ``fallback(*args, **kwargs)`` (sync or async) with ``reason`` visible to
    :func:`current_failure`, and return its result."""
    token = _FAILURE.set(reason)
    try:
        result = fallback(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result
    finally:
        _FAILURE.reset(token)


def run_fallback_sync(
    fallback: Callable[..., Any],
    reason: BaseException,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> Any:
    """The synchronous form of :func:`run_fallback` (for synchronous functions)."""
    token = _FAILURE.set(reason)
    try:
        return fallback(*args, **kwargs)
    finally:
        _FAILURE.reset(token)


class Listeners:
    """The listeners of one breaker, each for all events or for some kinds."""

    __slots__ = ("_items", "_tasks", "kinds")

    def __init__(self) -> None:
        self._items: list[tuple[Listener, frozenset[EventKind] | None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.kinds: frozenset[EventKind] = frozenset()

    def add(self, listener: Listener, kinds: Iterable[EventKind | str] | None = None) -> None:
        wanted = None if kinds is None else frozenset(EventKind(k) for k in kinds)
        self._items.append((listener, wanted))
        self._update()

    def remove(self, listener: Listener) -> bool:
        before = len(self._items)
        self._items = [item for item in self._items if item[0] is not listener]
        self._update()
        return len(self._items) != before

    def _update(self) -> None:
        kinds: set[EventKind] = set()
        for _, wanted in self._items:
            kinds |= set(EventKind) if wanted is None else wanted
        self.kinds = frozenset(kinds)

    def __len__(self) -> int:
        return len(self._items)

    def emit(self, event: CircuitBreakerEvent) -> None:
        """Deliver ``event`` to every listener that wants it; never raises."""
        for listener, wanted in self._items:
            if wanted is not None and event.kind not in wanted:
                continue
            try:
                result = listener(event)
            except Exception as exc:
                _log.exception(
                    "listener_failed", name=event.name, kind=event.kind.value, error=repr(exc)
                )
                continue
            if inspect.isawaitable(result):
                self._schedule(result, event)

    def _schedule(self, awaitable: Awaitable[Any], event: CircuitBreakerEvent) -> None:
        async def guarded() -> None:
            try:
                await awaitable
            except Exception as exc:
                _log.exception(
                    "listener_failed", name=event.name, kind=event.kind.value, error=repr(exc)
                )

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            _log.warning(
                "listener_skipped",
                name=event.name,
                kind=event.kind.value,
                reason="async listener and no running event loop",
            )
            return
        task = loop.create_task(guarded(), name=f"circuit_breaker:{event.name}:listener")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for async listeners still running."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
