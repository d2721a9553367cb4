"""A breaker's state and counters, and its moves between states.

:class:`BreakerMachine` holds everything a breaker knows (state, counters, the sliding
window, half-open trials, the fast-path flags) and changes state: opening (durations
with backoff, jitter and Retry-After hints), closing, manual and remote changes, each
through :func:`~backend_services.breaker.state.next_state` (the table in ``state.py``).
After every transition it re-arms the fast path and calls the ``_on_transition`` hook.
Like the rest of the core it is pure: no I/O, no asyncio, no clock (``now`` is passed
in). Admission and recording, the call path, are in :mod:`~backend_services.breaker.core`.
"""

from __future__ import annotations

import math
import random
from typing import Final

from .config import CircuitBreakerConfig, WindowType
from .state import CircuitState, Trigger, next_state
from .window import CountWindow, TimeWindow, Window, WindowStats

__all__ = ["BreakerMachine"]

_INF: Final = math.inf
_CLOSED: Final = CircuitState.CLOSED
_OPEN: Final = CircuitState.OPEN
_HALF_OPEN: Final = CircuitState.HALF_OPEN
_DISABLED: Final = CircuitState.DISABLED
_FORCED_OPEN: Final = CircuitState.FORCED_OPEN
_METRICS_ONLY: Final = CircuitState.METRICS_ONLY
_FAST_STATES: Final = frozenset({_CLOSED, _METRICS_ONLY})


