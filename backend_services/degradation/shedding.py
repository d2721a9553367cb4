"""Load shedding: reject work cheaply before it starts.

* :class:`AdmissionController` admits a request by its priority and the current level
  (the same table as feature gating: under MINIMAL only CRITICAL and HIGH get in) and
  counts what it sheds. The check is one integer comparison.
* :class:`AimdLimit` is an adaptive concurrency limit (additive increase, multiplicative
  decrease): a request whose latency exceeds ``latency_threshold`` (or that failed by
  timing out / being dropped) shrinks the limit by ``backoff``; a fast request while the
  limit is being used grows it by one. Requests beyond the limit are shed.

Pure: time and latencies are passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ValidationError
from .gating import max_allowed_rank
from .levels import DegradationLevel, FeaturePriority

__all__ = ["AdmissionController", "AimdLimit"]


class AdmissionController:
    """Admit by priority at the current level; knows when the level may next improve."""

    __slots__ = ("admit_rank", "level", "retry_at", "shed_by_priority", "shed_total")

    def __init__(self) -> None:
        self.level = DegradationLevel.NORMAL
        self.admit_rank = max_allowed_rank(self.level)
        """Requests whose priority rank is above this are shed (fast path reads it)."""
        self.retry_at: float | None = None
        self.shed_total = 0
        self.shed_by_priority: dict[str, int] = {p.value: 0 for p in FeaturePriority}

    def set_level(self, level: DegradationLevel, retry_at: float | None = None) -> None:
        """Follow a level change; ``retry_at`` (monotonic) is the earliest likely improvement."""
        self.level = level
        self.admit_rank = max_allowed_rank(level)
        self.retry_at = retry_at

    def admits(self, priority: FeaturePriority) -> bool:
        """Whether a request of ``priority`` gets in at the current level."""
        return priority.rank <= self.admit_rank

    def record_shed(self, priority: FeaturePriority) -> None:
        self.shed_total += 1
        self.shed_by_priority[priority.value] += 1

    def retry_after(self, now: float, fallback: float) -> float:
        """Seconds a shed caller should wait before trying again (at least 1 ms)."""
        if self.retry_at is None:
            return max(0.001, fallback)
        return max(0.001, self.retry_at - now)

    def admitted_priorities(self) -> list[str]:
        return [p.value for p in FeaturePriority if p.rank <= self.admit_rank]


@dataclass(slots=True)
class AimdLimit:
    """Adaptive concurrency limit (AIMD on latency)."""

    initial_limit: int = 20
    min_limit: int = 1
    max_limit: int = 1000
    latency_threshold: float = 1.0
    backoff: float = 0.9
    limit: float = 0.0
    inflight: int = 0
    shed: int = 0
    decreases: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.min_limit, int) and self.min_limit >= 1):
            raise ValidationError("min_limit", self.min_limit, "an integer >= 1")
        if not (isinstance(self.max_limit, int) and self.max_limit >= self.min_limit):
            raise ValidationError("max_limit", self.max_limit, f"an integer >= {self.min_limit}")
        if not (
            isinstance(self.initial_limit, int)
            and self.min_limit <= self.initial_limit <= self.max_limit
        ):
            raise ValidationError(
                "initial_limit",
                self.initial_limit,
                f"an integer between {self.min_limit} and {self.max_limit}",
            )
        lt = self.latency_threshold
        if not (isinstance(lt, (int, float)) and math.isfinite(lt) and lt > 0):
            raise ValidationError("latency_threshold", lt, "seconds > 0")
        if not (isinstance(self.backoff, (int, float)) and 0.0 < self.backoff < 1.0):
            raise ValidationError("backoff", self.backoff, "a factor between 0 and 1")
        self.limit = float(self.initial_limit)

    def try_acquire(self) -> int | None:
        """Take a slot: the in-flight count at start (pass it to :meth:`release`), or
        None when the limit is reached (the request should be shed)."""
        if self.inflight >= int(self.limit):
            self.shed += 1
            return None
        self.inflight += 1
        return self.inflight

    def release(self, latency: float, inflight_at_start: int, *, dropped: bool = False) -> None:
        """Give the slot back with the request's latency; adapt the limit."""
        self.inflight = max(0, self.inflight - 1)
        if dropped or latency > self.latency_threshold:
            self.limit = max(float(self.min_limit), math.floor(self.limit * self.backoff))
            self.decreases += 1
        elif inflight_at_start * 2 >= self.limit:
            self.limit = min(float(self.max_limit), self.limit + 1.0)
