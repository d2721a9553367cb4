"""Fleet records: what each manager publishes, the fleet-wide commands, and the summary.

Layout in the shared store (keys are namespaced by the store):

* ``degradation:instance:<instance_id>`` — one manager's published state (with a TTL, so
  a process that died drops out), listed in the set ``degradation:instances``;
* ``degradation:fleet`` — the fleet commands in force: an override (emergency shutdown),
  an advisory floor, and per-service overrides (by service name);
* stream ``degradation:control`` — one event per command, followed by every manager so a
  command reaches every process at once.

Pure: encoding, decoding (bad data is rejected with a clear error, never trusted) and
aggregation; time values are passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ValidationError
from .levels import LEVEL_ORDER, DegradationLevel, coerce_level

__all__ = [
    "CONTROL_STREAM",
    "FLEET_KEY",
    "INSTANCES_KEY",
    "FleetCommand",
    "FleetState",
    "InstanceRecord",
    "instance_key",
    "summarize",
]

INSTANCES_KEY = "degradation:instances"
FLEET_KEY = "degradation:fleet"
CONTROL_STREAM = "degradation:control"


def instance_key(instance_id: str) -> str:
    return f"degradation:instance:{instance_id}"


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One manager's published state."""

    service_name: str
    instance_id: str
    level: DegradationLevel
    forced: bool
    reason: str
    resources: Mapping[str, float]
    enabled_features: int
    disabled_features: int
    updated_at: float
    pid: int | None = None
    host: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "service_name": self.service_name,
            "instance_id": self.instance_id,
            "level": self.level.value,
            "forced": self.forced,
            "reason": self.reason,
            "resources": {k: round(v, 6) for k, v in self.resources.items()},
            "enabled_features": self.enabled_features,
            "disabled_features": self.disabled_features,
            "updated_at": self.updated_at,
            "pid": self.pid,
            "host": self.host,
        }

    @classmethod
    def from_json(cls, data: Any) -> InstanceRecord:
        """Decode a published record; raises ValidationError on malformed data."""
        if not isinstance(data, Mapping):
            raise ValidationError("degradation instance record", data, "a JSON object")
        try:
            resources = data.get("resources") or {}
            if not isinstance(resources, Mapping):
                raise TypeError
            return cls(
                service_name=str(data["service_name"]),
                instance_id=str(data["instance_id"]),
                level=coerce_level(data["level"], "record.level"),
                forced=bool(data.get("forced", False)),
                reason=str(data.get("reason", "")),
                resources={str(k): float(v) for k, v in resources.items()},
                enabled_features=int(data.get("enabled_features", 0)),
                disabled_features=int(data.get("disabled_features", 0)),
                updated_at=float(data.get("updated_at", 0.0)),
                pid=int(data["pid"]) if data.get("pid") is not None else None,
                host=str(data["host"]) if data.get("host") is not None else None,
            )
        except ValidationError:
            raise
        except (KeyError, TypeError, ValueError):
            raise ValidationError(
                "degradation instance record",
                data,
                "service_name, instance_id, level and numeric resources",
            ) from None


@dataclass(frozen=True, slots=True)
class FleetCommand:
    """A fleet level command: ``kind`` is ``"override"`` (an emergency shutdown:
    every manager forces ``level``) or ``"floor"`` (advisory minimum level);
    ``until`` is wall time or None (until cleared). An override with ``service`` set
    targets only the managers of that service name (the others ignore it)."""

    kind: str
    id: str
    level: DegradationLevel
    reason: str
    issued_at: float
    until: float | None = None
    service: str | None = None

    def active(self, wall_now: float) -> bool:
        return self.until is None or wall_now < self.until

    def targets(self, service_name: str) -> bool:
        """Whether a manager of ``service_name`` applies this command."""
        return self.service is None or self.service == service_name

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "id": self.id,
            "level": self.level.value,
            "reason": self.reason,
            "issued_at": self.issued_at,
            "until": self.until,
        }
        if self.service is not None:
            out["service"] = self.service
        return out

    @classmethod
    def from_json(cls, data: Any) -> FleetCommand:
        if not isinstance(data, Mapping) or data.get("kind") not in ("override", "floor"):
            raise ValidationError("fleet command", data, "an object with kind override|floor")
        try:
            until = data.get("until")
            until_f = float(until) if until is not None else None
            if until_f is not None and not math.isfinite(until_f):
                raise ValueError
            service = data.get("service")
            if service is not None and (not isinstance(service, str) or not service):
                raise ValueError
            return cls(
                kind=str(data["kind"]),
                id=str(data["id"]),
                level=coerce_level(data["level"], "fleet command level"),
                reason=str(data.get("reason", "")),
                issued_at=float(data.get("issued_at", 0.0)),
                until=until_f,
                service=service,
            )
        except ValidationError:
            raise
        except (KeyError, TypeError, ValueError):
            raise ValidationError(
                "fleet command",
                data,
                "id, level, issued_at, until (number or null) and service (name or absent)",
            ) from None


