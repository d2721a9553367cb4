"""Sliding windows: counts derived from the call counter, bad calls kept, old ones dropped."""

from __future__ import annotations

import math

from backend_services.breaker.window import CountWindow, TimeWindow, WindowStats


class TestCountWindow:
    def test_empty(self) -> None:
        """A new window holds no calls."""
        assert CountWindow(10).stats(0, 0.0) == WindowStats(0, 0, 0)

    def test_counts_up_to_size(self) -> None:
        """Calls in the window are the calls made, capped at the size."""
        w = CountWindow(10)
        assert w.stats(4, 0.0).calls == 4
        assert w.stats(25, 0.0).calls == 10

    def test_bad_calls_leave_after_size_newer_calls(self) -> None:
        """A failure stays for exactly `size` calls (including itself)."""
        w = CountWindow(5)
        w.record(1, 0.0, True, False)
        assert w.stats(5, 0.0).failures == 1
        assert w.stats(6, 0.0).failures == 0

    def test_failed_and_slow_counted_separately(self) -> None:
        """A call can be both failed and slow; each count sees it once."""
        w = CountWindow(100)
        w.record(1, 0.0, True, True)
        w.record(2, 0.0, False, True)
        stats = w.stats(3, 0.0)
        assert (stats.calls, stats.failures, stats.slow_calls) == (3, 1, 2)
        assert math.isclose(stats.failure_rate, 1 / 3)
        assert math.isclose(stats.slow_call_rate, 2 / 3)

    def test_reset_forgets(self) -> None:
        """reset() starts from the given counter value."""
        w = CountWindow(10)
        w.record(3, 0.0, True, False)
        w.reset(3, 0.0)
        assert w.stats(5, 0.0) == WindowStats(2, 0, 0)

    def test_never_rolls(self) -> None:
        """A count window asks for no time-driven step."""
        assert CountWindow(3).next_roll() == math.inf

    def test_rates_of_empty_window(self) -> None:
        """Rates of an empty window are 0, not a division error."""
        assert WindowStats(0, 0, 0).failure_rate == 0.0 == WindowStats(0, 0, 0).slow_call_rate


class TestTimeWindow:
    def test_first_call_rolls(self) -> None:
        """A new time window wants a roll at the first call."""
        w = TimeWindow(10.0, 10)
        assert w.next_roll() == -math.inf
        w.roll(1, 100.2)
        assert w.next_roll() == 101.0

    def test_calls_within_duration(self) -> None:
        """Calls of the last `duration` seconds count; older buckets drop off."""
        w = TimeWindow(10.0, 10)
        w.roll(1, 100.0)  # call 1 at t=100
        # calls 2..5 happen in the same bucket (no roll)
        w.roll(6, 105.0)  # call 6 at t=105
        assert w.stats(6, 105.0).calls == 6
        assert w.stats(6, 110.5).calls == 1  # bucket of t=100 has left
        assert w.stats(6, 116.0).calls == 0

    def test_failures_expire_with_their_bucket(self) -> None:
        """A failure counts while its bucket is inside the window."""
        w = TimeWindow(4.0, 4)
        w.record(1, 10.0, True, False)
        w.record(2, 11.0, False, True)
        s = w.stats(2, 11.5)
        assert (s.calls, s.failures, s.slow_calls) == (2, 1, 1)
        s = w.stats(2, 14.0)
        assert (s.calls, s.failures, s.slow_calls) == (1, 0, 1)

    def test_record_rolls_when_due(self) -> None:
        """record() starts a new bucket when the current one has ended."""
        w = TimeWindow(2.0, 2)
        w.record(1, 0.5, True, False)
        w.record(2, 1.5, True, False)
        assert w.stats(2, 1.5).failures == 2
        assert w.stats(2, 2.2).failures == 1

    def test_reset(self) -> None:
        """reset() empties the window."""
        w = TimeWindow(2.0, 2)
        w.record(1, 0.5, True, False)
        w.reset(1, 0.6)
        assert w.next_roll() == -math.inf  # the next call starts a bucket
        w.roll(2, 0.65)
        assert w.stats(3, 0.7) == WindowStats(2, 0, 0)

    def test_bucket_edge_rounding(self) -> None:
        """A roll exactly at a bucket edge never reuses the previous bucket's index."""
        w = TimeWindow(1.0, 10)
        w.roll(1, 0.3)
        end = w.next_roll()
        w.roll(2, end)
        assert w.next_roll() > end
