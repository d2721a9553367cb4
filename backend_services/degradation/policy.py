"""The level policy: a pure state machine from usage samples to a stable level.

No I/O, no asyncio, no clock: every method takes ``now`` (monotonic seconds).

Rules
-----
* The worst resource decides. A worse level applies at the first sample whose usage
  reaches that level's entry threshold (several levels at once if need be).
* Recovery goes one level at a time: from level L to the next better level only after
  every resource has stayed below L's exit threshold (entry minus hysteresis) for
  ``recovery_delay`` seconds without a break; the wait then starts again for the next
  step. When conditions stay good, recovery always reaches NORMAL.
* A sample that is missing (its monitor failed) leaves the resource's previous value in
  force until it is older than ``stale_after``; then the resource no longer counts.
* A manual override (``force``) sets the level outright until cleared or until its expiry;
  the automatic level keeps following the samples underneath and takes over afterwards.
* A fleet floor, when followed, keeps the level from being better than the floor.
* Resources whose threshold has ``scope="dependents"`` do not count toward the service
  level; each gets its own stable level that gates only the features depending on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .levels import (
    DEFAULT_THRESHOLDS,
    DegradationLevel,
    ResourceThreshold,
    ResourceType,
)

__all__ = ["Change", "DegradationPolicy", "LevelTracker", "Override"]

NORMAL = DegradationLevel.NORMAL


@dataclass(frozen=True, slots=True)
class Change:
    """A change of the effective level: from ``old`` to ``new``, why, and from where
    (``"resources"``, ``"manual"``, ``"fleet"``, ``"expiry"``, ``"clear"``, ``"floor"``)."""

    old: DegradationLevel
    new: DegradationLevel
    reason: str
    source: str

    @property
    def is_degradation(self) -> bool:
        return self.new > self.old


@dataclass(frozen=True, slots=True)
class Override:
    """A level set by hand (or by the fleet), until ``until`` (monotonic) or cleared."""

    level: DegradationLevel
    reason: str
    source: str
    since: float
    until: float | None = None


class LevelTracker:
    """Stable level for one group of resources (the hysteresis state machine)."""

    __slots__ = ("_last", "below_since", "level", "recovery_delay", "stale_after", "thresholds")

    def __init__(
        self,
        thresholds: Mapping[ResourceType, ResourceThreshold],
        recovery_delay: float,
        stale_after: float = math.inf,
    ) -> None:
        self.thresholds = thresholds
        self.recovery_delay = recovery_delay
        self.stale_after = stale_after
        self.level = NORMAL
        self.below_since: float | None = None
        self._last: dict[ResourceType, tuple[float, float]] = {}

    def _threshold(self, resource: ResourceType) -> ResourceThreshold:
        th = self.thresholds.get(resource)
        return th if th is not None else DEFAULT_THRESHOLDS[resource]

    def fresh(self, now: float) -> dict[ResourceType, float]:
        """The values still in force at ``now``."""
        return {r: u for r, (u, t) in self._last.items() if now - t <= self.stale_after}

    def observe(
        self, usage: Mapping[ResourceType, float], now: float
    ) -> tuple[DegradationLevel, DegradationLevel, str] | None:
        """Take this round's samples; return ``(old, new, reason)`` if the level moved."""
        for resource, value in usage.items():
            self._last[resource] = (value, now)
        values = self.fresh(now)
        worst = NORMAL
        culprit: tuple[ResourceType, float] | None = None
        for resource, value in values.items():
            lv = self._threshold(resource).level_for(value)
            if lv > worst:
                worst, culprit = lv, (resource, value)
        old = self.level
        if worst > old and culprit is not None:
            self.level = worst
            self.below_since = None
            resource, value = culprit
            entry = self._threshold(resource).entry(worst)
            return (
                old,
                worst,
                (
                    f"{resource.value} usage {value:.3f} reached the {worst.value} entry "
                    f"threshold {entry:.3f}"
                ),
            )
        if old is NORMAL:
            self.below_since = None
            return None
        if not self._all_below(values, old):
            self.below_since = None
            return None
        if self.below_since is None:
            self.below_since = now
        if now - self.below_since < self.recovery_delay:
            return None
        new = old.better
        self.level = new
        self.below_since = now if new is not NORMAL and self._all_below(values, new) else None
        return (
            old,
            new,
            (
                f"usage stayed below the {old.value} exit thresholds for "
                f"{self.recovery_delay:g}s; recovering one level"
            ),
        )

    def _all_below(self, values: Mapping[ResourceType, float], level: DegradationLevel) -> bool:
        return all(u < self._threshold(r).exit(level) for r, u in values.items())

    def next_step_at(self) -> float | None:
        """Monotonic time of the earliest possible recovery step, if one is under way."""
        if self.below_since is None:
            return None
        return self.below_since + self.recovery_delay


