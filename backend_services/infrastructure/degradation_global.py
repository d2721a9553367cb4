"""The fleet view of degradation, and fleet-wide commands.

:class:`GlobalDegradationManager` knows the managers registered with it in this process
and, with a shared store (a Redis URL from the argument, ``DTESN_SERVICE_REDIS_URL`` or
the settings file), every manager that publishes in the fleet. ``emergency_shutdown_all``
forces a level on all of them: local managers directly, other processes through the
``degradation:control`` change feed they follow (a blocking read, so it arrives at once).
``force_service``/``clear_service`` do the same for the managers of one service name
only (the others ignore the command); clearing the fleet-wide override clears those too.
A fleet floor is advisory: managers report it and follow it only when built with
``follow_fleet_floor=True``. Losing the store never forces a process to degrade.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..clock import Clock, resolve_clock
from ..degradation.fleet import (
    CONTROL_STREAM,
    FLEET_KEY,
    INSTANCES_KEY,
    FleetCommand,
    FleetState,
    InstanceRecord,
    instance_key,
    summarize,
)
from ..degradation.levels import DegradationLevel, coerce_level
from ..errors import ConflictError, LifecycleError, ValidationError
from ..log import get_logger
from ..settings import UNSET, Settings, Unset, load_settings, resolve_redis_url
from ..store.protocol import Append, Put, Store

if TYPE_CHECKING:
    from .service_degradation import ServiceDegradationManager

__all__ = ["GlobalDegradationManager", "get_global_degradation_manager"]

_log = get_logger("service_degradation")


class GlobalDegradationManager:
    """Registered managers of this process, plus the fleet through the shared store."""

    def __init__(
        self,
        redis_url: str | Unset | None = UNSET,
        *,
        clock: Clock | None = None,
        store: Store | None = None,
        settings: Settings | None = None,
        config_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self._clock = resolve_clock(clock)
        self._store = store
        self._owns_store = store is None
        if store is None:
            if settings is None and (isinstance(redis_url, Unset) or config_file is not None):
                settings = load_settings(config_file)
            self._redis_url = resolve_redis_url(redis_url, settings)
        else:
            self._redis_url = None
        self._managers: dict[str, ServiceDegradationManager] = {}
        # The fleet-wide override issued here, restored after a per-service clear when
        # there is no shared store to read it from.
        self._local_override: FleetCommand | None = None
        self._lock = asyncio.Lock()
        self._started = False
        self._closed = False

    @property
    def service_managers(self) -> Mapping[str, ServiceDegradationManager]:
        """Managers registered in this process, by service name (read-only)."""
        return MappingProxyType(self._managers)

    @property
    def store(self) -> Store | None:
        return self._store

    # -- lifecycle -------------------------------------------------------------------------
    async def initialize(self) -> None:
        """Connect to the shared store when one is configured (idempotent)."""
        if self._closed:
            raise LifecycleError("global degradation manager was shut down")
        async with self._lock:
            if self._started:
                return
            if self._store is None and self._redis_url is not None:
                from ..store.factory import open_store

                store = open_store(self._redis_url, clock=self._clock)
                await store.initialize()
                self._store = store
            self._started = True

    async def shutdown(self) -> None:
        """Close the store this manager opened (registered managers are left running)."""
        if self._closed:
            return
        self._closed = True
        if self._store is not None and self._owns_store and self._started:
            await self._store.close()

    close = shutdown

    async def __aenter__(self) -> GlobalDegradationManager:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # -- registration ----------------------------------------------------------------------
    async def register_service(self, manager: ServiceDegradationManager) -> None:
        """Add a manager of this process (by its service name; replaces an older one)."""
        from .service_degradation import ServiceDegradationManager

        if not isinstance(manager, ServiceDegradationManager):
            raise ValidationError("manager", manager, "a ServiceDegradationManager")
        await self.initialize()
        self._managers[manager.service_name] = manager
        _log.info("service_registered", service=manager.service_name)

    async def unregister_service(self, service_name: str) -> bool:
        """Remove a manager; False if none was registered under that name."""
        return self._managers.pop(service_name, None) is not None

    # -- views -----------------------------------------------------------------------------
    async def get_global_status(self) -> dict[str, Any]:
        """Worst level, degraded count and per-service levels across the fleet."""
        await self.initialize()
        records: dict[str, InstanceRecord] = {}
        fleet = FleetState()
        shared = False
        store = self._store
        if store is not None:
            try:
                records, fleet = await self._read_fleet(store)
                shared = True
            except Exception as exc:
                _log.warning("fleet_read_failed", error=repr(exc))
        for manager in self._managers.values():
            records[manager.instance_id] = manager._record()
        status = summarize(records.values(), fleet, wall_now=self._clock.time())
        status["shared"] = shared
        status["local_services"] = sorted(self._managers)
        return status

    async def _read_fleet(self, store: Store) -> tuple[dict[str, InstanceRecord], FleetState]:
        ids = sorted(await store.members(INSTANCES_KEY))
        found = await store.get_many([instance_key(i) for i in ids])
        records: dict[str, InstanceRecord] = {}
        gone: list[str] = []
        for instance_id in ids:
            rec = found.get(instance_key(instance_id))
            if rec is None:
                gone.append(instance_id)
                continue
            try:
                records[instance_id] = InstanceRecord.from_json(rec.value)
            except ValidationError as exc:
                _log.warning("instance_record_invalid", instance=instance_id, error=str(exc))
        if gone:
            await store.set_remove(INSTANCES_KEY, *gone)
        state_rec = await store.get(FLEET_KEY)
        try:
            fleet = FleetState.from_json(state_rec.value if state_rec else None)
        except ValidationError as exc:
            _log.warning("fleet_state_invalid", error=str(exc))
            fleet = FleetState()
        return records, fleet

    # -- commands --------------------------------------------------------------------------
    def _command(
        self,
        kind: str,
        level: Any,
        reason: str,
        duration: float | None,
        service: str | None = None,
    ) -> FleetCommand:
        lv = coerce_level(level)
        now = self._clock.time()
        until = None
        if duration is not None:
            if (
                isinstance(duration, bool)
                or not isinstance(duration, (int, float))
                or not (0 < duration < float("inf"))
            ):
                raise ValidationError("duration", duration, "None or seconds > 0")
            until = now + float(duration)
        return FleetCommand(kind, uuid.uuid4().hex, lv, str(reason), now, until, service)

    async def emergency_shutdown_all(
        self,
        reason: str = "Emergency shutdown",
        *,
        level: DegradationLevel | str = DegradationLevel.EMERGENCY,
        duration: float | None = None,
    ) -> dict[str, Any]:
        """Force ``level`` (EMERGENCY: critical features only) on every manager of the
        fleet until :meth:`clear_emergency` (or ``duration`` seconds)."""
        await self.initialize()
        command = self._command("override", level, reason, duration)
        _log.warning("emergency_shutdown_all", level=command.level.value, reason=command.reason)
        published, error = await self._publish(command)
        self._local_override = command
        for manager in list(self._managers.values()):
            await manager.apply_fleet_command(command)
        return {
            "command_id": command.id,
            "level": command.level.value,
            "reason": command.reason,
            "local_services": len(self._managers),
            "published": published,
            "error": error,
        }

    async def clear_emergency(self, reason: str = "Emergency cleared") -> bool:
        """End a fleet-wide override everywhere, per-service overrides included; False
        when none was in force here."""
        await self.initialize()
        had = False
        self._local_override = None
        if self._store is not None:
            had, _ = await self._update_state(
                lambda s: (FleetState(None, s.floor), s.override is not None or bool(s.services)),
                {"kind": "clear_override", "reason": str(reason), "id": uuid.uuid4().hex},
            )
        for manager in list(self._managers.values()):
            ov = manager._policy.override
            if ov is not None and ov.source == "fleet":
                had = True
            await manager._clear_fleet_override(str(reason))
        return had

    @staticmethod
    def _service_name(service_name: Any) -> str:
        if not isinstance(service_name, str) or not service_name.strip():
            raise ValidationError("service_name", service_name, "a non-empty service name")
        return service_name

    async def force_service(
        self,
        service_name: str,
        level: DegradationLevel | str,
        reason: str = "Forced",
        duration: float | None = None,
    ) -> dict[str, Any]:
        """Force ``level`` on every manager of ``service_name`` in the fleet (the others
        ignore it) until :meth:`clear_service` (or ``duration`` seconds). A service that
        starts later while it is in force applies it at start."""
        name = self._service_name(service_name)
        await self.initialize()
        command = self._command("override", level, reason, duration, service=name)
        _log.warning(
            "service_override", service=name, level=command.level.value, reason=command.reason
        )
        published, error = await self._publish(command)
        local = [m for m in list(self._managers.values()) if m.service_name == name]
        for manager in local:
            await manager.apply_fleet_command(command)
        return {
            "command_id": command.id,
            "service": name,
            "level": command.level.value,
            "reason": command.reason,
            "local_services": len(local),
            "published": published,
            "error": error,
        }

    async def clear_service(
        self, service_name: str, reason: str = "Service override cleared"
    ) -> bool:
        """End a per-service override of ``service_name`` everywhere (a fleet-wide override
        still in force applies again); False when none was in force here."""
        name = self._service_name(service_name)
        await self.initialize()
        had = False
        restore = self._local_override
        if self._store is not None:
            wall = self._clock.time()
            kept: list[FleetCommand | None] = [None]

            def change(state: FleetState) -> tuple[FleetState, bool]:
                services = state.active_services(wall)
                found = services.pop(name, None) is not None
                kept[0] = state.override if state.override and state.override.active(wall) else None
                return FleetState(state.override, state.floor, services), found

            event_id = uuid.uuid4().hex
            had, _ = await self._update_state(
                change,
                lambda: {
                    "kind": "clear_override",
                    "service": name,
                    "reason": str(reason),
                    "id": event_id,
                    "restore": kept[0].to_json() if kept[0] else None,
                },
            )
            restore = kept[0]
        for manager in list(self._managers.values()):
            if manager.service_name != name:
                continue
            ov = manager._policy.override
            if ov is not None and ov.source == "fleet":
                had = True
            await manager._clear_fleet_override(str(reason), service=name, restore=restore)
        return had

    async def set_fleet_floor(
        self,
        level: DegradationLevel | str,
        reason: str = "Fleet floor",
        duration: float | None = None,
    ) -> None:
        """Publish an advisory minimum level (followed by managers built with
        ``follow_fleet_floor=True``)."""
        await self.initialize()
        command = self._command("floor", level, reason, duration)
        await self._publish(command)
        for manager in list(self._managers.values()):
            await manager.apply_fleet_command(command)

    async def clear_fleet_floor(self) -> None:
        await self.initialize()
        if self._store is not None:
            await self._update_state(
                lambda s: (FleetState(s.override, None, s.services), s.floor is not None),
                {"kind": "clear_floor", "id": uuid.uuid4().hex},
            )
        for manager in list(self._managers.values()):
            await manager._apply_floor(None)

    async def _publish(self, command: FleetCommand) -> tuple[bool, str | None]:
        if self._store is None:
            return False, None

        wall = self._clock.time()

        def change(state: FleetState) -> tuple[FleetState, bool]:
            services = state.active_services(wall)
            if command.kind == "override" and command.service is not None:
                services[command.service] = command
                return FleetState(state.override, state.floor, services), True
            if command.kind == "override":
                return FleetState(command, state.floor, services), True
            return FleetState(state.override, command, services), True

        try:
            await self._update_state(change, command.to_json())
        except Exception as exc:
            _log.error("fleet_command_not_published", command=command.kind, error=repr(exc))
            return False, repr(exc)
        return True, None

    async def _update_state(
        self, change: Any, event: Mapping[str, Any] | Callable[[], Mapping[str, Any]]
    ) -> tuple[bool, int]:
        """Compare-and-set the fleet record and append ``event`` atomically (``event`` may
        be a function, called after ``change``, for an event that depends on the state)."""
        store = self._store
        assert store is not None
        for _ in range(20):
            rec = await store.get(FLEET_KEY)
            try:
                state = FleetState.from_json(rec.value if rec else None)
            except ValidationError:
                state = FleetState()
            new, changed = change(state)
            try:
                result = await store.commit(
                    [
                        Put(FLEET_KEY, new.to_json(), expect_version=rec.version if rec else 0),
                        Append(
                            CONTROL_STREAM,
                            dict(event() if callable(event) else event),
                            maxlen=1000,
                        ),
                    ]
                )
            except ConflictError:
                continue
            return changed, result.positions.get(CONTROL_STREAM, 0)
        raise ConflictError(FLEET_KEY, None, None)


_default: GlobalDegradationManager | None = None


def get_global_degradation_manager() -> GlobalDegradationManager:
    """The process-wide default :class:`GlobalDegradationManager` (settings decide where
    shared state lives)."""
    global _default
    if _default is None or _default._closed:
        _default = GlobalDegradationManager()
    return _default
