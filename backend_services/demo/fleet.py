"""The demo's membrane processes and the admin calls it makes to them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..dtesn.process import MembraneProcess

__all__ = ["Fleet", "MembraneView"]


@dataclass
class MembraneView:
    """What the coordinator last saw of one membrane's own /health."""

    ready: bool = False
    level: str = "?"
    depth: int = 0
    reachable: bool = False
    features: dict[str, bool] = field(default_factory=dict)


class Fleet:
    """Membrane processes started by the demo, with a shared HTTP session for admin calls."""

    def __init__(
        self,
        ids: list[str],
        *,
        kind: str = "memory",
        args: list[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.procs = {
            mid: MembraneProcess(mid, kind=kind, faults=True, args=args or [], env=env)
            for mid in ids
        }
        self.views = {mid: MembraneView() for mid in ids}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=2.0),
                connector=aiohttp.TCPConnector(limit=0, force_close=True),
            )
        return self._session

    def url(self, mid: str) -> str:
        return self.procs[mid].url

    def running(self) -> list[str]:
        return [mid for mid, p in self.procs.items() if p.running]

    async def start_all(self) -> None:
        """Start every membrane process at once; waits for their ready lines."""
        await asyncio.gather(*(p.start() for p in self.procs.values()))

    async def stop_all(self) -> None:
        """Stop every process (gracefully, bounded) and close the session."""
        await asyncio.gather(
            *(p.terminate(grace=5.0) for p in self.procs.values()), return_exceptions=True
        )
        if self._session is not None:
            await self._session.close()

    async def post(self, mid: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(f"{self.url(mid)}{path}", json=body) as resp:
            data: dict[str, Any] = await resp.json()
            if resp.status >= 400:
                raise RuntimeError(f"{mid} {path}: HTTP {resp.status}: {data.get('error')}")
            return data

    async def get(self, mid: str, path: str) -> tuple[int, dict[str, Any]]:
        async with self.session.get(f"{self.url(mid)}{path}") as resp:
            return resp.status, dict(await resp.json())

    async def set_faults(self, mid: str, **faults: Any) -> None:
        await self.post(mid, "/admin/faults", faults)

    async def push_config(self, values: Mapping[str, Any], mids: list[str] | None = None) -> None:
        """Send configuration to membranes (the in-memory default: the coordinator owns it).
        A membrane that is down is skipped: it gets the config when it comes back."""
        body = dict(values)
        for mid in mids if mids is not None else self.running():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, RuntimeError):
                await self.post(mid, "/admin/config", body)

    async def config_of(self, mid: str) -> dict[str, Any]:
        _, body = await self.get(mid, "/admin/config")
        return body

    async def poll(self, mid: str) -> MembraneView:
        """Refresh the view of one membrane from its /health (unreachable when down)."""
        view = self.views[mid]
        if not self.procs[mid].running:
            view.reachable = view.ready = False
            return view
        try:
            status, body = await asyncio.wait_for(self.get(mid, "/health"), 0.5)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            view.reachable = view.ready = False
            return view
        view.reachable = True
        view.ready = status == 200
        view.level = str(body.get("degradation_level", view.level))
        view.depth = int(body.get("depth", view.depth))
        features = body.get("features")
        if isinstance(features, dict):
            view.features = {str(k): bool(v) for k, v in features.items()}
        return view
