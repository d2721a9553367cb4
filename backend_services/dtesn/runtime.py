"""A membrane process's wiring: the service plus the library, used as the spec's users would.

Phase note: discovery, configuration and degradation are connected here as they become
available; the service alone runs with every feature on and its own configuration.
"""

from __future__ import annotations

from ..clock import Clock
from ..settings import UNSET, Unset, resolve_redis_url
from .service import MembraneOptions, MembraneService

__all__ = ["MembraneRuntime"]


class MembraneRuntime:
    """Runs one :class:`MembraneService` with discovery, configuration and degradation."""

    def __init__(
        self,
        options: MembraneOptions,
        *,
        redis_url: str | Unset | None = UNSET,
        register: bool = True,
        service_name: str = "dtesn-service",
        clock: Clock | None = None,
    ) -> None:
        self.options = options
        self.redis_url = resolve_redis_url(redis_url if redis_url else UNSET)
        self.register = register
        self.service_name = service_name
        self.service = MembraneService(options, clock=clock)

    @property
    def shared_state(self) -> str:
        return "redis" if self.redis_url else "memory"

    async def start(self) -> None:
        await self.service.start()
        self.service.set_ready(True)

    async def stop(self) -> None:
        self.service.set_ready(False, "draining")
        await self.service.stop()