@dataclass(frozen=True, slots=True)
class FleetState:
    """The fleet commands in force (the ``degradation:fleet`` record): the fleet-wide
    override, the floor, and per-service overrides by service name."""

    override: FleetCommand | None = None
    floor: FleetCommand | None = None
    services: Mapping[str, FleetCommand] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "override": self.override.to_json() if self.override else None,
            "floor": self.floor.to_json() if self.floor else None,
            "services": {name: cmd.to_json() for name, cmd in sorted(self.services.items())},
        }

    def override_for(self, service_name: str, wall_now: float) -> FleetCommand | None:
        """The override a manager of ``service_name`` follows: the latest issued of the
        fleet-wide one and its own, among those still active."""
        found = [
            cmd
            for cmd in (self.override, self.services.get(service_name))
            if cmd is not None and cmd.active(wall_now)
        ]
        return max(found, key=lambda c: c.issued_at) if found else None

    def active_services(self, wall_now: float) -> dict[str, FleetCommand]:
        """The per-service overrides still in force (expired ones dropped)."""
        return {n: c for n, c in self.services.items() if c.active(wall_now)}

    @classmethod
    def from_json(cls, data: Any) -> FleetState:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValidationError("fleet state", data, "a JSON object")
        ov, fl = data.get("override"), data.get("floor")
        raw = data.get("services") or {}
        if not isinstance(raw, Mapping):
            raise ValidationError("fleet state services", raw, "an object of service -> command")
        services = {}
        for name, cmd in raw.items():
            command = FleetCommand.from_json(cmd)
            if command.service != name:
                raise ValidationError("fleet state services", raw, "commands keyed by service")
            services[str(name)] = command
        return cls(
            FleetCommand.from_json(ov) if ov is not None else None,
            FleetCommand.from_json(fl) if fl is not None else None,
            services,
        )


@dataclass(slots=True)
class _ServiceSummary:
    level: DegradationLevel = DegradationLevel.NORMAL
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)


def summarize(
    records: Iterable[InstanceRecord], fleet: FleetState | None = None, *, wall_now: float
) -> dict[str, Any]:
    """The fleet view: worst level, counts, and per service its worst level and instances."""
    services: dict[str, _ServiceSummary] = {}
    counts = {lv.value: 0 for lv in LEVEL_ORDER}
    worst = DegradationLevel.NORMAL
    total = 0
    for rec in records:
        total += 1
        counts[rec.level.value] += 1
        worst = max(worst, rec.level)
        s = services.setdefault(rec.service_name, _ServiceSummary())
        s.level = max(s.level, rec.level)
        info = rec.to_json()
        info["age"] = max(0.0, wall_now - rec.updated_at)
        s.instances[rec.instance_id] = info
    degraded = [n for n, s in services.items() if s.level is not DegradationLevel.NORMAL]
    fleet = fleet or FleetState()
    return {
        "global_level": worst.value,
        "worst_level": worst.value,
        "total_services": len(services),
        "degraded_services": len(degraded),
        "total_instances": total,
        "degraded_instances": total - counts[DegradationLevel.NORMAL.value],
        "level_counts": counts,
        "services": {
            name: {
                "level": s.level.value,
                "degraded": s.level is not DegradationLevel.NORMAL,
                "instances": s.instances,
            }
            for name, s in sorted(services.items())
        },
        "fleet_override": (
            fleet.override.to_json() if fleet.override and fleet.override.active(wall_now) else None
        ),
        "fleet_floor": (
            fleet.floor.to_json() if fleet.floor and fleet.floor.active(wall_now) else None
        ),
        "service_overrides": {
            name: cmd.to_json() for name, cmd in sorted(fleet.active_services(wall_now).items())
        },
    }
