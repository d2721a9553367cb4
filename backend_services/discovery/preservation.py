"""Self-preservation: stop evicting when too much disappears at once (pure).

If a large share of the registry goes unhealthy or expires within a short window, the
likelier cause is the observer (a checker that lost its network, a registry that lost its
data), not the instances. While self-preservation is active, evictions (deregistration
after prolonged unhealthiness, removal of expired registrations) pause. It ends when the
share of recent losses drops below half the threshold.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..errors import ValidationError

__all__ = ["PreservationPolicy", "SelfPreservation"]


@dataclass(frozen=True, slots=True)
class PreservationPolicy:
    """``threshold``: share of instances lost within ``window`` seconds that triggers
    self-preservation; groups smaller than ``min_instances`` never trigger it."""

    threshold: float = 0.5
    window: float = 60.0
    min_instances: int = 3
    enabled: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValidationError("threshold", self.threshold, "a fraction in (0, 1]")
        if not self.window > 0:
            raise ValidationError("window", self.window, "seconds > 0")
        if isinstance(self.min_instances, bool) or self.min_instances < 1:
            raise ValidationError("min_instances", self.min_instances, "an integer >= 1")


class SelfPreservation:
    """Counts recent losses and says whether evictions may proceed."""

    def __init__(self, policy: PreservationPolicy | None = None) -> None:
        self.policy = policy or PreservationPolicy()
        self._losses: deque[tuple[float, str]] = deque()
        self.active = False
        self.activations = 0

    def _trim(self, now: float) -> None:
        horizon = now - self.policy.window
        while self._losses and self._losses[0][0] < horizon:
            self._losses.popleft()

    def loss_share(self, now: float, population: int) -> float:
        """Distinct instances lost within the window, as a share of ``population``."""
        self._trim(now)
        if population <= 0:
            return 0.0
        return len({sid for _, sid in self._losses}) / population

    def record_loss(self, service_id: str, now: float, population: int) -> bool | None:
        """An instance went unhealthy or expired. Returns the new ``active`` when it
        changed, else ``None``."""
        self._losses.append((now, service_id))
        return self.update(now, population)

    def update(self, now: float, population: int) -> bool | None:
        """Re-evaluate (call periodically). Returns the new ``active`` when it changed."""
        if not self.policy.enabled:
            return None
        share = self.loss_share(now, population)
        if not self.active:
            if population >= self.policy.min_instances and share >= self.policy.threshold:
                self.active = True
                self.activations += 1
                return True
        elif share < self.policy.threshold / 2:
            self.active = False
            return False
        return None

    def evictions_allowed(self) -> bool:
        """False while self-preservation is active."""
        return not self.active
