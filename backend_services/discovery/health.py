"""The health state machine of one instance (pure: time is passed in).

::

    STARTING --success--> HEALTHY --failure x failure_threshold--> UNHEALTHY
    STARTING --failure x failure_threshold (after the start-up grace)--> UNHEALTHY
    UNHEALTHY --success x success_threshold--> HEALTHY
    UNHEALTHY for deregister_after seconds --> deregistration is due

Failed checks inside the start-up grace period (measured from registration) are counted
in ``error_count`` and ``consecutive_failures`` but do not count toward the threshold.
The hysteresis (``failure_threshold`` down, ``success_threshold`` up) keeps a flapping
instance from flipping on every check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ValidationError
from .model import ServiceHealth, ServiceStatus

__all__ = ["HealthPolicy", "HealthState", "Transition"]


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """Thresholds of the health state machine (validated on creation)."""

    failure_threshold: int = 3
    success_threshold: int = 1
    startup_grace: float = 0.0
    deregister_after: float | None = None

    def __post_init__(self) -> None:
        for name in ("failure_threshold", "success_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(name, value, "an integer >= 1")
        if not isinstance(self.startup_grace, (int, float)) or self.startup_grace < 0:
            raise ValidationError("startup_grace", self.startup_grace, "seconds >= 0")
        if self.deregister_after is not None and (
            not isinstance(self.deregister_after, (int, float)) or self.deregister_after <= 0
        ):
            raise ValidationError(
                "deregister_after", self.deregister_after, "seconds > 0, or None for never"
            )


@dataclass(frozen=True, slots=True)
class Transition:
    """A status change of one instance."""

    service_id: str
    old: ServiceStatus
    new: ServiceStatus
    reason: str


@dataclass(slots=True)
class HealthState:
    """Mutable health of one instance, driven by :meth:`observe`.

    ``registered_at``, ``since`` (the last status change) and ``shared_at`` (when this
    process last shared it without a change) are monotonic seconds; ``last_check`` is
    wall time.
    """

    service_id: str
    registered_at: float
    status: ServiceStatus = ServiceStatus.STARTING
    since: float = 0.0
    last_check: float = 0.0
    response_time_ms: float = 0.0
    error_count: int = 0
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    strikes: int = 0
    last_error: str | None = None
    shared_at: float = 0.0

    @classmethod
    def from_health(cls, health: ServiceHealth, now: float) -> HealthState:
        """Continue from a snapshot someone else published (e.g. on taking over checks)."""
        status = health.status
        if status is ServiceStatus.UNKNOWN:
            status = ServiceStatus.STARTING
        return cls(
            service_id=health.service_id,
            registered_at=now,
            status=status,
            since=now,
            last_check=health.last_check,
            response_time_ms=health.response_time_ms,
            error_count=health.error_count,
            consecutive_failures=health.consecutive_failures,
            strikes=health.consecutive_failures,
        )

    def observe(
        self,
        policy: HealthPolicy,
        ok: bool,
        *,
        now: float,
        wall: float,
        response_time_ms: float = 0.0,
        error: str | None = None,
    ) -> Transition | None:
        """Record one check result; returns the transition it caused, if any."""
        if self.status is ServiceStatus.STOPPING:
            return None
        self.last_check = wall
        self.response_time_ms = response_time_ms
        old = self.status
        if ok:
            self.consecutive_failures = 0
            self.strikes = 0
            self.consecutive_successes += 1
            self.last_error = None
            if old in (ServiceStatus.STARTING, ServiceStatus.UNKNOWN) or (
                old is ServiceStatus.UNHEALTHY
                and self.consecutive_successes >= policy.success_threshold
            ):
                return self._move(ServiceStatus.HEALTHY, now, "check passed")
            return None
        self.consecutive_successes = 0
        self.consecutive_failures += 1
        self.error_count += 1
        self.last_error = error
        if self.in_grace(policy, now):
            return None
        self.strikes += 1
        if old is not ServiceStatus.UNHEALTHY and self.strikes >= policy.failure_threshold:
            reason = f"{self.strikes} consecutive failed checks"
            if error:
                reason += f" (last: {error})"
            return self._move(ServiceStatus.UNHEALTHY, now, reason)
        return None

    def in_grace(self, policy: HealthPolicy, now: float) -> bool:
        """True while a starting instance is inside its start-up grace period."""
        return (
            self.status in (ServiceStatus.STARTING, ServiceStatus.UNKNOWN)
            and now - self.registered_at < policy.startup_grace
        )

    def deregister_due(self, policy: HealthPolicy, now: float) -> bool:
        """True when the instance has been unhealthy for ``deregister_after`` seconds."""
        return (
            policy.deregister_after is not None
            and self.status is ServiceStatus.UNHEALTHY
            and now - self.since >= policy.deregister_after
        )

    def stop(self, now: float) -> Transition | None:
        """The instance is being deregistered: no more transitions."""
        if self.status is ServiceStatus.STOPPING:
            return None
        return self._move(ServiceStatus.STOPPING, now, "deregistering")

    def _move(self, new: ServiceStatus, now: float, reason: str) -> Transition:
        old, self.status, self.since = self.status, new, now
        if new is ServiceStatus.HEALTHY:
            self.consecutive_successes = 0
        return Transition(self.service_id, old, new, reason)

    def snapshot(self) -> ServiceHealth:
        """The public :class:`ServiceHealth` of this state."""
        metadata: dict[str, Any] = {}
        if self.last_error:
            metadata["last_error"] = self.last_error
        return ServiceHealth(
            service_id=self.service_id,
            status=self.status,
            last_check=self.last_check,
            response_time_ms=self.response_time_ms,
            error_count=self.error_count,
            consecutive_failures=self.consecutive_failures,
            metadata=metadata,
        )
