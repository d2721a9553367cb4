"""The live view's server-sent events (``GET /api/v1/events``).

:class:`EventStreams` serves one stream per request: a ``snapshot`` event on connect,
then every event the watcher publishes, and a keep-alive comment every ``heartbeat``
seconds of the injected clock. It counts open streams per client (at most
``max_per_client``; more is a 429 problem) and ends every stream on :meth:`close`.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter as _Tally
from typing import Any

from aiohttp import web

from ..clock import Clock
from .messages import jsonable
from .problems import Problem
from .watch import FleetWatcher

__all__ = ["EventStreams"]


class EventStreams:
    """Open server-sent event streams, counted per client."""

    def __init__(
        self, watcher: FleetWatcher, *, max_per_client: int, heartbeat: float, clock: Clock
    ) -> None:
        self.watcher = watcher
        self.max_per_client = max_per_client
        self.heartbeat = heartbeat
        self._clock = clock
        self._streams: _Tally[str] = _Tally()
        self._closing = asyncio.Event()

    @property
    def open(self) -> int:
        """How many streams are open now."""
        return sum(self._streams.values())

    def close(self) -> None:
        """End every open stream (and any opened later)."""
        self._closing.set()

    async def serve(self, request: web.Request, client: str) -> web.StreamResponse:
        """Stream events to ``client`` until it goes away or the streams are closed."""
        if self._streams[client] >= self.max_per_client:
            raise Problem(
                429,
                f"too many open event streams from this client (at most {self.max_per_client})",
                headers={"Retry-After": "5"},
            )
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        self._streams[client] += 1
        sub = self.watcher.subscribe()
        try:
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")
            await _send(response, "snapshot", self.watcher.overview())
            closing = asyncio.ensure_future(self._closing.wait())
            try:
                while not self._closing.is_set():
                    getter = asyncio.ensure_future(sub.get())
                    beat = asyncio.ensure_future(self._clock.sleep(self.heartbeat))
                    done, _ = await asyncio.wait(
                        {getter, beat, closing}, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in (getter, beat):
                        if not task.done():
                            task.cancel()
                    if getter in done:
                        event, data = getter.result()
                        await _send(response, event, data)
                    elif beat in done:
                        await response.write(b": keep-alive\n\n")
            finally:
                closing.cancel()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.watcher.unsubscribe(sub)
            self._streams[client] -= 1
            if self._streams[client] <= 0:
                del self._streams[client]
        return response


async def _send(response: web.StreamResponse, event: str, data: Any) -> None:
    payload = json.dumps(jsonable(data), separators=(",", ":"))
    await response.write(f"event: {event}\ndata: {payload}\n\n".encode())
