"""Sliding windows of recent calls: how many there were, how many failed, how many were slow.

The caller keeps one counter, ``n``, of recorded calls and increments it per call (the
breaker does this inline on its fast path). A window never touches successful calls:
it only remembers the *bad* ones (failed and/or slow) and derives how many calls it
holds from ``n``. So a successful call costs nothing here, and recording a bad call or
asking for the counts is amortised O(1).

* :class:`CountWindow` — the last ``size`` calls: bad calls are kept as their call
  numbers and dropped once ``size`` newer calls have been made.
* :class:`TimeWindow` — the calls of the last ``duration`` seconds, in ``buckets`` equal
  buckets: a new bucket starts at the first call after the current one ends
  (:meth:`TimeWindow.next_roll` says when), old buckets drop off with their counts.

Everything takes ``now`` (seconds on a monotonic clock) and ``n`` as arguments.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

__all__ = ["CountWindow", "TimeWindow", "Window", "WindowStats"]

_INF = math.inf


class WindowStats(NamedTuple):
    """Counts over the window right now."""

    calls: int
    failures: int
    slow_calls: int

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        return self.slow_calls / self.calls if self.calls else 0.0


class CountWindow:
    """The last ``size`` recorded calls."""

    __slots__ = ("_base", "_fails", "_slows", "size")

    def __init__(self, size: int, n: int = 0) -> None:
        self.size = size
        self._base = n
        self._fails: deque[int] | None = None
        self._slows: deque[int] | None = None

    def reset(self, n: int, now: float) -> None:
        """Forget everything before call ``n``."""
        self._base = n
        self._fails = self._slows = None

    def next_roll(self) -> float:
        """A count window never needs a time-driven step."""
        return _INF

    def roll(self, n: int, now: float) -> None:
        """Nothing to do (time does not move a count window)."""

    def record(self, n: int, now: float, failed: bool, slow: bool) -> None:
        """Call number ``n`` (already counted) failed and/or was slow."""
        if failed:
            if self._fails is None:
                self._fails = deque()
            self._fails.append(n)
        if slow:
            if self._slows is None:
                self._slows = deque()
            self._slows.append(n)

    def stats(self, n: int, now: float) -> WindowStats:
        """Calls, failures and slow calls among the last ``size`` calls up to ``n``."""
        oldest = n - self.size  # call numbers <= oldest have left the window
        fails = self._fails
        if fails is not None:
            while fails and fails[0] <= oldest:
                fails.popleft()
            if not fails:
                fails = self._fails = None
        slows = self._slows
        if slows is not None:
            while slows and slows[0] <= oldest:
                slows.popleft()
            if not slows:
                slows = self._slows = None
        return WindowStats(
            min(n - self._base, self.size),
            0 if fails is None else len(fails),
            0 if slows is None else len(slows),
        )


class TimeWindow:
    """The calls of the last ``duration`` seconds, counted in ``buckets`` buckets."""

    __slots__ = ("_buckets", "_count", "_end", "_fails", "_slows", "_start_n", "duration", "width")

    def __init__(self, duration: float, buckets: int, n: int = 0, now: float = 0.0) -> None:
        self.duration = duration
        self.width = duration / buckets
        self._count = buckets
        # each bucket: [index, calls-counter value when it started, failures, slow calls]
        self._buckets: deque[list[int]] = deque()
        self._fails = 0
        self._slows = 0
        self._start_n = n  # counter value at the start of the oldest bucket kept
        self._end = -_INF  # when the newest bucket ends
        self.reset(n, now)

    def reset(self, n: int, now: float) -> None:
        self._buckets.clear()
        self._fails = self._slows = 0
        self._start_n = n
        self._end = -_INF

    def next_roll(self) -> float:
        """The time from which the next call belongs to a new bucket."""
        return self._end

    def roll(self, n: int, now: float) -> None:
        """Call number ``n`` (already counted) is the first at ``now`` past the newest
        bucket: start a bucket for it and drop buckets older than the window."""
        index = math.floor(now / self.width)
        buckets = self._buckets
        if buckets and index <= buckets[-1][0]:  # float rounding at a bucket edge
            index = buckets[-1][0] + 1
        buckets.append([index, n - 1, 0, 0])
        self._end = (index + 1) * self.width
        self._expire(index)

    def _expire(self, index: int) -> None:
        buckets = self._buckets
        first_kept = index - self._count + 1
        while buckets and buckets[0][0] < first_kept:
            old = buckets.popleft()
            self._fails -= old[2]
            self._slows -= old[3]
        if buckets:
            self._start_n = buckets[0][1]

    def record(self, n: int, now: float, failed: bool, slow: bool) -> None:
        """Call number ``n`` (already counted) failed and/or was slow."""
        if now >= self._end:
            self.roll(n, now)
        bucket = self._buckets[-1]
        if failed:
            bucket[2] += 1
            self._fails += 1
        if slow:
            bucket[3] += 1
            self._slows += 1

    def stats(self, n: int, now: float) -> WindowStats:
        """Calls, failures and slow calls of the last ``duration`` seconds."""
        self._expire(math.floor(now / self.width))
        if not self._buckets:
            self._start_n = n
        return WindowStats(n - self._start_n, self._fails, self._slows)


Window = CountWindow | TimeWindow
