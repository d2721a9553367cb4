"""The breaker's state machine: admission, recording, opening and closing.

:class:`BreakerCore` is pure: no I/O, no asyncio, no clock. Every method that depends on
time takes ``now`` (seconds on a monotonic clock); randomness (open-duration jitter)
comes from an injected :class:`random.Random`. Where transitions lead is decided by
:func:`~backend_services.breaker.state.next_state` (the table in ``state.py``).

A call goes through three steps::

    token = core.acquire(now)          # REJECT, ADMIT, ADMIT_UNRECORDED or a trial token
    ...run the call...
    core.on_success(token, now, duration)   # or on_failure / on_ignored / on_cancelled

Fast path contract (used inline by the async shell): while ``_fast`` is true the breaker
admits without asking, and a successful call is recorded by ``_n += 1`` followed by
``_tally_success(now, duration)`` only when ``duration >= _slow_thr or now >= _roll_at``;
that is exactly what :meth:`on_success` does for an ``ADMIT`` token. While
``now < _reject_until`` (open and not due, or forced open) a call is rejected by
counting ``_rejected += 1``, exactly as :meth:`acquire` would.

**Where the pieces live.** This module holds the call path — admission, recording
outcomes (windows, thresholds, half-open trials) — and reading the state and counters;
the breaker's state itself and its transitions (opening with backoff and jitter,
closing, manual and remote changes, the fast-path flags) are in
:class:`~backend_services.breaker.machine.BreakerMachine`, which :class:`BreakerCore`
extends.
"""

from __future__ import annotations

from typing import Any, Final

from .machine import BreakerMachine
from .state import CircuitState, Trigger
from .window import WindowStats

__all__ = ["ADMIT", "ADMIT_UNRECORDED", "REJECT", "BreakerCore"]

REJECT: Final = 0
"""The call is not permitted."""
ADMIT: Final = -1
"""The call is permitted and its outcome is recorded."""
ADMIT_UNRECORDED: Final = -2
"""The call is permitted and nothing is recorded (``DISABLED``)."""
# Positive tokens are half-open trial permits.

_CLOSED: Final = CircuitState.CLOSED
_OPEN: Final = CircuitState.OPEN
_HALF_OPEN: Final = CircuitState.HALF_OPEN
_DISABLED: Final = CircuitState.DISABLED
_FORCED_OPEN: Final = CircuitState.FORCED_OPEN
_METRICS_ONLY: Final = CircuitState.METRICS_ONLY


