"""In-memory change feeds: numbered streams with trimming, de-duplication and blocking reads.

Each stream numbers its events 1, 2, 3, … (or from a *base* after :meth:`MemoryFeeds.reset`,
so positions handed out before the reset are recognisably foreign). A reader whose
position is older than the oldest retained event, or newer than the stream's end, is told
to resync and continues from the stream's end.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from ..clock import Clock
from ..errors import ValidationError
from .protocol import FeedBatch, FeedEvent
from .values import check_key, thaw

__all__ = ["DEDUPE_MEMORY", "MemoryFeeds"]

DEDUPE_MEMORY = 10_000
"""How many recent ``dedupe_id`` values each stream remembers (at least)."""


@dataclass(slots=True)
class _Stream:
    last: int  # position of the newest event ever appended (the stream's end)
    events: deque[tuple[int, Any]] = field(default_factory=deque)  # (position, frozen data)
    seen: OrderedDict[str, int] = field(default_factory=OrderedDict)  # dedupe id -> position
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def floor(self) -> int:
        """Readers at a position below this have lost events."""
        return self.events[0][0] - 1 if self.events else self.last


class MemoryFeeds:
    """The streams of one :class:`~backend_services.store.memory.MemoryStore`."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self._base = 0

    def _stream(self, name: str) -> _Stream:
        s = self._streams.get(name)
        if s is None:
            s = self._streams[name] = _Stream(last=self._base)
        return s

    def position(self, name: str) -> int:
        s = self._streams.get(name)
        return self._base if s is None else s.last

    def append(self, name: str, frozen: Any, maxlen: int | None, dedupe_id: str | None) -> int:
        s = self._stream(name)
        if dedupe_id is not None:
            known = s.seen.get(dedupe_id)
            if known is not None:
                return known
        s.last += 1
        s.events.append((s.last, frozen))
        if maxlen is not None:
            while len(s.events) > maxlen:
                s.events.popleft()
        if dedupe_id is not None:
            s.seen[dedupe_id] = s.last
            while len(s.seen) > max(DEDUPE_MEMORY, maxlen or 0):
                s.seen.popitem(last=False)
        if s.waiters:
            _wake(s)
        return s.last

    def collect(self, name: str, after: int, count: int) -> FeedBatch:
        """What a non-blocking read returns."""
        s = self._streams.get(name)
        last = self._base if s is None else s.last
        if after > last or (s is not None and after < s.floor) or (s is None and after < last):
            return FeedBatch([], last, resync=True)
        if s is None or after == last:
            return FeedBatch([], after)
        events = s.events
        new = last - after  # events after the reader, all retained
        take = min(new, count)
        if new <= len(events) // 2:
            tail = list(islice(reversed(events), new))
            tail.reverse()
            chunk = tail[:take]
        else:
            start = len(events) - new
            chunk = list(islice(events, start, start + take))
        out = [FeedEvent(pos, thaw(data)) for pos, data in chunk]
        return FeedBatch(out, out[-1].position)

    async def read(
        self, name: str, after: int, *, count: int = 500, block: float | None = None
    ) -> FeedBatch:
        check_key("stream", name)
        if type(after) is not int or after < 0:
            raise ValidationError("after", after, "an integer position >= 0")
        if type(count) is not int or count < 1:
            raise ValidationError("count", count, "a positive integer")
        batch = self.collect(name, after, count)
        if batch.events or batch.resync or block is None or block <= 0:
            return batch
        await self._wait(self._stream(name), block)
        return self.collect(name, after, count)

    async def _wait(self, s: _Stream, block: float) -> None:
        """Until an event is appended to ``s`` or ``block`` seconds pass on the clock."""
        signal: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        s.waiters.append(signal)
        timer = asyncio.ensure_future(self._clock.sleep(block))
        try:
            await asyncio.wait((signal, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not signal.done():
                signal.cancel()
                if signal in s.waiters:
                    s.waiters.remove(signal)

    def wake_all(self) -> None:
        """Release every blocked reader (used on close)."""
        for s in self._streams.values():
            _wake(s)

    def reset(self, base: int) -> None:
        """Forget every stream; new events are numbered from ``base + 1``."""
        self.wake_all()
        self._streams.clear()
        self._base = base


def _wake(s: _Stream) -> None:
    waiters, s.waiters = s.waiters, []
    for w in waiters:
        if not w.done():
            w.set_result(None)
