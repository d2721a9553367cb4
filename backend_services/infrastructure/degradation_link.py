"""A degradation manager's link to the fleet through the shared store.

It publishes the manager's state (level, forced, reason, resource snapshot) under
``degradation:instance:<id>`` with a TTL — at every monitoring round and at once on a
change — and follows the ``degradation:control`` feed so fleet commands (emergency
shutdown, floor, an override of this manager's service) arrive within one blocking
read. Every store failure is logged and skipped: losing the store never changes the
local level.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..clock import Clock
from ..degradation.fleet import (
    CONTROL_STREAM,
    FLEET_KEY,
    INSTANCES_KEY,
    FleetCommand,
    FleetState,
    instance_key,
)
from ..errors import ValidationError
from ..log import get_logger
from ..store.feed import FeedFollower
from ..store.protocol import FeedEvent, Store
from ..tasks import Supervisor, raise_if_cancelling

if TYPE_CHECKING:
    from .service_degradation import ServiceDegradationManager


__all__ = ["FleetLink"]

_log = get_logger("service_degradation")


class FleetLink:
    """Publishing and command following for one manager."""

    def __init__(
        self,
        manager: ServiceDegradationManager,
        store: Store,
        *,
        clock: Clock,
        supervisor: Supervisor,
        ttl: float,
    ) -> None:
        self._manager = manager
        self.store = store
        self._clock = clock
        self._supervisor = supervisor
        self.ttl = ttl
        self._wanted = asyncio.Event()
        self._follower: FeedFollower | None = None
        self.published = 0
        self.publish_errors = 0

    def want_publish(self) -> None:
        self._wanted.set()

    async def start(self) -> None:
        """Load the fleet commands in force, then follow the control feed from the
        position read before loading (nothing is missed in between)."""
        position: int | None = None
        try:
            position = await self.store.feed_position(CONTROL_STREAM)
            await self.load_state()
        except Exception as exc:
            _log.warning(
                "fleet_state_unavailable", service=self._manager.service_name, error=repr(exc)
            )
        self._follower = FeedFollower(
            self.store,
            CONTROL_STREAM,
            on_events=self._on_events,
            on_resync=self.load_state,
            clock=self._clock,
            start=position,
            supervisor=self._supervisor,
        )
        self._follower.start()
        self._wanted.set()
        self._supervisor.spawn("publish", self._publish_loop)

    async def stop(self) -> None:
        if self._follower is not None:
            await self._follower.stop()

    async def withdraw(self) -> None:
        """Remove this manager's published record."""
        instance_id = self._manager.instance_id
        await self.store.delete(instance_key(instance_id))
        await self.store.set_remove(INSTANCES_KEY, instance_id)

    async def _publish_loop(self) -> None:
        manager = self._manager
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await self.store.put(
                    instance_key(manager.instance_id), manager._record().to_json(), ttl=self.ttl
                )
                await self.store.set_add(INSTANCES_KEY, manager.instance_id)
                self.published += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling(exc)
                # Sharing is best effort: the local level never depends on the store.
                self.publish_errors += 1
                _log.warning("publish_failed", service=manager.service_name, error=repr(exc))

    async def load_state(self) -> None:
        """Apply the fleet commands in force (at start and after a feed resync)."""
        manager = self._manager
        record = await self.store.get(FLEET_KEY)
        try:
            state = FleetState.from_json(record.value if record else None)
        except ValidationError as exc:
            _log.warning("fleet_state_invalid", service=manager.service_name, error=str(exc))
            return
        override = state.override_for(manager.service_name, self._clock.time())
        if override is not None:
            await manager.apply_fleet_command(override)
        else:
            await manager._clear_fleet_override("fleet override no longer in force")
        await manager._apply_floor(state.floor)

    async def _on_events(self, events: list[FeedEvent]) -> None:
        manager = self._manager
        for event in events:
            data = event.data
            kind = data.get("kind")
            try:
                if kind in ("override", "floor"):
                    await manager.apply_fleet_command(FleetCommand.from_json(data))
                elif kind == "clear_override":
                    service = data.get("service")
                    restore = data.get("restore")
                    await manager._clear_fleet_override(
                        str(data.get("reason", "cleared")),
                        service=str(service) if service is not None else None,
                        restore=FleetCommand.from_json(restore) if restore is not None else None,
                    )
                elif kind == "clear_floor":
                    await manager._apply_floor(None)
            except ValidationError as exc:
                _log.warning("fleet_event_invalid", service=manager.service_name, error=str(exc))
