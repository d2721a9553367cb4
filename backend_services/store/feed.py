"""Following a change feed: deliver every event of a stream, or say when to reload.

:class:`FeedFollower` reads a stream from a position (by default its current end) in a
supervised background task and hands each batch to ``on_events``; when the store says
events were lost (trimmed, stream reset, backend switched) it calls ``on_resync`` first so
the owner reloads its full view. Store errors never stop it: it retries with jittered
exponential backoff, and the loop itself runs under a :class:`~backend_services.tasks.Supervisor`.

To miss nothing between loading state and following, read ``await store.feed_position()``
first, load, then follow with ``start=`` that position. Events may be delivered twice
around a resync; consumers de-duplicate by record version.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..clock import Clock, resolve_clock
from ..errors import ValidationError
from ..log import get_logger
from ..tasks import Backoff, Supervisor, call_isolated, cancel_and_wait, raise_if_cancelling
from .protocol import FeedEvent, Store

__all__ = ["FeedFollower"]

_log = get_logger("store.feed")

EventsCallback = Callable[[list[FeedEvent]], Awaitable[Any] | Any]
ResyncCallback = Callable[[], Awaitable[Any] | Any]


class FeedFollower:
    """Follows ``stream`` in ``store`` and calls ``on_events``/``on_resync`` (sync or async)."""

    def __init__(
        self,
        store: Store,
        stream: str,
        *,
        on_events: EventsCallback,
        on_resync: ResyncCallback,
        clock: Clock | None = None,
        block: float = 1.0,
        start: int | None = None,
        count: int = 500,
        backoff: Backoff | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        if not isinstance(stream, str) or not stream:
            raise ValidationError("stream", stream, "a non-empty stream name")
        if not block > 0:
            raise ValidationError("block", block, "a positive number of seconds")
        if start is not None and (type(start) is not int or start < 0):
            raise ValidationError("start", start, "None or an integer position >= 0")
        self.store = store
        self.stream = stream
        self._on_events = on_events
        self._on_resync = on_resync
        self._clock = resolve_clock(clock)
        self.block = float(block)
        self.count = count
        self._backoff = backoff or Backoff(initial=0.05, maximum=5.0)
        self._own_supervisor = supervisor is None
        self._supervisor = supervisor or Supervisor(f"feed:{stream}", clock=self._clock)
        self._task: asyncio.Task[None] | None = None
        self._position = start
        self._current_at: float | None = None
        self.delivered = 0
        self.resyncs = 0
        self.errors = 0
        self.last_error: str | None = None

    @property
    def position(self) -> int | None:
        """The position of the last event handled (None until the start position is known)."""
        return self._position

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def lag(self) -> float | None:
        """Seconds since the follower was last known to be caught up with the stream
        (0.0 right after a read that found nothing more; None before the first read)."""
        if self._current_at is None:
            return None
        return max(0.0, self._clock.monotonic() - self._current_at)

    async def events_behind(self) -> int:
        """How many events the stream holds beyond this follower's position (asks the store)."""
        end = await self.store.feed_position(self.stream)
        return max(0, end - (self._position or 0))

    def start(self) -> None:
        """Start following in the background (idempotent)."""
        if self.running:
            return
        self._task = self._supervisor.spawn(f"follow:{self.stream}", self._run)

    async def stop(self) -> None:
        """Stop following and wait for the loop to end."""
        task, self._task = self._task, None
        if self._own_supervisor:
            await self._supervisor.close()
        elif task is not None:
            await cancel_and_wait([task])

    close = stop

    async def __aenter__(self) -> FeedFollower:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the loop --------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            raise_if_cancelling()
            try:
                if self._position is None:
                    self._position = await self.store.feed_position(self.stream)
                batch = await self.store.read(
                    self.stream, self._position, count=self.count, block=self.block
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                await self._failed(exc)
                continue
            self._backoff.reset()
            if batch.resync:
                self.resyncs += 1
                _log.info("feed_resync", stream=self.stream, old=self._position, new=batch.position)
                await self._callback(self._on_resync, "on_resync")
            if batch.events:
                self.delivered += len(batch.events)
                await self._callback(self._on_events, "on_events", batch.events)
            self._position = batch.position
            if len(batch.events) < self.count:
                self._current_at = self._clock.monotonic()

    async def _callback(self, fn: Callable[..., Any], what: str, *args: Any) -> None:
        def failed(exc: Exception) -> None:
            _log.exception(
                "feed_callback_failed", stream=self.stream, callback=what, error=repr(exc)
            )

        await call_isolated(fn, args, failed)

    async def _failed(self, exc: Exception) -> None:
        self.errors += 1
        self.last_error = repr(exc)
        delay = self._backoff.next_delay()
        _log.warning(
            "feed_read_failed", stream=self.stream, error=repr(exc), retry_in=round(delay, 3)
        )
        await self._clock.sleep(delay)
