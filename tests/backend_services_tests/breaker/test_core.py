"""The pure state machine, driven with explicit times (no clock, no sleeping)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from backend_services.breaker import (
    ADMIT,
    ADMIT_UNRECORDED,
    REJECT,
    BreakerCore,
    CircuitBreakerConfig,
    CircuitState,
    Trigger,
)
from backend_services.settings import Settings

S = CircuitState


def config(**kw: Any) -> CircuitBreakerConfig:
    base: dict[str, Any] = {
        "failure_threshold": 3,
        "timeout": 10.0,
        "request_timeout": None,
        "slow_call_threshold": None,
        "minimum_throughput": 4,
        "window_size": 10,
        "settings": Settings(),
    }
    base.update(kw)
    return CircuitBreakerConfig(**base)


class Recorder(BreakerCore):
    """A core that remembers its transitions."""

    __slots__ = ("moves",)

    def __init__(self, cfg: CircuitBreakerConfig, **kw: Any) -> None:
        self.moves: list[tuple[S, S, Trigger]] = []
        super().__init__("t", cfg, **kw)

    def _on_transition(self, old: S, new: S, trigger: Trigger, now: float) -> None:
        self.moves.append((old, new, trigger))


def ok(core: BreakerCore, now: float, duration: float = 0.0) -> None:
    token = core.acquire(now)
    assert token != REJECT
    core.on_success(token, now + duration, duration)


def fail(core: BreakerCore, now: float, duration: float = 0.0, **kw: Any) -> None:
    token = core.acquire(now)
    assert token != REJECT
    core.on_failure(token, now + duration, duration, **kw)


def open_core(cfg: CircuitBreakerConfig | None = None) -> Recorder:
    core = Recorder(cfg or config())
    for _ in range(core.config.failure_threshold):
        fail(core, 0.0)
    assert core._state is S.OPEN
    return core


class TestClosed:
    def test_admits_and_counts(self) -> None:
        """A closed breaker admits and counts successes."""
        core = Recorder(config())
        for i in range(5):
            ok(core, float(i))
        c = core.counters(5.0)
        assert c["total_calls"] == 5
        assert c["successful_calls"] == 5
        assert c["failed_calls"] == 0
        assert core.moves == []

    def test_consecutive_failures_open(self) -> None:
        """failure_threshold consecutive failures open it."""
        core = Recorder(config(minimum_throughput=100))
        fail(core, 0.0)
        fail(core, 1.0)
        assert core._state is S.CLOSED
        fail(core, 2.0)
        assert core.moves == [(S.CLOSED, S.OPEN, Trigger.FAILURE_THRESHOLD)]
        assert core.acquire(3.0) == REJECT

    def test_success_breaks_the_streak(self) -> None:
        """A success in between resets the consecutive count."""
        core = Recorder(config(minimum_throughput=100))
        fail(core, 0.0)
        fail(core, 0.0)
        ok(core, 0.0)
        fail(core, 0.0)
        fail(core, 0.0)
        assert core._state is S.CLOSED
        assert core.counters(0.0)["consecutive_failures"] == 2

    def test_zero_threshold_disables_consecutive_rule(self) -> None:
        """failure_threshold=0 leaves only the rate rules."""
        core = Recorder(config(failure_threshold=0, minimum_throughput=50, window_size=50))
        for _ in range(20):
            fail(core, 0.0)
        assert core._state is S.CLOSED

    def test_failure_rate_opens_after_minimum_throughput(self) -> None:
        """With enough calls in the window, a failure rate >= threshold opens it."""
        core = Recorder(config(failure_threshold=0, minimum_throughput=4))
        ok(core, 0.0)
        fail(core, 0.0)
        ok(core, 0.0)
        assert core._state is S.CLOSED  # 3 calls < minimum
        fail(core, 0.0)  # 2/4 = 0.5
        assert core.moves[-1] == (S.CLOSED, S.OPEN, Trigger.FAILURE_RATE)

    def test_reaching_minimum_with_a_success_opens(self) -> None:
        """Failures before the minimum are evaluated when a success reaches it."""
        core = Recorder(config(failure_threshold=0, minimum_throughput=4))
        fail(core, 0.0)
        fail(core, 0.0)
        fail(core, 0.0)
        assert core._state is S.CLOSED
        ok(core, 0.0)  # 3/4 failed
        assert core._state is S.OPEN

    def test_rate_below_threshold_stays_closed(self) -> None:
        """A failure rate under the threshold keeps it closed."""
        core = Recorder(config(failure_threshold=0, minimum_throughput=4, window_size=10))
        for i in range(20):
            (fail if i % 4 == 3 else ok)(core, 0.0)
        assert core._state is S.CLOSED

    def test_old_failures_leave_the_window(self) -> None:
        """Failures older than the window no longer count toward the rate."""
        core = Recorder(config(failure_threshold=0, minimum_throughput=10, window_size=10))
        for _ in range(4):
            fail(core, 0.0)
        for _ in range(10):
            ok(core, 0.0)
        assert core.window_stats(0.0).failures == 0
        assert core._state is S.CLOSED

    def test_slow_call_rate_opens(self) -> None:
        """Slow successful calls at or above slow_call_rate_threshold open it."""
        core = Recorder(
            config(slow_call_threshold=1.0, slow_call_rate_threshold=0.5, minimum_throughput=4)
        )
        ok(core, 0.0, 0.1)
        ok(core, 0.0, 2.0)
        ok(core, 0.0, 0.1)
        assert core._state is S.CLOSED
        ok(core, 0.0, 1.0)  # 2 of 4 slow
        assert core.moves[-1][2] is Trigger.SLOW_CALL_RATE
        assert core.counters(0.0)["slow_calls"] == 2

    def test_time_window(self) -> None:
        """A time window counts only the calls of its last `window_duration` seconds."""
        cfg = config(
            failure_threshold=0,
            window_type="time",
            window_duration=10.0,
            window_buckets=10,
            minimum_throughput=4,
        )
        core = Recorder(cfg)
        for t in (0.0, 1.0, 2.0):
            fail(core, t)
        for t in (15.0, 16.0, 17.0):
            ok(core, t)
        # the early failures have left; 1 failure of 4 calls is below 0.5
        fail(core, 18.0)
        assert core._state is S.CLOSED
        assert core.window_stats(18.0).calls == 4

    def test_time_window_trips_on_rate(self) -> None:
        """A time window opens on the failure rate within its duration."""
        cfg = config(failure_threshold=0, window_type="time", minimum_throughput=4)
        core = Recorder(cfg)
        ok(core, 0.0)
        ok(core, 0.5)
        fail(core, 1.0)
        fail(core, 1.5)
        assert core.moves[-1][2] is Trigger.FAILURE_RATE

    def test_late_failure_while_open_does_not_reopen(self) -> None:
        """A failure of a call admitted before the opening changes nothing."""
        core = open_core()
        token = ADMIT
        core.on_failure(token, 1.0, 0.0)
        assert core.moves == [(S.CLOSED, S.OPEN, Trigger.FAILURE_THRESHOLD)]


class TestOpen:
    def test_rejects_until_timeout(self) -> None:
        """Open rejects until `timeout` has passed, and reports the remaining time."""
        core = open_core()
        assert core.acquire(9.9) == REJECT
        assert core.retry_after(4.0) == pytest.approx(6.0)
        assert core.counters(5.0)["rejected_calls"] == 1

    def test_becomes_half_open(self) -> None:
        """After the timeout the next request is a trial."""
        core = open_core()
        assert core.current_state(10.0) is S.HALF_OPEN
        assert core.acquire(10.0) > 0

    def test_rejections_are_not_failures(self) -> None:
        """Rejected calls do not count as failed or total calls."""
        core = open_core()
        for _ in range(5):
            core.acquire(1.0)
        c = core.counters(1.0)
        assert c["rejected_calls"] == 5
        assert c["failed_calls"] == 3
        assert c["total_calls"] == 3

    def test_exponential_backoff_with_cap(self) -> None:
        """Each reopening without a close multiplies the open time, up to max_timeout."""
        core = open_core(config(timeout=10.0, timeout_multiplier=2.0, max_timeout=30.0))
        durations = [core._open_until - 0.0]
        now = 0.0
        for _ in range(3):
            now = core._open_until
            token = core.acquire(now)
            core.on_failure(token, now, 0.0)
            durations.append(core._open_until - now)
        assert durations == [10.0, 20.0, 30.0, 30.0]

    def test_close_resets_backoff(self) -> None:
        """Closing through trials resets the growth of the open time."""
        cfg = config(timeout=10.0, timeout_multiplier=2.0, success_threshold=1)
        core = open_core(cfg)
        now = core._open_until
        core.on_failure(core.acquire(now), now, 0.0)  # second opening: 20 s
        now = core._open_until
        core.on_success(core.acquire(now), now, 0.0)  # closes
        for _ in range(3):
            fail(core, now)
        assert core._open_until - now == 10.0

    def test_jitter_spreads_within_bounds(self) -> None:
        """Jitter spreads the open time by at most the fraction, reproducibly with a seed."""
        values = set()
        for seed in range(20):
            core = Recorder(config(timeout=10.0, timeout_jitter=0.2), rng=random.Random(seed))
            for _ in range(3):
                fail(core, 0.0)
            values.add(round(core._open_until, 6))
        assert len(values) > 10
        assert all(8.0 <= v <= 12.0 for v in values)

    def test_retry_after_hint_opens_for_given_time(self) -> None:
        """A failure carrying a Retry-After hint opens at once, for that long."""
        core = Recorder(config())
        fail(core, 0.0, open_for=42.0)
        assert core.moves == [(S.CLOSED, S.OPEN, Trigger.RETRY_AFTER)]
        assert core.retry_after(0.0) == 42.0

    def test_hint_is_capped(self) -> None:
        """A Retry-After hint longer than max_timeout is capped."""
        core = Recorder(config(max_timeout=60.0))
        fail(core, 0.0, open_for=3600.0)
        assert core.retry_after(0.0) == 60.0

    def test_trip_and_manual_open(self) -> None:
        """trip() opens for a given time; transition_to(open) for the configured time."""
        core = Recorder(config())
        assert core.trip(0.0, 5.0)
        assert core.retry_after(0.0) == 5.0
        core.transition_to("open", 1.0)
        assert core.retry_after(1.0) == 10.0


class TestHalfOpen:
    def half_open(self, **kw: Any) -> Recorder:
        core = open_core(config(**kw))
        assert core.current_state(10.0) is S.HALF_OPEN
        return core

    def test_limits_concurrent_trials(self) -> None:
        """At most half_open_max_calls trials run at once; others are rejected at once."""
        core = self.half_open(half_open_max_calls=2)
        a, b = core.acquire(10.0), core.acquire(10.0)
        assert a > 0
        assert b > 0
        assert a != b
        assert core.acquire(10.0) == REJECT
        core.on_success(a, 10.1, 0.1)
        assert core.acquire(10.1) > 0

    def test_success_threshold_closes(self) -> None:
        """success_threshold trial successes close it, with a fresh window."""
        core = self.half_open(success_threshold=2)
        core.on_success(core.acquire(10.0), 10.0, 0.0)
        assert core._state is S.HALF_OPEN
        core.on_success(core.acquire(10.0), 10.0, 0.0)
        assert core.moves[-1] == (S.HALF_OPEN, S.CLOSED, Trigger.TRIAL_SUCCESS)
        assert core.window_stats(10.0).calls == 0
        assert core._fast

    def test_any_failure_reopens(self) -> None:
        """Any trial failure reopens it."""
        core = self.half_open(success_threshold=3)
        core.on_success(core.acquire(10.0), 10.0, 0.0)
        core.on_failure(core.acquire(10.0), 10.0, 0.0)
        assert core.moves[-1] == (S.HALF_OPEN, S.OPEN, Trigger.TRIAL_FAILURE)

    def test_cancelled_trial_releases_its_slot(self) -> None:
        """A cancelled trial frees its slot and is not a failure."""
        core = self.half_open(half_open_max_calls=1)
        token = core.acquire(10.0)
        assert core.acquire(10.0) == REJECT
        core.on_cancelled(token, 10.0, 0.0)
        assert core._state is S.HALF_OPEN
        assert core.acquire(10.0) > 0
        assert core.counters(10.0)["cancelled_calls"] == 1

    def test_cancellation_can_count_as_failure(self) -> None:
        """With count_cancellation_as_failure a cancelled trial reopens it."""
        core = self.half_open(count_cancellation_as_failure=True)
        core.on_cancelled(core.acquire(10.0), 10.0, 0.0)
        assert core._state is S.OPEN

    def test_ignored_trial_releases_slot(self) -> None:
        """An ignored exception frees the slot without deciding anything."""
        core = self.half_open(half_open_max_calls=1)
        core.on_ignored(core.acquire(10.0))
        assert core._state is S.HALF_OPEN
        assert core.acquire(10.0) > 0

    def test_hung_trial_cannot_wedge(self) -> None:
        """A trial past its deadline counts as failed and reopens the breaker."""
        core = self.half_open(half_open_max_calls=1, trial_timeout=5.0)
        token = core.acquire(10.0)
        assert core.acquire(14.0) == REJECT
        assert core.current_state(15.0) is S.OPEN
        assert core.moves[-1][2] is Trigger.TRIAL_EXPIRED
        # its late outcome is not counted a second time
        before = core.counters(15.0)
        core.on_success(token, 16.0, 6.0)
        assert core.counters(16.0)["total_calls"] == before["total_calls"]
        assert core._state is S.OPEN

    def test_stale_trial_changes_nothing(self) -> None:
        """An outcome from an earlier half-open period does not close the new one."""
        core = self.half_open(half_open_max_calls=2, success_threshold=1)
        stale = core.acquire(10.0)
        core.on_failure(core.acquire(10.0), 10.0, 0.0)  # reopens
        now = core._open_until
        assert core.current_state(now) is S.HALF_OPEN
        core.on_success(stale, now, 1.0)
        assert core._state is S.HALF_OPEN

    def test_retry_after_when_full(self) -> None:
        """With every slot taken, retry_after is the earliest trial deadline."""
        core = self.half_open(half_open_max_calls=1, trial_timeout=5.0)
        core.acquire(10.0)
        assert core.retry_after(12.0) == pytest.approx(3.0)

    def test_release_without_outcome(self) -> None:
        """release() gives a permit back without counting anything."""
        core = self.half_open(half_open_max_calls=1)
        token = core.acquire(10.0)
        core.release(token)
        assert core.trials_in_flight == 0


class TestSpecialStates:
    def test_disabled_admits_and_records_nothing(self) -> None:
        """DISABLED admits everything and records nothing."""
        core = Recorder(config())
        core.transition_to("disabled", 0.0)
        token = core.acquire(0.0)
        assert token == ADMIT_UNRECORDED
        for _ in range(10):
            core.on_failure(core.acquire(0.0), 0.0, 0.0)
        assert core.counters(0.0)["total_calls"] == 0
        assert core._state is S.DISABLED

    def test_forced_open_rejects_forever(self) -> None:
        """FORCED_OPEN rejects regardless of time, and gives no retry time."""
        core = Recorder(config())
        core.transition_to(S.FORCED_OPEN, 0.0)
        assert core.acquire(1e9) == REJECT
        assert core.retry_after(0.0) is None

    def test_metrics_only_records_never_opens(self) -> None:
        """METRICS_ONLY records every call but never rejects or opens."""
        core = Recorder(config())
        core.transition_to("metrics_only", 0.0)
        for _ in range(20):
            fail(core, 0.0)
        assert core._state is S.METRICS_ONLY
        assert core.counters(0.0)["failed_calls"] == 20
        assert core.acquire(0.0) == ADMIT

    def test_reset_closes_and_clears(self) -> None:
        """reset_state() closes with empty windows and no opening history."""
        core = open_core()
        core.reset_state(1.0)
        assert core._state is S.CLOSED
        assert core.window_stats(1.0).calls == 0
        assert core._openings == 0
        assert core.acquire(1.0) == ADMIT
        core.reset_state(2.0)  # already closed: still clears
        assert core.moves[-1] == (S.OPEN, S.CLOSED, Trigger.MANUAL)

    def test_trip_refused_in_special_states(self) -> None:
        """A Retry-After trip does not override a manual special state."""
        core = Recorder(config())
        core.transition_to("disabled", 0.0)
        assert not core.trip(0.0, 5.0)

    def test_apply_remote(self) -> None:
        """apply_remote adopts another process's state and open time."""
        core = Recorder(config())
        assert core.apply_remote(S.OPEN, 0.0, open_until=7.0, openings=2)
        assert core.moves[-1] == (S.CLOSED, S.OPEN, Trigger.REMOTE)
        assert core.retry_after(0.0) == 7.0
        assert not core.apply_remote(S.OPEN, 1.0, open_until=7.0, openings=2)


class TestMetrics:
    def test_consecutive_counters(self) -> None:
        """consecutive_failures/successes follow the latest streak."""
        core = Recorder(config(failure_threshold=0))
        ok(core, 0.0)
        ok(core, 0.0)
        c = core.counters(0.0)
        assert (c["consecutive_successes"], c["consecutive_failures"]) == (2, 0)
        fail(core, 0.0)
        c = core.counters(0.0)
        assert (c["consecutive_successes"], c["consecutive_failures"]) == (0, 1)

    def test_failure_rate_is_windowed(self) -> None:
        """failure_rate is over the window; totals over the lifetime."""
        core = Recorder(config(failure_threshold=0, window_size=4, minimum_throughput=4))
        fail(core, 0.0)
        for _ in range(4):
            ok(core, 0.0)
        c = core.counters(0.0)
        assert c["failure_rate"] == 0.0
        assert c["failed_calls"] == 1
        assert c["total_calls"] == 5