class BreakerCore(BreakerMachine):
    """One breaker's state and counters (see the module docstring)."""

    __slots__ = ()

    # --- reading -------------------------------------------------------------------

    def current_state(self, now: float) -> CircuitState:
        """The state at ``now``, after the time-driven steps (open elapsed, trials expired)."""
        state = self._state
        if state is _OPEN and now >= self._open_until:
            self._move(_HALF_OPEN, Trigger.OPEN_ELAPSED, now)
        elif state is _HALF_OPEN and self._trials:
            self._expire_trials(now)
        return self._state

    def retry_after(self, now: float) -> float | None:
        """Seconds until a trial call may be tried (``None`` when no time will do it)."""
        state = self._state
        if state is _OPEN:
            return max(0.0, self._open_until - now)
        if state is _HALF_OPEN:
            trials = self._trials
            if trials and len(trials) >= self.config.half_open_max_calls:
                return max(0.0, next(iter(trials.values())) - now)
            return 0.0
        if state is _FORCED_OPEN:
            return None
        return 0.0

    def window_stats(self, now: float) -> WindowStats:
        """Calls, failures and slow calls in the sliding window at ``now``."""
        return self._window.stats(self._n, now)

    @property
    def trials_in_flight(self) -> int:
        """Half-open trial calls running now."""
        return len(self._trials) if self._trials else 0

    # --- admission -----------------------------------------------------------------

    def acquire(self, now: float) -> int:
        """Ask to make a call at ``now``: :data:`REJECT`, :data:`ADMIT`,
        :data:`ADMIT_UNRECORDED`, or a positive half-open trial token."""
        state = self._state
        if state is _CLOSED or state is _METRICS_ONLY:
            return ADMIT
        if state is _OPEN:
            if now < self._open_until:
                self._rejected += 1
                return REJECT
            self._move(_HALF_OPEN, Trigger.OPEN_ELAPSED, now)
            state = self._state
        if state is _HALF_OPEN:
            trials = self._trials
            if trials is None:
                trials = self._trials = {}
            elif trials:
                self._expire_trials(now)
                if self._state is not _HALF_OPEN:
                    self._rejected += 1
                    return REJECT
            if len(trials) >= self.config.half_open_max_calls:
                self._rejected += 1
                return REJECT
            token = self._next_token
            self._next_token = token + 1
            trials[token] = now + self.config.effective_trial_timeout
            return token
        if state is _DISABLED:
            return ADMIT_UNRECORDED
        if state is _CLOSED:  # a transition above may have closed it
            return ADMIT
        self._rejected += 1
        return REJECT

    def release(self, token: int) -> None:
        """Give back a trial permit without an outcome (the call never ran)."""
        if token > 0 and self._trials:
            self._trials.pop(token, None)

    # --- recording -----------------------------------------------------------------

    def on_success(self, token: int, now: float, duration: float) -> None:
        """A permitted call returned normally after ``duration`` seconds."""
        if token == ADMIT_UNRECORDED or (token > 0 and self._was_expired(token)):
            return
        self._n += 1
        if token > 0:
            self._trial_outcome(token, now, duration, True)
        elif duration >= self._slow_thr or now >= self._roll_at:
            self._tally_success(now, duration)

    def on_failure(
        self,
        token: int,
        now: float,
        duration: float,
        *,
        timed_out: bool = False,
        open_for: float | None = None,
    ) -> None:
        """A permitted call failed (raised a recorded exception, timed out, or returned a
        value counted as failure). ``open_for``: a Retry-After hint in seconds."""
        if token == ADMIT_UNRECORDED or (token > 0 and self._was_expired(token)):
            return
        self._n += 1
        if token > 0:
            self._n_failed += 1
            self._last_fail_n = self._n
            if timed_out:
                self._timeouts += 1
            if duration >= self._slow_thr:
                self._slow_total += 1
            if open_for is not None and self._trials and token in self._trials:
                del self._trials[token]
                self._open(Trigger.RETRY_AFTER, now, open_for)
            else:
                self._trial_outcome(token, now, duration, False)
        else:
            self._tally_failure(now, duration, timed_out=timed_out, open_for=open_for)

    def on_ignored(self, token: int) -> None:
        """A permitted call raised an exception that is not counted either way."""
        if token == ADMIT_UNRECORDED or (token > 0 and self._was_expired(token)):
            return
        self._ignored += 1
        if token > 0 and self._trials:
            self._trials.pop(token, None)

    def on_cancelled(self, token: int, now: float, duration: float) -> None:
        """A permitted call was cancelled: its trial permit is released and it is not
        counted, unless ``count_cancellation_as_failure``."""
        if token == ADMIT_UNRECORDED or (token > 0 and self._was_expired(token)):
            return
        if self.config.count_cancellation_as_failure:
            self.on_failure(token, now, duration)
            return
        self._cancelled += 1
        if token > 0 and self._trials:
            self._trials.pop(token, None)

    def _tally_success(self, now: float, duration: float) -> None:
        """The rest of recording a successful counted call (``_n`` already incremented)."""
        window = self._window
        n = self._n
        if now >= window.next_roll():
            window.roll(n, now)
        if duration >= self._slow_thr:
            self._slow_total += 1
            window.record(n, now, False, True)
        self._evaluate(now)

    def _tally_failure(
        self,
        now: float,
        duration: float,
        *,
        timed_out: bool = False,
        open_for: float | None = None,
    ) -> None:
        """Record a failed counted call (``_n`` already incremented) outside half-open."""
        n = self._n
        self._n_failed += 1
        if timed_out:
            self._timeouts += 1
        self._consec_fail = self._consec_fail + 1 if self._last_fail_n == n - 1 else 1
        self._last_fail_n = n
        slow = duration >= self._slow_thr
        if slow:
            self._slow_total += 1
        self._window.record(n, now, True, slow)
        if self._state is not _CLOSED:
            self._rearm(now)
            return
        if open_for is not None:
            self._open(Trigger.RETRY_AFTER, now, open_for)
            return
        threshold = self.config.failure_threshold
        if threshold and self._consec_fail >= threshold:
            self._open(Trigger.FAILURE_THRESHOLD, now)
            return
        self._evaluate(now)

    def _evaluate(self, now: float) -> None:
        """Open if a window rate reached its threshold; then re-arm the fast path."""
        stats = self._window.stats(self._n, now)
        if self._state is _CLOSED and stats.calls >= self._min_calls:
            config = self.config
            if stats.failures and stats.failures >= config.failure_rate_threshold * stats.calls:
                self._open(Trigger.FAILURE_RATE, now)
                return
            if (
                stats.slow_calls
                and stats.slow_calls >= config.slow_call_rate_threshold * stats.calls
            ):
                self._open(Trigger.SLOW_CALL_RATE, now)
                return
        self._rearm(now, stats)

    def _trial_outcome(self, token: int, now: float, duration: float, success: bool) -> None:
        trials = self._trials
        if not trials or trials.pop(token, None) is None:
            return  # expired, or from an earlier half-open period: changes nothing
        if self._state is not _HALF_OPEN:
            return
        if success:
            if duration >= self._slow_thr:
                self._slow_total += 1
            self._trial_successes += 1
            if self._trial_successes >= self.config.success_threshold:
                self._move(_CLOSED, Trigger.TRIAL_SUCCESS, now)
        else:
            self._open(Trigger.TRIAL_FAILURE, now)

    def _expire_trials(self, now: float) -> None:
        trials = self._trials
        if trials:
            token, deadline = next(iter(trials.items()))
            # deadlines are in admission order: the oldest trial is the first to expire
            if deadline <= now:
                # the hung trial is counted now, as a failed call; its late outcome is not
                del trials[token]
                if self._expired_trials is None:
                    self._expired_trials = set()
                self._expired_trials.add(token)
                self._n += 1
                self._n_failed += 1
                self._timeouts += 1
                self._last_fail_n = self._n
                self._open(Trigger.TRIAL_EXPIRED, now)

    def _was_expired(self, token: int) -> bool:
        expired = self._expired_trials
        if expired and token in expired:
            expired.discard(token)
            return True
        return False

    # --- metrics -------------------------------------------------------------------

    def counters(self, now: float) -> dict[str, Any]:
        """Lifetime totals, window figures and state timing at ``now``."""
        stats = self._window.stats(self._n, now)
        n = self._n
        return {
            "total_calls": n,
            "successful_calls": n - self._n_failed,
            "failed_calls": self._n_failed,
            "rejected_calls": self._rejected,
            "ignored_calls": self._ignored,
            "cancelled_calls": self._cancelled,
            "timeouts": self._timeouts,
            "slow_calls": self._slow_total,
            "consecutive_failures": self._consec_fail if self._last_fail_n == n else 0,
            "consecutive_successes": n - self._last_fail_n,
            "failure_rate": stats.failure_rate,
            "slow_call_rate": stats.slow_call_rate,
            "window": {
                "type": self.config.window_type.value,
                "calls": stats.calls,
                "failures": stats.failures,
                "slow_calls": stats.slow_calls,
            },
        }
