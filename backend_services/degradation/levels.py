"""Degradation levels, feature priorities, resource types and per-resource thresholds.

Levels and priorities are ordered as declared (``NORMAL < PARTIAL < … < OFFLINE``;
``CRITICAL < HIGH < … < OPTIONAL``, the most important priority first, as the original
numbering 1..5 had it). Each member carries its position as ``rank``.

A :class:`ResourceThreshold` gives, for one resource, the usage (0..1) at which each level
is *entered*; the level is left again only once usage falls below ``entry - hysteresis``.
Defaults follow the spec: normal below 0.70, partial from 0.70, minimal from 0.80,
emergency from 0.90, offline from 0.95 (memory: 0.75 / 0.85 / 0.90 / 0.95, the settings
file example; ``DTESN_DEGRADATION_CPU_THRESHOLD`` / ``_MEMORY_THRESHOLD`` set the MINIMAL
entry of that resource).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Literal

from ..errors import SettingsError, ValidationError

__all__ = [
    "DEFAULT_HYSTERESIS",
    "DEFAULT_THRESHOLDS",
    "LEVEL_ORDER",
    "DegradationLevel",
    "FeaturePriority",
    "ResourceScope",
    "ResourceThreshold",
    "ResourceType",
    "build_thresholds",
    "coerce_level",
    "coerce_priority",
    "coerce_resource",
]

DEFAULT_HYSTERESIS = 0.05
"""Default margin below an entry threshold that usage must reach before recovery counts."""


class DegradationLevel(Enum):
    """How much of a service is switched off, from nothing (NORMAL) to all (OFFLINE)."""

    rank: int

    NORMAL = "normal"
    PARTIAL = "partial"
    MINIMAL = "minimal"
    EMERGENCY = "emergency"
    OFFLINE = "offline"

    def __init__(self, value: str) -> None:
        self.rank = len(type(self).__members__)

    def __lt__(self, other: object) -> bool:
        if type(other) is not DegradationLevel:
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if type(other) is not DegradationLevel:
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if type(other) is not DegradationLevel:
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if type(other) is not DegradationLevel:
            return NotImplemented
        return self.rank >= other.rank

    def __hash__(self) -> int:
        return self.rank

    @property
    def better(self) -> DegradationLevel:
        """The next less degraded level (NORMAL stays NORMAL)."""
        return LEVEL_ORDER[max(0, self.rank - 1)]

    @property
    def worse(self) -> DegradationLevel:
        """The next more degraded level (OFFLINE stays OFFLINE)."""
        return LEVEL_ORDER[min(len(LEVEL_ORDER) - 1, self.rank + 1)]


class FeaturePriority(Enum):
    """How important a feature (or a request) is: CRITICAL first, OPTIONAL last."""

    rank: int

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    OPTIONAL = "optional"

    def __init__(self, value: str) -> None:
        self.rank = len(type(self).__members__)

    def __lt__(self, other: object) -> bool:
        if type(other) is not FeaturePriority:
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if type(other) is not FeaturePriority:
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if type(other) is not FeaturePriority:
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if type(other) is not FeaturePriority:
            return NotImplemented
        return self.rank >= other.rank

    def __hash__(self) -> int:
        return self.rank


class ResourceType(Enum):
    """What a usage signal measures. ``EVENT_LOOP`` is the asyncio loop's lag."""

    CPU = "cpu"
    MEMORY = "memory"
    DISK = "disk"
    NETWORK = "network"
    DATABASE = "database"
    CACHE = "cache"
    EXTERNAL_API = "external_api"
    EVENT_LOOP = "event_loop"


LEVEL_ORDER: tuple[DegradationLevel, ...] = tuple(DegradationLevel)

ResourceScope = Literal["service", "dependents"]
"""``"service"``: the resource counts toward the service level (the worst decides).
``"dependents"``: it only gates the features that list it in ``resource_dependencies``."""


def _coerce(enum: type[Any], value: Any, field_name: str) -> Any:
    if isinstance(value, enum):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        for member in enum:
            if member.value == text or member.name.lower() == text:
                return member
    names = ", ".join(m.value for m in enum)
    raise ValidationError(field_name, value, f"one of {names}")


def coerce_level(value: Any, field_name: str = "level") -> DegradationLevel:
    """A :class:`DegradationLevel` from itself or its (case-insensitive) name/value."""
    result: DegradationLevel = _coerce(DegradationLevel, value, field_name)
    return result


def coerce_priority(value: Any, field_name: str = "priority") -> FeaturePriority:
    """A :class:`FeaturePriority` from itself or its (case-insensitive) name/value."""
    result: FeaturePriority = _coerce(FeaturePriority, value, field_name)
    return result


def coerce_resource(value: Any, field_name: str = "resource_type") -> ResourceType:
    """A :class:`ResourceType` from itself or its (case-insensitive) name/value."""
    result: ResourceType = _coerce(ResourceType, value, field_name)
    return result