class BreakerMachine:
    """One breaker's state and counters, and its transitions (see the module docstring)."""

    __slots__ = (
        "_attention",
        "_cancelled",
        "_consec_fail",
        "_expired_trials",
        "_fast",
        "_fast_ok",
        "_ignored",
        "_last_fail_n",
        "_min_calls",
        "_n",
        "_n_failed",
        "_next_token",
        "_open_until",
        "_openings",
        "_reject_until",
        "_rejected",
        "_rng",
        "_roll_at",
        "_since",
        "_slow_thr",
        "_slow_total",
        "_state",
        "_timeouts",
        "_transitions",
        "_trial_successes",
        "_trials",
        "_window",
        "config",
        "name",
    )

    def __init__(
        self,
        name: str,
        config: CircuitBreakerConfig,
        *,
        now: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._rng = rng
        self._state = _CLOSED
        self._fast_ok = True
        self._fast = True
        self._attention = False
        self._n = 0
        self._n_failed = 0
        self._slow_total = 0
        self._rejected = 0
        self._ignored = 0
        self._timeouts = 0
        self._cancelled = 0
        self._consec_fail = 0
        self._last_fail_n = 0
        self._since = now
        self._open_until = -_INF
        self._reject_until = -_INF
        self._openings = 0
        self._transitions = 0
        self._trials: dict[int, float] | None = None
        self._expired_trials: set[int] | None = None  # trials already counted as failed (hung)
        self._next_token = 1
        self._trial_successes = 0
        self._slow_thr = _INF if config.slow_call_threshold is None else config.slow_call_threshold
        window: Window
        if config.window_type is WindowType.COUNT:
            window = CountWindow(config.window_size)
            self._min_calls = min(config.minimum_throughput, config.window_size)
        else:
            window = TimeWindow(config.window_duration, config.window_buckets, 0, now)
            self._min_calls = config.minimum_throughput
        self._window = window
        self._roll_at = window.next_roll()

    # --- transitions ---------------------------------------------------------------

    def open_duration(self, trigger: Trigger, hint: float | None = None) -> float:
        """How long the next opening lasts (``_openings`` already counts it)."""
        config = self.config
        if hint is not None:
            seconds = max(0.0, float(hint))
        else:
            seconds = config.timeout * config.timeout_multiplier ** max(0, self._openings - 1)
            if config.timeout_jitter:
                rng = self._rng if self._rng is not None else random
                seconds *= 1.0 + config.timeout_jitter * (2.0 * rng.random() - 1.0)
        if config.max_timeout is not None:
            seconds = min(seconds, config.max_timeout)
        return seconds

    def _open(self, trigger: Trigger, now: float, hint: float | None = None) -> None:
        self._openings += 1
        self._move(_OPEN, trigger, now, until=now + self.open_duration(trigger, hint))

    def transition_to(
        self, state: CircuitState | str, now: float, *, duration: float | None = None
    ) -> bool:
        """Move by hand to ``state`` (``duration`` seconds for ``open``; default: the
        configured open duration). True if the state changed or an open restarted."""
        target = CircuitState(state)
        if target is _OPEN:
            self._openings += 1
            until = now + self.open_duration(Trigger.MANUAL, duration)
            return self._move(_OPEN, Trigger.MANUAL, now, until=until)
        return self._move(target, Trigger.MANUAL, now)

    def trip(self, now: float, seconds: float) -> bool:
        """Open now for ``seconds`` (a Retry-After hint), from any state but
        ``DISABLED``, ``FORCED_OPEN`` and ``METRICS_ONLY``."""
        if self._state in (_DISABLED, _FORCED_OPEN, _METRICS_ONLY):
            return False
        self._openings += 1
        trigger = Trigger.MANUAL if self._state is _OPEN else Trigger.RETRY_AFTER
        until = now + self.open_duration(Trigger.RETRY_AFTER, seconds)
        return self._move(_OPEN, trigger, now, until=until)

    def reset_state(self, now: float) -> None:
        """Back to ``CLOSED`` with an empty window and no opening history."""
        self._openings = 0
        if not self._move(_CLOSED, Trigger.MANUAL, now):
            self._window.reset(self._n, now)
            self._consec_fail = 0
            self._rearm(now)

    def apply_remote(
        self, state: CircuitState, now: float, *, open_until: float, openings: int
    ) -> bool:
        """Adopt a state another process published (``open_until`` on this process's
        monotonic clock). True if anything changed."""
        self._openings = max(0, openings)
        if state is _OPEN and self._state is _OPEN and open_until == self._open_until:
            return False
        return self._move(state, Trigger.REMOTE, now, until=open_until)

    def _move(
        self,
        target: CircuitState,
        trigger: Trigger,
        now: float,
        *,
        until: float | None = None,
    ) -> bool:
        old = self._state
        new = next_state(old, trigger, target if trigger in _TARGETED else None)
        if new is None:
            return False
        self._state = new
        self._since = now
        self._transitions += 1
        if new is _OPEN:
            self._open_until = until if until is not None else now + self.open_duration(trigger)
        if new is _HALF_OPEN:
            self._trials = None
            self._trial_successes = 0
        elif old is _HALF_OPEN:
            self._trials = None
        if new is _CLOSED:
            if trigger is Trigger.TRIAL_SUCCESS:
                self._openings = 0
            self._window.reset(self._n, now)
            self._consec_fail = 0
        self._update_fast()
        self._reject_until = (
            self._open_until if new is _OPEN else _INF if new is _FORCED_OPEN else -_INF
        )
        self._rearm(now)
        self._on_transition(old, new, trigger, now)
        return True

    # --- fast-path flags -----------------------------------------------------------

    def _rearm(self, now: float, stats: WindowStats | None = None) -> None:
        """Set ``_roll_at``: when a successful call must take the slow path again."""
        if self._attention:
            self._roll_at = -_INF
            return
        if self._state is _CLOSED:
            if stats is None:
                stats = self._window.stats(self._n, now)
            if stats.calls < self._min_calls and (stats.failures or stats.slow_calls):
                # reaching the minimum throughput may open it: check on every call
                self._roll_at = -_INF
                return
        self._roll_at = self._window.next_roll()

    def _set_fast_ok(self, ok: bool) -> None:
        """Allow (or stop) the inline fast path independently of the state."""
        self._fast_ok = ok
        self._update_fast()

    def _update_fast(self) -> None:
        """Recompute ``_fast`` (subclasses extend it with flags derived from it)."""
        self._fast = self._state in _FAST_STATES and self._fast_ok

    def _set_attention(self, on: bool, now: float) -> None:
        """Make every successful call take the slow path (result checks, listeners)."""
        self._attention = on
        self._rearm(now)

    def _on_transition(
        self, old: CircuitState, new: CircuitState, trigger: Trigger, now: float
    ) -> None:
        """Hook called after every transition (the shell notifies and shares it)."""


_TARGETED: Final = frozenset({Trigger.MANUAL, Trigger.REMOTE})
