"""Change callbacks of the configuration manager: registered, ordered, isolated.

Every applied change (local or from another process) is queued once — versions are
de-duplicated before they get here — and :meth:`ChangeDispatcher.drain` runs the queue in
order: for each changed key the global callbacks, then those registered for the key or
any parent of it, as ``cb(key, new_value, old_value)``; then the listeners with the whole
:class:`~backend_services.config.model.ConfigChangeEvent`. Callbacks may be sync or
async; one that raises is logged and counted, and the others still run. A callback that
itself changes configuration does not deadlock: its change is run by the drain in
progress, after the current one.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from ..config.model import UNREADABLE, ConfigChangeEvent, copy_value
from ..config.tree import check_key, parents
from ..errors import ValidationError
from ..log import get_logger
from ..tasks import call_isolated

__all__ = ["ChangeCallback", "ChangeDispatcher", "Listener"]

_log = get_logger("config_manager")

ChangeCallback: TypeAlias = Callable[[str, Any, Any], "Awaitable[Any] | Any"]
Listener: TypeAlias = Callable[[ConfigChangeEvent], "Awaitable[Any] | Any"]

_in_callback: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "config_in_callback", default=False
)


class ChangeDispatcher:
    """Queue of applied changes and the callbacks that hear about them."""

    def __init__(self, service_name: str) -> None:
        self.service_name = service_name
        self._by_key: dict[str, list[ChangeCallback]] = {}
        self._global: list[ChangeCallback] = []
        self._listeners: list[Listener] = []
        self._queue: deque[ConfigChangeEvent] = deque()
        self._draining: asyncio.Future[None] | None = None
        self.errors = 0

    def __len__(self) -> int:
        return len(self._global) + len(self._listeners) + sum(map(len, self._by_key.values()))

    def add(self, key: str, callback: ChangeCallback) -> Callable[[], None]:
        if not callable(callback):
            raise ValidationError("callback", callback, "a callable(key, new, old)")
        check_key(key)
        self._by_key.setdefault(key, []).append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError, KeyError):
                self._by_key[key].remove(callback)

        return remove

    def add_global(self, callback: ChangeCallback) -> Callable[[], None]:
        if not callable(callback):
            raise ValidationError("callback", callback, "a callable(key, new, old)")
        self._global.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._global.remove(callback)

        return remove

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        if not callable(listener):
            raise ValidationError("listener", listener, "a callable(event)")
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def enqueue(self, event: ConfigChangeEvent) -> None:
        if event.changes or event.version is not None:
            self._queue.append(event)

    async def drain(self) -> None:
        """Run every queued change's callbacks, in order, each exactly once."""
        if _in_callback.get():
            return  # called from a callback: the drain in progress runs it
        while self._draining is not None:
            await asyncio.shield(self._draining)
        if not self._queue:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._draining = future
        token = _in_callback.set(True)
        try:
            while self._queue:
                await self._fire(self._queue.popleft())
        finally:
            _in_callback.reset(token)
            self._draining = None
            future.set_result(None)

    async def _fire(self, event: ConfigChangeEvent) -> None:
        for change in event.changes:
            new = None if change.new_value is UNREADABLE else change.new_value
            old = None if change.old_value is UNREADABLE else change.old_value
            targets = list(self._global)
            for name in (change.key, *parents(change.key)):
                targets.extend(self._by_key.get(name, ()))
            for callback in targets:
                await self._call(callback, change.key, copy_value(new), copy_value(old))
        for listener in list(self._listeners):
            await self._call(listener, event)

    async def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        def failed(exc: Exception) -> None:
            self.errors += 1
            _log.exception(
                "config_callback_failed",
                service=self.service_name,
                callback=getattr(callback, "__qualname__", repr(callback)),
                key=args[0] if args and isinstance(args[0], str) else None,
                error=repr(exc),
            )

        await call_isolated(callback, args, failed)
