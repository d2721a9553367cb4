"""Invariants of the state machine under arbitrary interleavings (Hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from backend_services.breaker import (
    ADMIT_UNRECORDED,
    REJECT,
    BreakerCore,
    CircuitBreakerConfig,
    CircuitState,
)
from backend_services.settings import Settings

OUTCOMES = ("success", "failure", "slow", "ignored", "cancelled")

configs = st.builds(
    lambda ft, hmax, succ, wt, minimum, trial: CircuitBreakerConfig(
        failure_threshold=ft,
        timeout=5.0,
        half_open_max_calls=hmax,
        success_threshold=succ,
        request_timeout=None,
        slow_call_threshold=1.0,
        minimum_throughput=minimum,
        window_type=wt,
        window_size=8,
        window_duration=4.0,
        trial_timeout=trial,
        settings=Settings(),
    ),
    st.integers(0, 4),
    st.integers(1, 4),
    st.integers(1, 3),
    st.sampled_from(["count", "time"]),
    st.integers(1, 6),
    st.sampled_from([None, 2.0]),
)

ops = st.lists(
    st.one_of(
        st.tuples(st.just("call"), st.sampled_from(OUTCOMES)),
        st.tuples(st.just("start"), st.none()),
        st.tuples(st.just("finish"), st.tuples(st.integers(0, 50), st.sampled_from(OUTCOMES))),
        st.tuples(st.just("wait"), st.floats(0.0, 7.0)),
        st.tuples(st.just("manual"), st.sampled_from(list(CircuitState))),
    ),
    max_size=120,
)


class Model:
    """Drives a core and checks the invariants after every step."""

    def __init__(self, config: CircuitBreakerConfig) -> None:
        self.core = BreakerCore("p", config)
        self.now = 0.0
        self.open_calls: list[tuple[int, float]] = []  # (token, started)
        self.admitted = 0
        self.half_open_live: set[int] = set()
        self.epoch = -1

    def check(self) -> None:
        core = self.core
        limit = core.config.half_open_max_calls
        assert core.trials_in_flight <= limit
        if core._state is CircuitState.HALF_OPEN:
            if self.epoch != core._transitions:
                self.epoch = core._transitions
                self.half_open_live = set()
            assert len(self.half_open_live) <= limit
        c = core.counters(self.now)
        assert c["successful_calls"] + c["failed_calls"] == c["total_calls"]
        assert c["total_calls"] + c["ignored_calls"] + c["cancelled_calls"] <= self.admitted

    def start(self) -> int | None:
        token = self.core.acquire(self.now)
        if token == REJECT:
            return None
        if self.core._state is CircuitState.HALF_OPEN and token > 0:
            if self.epoch != self.core._transitions:
                self.epoch = self.core._transitions
                self.half_open_live = set()
            self.half_open_live.add(token)
        if token != ADMIT_UNRECORDED:
            self.admitted += 1
        return token

    def finish(self, token: int, started: float, outcome: str) -> None:
        core = self.core
        duration = self.now - started
        self.half_open_live.discard(token)
        if outcome == "success":
            core.on_success(token, self.now, duration)
        elif outcome == "slow":
            core.on_success(token, self.now, duration + 1.5)
        elif outcome == "failure":
            core.on_failure(token, self.now, duration)
        elif outcome == "ignored":
            core.on_ignored(token)
        else:
            core.on_cancelled(token, self.now, duration)

    def run(self, steps: list[tuple[str, Any]]) -> None:
        for op, arg in steps:
            if op == "call":
                token = self.start()
                if token is not None:
                    self.finish(token, self.now, arg)
            elif op == "start":
                token = self.start()
                if token is not None:
                    self.open_calls.append((token, self.now))
            elif op == "finish" and self.open_calls:
                index, outcome = arg
                token, started = self.open_calls.pop(index % len(self.open_calls))
                self.finish(token, started, outcome)
            elif op == "wait":
                self.now += arg
                self.core.current_state(self.now)
            elif op == "manual":
                self.core.transition_to(arg, self.now)
            self.check()
        for token, started in self.open_calls:
            self.finish(token, started, "success")
        self.open_calls = []
        self.check()


@given(configs, ops)
def test_invariants_hold(config: CircuitBreakerConfig, steps: list[tuple[str, Any]]) -> None:
    """Half-open never admits more than its limit at once; totals add up; every
    recorded call is counted at most once."""
    Model(config).run(steps)


@given(configs, ops)
def test_every_call_counted_exactly_once(
    config: CircuitBreakerConfig, steps: list[tuple[str, Any]]
) -> None:
    """Once every call has finished, each admitted call is counted exactly once: as a
    success, a failure, ignored or cancelled (a hung trial counts when it expires)."""
    model = Model(config)
    model.run(steps)
    c = model.core.counters(model.now)
    assert c["total_calls"] + c["ignored_calls"] + c["cancelled_calls"] == model.admitted


@given(
    configs,
    st.lists(st.tuples(st.floats(0.0, 3.0), st.floats(0.0, 0.99)), max_size=200),
)
def test_closed_without_failures_never_rejects(
    config: CircuitBreakerConfig, calls: list[tuple[float, float]]
) -> None:
    """A closed breaker that sees no failures and no slow calls never rejects."""
    core = BreakerCore("p", config)
    now = 0.0
    for gap, duration in calls:
        now += gap
        token = core.acquire(now)
        assert token != REJECT
        core.on_success(token, now + duration, duration)
        now += duration
    assert core._state is CircuitState.CLOSED
    assert core.counters(now)["rejected_calls"] == 0


@given(st.integers(1, 5), st.integers(1, 30))
def test_half_open_admits_exactly_its_limit(limit: int, callers: int) -> None:
    """Of many simultaneous callers in half-open, exactly min(limit, callers) get in."""
    config = CircuitBreakerConfig(
        failure_threshold=1, timeout=1.0, half_open_max_calls=limit, settings=Settings()
    )
    core = BreakerCore("p", config)
    core.on_failure(core.acquire(0.0), 0.0, 0.0)
    tokens = [core.acquire(1.0) for _ in range(callers)]
    assert sum(1 for t in tokens if t > 0) == min(limit, callers)
    assert all(t == REJECT for t in tokens[limit:])
