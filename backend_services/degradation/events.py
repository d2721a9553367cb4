"""What a level change looks like to listeners and in the history."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .levels import DegradationLevel

__all__ = ["DegradationEvent"]


@dataclass(frozen=True, slots=True)
class DegradationEvent:
    """One change of a service's level.

    ``timestamp`` is wall time; ``resources`` the usage snapshot (resource name -> 0..1)
    when it happened; ``source`` says what caused it (``"resources"``, ``"manual"``,
    ``"fleet"``, ``"expiry"``, ``"clear"``, ``"floor"``).
    """

    service_name: str
    timestamp: float
    old_level: DegradationLevel
    new_level: DegradationLevel
    reason: str
    source: str
    resources: Mapping[str, float] = field(default_factory=dict)
    forced: bool = False

    @property
    def is_degradation(self) -> bool:
        """True for a change to a worse level, False for a recovery."""
        return self.new_level > self.old_level

    @property
    def direction(self) -> str:
        return "degradation" if self.is_degradation else "recovery"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (levels as their lower-case values)."""
        return {
            "service_name": self.service_name,
            "timestamp": self.timestamp,
            "old_level": self.old_level.value,
            "new_level": self.new_level.value,
            "direction": self.direction,
            "reason": self.reason,
            "source": self.source,
            "forced": self.forced,
            "resources": dict(self.resources),
        }
