"""Per-client token buckets (pure: the caller passes the time in).

Each client gets a bucket of ``burst`` tokens refilled at ``rate`` tokens per second; a
request takes one token or is refused with the seconds to wait until one is there. The
number of clients tracked is bounded (least recently seen are forgotten first — a
forgotten client simply starts again with a full bucket).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from ..errors import ValidationError

__all__ = ["Decision", "RateLimiter", "TokenBucket"]


@dataclass(frozen=True, slots=True)
class Decision:
    """``allowed``; else ``retry_after`` seconds until the next token."""

    allowed: bool
    retry_after: float = 0.0
    remaining: float = 0.0


class TokenBucket:
    """``burst`` tokens, refilled continuously at ``rate`` per second."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> Decision:
        """Take ``cost`` tokens at time ``now`` if there are enough."""
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return Decision(True, 0.0, self.tokens)
        return Decision(False, (cost - self.tokens) / self.rate, self.tokens)


class RateLimiter:
    """Token buckets keyed by client, at most ``max_clients`` remembered."""

    def __init__(self, rate: float, burst: float, *, max_clients: int = 10_000) -> None:
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
            raise ValidationError("rate", rate, "requests per second > 0")
        if not (isinstance(burst, (int, float)) and math.isfinite(burst) and burst >= 1):
            raise ValidationError("burst", burst, "a burst size >= 1")
        if not (isinstance(max_clients, int) and max_clients >= 1):
            raise ValidationError("max_clients", max_clients, "an integer >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, client: str, now: float, cost: float = 1.0) -> Decision:
        """Charge ``client`` one request (``cost`` tokens) at time ``now``."""
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, now)
            self._buckets[client] = bucket
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
        return bucket.take(now, cost)

    def __len__(self) -> int:
        return len(self._buckets)
