"""The fleet operations behind the command-line tool and the HTTP control API.

:class:`FleetOperations` reads and steers a fleet through its shared store (Redis):
services and their health, circuit breakers, degradation, configuration. It implements
:class:`~backend_services.control.backend.ControlBackend`, so the control server and
``backend-services`` share one service layer; every method returns JSON-ready data,
``None`` for "no such item", and raises
:class:`~backend_services.errors.ValidationError` for invalid input.

It observes; it does not join: reading services does not take part in health checking,
and a circuit or configuration change is made with a short-lived component of the
library on the same store, exactly as a process of the fleet would make it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..breaker.state import CircuitState
from ..clock import Clock, resolve_clock
from ..discovery.model import ServiceEndpoint, ServiceHealth, ServiceStatus, ServiceType
from ..discovery.registry import Registry
from ..discovery.signing import RecordSigner
from ..errors import StoreUnavailableError, ValidationError
from ..infrastructure.cb.fleet import NAMES_KEY, state_key
from ..infrastructure.circuit_breaker import CircuitBreaker
from ..infrastructure.config_manager import ConfigSource, ConfigurationManager
from ..infrastructure.degradation_global import GlobalDegradationManager
from ..infrastructure.service_discovery import REGISTRATION_KEY_ENV
from ..log import mask_url
from ..observability.metrics import MetricFamily
from ..store.protocol import Store
from ..store.redis import RedisStore

__all__ = ["CIRCUIT_ACTIONS", "FLEET", "FleetOperations"]

JsonObj = dict[str, Any]
CIRCUIT_ACTIONS = ("open", "close", "reset")
FLEET = "fleet"
"""The ``service`` name that addresses every degradation manager of the fleet at once
(any other name addresses the managers of that service only)."""


def _service_row(endpoint: ServiceEndpoint, health: ServiceHealth, owner: str | None) -> JsonObj:
    return {
        "service_id": endpoint.service_id,
        "service_type": endpoint.service_type.value,
        "url": endpoint.url,
        "address": endpoint.address,
        "status": health.status.value,
        "last_check": health.last_check,
        "response_time_ms": health.response_time_ms,
        "consecutive_failures": health.consecutive_failures,
        "error_count": health.error_count,
        "weight": endpoint.weight,
        "metadata": dict(endpoint.metadata),
        "owner": owner,
    }


class FleetOperations:
    """Operations on the fleet sharing the store at ``redis_url`` (see module docstring)."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        config_service: str = "dtesn-service",
        store: Store | None = None,
        namespace: str = "dtesn",
        clock: Clock | None = None,
        feed_block: float = 1.0,
    ) -> None:
        if store is None and not redis_url:
            raise ValidationError(
                "redis_url",
                redis_url,
                "the fleet's Redis URL (--redis-url or DTESN_SERVICE_REDIS_URL): "
                "a fleet shares its state through Redis",
            )
        self.redis_url = redis_url
        self.config_service = config_service
        self._clock = resolve_clock(clock)
        self._own_store = store is None
        self._store: Store | None = store
        self._namespace = namespace
        self._feed_block = feed_block
        self._configs: dict[str, ConfigurationManager] = {}
        self._degradation: GlobalDegradationManager | None = None

    # --- lifecycle --------------------------------------------------------------------

    async def initialize(self) -> None:
        """Connect to the store (an unreachable Redis is an error here, not a fallback)."""
        if self._store is None:
            assert self.redis_url is not None
            store = RedisStore(self.redis_url, namespace=self._namespace, clock=self._clock)
            try:
                await store.initialize()
                await store.server_time()
            except StoreUnavailableError as exc:
                with contextlib.suppress(Exception):
                    await store.close()
                raise StoreUnavailableError(
                    f"cannot reach Redis at {mask_url(self.redis_url)}: {exc}"
                ) from None
            self._store = store

    async def close(self) -> None:
        for manager in self._configs.values():
            await manager.shutdown()
        self._configs.clear()
        if self._degradation is not None:
            await self._degradation.shutdown()
            self._degradation = None
        if self._store is not None and self._own_store:
            await self._store.close()
        self._store = None

    async def __aenter__(self) -> FleetOperations:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _shared(self) -> dict[str, Any]:
        """How a component reaches the shared state: its own connection to the URL (so
        closing it ends its blocking reads at once), else the given store."""
        if self.redis_url and self._own_store:
            return {"redis_url": self.redis_url}
        return {"store": self.store}

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("FleetOperations used before initialize()")
        return self._store

    # --- services ---------------------------------------------------------------------

    async def list_services(
        self, service_type: str | None = None, status: str | None = None
    ) -> list[JsonObj]:
        """Every registration with its shared health, optionally filtered."""
        wanted_type = ServiceType(service_type.lower()) if service_type else None
        if status is not None:
            try:
                wanted_status: ServiceStatus | None = ServiceStatus(status.lower())
            except ValueError:
                raise ValidationError(
                    "status", status, "one of " + ", ".join(s.value for s in ServiceStatus)
                ) from None
        else:
            wanted_status = None
        key = os.environ.get(REGISTRATION_KEY_ENV) or None
        registry = Registry(self.store, RecordSigner(key, require=False), "control", ttl=60.0)
        snapshot = await registry.snapshot()
        rows = [
            _service_row(endpoint, health, owner)
            for endpoint, health, owner in snapshot.entries
            if (wanted_type is None or endpoint.service_type is wanted_type)
            and (wanted_status is None or health.status is wanted_status)
        ]
        return sorted(rows, key=lambda r: (r["service_type"], r["service_id"]))

    async def get_service(self, service_id: str) -> JsonObj | None:
        for row in await self.list_services():
            if row["service_id"] == service_id:
                return row
        return None

    # --- circuits ---------------------------------------------------------------------

    async def list_circuits(self) -> list[JsonObj]:
        """Every breaker that joined the fleet's shared state (the ``cb:names`` index),
        with its shared record; one that never changed state is listed as closed."""
        names = sorted(await self.store.members(NAMES_KEY))
        if not names:
            return []
        records = await self.store.get_many([state_key(n) for n in names])
        out = []
        for name in names:
            record = records.get(state_key(name))
            if record is None:
                out.append(self._circuit_row(name, {"state": CircuitState.CLOSED.value}, 0))
            elif isinstance(record.value, Mapping):
                out.append(self._circuit_row(name, record.value, record.version))
        return out

    def _circuit_row(self, name: str, value: Mapping[str, Any], version: int) -> JsonObj:
        until = value.get("until")
        remaining = None
        if isinstance(until, (int, float)):
            remaining = max(0.0, float(until) - self._clock.time())
        return {
            "name": name,
            "state": value.get("state"),
            "open_until": until,
            "open_remaining": remaining,
            "openings": value.get("openings"),
            "trigger": value.get("trigger"),
            "origin": value.get("origin"),
            "changed_at": value.get("at"),
            "version": version,
        }

    async def get_circuit(self, name: str) -> JsonObj | None:
        record = await self.store.get(state_key(name))
        if record is None or not isinstance(record.value, Mapping):
            return None
        return self._circuit_row(name, record.value, record.version)

    async def circuit_action(
        self, name: str, action: str, reason: str = "", *, duration: float | None = None
    ) -> JsonObj | None:
        """``open`` (forced open, for ``duration`` s or until closed), ``close`` (forced
        back to closed) or ``reset`` (closed, windows cleared), fleet-wide."""
        if action not in CIRCUIT_ACTIONS:
            raise ValidationError("action", action, "one of " + ", ".join(CIRCUIT_ACTIONS))
        if not isinstance(name, str) or not name.strip():
            raise ValidationError("name", name, "a circuit breaker name")
        breaker = CircuitBreaker(name, clock=self._clock, **self._shared())
        try:
            await breaker.initialize()
            if action == "open":
                await breaker.force_state(CircuitState.FORCED_OPEN, duration)
            elif action == "close":
                await breaker.force_state(CircuitState.CLOSED)
            else:
                await breaker.reset()
        finally:
            await breaker.close()
        return await self.get_circuit(name)

    # --- degradation ------------------------------------------------------------------

    async def _global(self) -> GlobalDegradationManager:
        if self._degradation is None:
            self._degradation = GlobalDegradationManager(clock=self._clock, **self._shared())
            await self._degradation.initialize()
        return self._degradation

    async def degradation_status(self) -> JsonObj:
        """The fleet view: worst level, per service its level and instances."""
        return await (await self._global()).get_global_status()

    async def list_degradation(self) -> list[JsonObj]:
        status = await self.degradation_status()
        return [{"service": name, **info} for name, info in sorted(status["services"].items())]

    async def get_degradation(self, service: str) -> JsonObj | None:
        status = await self.degradation_status()
        info = status["services"].get(service)
        return None if info is None else {"service": service, **info}

    @staticmethod
    def _degradation_target(service: str) -> str:
        if not isinstance(service, str) or not service.strip():
            raise ValidationError("service", service, f"a service name or {FLEET!r}")
        return service

    async def force_degradation(
        self, service: str, level: str, reason: str, duration: float | None
    ) -> JsonObj | None:
        """Force ``level`` until cleared or for ``duration`` seconds: on every
        degradation manager of the fleet when ``service`` is ``"fleet"``, else on every
        manager of that service (one started while it is in force applies it too)."""
        target = self._degradation_target(service)
        manager = await self._global()
        reason = reason or "forced by an operator"
        if target == FLEET:
            result = await manager.emergency_shutdown_all(reason, level=level, duration=duration)
            return {"service": FLEET, **result}
        return await manager.force_service(target, level, reason, duration)

    async def clear_degradation(self, service: str, reason: str) -> JsonObj | None:
        """End a forced level: the fleet-wide one and every per-service one for
        ``"fleet"``, else that service's own (a fleet-wide one still applies)."""
        target = self._degradation_target(service)
        manager = await self._global()
        reason = reason or "cleared by an operator"
        if target == FLEET:
            had = await manager.clear_emergency(reason)
        else:
            had = await manager.clear_service(target, reason)
        return {"service": target, "cleared": had}

    # --- configuration ----------------------------------------------------------------

    async def _config(self, service: str) -> ConfigurationManager:
        manager = self._configs.get(service)
        if manager is None:
            manager = ConfigurationManager(
                service,
                **self._shared(),
                last_known_good=None,
                clock=self._clock,
                auto_reload=False,
                feed_block=self._feed_block,
            )
            await manager.initialize()
            self._configs[service] = manager
        return manager

    async def get_config(self, service: str) -> JsonObj:
        manager = await self._config(service)
        return {
            "service": service,
            "version": manager.version,
            "version_id": manager.version_id,
            "values": await manager.get_all_config(),
        }

    async def get_config_value(self, service: str, key: str) -> JsonObj | None:
        manager = await self._config(service)
        entry = await manager.get_config_entry(key)
        if entry is None:
            return None
        return {
            "service": service,
            "key": key,
            "value": entry.value,
            "source": getattr(entry.source, "value", entry.source),
            "version": manager.version,
        }

    async def set_config_value(
        self, service: str, key: str, value: Any, description: str = ""
    ) -> JsonObj:
        manager = await self._config(service)
        await manager.set_config(key, value, ConfigSource.API, description=description)
        return {"service": service, "key": key, "value": value, "version": manager.version}

    async def list_config_versions(self, service: str, limit: int | None = None) -> list[JsonObj]:
        return await (await self._config(service)).list_versions(limit)

    async def snapshot_config(self, service: str, description: str = "") -> JsonObj:
        manager = await self._config(service)
        version_id = await manager.create_version_snapshot(description)
        return {"service": service, "version_id": version_id, "version": manager.version}

    async def diff_config(self, service: str, old: str, new: str) -> JsonObj | None:
        manager = await self._config(service)
        try:
            diff = await manager.diff_versions(old, new)
        except ValidationError:
            return None
        return {"service": service, "from": old, "to": new, **diff.as_dict()}

    async def rollback_config(
        self, service: str, version: str, description: str = ""
    ) -> JsonObj | None:
        manager = await self._config(service)
        try:
            manager.get_version(version)
        except ValidationError:
            return None
        await manager.rollback_to_version(version, description=description)
        return {
            "service": service,
            "restored": version,
            "version": manager.version,
            "version_id": manager.version_id,
        }

    async def export_config(self, service: str, format: str = "json") -> str:
        return await (await self._config(service)).export_configuration(format)

    async def import_config(
        self, service: str, data: str, format: str = "json", *, replace: bool = False
    ) -> JsonObj:
        manager = await self._config(service)
        await manager.import_configuration(data, format, replace=replace)
        return {"service": service, "version": manager.version, "version_id": manager.version_id}

    # --- metrics ----------------------------------------------------------------------

    def metric_families(self) -> Iterable[MetricFamily]:
        """The fleet has no in-process metrics here (each process serves its own)."""
        return ()
