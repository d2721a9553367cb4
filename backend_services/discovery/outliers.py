"""Passive outlier detection from real calls (pure: time is passed in).

Outcomes of requests made through the request path are recorded per endpoint. After
``consecutive_failures`` failures in a row an endpoint is *ejected* (taken out of load
balancing) for ``base_ejection_time x n`` seconds, where ``n`` counts its recent ejections
(capped at ``max_ejection_time``); an endpoint that stays clean for ``max_ejection_time``
after its last ejection starts again from ``n = 1``. At most ``max_ejection_percent`` of a
group's endpoints are ejected at once (at least one when the group has two or more). An
endpoint that becomes healthy again in active health checks is readmitted at once
(:meth:`OutlierDetector.readmit`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ValidationError

__all__ = ["Ejection", "OutlierDetector", "OutlierPolicy"]


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    """Settings of passive outlier detection."""

    consecutive_failures: int = 5
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 0.5

    def __post_init__(self) -> None:
        n = self.consecutive_failures
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValidationError("consecutive_failures", n, "an integer >= 1")
        if not self.base_ejection_time > 0:
            raise ValidationError("base_ejection_time", self.base_ejection_time, "seconds > 0")
        if not self.max_ejection_time >= self.base_ejection_time:
            raise ValidationError(
                "max_ejection_time", self.max_ejection_time, "seconds >= base_ejection_time"
            )
        if not 0.0 <= self.max_ejection_percent <= 1.0:
            raise ValidationError(
                "max_ejection_percent", self.max_ejection_percent, "a fraction from 0 to 1"
            )


@dataclass(frozen=True, slots=True)
class Ejection:
    """An endpoint was ejected until ``until`` (monotonic seconds), for the n-th time."""

    service_id: str
    until: float
    times: int


class _Host:
    __slots__ = ("ejected_until", "failures", "last_ejection_end", "times")

    def __init__(self) -> None:
        self.failures = 0
        self.times = 0
        self.ejected_until = 0.0
        self.last_ejection_end = -math.inf


class OutlierDetector:
    """Consecutive-failure ejection for one group of endpoints (one service type)."""

    def __init__(self, policy: OutlierPolicy | None = None) -> None:
        self.policy = policy or OutlierPolicy()
        self._hosts: dict[str, _Host] = {}
        self._latest_until = 0.0
        self.ejections_total = 0

    def record(self, service_id: str, ok: bool, now: float, population: int) -> Ejection | None:
        """Record one call outcome; returns the ejection it caused, if any.

        ``population`` is the number of endpoints in the group (for the ejection cap).
        """
        host = self._hosts.get(service_id)
        if host is None:
            if ok:
                return None
            host = self._hosts[service_id] = _Host()
        if ok:
            host.failures = 0
            return None
        host.failures += 1
        if host.failures < self.policy.consecutive_failures or host.ejected_until > now:
            return None
        if self.ejected_count(now) >= self._cap(population):
            return None
        if now - host.last_ejection_end > self.policy.max_ejection_time:
            host.times = 0
        host.times += 1
        duration = min(self.policy.base_ejection_time * host.times, self.policy.max_ejection_time)
        host.ejected_until = now + duration
        self._latest_until = max(self._latest_until, host.ejected_until)
        host.last_ejection_end = host.ejected_until
        host.failures = 0
        self.ejections_total += 1
        return Ejection(service_id, host.ejected_until, host.times)

    def _cap(self, population: int) -> int:
        if population < 2:
            return 0
        return max(1, math.floor(population * self.policy.max_ejection_percent + 1e-9))

    def any_ejected(self, now: float) -> bool:
        """True when some endpoint is ejected at ``now`` (cheap when none ever was)."""
        return self._latest_until > now

    def is_ejected(self, service_id: str, now: float) -> bool:
        """True while ``service_id`` is ejected."""
        host = self._hosts.get(service_id)
        return host is not None and host.ejected_until > now

    def ejected(self, now: float) -> set[str]:
        """Ids ejected at ``now``."""
        return {sid for sid, h in self._hosts.items() if h.ejected_until > now}

    def ejected_count(self, now: float) -> int:
        """How many endpoints are ejected at ``now``."""
        return sum(1 for h in self._hosts.values() if h.ejected_until > now)

    def readmit(self, service_id: str, now: float) -> bool:
        """End an ejection early and clear the failure run (the endpoint passed active
        health checks after failing them); the ejection count is kept, so an endpoint
        that keeps failing is still ejected for longer. True if it was ejected at ``now``."""
        host = self._hosts.get(service_id)
        if host is None:
            return False
        host.failures = 0
        if host.ejected_until <= now:
            return False
        host.ejected_until = now
        host.last_ejection_end = now
        return True

    def forget(self, service_id: str) -> None:
        """Drop what is known about an endpoint (it was deregistered)."""
        self._hosts.pop(service_id, None)

    def times_ejected(self, service_id: str) -> int:
        """The endpoint's current ejection multiplier (0 when never ejected)."""
        host = self._hosts.get(service_id)
        return host.times if host else 0
