"""Awaitables that are already done, for the ``async with`` fast paths.

``__aenter__`` and ``__aexit__`` of a closed breaker are plain methods that return an
already finished awaitable instead of being coroutines (which would cost a frame per
entry): :func:`completed` (a completed future, one per breaker, for the entry) and
:data:`DONE` (for the exit: a generator-based coroutine run to its end once, checked
when this module is imported; awaiting it allocates nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from types import coroutine
from typing import Any, Final, cast

__all__ = ["DONE", "completed", "finished"]


class _NoLoop:
    """Enough of a loop to create futures that are completed at once and never wait."""

    def get_debug(self) -> bool:
        return False


def completed(value: Any) -> Awaitable[Any]:
    """An awaitable that is already done with ``value``: awaiting it never suspends and
    touches no event loop, so one object serves every loop. (A completed future is the
    cheapest such awaitable; a coroutine would cost a frame per ``async with``.)"""
    try:
        future: asyncio.Future[Any] = asyncio.Future(loop=_NO_LOOP)  # type: ignore[arg-type]
        future.set_result(value)
        return future
    except Exception:  # pragma: no cover - an asyncio without loop-free futures
        return _Ready(value)


class _Ready:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Any:
        return self.value
        yield  # a generator: returns at once


_NO_LOOP = _NoLoop()


def finished() -> Awaitable[None]:
    """An awaitable of ``None`` that allocates nothing when awaited: a generator-based
    coroutine run to its end once. Awaiting it is a single send to an exhausted
    generator, which returns ``None`` at once, again and again (unlike a native
    coroutine, which refuses to be awaited twice). Falls back to a completed future
    where the interpreter behaves otherwise."""

    @coroutine
    def nothing() -> Any:
        return None
        yield  # a generator: returns at once

    gen = nothing()
    for _ in gen:  # run it to its end
        pass
    try:
        gen.send(None)
    except StopIteration as stop:
        if stop.value is None:
            return cast(Awaitable[None], gen)
    except BaseException:  # pragma: no cover - an interpreter without that behaviour
        pass
    return completed(None)  # pragma: no cover


DONE: Final[Awaitable[None]] = finished()
