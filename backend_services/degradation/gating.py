"""Feature gating: which priorities each level allows, and a precomputed lookup table.

Per the spec: PARTIAL disables OPTIONAL; MINIMAL keeps CRITICAL and HIGH; EMERGENCY keeps
CRITICAL; OFFLINE serves nothing but health. The same table decides which request
priorities admission control lets in.

:class:`FeatureGate` recomputes the name -> enabled table only when the level (or a
dependency's level) changes, so a lookup is one dict access.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ValidationError
from .levels import (
    LEVEL_ORDER,
    DegradationLevel,
    FeaturePriority,
    ResourceType,
    coerce_priority,
    coerce_resource,
)

__all__ = ["ALLOWED_PRIORITIES", "Feature", "FeatureGate", "allowed", "max_allowed_rank"]

# Highest priority rank allowed at each level (rank: CRITICAL=0 … OPTIONAL=4; -1 = none).
_MAX_RANK: dict[DegradationLevel, int] = {
    DegradationLevel.NORMAL: FeaturePriority.OPTIONAL.rank,
    DegradationLevel.PARTIAL: FeaturePriority.LOW.rank,
    DegradationLevel.MINIMAL: FeaturePriority.HIGH.rank,
    DegradationLevel.EMERGENCY: FeaturePriority.CRITICAL.rank,
    DegradationLevel.OFFLINE: -1,
}

ALLOWED_PRIORITIES: Mapping[DegradationLevel, frozenset[FeaturePriority]] = {
    level: frozenset(p for p in FeaturePriority if p.rank <= _MAX_RANK[level])
    for level in LEVEL_ORDER
}
"""The feature (and request) priorities each level allows."""


def max_allowed_rank(level: DegradationLevel) -> int:
    """Rank of the least important priority ``level`` allows (-1: none)."""
    return _MAX_RANK[level]


def allowed(priority: FeaturePriority, level: DegradationLevel) -> bool:
    """Whether a feature (or request) of ``priority`` runs at ``level``."""
    return priority.rank <= _MAX_RANK[level]


@dataclass(slots=True, eq=False)
class Feature:
    """A switchable piece of functionality.

    ``enabled`` is the operator's switch (False: off at every level); whether the feature
    runs *now* also depends on the level — ask the manager (``is_feature_enabled``).
    ``fallback_function`` is called with the same arguments when the feature is off (or
    fails) in ``execute_with_fallback``. ``resource_dependencies`` lists the resources the
    feature needs: a resource with ``scope="dependents"`` gates only such features.
    """

    name: str
    priority: FeaturePriority
    enabled: bool = True
    fallback_function: Callable[..., Any] | None = None
    resource_dependencies: Iterable[ResourceType] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValidationError("feature.name", self.name, "a non-empty string")
        self.priority = coerce_priority(self.priority, "feature.priority")
        if not isinstance(self.enabled, bool):
            raise ValidationError("feature.enabled", self.enabled, "True or False")
        if self.fallback_function is not None and not callable(self.fallback_function):
            raise ValidationError(
                "feature.fallback_function", self.fallback_function, "a callable or None"
            )
        deps = self.resource_dependencies
        if isinstance(deps, (str, ResourceType)):
            deps = (deps,)
        self.resource_dependencies = tuple(
            coerce_resource(d, "feature.resource_dependencies") for d in deps
        )
        if not isinstance(self.metadata, dict):
            raise ValidationError("feature.metadata", self.metadata, "a dict")

    def __repr__(self) -> str:
        return f"Feature({self.name!r}, {self.priority.value}, enabled={self.enabled})"


class FeatureGate:
    """Registered features and the precomputed name -> enabled-now table."""

    __slots__ = ("_dependency_levels", "_level", "features", "table")

    def __init__(self) -> None:
        self.features: dict[str, Feature] = {}
        self.table: dict[str, bool] = {}
        self._level = DegradationLevel.NORMAL
        self._dependency_levels: Mapping[ResourceType, DegradationLevel] = {}

    @property
    def level(self) -> DegradationLevel:
        return self._level

    def _decide(self, feature: Feature) -> bool:
        if not feature.enabled:
            return False
        rank = feature.priority.rank
        if rank > _MAX_RANK[self._level]:
            return False
        deps = self._dependency_levels
        if deps:
            for resource in feature.resource_dependencies:
                dep_level = deps.get(resource)
                if dep_level is not None and rank > _MAX_RANK[dep_level]:
                    return False
        return True

    def register(self, feature: Feature) -> bool:
        """Add or replace ``feature``; return whether it is enabled now."""
        self.features[feature.name] = feature
        on = self.table[feature.name] = self._decide(feature)
        return on

    def unregister(self, name: str) -> bool:
        """Remove a feature; False if it was not registered."""
        self.table.pop(name, None)
        return self.features.pop(name, None) is not None

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Flip a feature's operator switch and its table entry."""
        feature = self.features[name]
        feature.enabled = enabled
        self.table[name] = self._decide(feature)

    def apply(
        self,
        level: DegradationLevel,
        dependency_levels: Mapping[ResourceType, DegradationLevel] | None = None,
    ) -> tuple[list[str], list[str]]:
        """Recompute the table for ``level``; return (newly enabled, newly disabled)."""
        self._level = level
        self._dependency_levels = {
            r: lv
            for r, lv in (dependency_levels or {}).items()
            if lv is not DegradationLevel.NORMAL
        }
        table = self.table
        on: list[str] = []
        off: list[str] = []
        for name, feature in self.features.items():
            now = self._decide(feature)
            if table.get(name) is not now:
                (on if now else off).append(name)
                table[name] = now
        return on, off

    def enabled_names(self) -> list[str]:
        return [n for n, v in self.table.items() if v]

    def disabled_names(self) -> list[str]:
        return [n for n, v in self.table.items() if not v]
