"""Active health checks: HTTP GET of the health path, TCP connect for other protocols.

One :class:`Prober` owns one shared :class:`aiohttp.ClientSession` (keep-alive
connections to every instance) and bounds concurrency with a semaphore. A check never
raises: the result says whether it passed, how long it took and why it failed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from ..clock import Clock, resolve_clock
from ..errors import ValidationError
from .model import DEFAULT_HEALTH_PATH, ServiceEndpoint

__all__ = ["HTTP_PROTOCOLS", "Probe", "ProbeResult", "Prober", "run_probe"]

HTTP_PROTOCOLS = frozenset({"http", "https"})


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Outcome of one health check."""

    ok: bool
    response_time_ms: float
    error: str | None = None
    status_code: int | None = None


Probe = Callable[[ServiceEndpoint], Awaitable[ProbeResult]]
"""Anything that checks one endpoint (a :class:`Prober` is one)."""


async def run_probe(probe: Probe, endpoint: ServiceEndpoint) -> ProbeResult:
    """``probe(endpoint)``; a probe that raises counts as a failed check."""
    try:
        return await probe(endpoint)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return ProbeResult(False, 0.0, f"probe crashed: {exc!r}")


class Prober:
    """Checks endpoints: ``GET {protocol}://{host}:{port}{health_path}`` must answer 2xx;
    non-HTTP protocols must accept a TCP connection. ``timeout`` bounds each check."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        health_path: str = DEFAULT_HEALTH_PATH,
        concurrency: int = 100,
        clock: Clock | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValidationError("health_check_timeout", timeout, "seconds > 0")
        if not isinstance(health_path, str) or not health_path.startswith("/"):
            raise ValidationError("health_path", health_path, "a path starting with '/'")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValidationError("check_concurrency", concurrency, "an integer >= 1")
        self.timeout = timeout
        self.health_path = health_path
        self.concurrency = concurrency
        self._clock = resolve_clock(clock)
        self._session = session
        self._own_session = session is None
        self._semaphore = asyncio.Semaphore(concurrency)
        self._closed = False
        self.checks = 0
        self.failures = 0

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.concurrency, limit_per_host=0, ttl_dns_cache=300, force_close=False
            )
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": "backend-services-health/1"},
                skip_auto_headers=("Accept-Encoding",),
            )
            self._own_session = True
        return session

    async def __call__(self, endpoint: ServiceEndpoint) -> ProbeResult:
        return await self.check(endpoint)

    async def check(self, endpoint: ServiceEndpoint) -> ProbeResult:
        """Check one endpoint (waits for a free slot first)."""
        if self._closed:
            return ProbeResult(False, 0.0, "health checker is closed")
        async with self._semaphore:
            started = self._clock.monotonic()
            try:
                async with asyncio.timeout(self.timeout):
                    if endpoint.protocol in HTTP_PROTOCOLS:
                        status = await self._http(endpoint)
                        ok = 200 <= status < 300
                        error = None if ok else f"HTTP {status}"
                    else:
                        status = None
                        await self._tcp(endpoint)
                        ok, error = True, None
            except TimeoutError:
                ok, status, error = False, None, f"timed out after {self.timeout:g}s"
            except (aiohttp.ClientError, OSError) as exc:
                ok, status, error = False, None, f"{type(exc).__name__}: {exc}"
            elapsed = (self._clock.monotonic() - started) * 1000.0
        self.checks += 1
        if not ok:
            self.failures += 1
        return ProbeResult(ok, elapsed, error, status)

    async def _http(self, endpoint: ServiceEndpoint) -> int:
        url = endpoint.health_url(self.health_path)
        async with self._get_session().get(url, allow_redirects=False) as response:
            await response.read()
            return response.status

    async def _tcp(self, endpoint: ServiceEndpoint) -> None:
        _, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def close(self) -> None:
        """Close the shared session (when this prober created it); later checks fail."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._own_session and not session.closed:
            await session.close()
