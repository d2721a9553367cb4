"""Registering and deregistering instances (the write half of the public API).

A registration is written with its index entry and feed event in one commit, then
applied to the local view with the commit's feed position; while that call is in flight
its feed copy is left to it (see ``FeedSync``). When the store cannot be reached the
registration is kept and written by the heartbeat once it can.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from ..errors import AuthorizationError, LifecycleError, StoreConfigurationError, ValidationError
from ..log import get_logger
from .health import HealthState
from .lifecycle import Lifecycle
from .model import ServiceEndpoint, ServiceHealth, ServiceStatus, ServiceType
from .registry import Owned, Registration
from .signing import REGISTRATION_KEY_ENV

__all__ = ["Registrations"]

_log = get_logger("service_discovery")


class Registrations(Lifecycle):
    """``register_service()``, ``register_services()`` and ``deregister_service()``."""

    def _require_open(self, what: str) -> None:
        if self._closed:
            raise LifecycleError(f"ServiceDiscovery.{what}(): discovery has been shut down")

    def _check_credentials(self, what: str) -> None:
        if self._signer.require and not self._signer.can_sign:
            raise AuthorizationError(
                f"{what}: this registry requires signed registrations and no registration "
                f"key is configured; expected {REGISTRATION_KEY_ENV} (or registration_key=) "
                "to hold the registry's key"
            )

    async def register_service(self, endpoint: ServiceEndpoint) -> bool:
        """Register (or update) an instance. It starts ``STARTING`` and is checked at
        once; this returns without waiting for that check."""
        self._require_open("register_service")
        if not isinstance(endpoint, ServiceEndpoint):
            raise ValidationError("endpoint", endpoint, "a ServiceEndpoint")
        self._check_credentials("register_service")
        await self.initialize()
        registry = self._registry
        assert registry is not None
        sid = endpoint.service_id
        now, wall = self._clock.monotonic(), self._clock.time()
        existing = self._view.get(sid)
        same = existing is not None and existing.endpoint == endpoint
        if same and existing is not None:
            health = existing.health
        else:
            health = ServiceHealth(sid, ServiceStatus.STARTING)
            self._machines[sid] = HealthState(sid, registered_at=now, since=now)
        doc = registry.registration(endpoint, wall)
        owned = Owned(endpoint, doc)
        previous_type = existing.endpoint.service_type if existing is not None else None
        self._owned[sid] = owned
        position = 0
        self._registering[sid] = self._registering.get(sid, 0) + 1
        try:
            try:
                position = await registry.register(
                    Registration(
                        endpoint,
                        doc,
                        health,
                        previous_type=previous_type,
                        replaces=existing is not None and not same,
                    )
                )
                self._unsynced.discard(sid)
            except StoreConfigurationError:
                self._owned.pop(sid, None)
                raise
            except Exception as exc:
                self._stats["store_errors"] += 1
                self._unsynced.add(sid)
                self._renew_now.set()
                _log.warning("registration_deferred", service_id=sid, error=repr(exc))
            change = self._view.upsert(
                endpoint, health, owner=self.node_id, position=position, local=position > 0
            )
        finally:
            self._done_registering(sid)
        if change is not None:
            self._after_change(change)
        _log.info(
            "service_registered",
            service_id=sid,
            type=endpoint.service_type.value,
            address=endpoint.address,
        )
        if not same:
            self._probe_now(endpoint)
        return True

    def _done_registering(self, service_id: str) -> None:
        left = self._registering.pop(service_id, 1) - 1
        if left:
            self._registering[service_id] = left

    async def register_services(self, endpoints: Iterable[ServiceEndpoint]) -> list[bool]:
        """Register many instances at once; their writes share a few commits. Every
        endpoint is checked first: one invalid entry registers nothing."""
        self._require_open("register_services")
        items = list(endpoints)
        for i, endpoint in enumerate(items):
            if not isinstance(endpoint, ServiceEndpoint):
                raise ValidationError(f"endpoints[{i}]", endpoint, "a ServiceEndpoint")
        self._check_credentials("register_services")
        await self.initialize()
        return list(await asyncio.gather(*(self.register_service(ep) for ep in items)))

    async def deregister_service(self, service_id: str) -> bool:
        """Remove an instance; ``False`` when it is unknown."""
        self._require_open("deregister_service")
        if not isinstance(service_id, str) or not service_id:
            raise ValidationError("service_id", service_id, "a non-empty string")
        self._check_credentials("deregister_service")
        await self.initialize()
        registry = self._registry
        assert registry is not None
        entry = self._view.get(service_id)
        owned = self._owned.pop(service_id, None)
        self._unsynced.discard(service_id)
        if entry is not None:
            service_type: ServiceType | None = entry.endpoint.service_type
        elif owned is not None:
            service_type = owned.endpoint.service_type
        else:
            service_type = await registry.record_type(service_id)
        if service_type is None:
            return False
        position = await registry.deregister(service_id, service_type)
        self._apply_removal(service_id, position, "deregistered", local=True)
        _log.info("service_deregistered", service_id=service_id)
        return True