@dataclass(frozen=True, slots=True)
class ResourceThreshold:
    """Usage (0..1) at which each level is entered for one resource.

    ``partial < minimal < emergency < offline`` is required (``math.inf`` means the level
    is never entered because of this resource). A level is left once usage is below
    ``entry - hysteresis``. ``scope`` says whether the resource decides the service level
    (``"service"``) or only gates the features that depend on it (``"dependents"``).
    """

    resource_type: ResourceType
    partial: float = 0.70
    minimal: float = 0.80
    emergency: float = 0.90
    offline: float = 0.95
    hysteresis: float = DEFAULT_HYSTERESIS
    scope: ResourceScope = "service"
    entries: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rt = coerce_resource(self.resource_type)
        object.__setattr__(self, "resource_type", rt)
        where = f"thresholds.{rt.value}"
        values: list[float] = []
        for name in ("partial", "minimal", "emergency", "offline"):
            raw = getattr(self, name)
            ok = isinstance(raw, (int, float)) and not isinstance(raw, bool)
            value = float(raw) if ok else math.nan
            if not (value == math.inf or (0.0 < value <= 1.0)):
                raise ValidationError(
                    f"{where}.{name}", raw, "a usage fraction in (0, 1], or inf for never"
                )
            if values and value <= values[-1]:
                raise ValidationError(
                    f"{where}.{name}",
                    raw,
                    f"a value above the previous level's threshold {values[-1]:g} "
                    "(thresholds must increase by level: partial < minimal < emergency "
                    "< offline)",
                )
            object.__setattr__(self, name, value)
            values.append(value)
        h = self.hysteresis
        if (
            isinstance(h, bool)
            or not isinstance(h, (int, float))
            or not (0.0 <= float(h) < values[0])
        ):
            raise ValidationError(
                f"{where}.hysteresis", h, f"a margin >= 0 and below partial ({values[0]:g})"
            )
        object.__setattr__(self, "hysteresis", float(h))
        if self.scope not in ("service", "dependents"):
            raise ValidationError(f"{where}.scope", self.scope, "'service' or 'dependents'")
        object.__setattr__(self, "entries", (0.0, *values))

    def entry(self, level: DegradationLevel) -> float:
        """Usage at which ``level`` is entered (0.0 for NORMAL)."""
        return self.entries[level.rank]

    def exit(self, level: DegradationLevel) -> float:
        """Usage below which ``level`` may be left (entry minus hysteresis)."""
        if level is DegradationLevel.NORMAL:
            return math.inf
        return self.entries[level.rank] - self.hysteresis

    def level_for(self, usage: float) -> DegradationLevel:
        """The most degraded level whose entry threshold ``usage`` reaches."""
        e = self.entries
        rank = (
            4
            if usage >= e[4]
            else 3
            if usage >= e[3]
            else 2
            if usage >= e[2]
            else (1 if usage >= e[1] else 0)
        )
        return LEVEL_ORDER[rank]

    def as_dict(self) -> dict[str, Any]:
        """The thresholds as plain data (for status output)."""
        return {
            "partial": self.partial,
            "minimal": self.minimal,
            "emergency": self.emergency,
            "offline": self.offline,
            "hysteresis": self.hysteresis,
            "scope": self.scope,
        }


def _defaults() -> dict[ResourceType, ResourceThreshold]:
    out = {rt: ResourceThreshold(rt) for rt in ResourceType}
    out[ResourceType.MEMORY] = ResourceThreshold(ResourceType.MEMORY, 0.75, 0.85, 0.90, 0.95)
    # Event-loop lag is reported as lag / lag limit (1 s by default): 100 ms of lag is
    # already a sign of overload; OFFLINE only when the loop is a full second late.
    out[ResourceType.EVENT_LOOP] = ResourceThreshold(ResourceType.EVENT_LOOP, 0.10, 0.25, 0.50, 1.0)
    return out


DEFAULT_THRESHOLDS: Mapping[ResourceType, ResourceThreshold] = _defaults()

_LEVEL_FIELDS = ("partial", "minimal", "emergency", "offline")


def build_thresholds(
    settings_thresholds: Mapping[str, Mapping[str, float]] | None = None,
    overrides: Mapping[Any, Any] | Iterable[ResourceThreshold] | None = None,
) -> dict[ResourceType, ResourceThreshold]:
    """Thresholds for every resource: defaults, then the settings (file, then environment,
    as :func:`~backend_services.settings.load_settings` merged them), then ``overrides``
    (the constructor argument: ResourceThreshold objects, or resource -> {level: usage}).

    Raises :class:`~backend_services.errors.ValidationError` when the result does not
    increase by level, naming the resource, the level and the value.
    """
    result = dict(DEFAULT_THRESHOLDS)
    for name, levels in (settings_thresholds or {}).items():
        try:
            rt = coerce_resource(name, "degradation.thresholds")
        except ValidationError:
            names = ", ".join(r.value for r in ResourceType)
            raise SettingsError(
                "degradation.thresholds", name, f"a resource, one of {names}"
            ) from None
        result[rt] = _merge(result[rt], levels, f"degradation.thresholds.{rt.value}")
    if overrides is None:
        return result
    items: Iterable[tuple[Any, Any]]
    if isinstance(overrides, Mapping):
        items = overrides.items()
    else:
        items = []
        for th in overrides:
            if not isinstance(th, ResourceThreshold):
                raise ValidationError("resource_thresholds", th, "ResourceThreshold objects")
            items.append((th.resource_type, th))
    for key, value in items:
        rt = coerce_resource(key, "resource_thresholds")
        if isinstance(value, ResourceThreshold):
            if value.resource_type is not rt:
                raise ValidationError(
                    f"resource_thresholds[{rt.value}]",
                    value.resource_type.value,
                    f"a threshold for {rt.value}",
                )
            result[rt] = value
        elif isinstance(value, Mapping):
            result[rt] = _merge(result[rt], value, f"resource_thresholds.{rt.value}")
        else:
            raise ValidationError(
                f"resource_thresholds[{rt.value}]",
                value,
                "a ResourceThreshold or a mapping of level -> usage",
            )
    return result


def _merge(base: ResourceThreshold, levels: Mapping[str, Any], where: str) -> ResourceThreshold:
    changes: dict[str, Any] = {}
    for key, value in levels.items():
        name = str(key).lower()
        if name not in (*_LEVEL_FIELDS, "hysteresis", "scope"):
            raise ValidationError(
                f"{where}.{key}", value, "a level name (partial, minimal, emergency, offline)"
            )
        changes[name] = value
    return replace(base, **changes)
