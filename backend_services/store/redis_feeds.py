"""The change feeds of :class:`~backend_services.store.redis.RedisStore`.

Feeds are Redis Streams with explicit ids ``<seq>-0`` taken from a per-stream counter
inside the append script, trimmed with ``MAXLEN`` (exactly below 1000 events, by whole
nodes — ``MAXLEN ~`` — above). A read runs the read script, which also says when the
events asked for are gone (a resync); a blocking read from where the last one ended waits
with ``XREAD BLOCK`` on a connection pool of its own, so a waiting reader never holds up
other commands, and takes the events from its reply.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ValidationError
from .protocol import JSON, FeedBatch, FeedEvent
from .redis_codec import event_arg, maxlen_arg
from .redis_connect import build_client
from .redis_state import REDIS_ERRORS, RedisState
from .values import check_key

__all__ = ["RedisFeeds"]

_loads = json.loads


def _batch(entries: Sequence[Any]) -> FeedBatch:
    """A batch from stream entries (at least one): ``(b"<seq>-0", [b"d", json])`` from the
    read script, ``(b"<seq>-0", {b"d": json})`` from XREAD."""
    events = [
        FeedEvent(
            int(entry_id.partition(b"-")[0]),
            _loads(fields[b"d"] if type(fields) is dict else fields[1]),
        )
        for entry_id, fields in entries
    ]
    return FeedBatch(events, events[-1].position)


class RedisFeeds(RedisState):
    """Appending to and reading change feeds (see the module docstring)."""

    async def append(
        self, stream: str, event: Mapping[str, JSON], *, maxlen: int | None = 10_000
    ) -> int:
        data = event_arg(stream, event)
        k = self._keys
        keys = (k.feed + stream, k.feed_seq + stream, k.feed_dedupe + stream)
        return int(await self._eval(self._append, keys, (maxlen_arg(maxlen), "", data)))

    async def feed_position(self, stream: str) -> int:
        check_key("stream", stream)
        raw = await self._command("GET", self._keys.feed_seq + stream)
        return 0 if raw is None else int(raw)

    async def _collect(self, stream: str, after: int, count: int) -> FeedBatch:
        """Events after ``after`` by the read script, which also says when they are gone."""
        keys = (self._keys.feed + stream, self._keys.feed_seq + stream)
        reply = await self._eval(self._read, keys, (after, count))
        last = int(reply[1])
        if reply[0]:
            return FeedBatch([], last, resync=True)
        entries = reply[2] if len(reply) > 2 else []
        if not entries:
            return FeedBatch([], after)
        return _batch(entries)

    async def read(
        self, stream: str, after: int, *, count: int = 500, block: float | None = None
    ) -> FeedBatch:
        check_key("stream", stream)
        if type(after) is not int or after < 0:
            raise ValidationError("after", after, "an integer position >= 0")
        if type(count) is not int or count < 1:
            raise ValidationError("count", count, "a positive integer")
        blocking = block is not None and block > 0 and not self._closed
        if not blocking or self._followed.get(stream) != after:
            batch = await self._collect(stream, after, count)
            if batch.resync:
                self._followed.pop(stream, None)
                return batch
            self._followed[stream] = batch.position
            if batch.events or not blocking:
                return batch
        # ``after`` was checked against the stream by the last read: wait for what comes
        # next and take it from XREAD's reply. A gap (events trimmed meanwhile) goes back
        # to the read script, which reports it.
        assert block is not None
        entries = await self._wait(stream, after, count, block)
        if not entries:
            self._followed.pop(stream, None)  # quiet: the next read checks the stream again
            return FeedBatch([], after)
        batch = _batch(entries)
        if batch.events[0].position != after + 1:
            self._followed.pop(stream, None)
            return await self._collect(stream, after, count)
        self._followed[stream] = batch.position
        return batch

    async def _wait(self, stream: str, after: int, count: int, block: float) -> list[Any]:
        """Up to ``count`` entries after ``after``, waiting up to ``block`` seconds for the
        first; empty when none came or :meth:`close` ended the wait."""
        if self._blocking is None:
            self._blocking = build_client(self._target, socket_timeout=None, **self._client_options)
        key = self._keys.feed + stream
        xread = asyncio.ensure_future(
            self._blocking.execute_command(
                "XREAD",
                "COUNT",
                count,
                "BLOCK",
                max(1, round(block * 1000)),
                "STREAMS",
                key,
                f"{after}-0",
            )
        )
        self._xreads.add(xread)
        try:
            async with asyncio.timeout(block + self._socket_timeout):
                reply = await xread
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and task is not None and not task.cancelling():
                return []  # close() ended the wait
            raise
        except TimeoutError:
            raise self._fail(TimeoutError(f"XREAD BLOCK {block}s got no reply")) from None
        except REDIS_ERRORS as exc:
            if self._closed:
                return []
            raise self._fail(exc) from exc
        finally:
            self._xreads.discard(xread)
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3: {stream: [entries]}
            (entries,) = reply.values()
            return entries[0] if entries and isinstance(entries[0], list) else entries
        return reply[0][1]  # type: ignore[no-any-return]
