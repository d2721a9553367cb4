"""Discovery events and isolated callback dispatch.

Callbacks may be sync or async. A sync one runs at once; an async one runs as a task
(awaited on shutdown). Either way a failing callback is logged and counted, and never
disturbs discovery or the other callbacks.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..log import get_logger
from .model import ServiceStatus

__all__ = ["CallbackSet", "DiscoveryEvent"]

_log = get_logger("service_discovery")


@dataclass(frozen=True, slots=True)
class DiscoveryEvent:
    """Something discovery saw happen.

    ``kind``: ``registered``, ``deregistered``, ``expired``, ``status_changed``,
    ``ejected``, ``readmitted``, ``record_rejected``, ``self_preservation_started``,
    ``self_preservation_ended``, ``evictions_paused``, ``registration_restored``,
    ``resync``. ``old``/``new``: statuses (``None`` = absent) for instance changes.
    """

    kind: str
    service_id: str | None = None
    old: ServiceStatus | None = None
    new: ServiceStatus | None = None
    at: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


class CallbackSet:
    """A list of callbacks fired with isolation."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._callbacks: list[Callable[..., Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures = 0

    def add(self, callback: Callable[..., Any]) -> None:
        if not callable(callback):
            from ..errors import ValidationError

            raise ValidationError("callback", callback, "a callable (sync or async)")
        self._callbacks.append(callback)

    def __len__(self) -> int:
        return len(self._callbacks)

    def fire(self, *args: Any) -> None:
        """Call every callback with ``args``."""
        for callback in self._callbacks:
            try:
                result = callback(*args)
            except Exception as exc:
                self._failed(callback, exc)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(self._await(callback, result))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _await(self, callback: Callable[..., Any], awaitable: Any) -> None:
        try:
            await awaitable
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(callback, exc)

    def _failed(self, callback: Callable[..., Any], exc: Exception) -> None:
        self.failures += 1
        _log.exception(
            "callback_failed",
            callbacks=self.name,
            callback=getattr(callback, "__qualname__", repr(callback)),
            error=repr(exc),
        )

    async def drain(self, limit: float = 5.0) -> None:
        """Wait (bounded) for running async callbacks, then cancel the rest."""
        if not self._tasks:
            return
        pending = set(self._tasks)
        _, still = await asyncio.wait(pending, timeout=limit)
        for task in still:
            task.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)
