"""A headless Chromium from the OS packages, driven over the DevTools protocol.

No browser is downloaded and no driver package is needed: the browser is started with a
DevTools port, and one page is driven over a websocket (aiohttp). Console errors,
uncaught exceptions and browser log errors (failed loads, CSP violations) are collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "chromium", "chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--remote-debugging-port=0",
    "--window-size=1400,1000",
)


def find_chromium() -> str | None:
    """Path of an installed Chromium (``CHROMIUM`` env var first), or None."""
    override = os.environ.get("CHROMIUM")
    for name in ((override,) if override else ()) + CANDIDATES:
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


class BrowserError(AssertionError):
    """The browser did something the test did not expect (or did not start)."""


class Chromium:
    """One headless browser with one page."""

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.errors: list[str] = []
        self.console: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._profile = tempfile.mkdtemp(prefix="bs-chromium-")
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._events: dict[str, list[asyncio.Future[Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self, within: float = 30.0) -> Chromium:
        self._proc = await asyncio.create_subprocess_exec(
            self.executable,
            *FLAGS,
            f"--user-data-dir={self._profile}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + within
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._proc.returncode is not None or time.monotonic() > deadline:
                raise BrowserError(f"Chromium did not open its DevTools port ({self.executable})")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        page = next(t for t in targets if t.get("type") == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Runtime.enable")
        await self.send("Log.enable")
        await self.send("Page.enable")
        return self

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            doc = json.loads(msg.data)
            if "id" in doc:
                fut = self._pending.pop(doc["id"], None)
                if fut is not None and not fut.done():
                    if "error" in doc:
                        fut.set_exception(BrowserError(f"DevTools error: {doc['error']}"))
                    else:
                        fut.set_result(doc.get("result", {}))
                continue
            self._on_event(doc.get("method", ""), doc.get("params", {}))

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
            )
            self.console.append(f"{params.get('type')}: {text}")
            if params.get("type") in ("error", "assert"):
                self.errors.append(f"console.{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            described = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"uncaught exception: {described}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                self.errors.append(f"log {entry.get('source')}: {entry.get('text')}")
        for fut in self._events.pop(method, []):
            if not fut.done():
                fut.set_result(params)

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        assert self._ws is not None
        ident = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params or {}}))
        return await asyncio.wait_for(fut, 30)

    async def navigate(self, url: str, within: float = 30.0) -> None:
        """Open ``url`` and wait for its load event."""
        loaded: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._events.setdefault("Page.loadEventFired", []).append(loaded)
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"navigation to {url} failed: {result['errorText']}")
        await asyncio.wait_for(loaded, within)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (promises awaited)."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"evaluating {expression!r} threw: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, within: float = 20.0, what: str = "") -> Any:
        """Poll a JavaScript expression until it is truthy (a real wait, bounded)."""
        deadline = time.monotonic() + within
        last: Any = None
        while time.monotonic() < deadline:
            last = await self.evaluate(expression)
            if last:
                return last
            await asyncio.sleep(0.1)
        raise BrowserError(f"timed out after {within}s waiting for {what or expression}: {last!r}")

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send("Browser.close"), 5)
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._session is not None:
            await self._session.close()
        if self._proc is not None and self._proc.returncode is None:
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)
