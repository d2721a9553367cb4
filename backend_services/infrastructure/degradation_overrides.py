"""Overrides of a degradation manager's level: by hand (``force_degradation``, with an
optional duration) and from the fleet (an override of all services or of this one, and
the advisory fleet floor), each applied through the level policy.

Part of :class:`~backend_services.infrastructure.service_degradation.ServiceDegradationManager`;
the state it works on is
:class:`~backend_services.infrastructure.degradation_state.DegradationState`.
"""

from __future__ import annotations

import asyncio

from ..degradation.fleet import FleetCommand
from ..degradation.levels import DegradationLevel, coerce_level
from ..log import get_logger
from .degradation_state import DegradationState, validate_seconds

__all__ = ["Overrides"]

_log = get_logger("service_degradation")


class Overrides(DegradationState):
    """Manual and fleet overrides, and the fleet floor."""

    # -- manual override -----------------------------------------------------------------
    async def force_degradation(
        self,
        level: DegradationLevel | str,
        reason: str = "Manual trigger",
        duration: float | None = None,
        *,
        source: str = "manual",
    ) -> None:
        """Set the level by hand until :meth:`clear_forced_degradation` or, with
        ``duration``, for that many seconds."""
        self._check_open()
        lv = coerce_level(level)
        now = self._clock.monotonic()
        until = None
        if duration is not None:
            until = now + validate_seconds("duration", duration, allow_zero=False)
        change = self._policy.force(lv, str(reason), now, until=until, source=source)
        self._schedule_expiry(until)
        if change is not None:
            await self._apply(change)
        else:
            self._refresh_admission()
            self._want_publish()

    async def clear_forced_degradation(self, reason: str = "Manual clear") -> bool:
        """End a manual override; the resource-driven level applies at once. False when
        no override was in force."""
        self._check_open()
        had = self._policy.override is not None
        change = self._policy.clear(self._clock.monotonic(), reason=str(reason))
        self._schedule_expiry(None)
        if change is not None:
            await self._apply(change)
        self._refresh_admission()
        self._want_publish()
        return had

    def _schedule_expiry(self, until: float | None) -> None:
        task, self._expiry_task = self._expiry_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if until is not None and not self._closed:
            self._expiry_task = asyncio.get_running_loop().create_task(
                self._expire_at(until), name=f"degradation:{self.service_name}:override-expiry"
            )

    async def _expire_at(self, until: float) -> None:
        await self._clock.sleep(max(0.0, until - self._clock.monotonic()))
        change = self._policy.tick(self._clock.monotonic())
        if change is not None:
            await self._apply(change)
        self._refresh_admission()

    # -- from the fleet ----------------------------------------------------------------------
    async def apply_fleet_command(self, command: FleetCommand) -> None:
        """Apply a fleet command (idempotent per command id); an override that targets
        another service is ignored."""
        if command.kind == "floor":
            await self._apply_floor(command)
            return
        if not command.targets(self.service_name) or command.id == self._fleet_override_id:
            return
        wall = self._clock.time()
        if not command.active(wall):
            return
        self._fleet_override_id = command.id
        until = None
        if command.until is not None:
            until = self._clock.monotonic() + max(0.0, command.until - wall)
        now = self._clock.monotonic()
        change = self._policy.force(command.level, command.reason, now, until=until, source="fleet")
        self._schedule_expiry(until)
        _log.warning(
            "fleet_override",
            service=self.service_name,
            level=command.level.value,
            reason=command.reason,
            command=command.id,
            targeted=command.service is not None,
        )
        if change is not None:
            await self._apply(change)
        self._refresh_admission()
        self._want_publish()

    async def _clear_fleet_override(
        self, reason: str, *, service: str | None = None, restore: FleetCommand | None = None
    ) -> None:
        """End the override the fleet set (only when ``service`` is None or names this
        manager's service); ``restore``, a fleet-wide override still in force, applies
        instead when it is still active."""
        if service is not None and service != self.service_name:
            return
        if (
            restore is not None
            and restore.kind == "override"
            and restore.targets(self.service_name)
            and restore.active(self._clock.time())
        ):
            if restore.id != self._fleet_override_id:
                await self.apply_fleet_command(restore)
            return
        self._fleet_override_id = None
        ov = self._policy.override
        if ov is None or ov.source != "fleet":
            return
        change = self._policy.clear(self._clock.monotonic(), reason=reason, source="fleet")
        self._schedule_expiry(None)
        if change is not None:
            await self._apply(change)
        self._refresh_admission()
        self._want_publish()

    async def _apply_floor(self, command: FleetCommand | None) -> None:
        level = None
        if command is not None and command.active(self._clock.time()):
            level = command.level
        if level == self.fleet_floor:
            return
        self.fleet_floor = level
        _log.info(
            "fleet_floor",
            service=self.service_name,
            floor=level.value if level else None,
            followed=self._policy.follow_floor,
        )
        change = self._policy.set_floor(level, command.reason if command else "floor cleared")
        if change is not None:
            await self._apply(change)
        self._refresh_admission()
