"""A retry budget: retries may add at most a fixed share of load (pure; time passed in).

Each request deposits ``ratio`` of a token, each retry withdraws one; deposits older than
``window`` seconds expire. ``min_per_second`` retries per second are always allowed (so a
quiet client can still retry). When the budget is spent, failed calls are not retried:
a struggling service does not get a retry storm on top of its load.
"""

from __future__ import annotations

import math

from .errors import ValidationError

__all__ = ["RetryBudget"]


class RetryBudget:
    """Retries limited to ``ratio`` x requests over ``window`` seconds plus a reserve."""

    __slots__ = (
        "_requests",
        "_retries",
        "_slot",
        "_slots",
        "min_per_second",
        "ratio",
        "window",
    )

    def __init__(
        self, ratio: float = 0.2, *, min_per_second: float = 10.0, window: float = 10.0
    ) -> None:
        if not 0.0 <= ratio <= 10.0:
            raise ValidationError("ratio", ratio, "a number of retries per request from 0 to 10")
        if not min_per_second >= 0:
            raise ValidationError("min_per_second", min_per_second, "a number >= 0")
        if not window >= 1.0:
            raise ValidationError("window", window, "seconds >= 1")
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._slots = math.ceil(window)
        self._requests = [0] * self._slots
        self._retries = [0] * self._slots
        self._slot = -1

    def _roll(self, now: float) -> int:
        slot = int(now)
        if slot != self._slot:
            if self._slot < 0 or slot - self._slot >= self._slots:
                for i in range(self._slots):
                    self._requests[i] = self._retries[i] = 0
            else:
                for s in range(self._slot + 1, slot + 1):
                    i = s % self._slots
                    self._requests[i] = self._retries[i] = 0
            self._slot = slot
        return slot % self._slots

    def record_request(self, now: float) -> None:
        """A first attempt was made."""
        self._requests[self._roll(now)] += 1

    def balance(self, now: float) -> float:
        """Retries still allowed at ``now``."""
        self._roll(now)
        return (
            self.min_per_second * self.window
            + self.ratio * sum(self._requests)
            - sum(self._retries)
        )

    def try_retry(self, now: float) -> bool:
        """Take one retry from the budget; False when it is spent."""
        if self.balance(now) < 1.0:
            return False
        self._retries[self._roll(now)] += 1
        return True
