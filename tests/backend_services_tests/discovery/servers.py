"""Real HTTP servers for discovery tests: they answer, fail, hang, slow down, go away and
come back on the same port."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Literal

from aiohttp import web

Mode = Literal["ok", "error", "hang", "slow"]


async def wait_for(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    """Wait (bounded, real time) for something a real server or process does to show."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FlakyServer:
    """An aiohttp server on 127.0.0.1 whose behaviour the test switches at will.

    ``mode``: ``ok`` (200), ``error`` (503), ``hang`` (never answers), ``slow``
    (answers after ``delay`` seconds). :meth:`stop` takes it off the network (connection
    refused); :meth:`start` brings it back on the same port.
    """

    def __init__(self, name: str = "server", port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.mode: Mode = "ok"
        self.health_mode: Mode | None = None  # None: /health behaves like everything else
        self.delay = 0.2
        self.hits = 0
        self.health_hits = 0
        self.paths: list[str] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()

    async def _answer(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        if request.path.startswith("/health"):
            self.health_hits += 1
        else:
            self.hits += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._respond(request)
        finally:
            self.in_flight -= 1

    async def _respond(self, request: web.Request) -> web.Response:
        mode = self.mode
        if self.health_mode is not None and request.path.startswith("/health"):
            mode = self.health_mode
        if mode == "hang":
            await self._release.wait()
        elif mode == "slow":
            await asyncio.sleep(self.delay)
        if mode == "error":
            return web.Response(status=503, text="unavailable")
        return web.json_response({"server": self.name, "path": request.path})

    async def start(self) -> FlakyServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._release = asyncio.Event()
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self._runner = runner
        return self

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        self._release.set()
        if runner is not None:
            await runner.cleanup()

    @property
    def running(self) -> bool:
        return self._runner is not None