class DegradationPolicy:
    """The service's effective level: automatic tracker, override, floor, dependents."""

    def __init__(
        self,
        thresholds: Mapping[ResourceType, ResourceThreshold] | None = None,
        recovery_delay: float = 60.0,
        *,
        stale_after: float = math.inf,
        follow_floor: bool = False,
    ) -> None:
        self.thresholds: dict[ResourceType, ResourceThreshold] = dict(DEFAULT_THRESHOLDS)
        self.thresholds.update(thresholds or {})
        self.recovery_delay = recovery_delay
        self.follow_floor = follow_floor
        service = {r: t for r, t in self.thresholds.items() if t.scope == "service"}
        self._service = LevelTracker(service, recovery_delay, stale_after)
        self._dependents = {
            r: LevelTracker({r: t}, recovery_delay, stale_after)
            for r, t in self.thresholds.items()
            if t.scope == "dependents"
        }
        self.override: Override | None = None
        self.floor: DegradationLevel | None = None
        self.level = NORMAL
        self.gate_version = 0
        """Grows whenever the level or a dependency level changes (feature table is stale)."""

    @property
    def auto_level(self) -> DegradationLevel:
        """The level the samples alone decide."""
        return self._service.level

    @property
    def dependency_levels(self) -> dict[ResourceType, DegradationLevel]:
        """Stable levels of the ``scope="dependents"`` resources."""
        return {r: t.level for r, t in self._dependents.items()}

    def _effective(self) -> DegradationLevel:
        if self.override is not None:
            return self.override.level
        level = self._service.level
        if self.follow_floor and self.floor is not None and self.floor > level:
            return self.floor
        return level

    def _settle(self, reason: str, source: str) -> Change | None:
        new = self._effective()
        old = self.level
        if new is old:
            return None
        self.level = new
        self.gate_version += 1
        return Change(old, new, reason, source)

    def observe(self, usage: Mapping[ResourceType, float], now: float) -> Change | None:
        """Take one round of samples (resource -> usage 0..1) at ``now``."""
        expired = self._expire(now)
        service: dict[ResourceType, float] = {}
        for resource, value in usage.items():
            tracker = self._dependents.get(resource)
            if tracker is None:
                service[resource] = value
            elif tracker.observe({resource: value}, now) is not None:
                self.gate_version += 1
        for resource, tracker in self._dependents.items():
            if resource not in usage and tracker.observe({}, now) is not None:
                self.gate_version += 1
        moved = self._service.observe(service, now)
        if expired is not None:
            return self._settle(expired.reason, "expiry")
        reason = moved[2] if moved else "level re-evaluated"
        return self._settle(reason, "resources")

    def tick(self, now: float) -> Change | None:
        """Apply an override's expiry due at ``now`` (no new samples)."""
        expired = self._expire(now)
        if expired is None:
            return None
        return self._settle(expired.reason, "expiry")

    def _expire(self, now: float) -> Override | None:
        ov = self.override
        if ov is None or ov.until is None or now < ov.until:
            return None
        self.override = None
        return Override(ov.level, f"override expired ({ov.reason})", ov.source, ov.since, ov.until)

    def force(
        self,
        level: DegradationLevel,
        reason: str,
        now: float,
        *,
        until: float | None = None,
        source: str = "manual",
    ) -> Change | None:
        """Set the level outright until :meth:`clear` or ``until`` (monotonic)."""
        self.override = Override(level, reason, source, now, until)
        return self._settle(reason, source)

    def clear(
        self, now: float, *, reason: str = "override cleared", source: str | None = None
    ) -> Change | None:
        """Remove the override (only one from ``source`` when given); the automatic level
        takes over at once."""
        ov = self.override
        if ov is None or (source is not None and ov.source != source):
            return None
        self.override = None
        return self._settle(reason, "clear")

    def set_floor(
        self, level: DegradationLevel | None, reason: str = "fleet floor"
    ) -> Change | None:
        """Record the fleet floor; it changes the level only when ``follow_floor``."""
        self.floor = level
        return self._settle(reason, "floor")

    def next_improvement_in(self, now: float) -> float | None:
        """Seconds until the level could next get better (None: not foreseeable)."""
        ov = self.override
        if ov is not None:
            return None if ov.until is None else max(0.0, ov.until - now)
        if self.level is NORMAL:
            return 0.0
        at = self._service.next_step_at()
        return None if at is None else max(0.0, at - now)

    def usage(self, now: float) -> dict[ResourceType, float]:
        """Every resource value still in force (service and dependents)."""
        out = self._service.fresh(now)
        for tracker in self._dependents.values():
            out.update(tracker.fresh(now))
        return out
