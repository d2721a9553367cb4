"""A small in-process fleet behind the ControlBackend contract (HTTP-layer tests)."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from backend_services.control.openapi import DEGRADATION_LEVELS
from backend_services.errors import ValidationError
from backend_services.observability.metrics import MetricFamily


class SimpleFleet:
    """Services, circuits, degradation and versioned config held in dicts."""

    config_service = "dtesn-service"

    def __init__(self) -> None:
        self.services: dict[str, dict[str, Any]] = {}
        self.circuits: dict[str, dict[str, Any]] = {}
        self.degradation: dict[str, dict[str, Any]] = {}
        self.config: dict[str, Any] = {}
        self.versions: list[dict[str, Any]] = []
        self.fail_with: Exception | None = None
        self._next_version = 1

    @classmethod
    def sample(cls) -> SimpleFleet:
        fleet = cls()
        for i in (1, 2):
            sid = f"membrane-{i}"
            fleet.services[sid] = {
                "service_id": sid,
                "service_type": "dtesn_membrane",
                "url": f"http://127.0.0.1:{9000 + i}/",
                "address": f"127.0.0.1:{9000 + i}",
                "status": "healthy",
                "response_time_ms": 1.5 * i,
                "last_check": 1_700_000_000.0,
                "consecutive_failures": 0,
                "error_count": 0,
            }
            fleet.circuits[sid] = {"name": sid, "state": "closed", "total_calls": 0}
        fleet.degradation["dtesn-service"] = {
            "service": "dtesn-service",
            "level": "normal",
            "reason": "",
            "forced": False,
            "resource_usage": {"cpu": 0.2},
        }
        fleet.config = {"membrane_depth": 4, "processing_timeout": 30.0}
        fleet._snapshot("initial")
        return fleet

    def _check(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    def _snapshot(self, description: str) -> dict[str, Any]:
        version = {
            "id": f"v{self._next_version}",
            "created_at": 1_700_000_000.0 + self._next_version,
            "description": description,
            "keys": len(self.config),
            "values": copy.deepcopy(self.config),
        }
        self._next_version += 1
        self.versions.append(version)
        return version

    @staticmethod
    def _public(version: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in version.items() if k != "values"}

    async def list_services(
        self, service_type: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        self._check()
        return [
            dict(s)
            for s in self.services.values()
            if (service_type is None or s["service_type"] == service_type)
            and (status is None or s["status"] == status)
        ]

    async def get_service(self, service_id: str) -> dict[str, Any] | None:
        self._check()
        return self.services.get(service_id)

    async def list_circuits(self) -> list[dict[str, Any]]:
        self._check()
        return [dict(c) for c in self.circuits.values()]

    async def get_circuit(self, name: str) -> dict[str, Any] | None:
        return self.circuits.get(name)

    async def circuit_action(self, name: str, action: str, reason: str) -> dict[str, Any] | None:
        circuit = self.circuits.get(name)
        if circuit is None:
            return None
        circuit["state"] = {"open": "forced_open", "close": "disabled", "reset": "closed"}[action]
        return dict(circuit)

    async def list_degradation(self) -> list[dict[str, Any]]:
        self._check()
        return [dict(d) for d in self.degradation.values()]

    async def get_degradation(self, service: str) -> dict[str, Any] | None:
        return self.degradation.get(service)

    async def force_degradation(
        self, service: str, level: str, reason: str, duration: float | None
    ) -> dict[str, Any] | None:
        if level not in DEGRADATION_LEVELS:
            raise ValidationError("level", level, f"one of {DEGRADATION_LEVELS}")
        item = self.degradation.get(service)
        if item is None:
            return None
        item.update(level=level, reason=reason, forced=True)
        return dict(item)

    async def clear_degradation(self, service: str, reason: str) -> dict[str, Any] | None:
        item = self.degradation.get(service)
        if item is None:
            return None
        item.update(level="normal", reason=reason, forced=False)
        return dict(item)

    async def get_config(self, service: str) -> dict[str, Any]:
        self._check()
        version = self.versions[-1]["id"] if self.versions else None
        return {"service": service, "version": version, "values": copy.deepcopy(self.config)}

    async def get_config_value(self, service: str, key: str) -> dict[str, Any] | None:
        if key not in self.config:
            return None
        return {"key": key, "value": self.config[key], "source": "api"}

    async def set_config_value(
        self, service: str, key: str, value: Any, description: str
    ) -> dict[str, Any]:
        if key == "membrane_depth" and not (isinstance(value, int) and 1 <= value <= 8):
            raise ValidationError(key, value, "an integer from 1 to 8")
        self.config[key] = value
        version = self._snapshot(description or f"set {key}")
        return {"key": key, "value": value, "source": "api", "version": version["id"]}

    async def list_config_versions(self, service: str, limit: int | None) -> list[dict[str, Any]]:
        self._check()
        items = [self._public(v) for v in self.versions]
        return items[-limit:] if limit else items

    async def snapshot_config(self, service: str, description: str) -> dict[str, Any]:
        return self._public(self._snapshot(description))

    def _values(self, ident: str) -> dict[str, Any] | None:
        if ident == "current":
            return self.config
        for version in self.versions:
            if version["id"] == ident:
                values: dict[str, Any] = version["values"]
                return values
        return None

    async def diff_config(self, service: str, old: str, new: str) -> dict[str, Any] | None:
        a, b = self._values(old), self._values(new)
        if a is None or b is None:
            return None
        changes = []
        for key in sorted(set(a) | set(b)):
            if key not in a:
                changes.append({"key": key, "change": "added", "new": b[key]})
            elif key not in b:
                changes.append({"key": key, "change": "removed", "old": a[key]})
            elif a[key] != b[key]:
                changes.append({"key": key, "change": "changed", "old": a[key], "new": b[key]})
        return {"from": old, "to": new, "changes": changes}

    async def rollback_config(
        self, service: str, version: str, description: str
    ) -> dict[str, Any] | None:
        values = self._values(version)
        if values is None or version == "current":
            return None
        self.config = copy.deepcopy(values)
        self._snapshot(description or f"rollback to {version}")
        return await self.get_config(service)

    def metric_families(self) -> Iterable[MetricFamily]:
        fam = MetricFamily("backend_services_test_fleet_services", "gauge", "Services.")
        return [fam.add(len(self.services))]
