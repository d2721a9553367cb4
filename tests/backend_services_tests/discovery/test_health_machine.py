"""The health state machine: thresholds, hysteresis, grace, deregister-after (fake time)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend_services.discovery.health import HealthPolicy, HealthState
from backend_services.discovery.model import ServiceHealth, ServiceStatus
from backend_services.errors import ValidationError

S = ServiceStatus


def _run(state: HealthState, policy: HealthPolicy, outcomes: str, start: float = 0.0) -> list[S]:
    """Feed 'o' (ok) / 'x' (fail) outcomes one second apart; return statuses after each."""
    seen = []
    for i, c in enumerate(outcomes):
        state.observe(policy, c == "o", now=start + i, wall=1e9 + start + i)
        seen.append(state.status)
    return seen


def test_first_success_makes_a_starting_instance_healthy() -> None:
    """STARTING -> HEALTHY on the first passed check, with a transition returned."""
    state = HealthState("a", registered_at=0.0)
    transition = state.observe(HealthPolicy(), True, now=1.0, wall=1.0)
    assert transition is not None
    assert (transition.old, transition.new) == (S.STARTING, S.HEALTHY)
    assert state.status is S.HEALTHY


def test_unhealthy_only_after_max_consecutive_failures() -> None:
    """A healthy instance goes down on the N-th failure in a row, not before."""
    state = HealthState("a", registered_at=0.0)
    policy = HealthPolicy(failure_threshold=3)
    assert _run(state, policy, "oxxoxxx") == [S.HEALTHY] * 6 + [S.UNHEALTHY]
    assert state.consecutive_failures == 3
    assert state.error_count == 5


def test_success_threshold_is_the_way_back() -> None:
    """An unhealthy instance needs success_threshold passes in a row to come back."""
    state = HealthState("a", registered_at=0.0)
    policy = HealthPolicy(failure_threshold=1, success_threshold=3)
    assert _run(state, policy, "oxooxooo") == [
        S.HEALTHY,
        S.UNHEALTHY,
        S.UNHEALTHY,
        S.UNHEALTHY,
        S.UNHEALTHY,
        S.UNHEALTHY,
        S.UNHEALTHY,
        S.HEALTHY,
    ]


def test_startup_grace_ignores_failures() -> None:
    """Failures inside the start-up grace do not count; after it they do."""
    state = HealthState("a", registered_at=0.0)
    policy = HealthPolicy(failure_threshold=2, startup_grace=10.0)
    statuses = _run(state, policy, "xxxxx")  # t = 0..4, all in grace
    assert statuses == [S.STARTING] * 5
    assert state.error_count == 5
    assert state.observe(policy, False, now=11.0, wall=0.0) is None  # strike 1
    transition = state.observe(policy, False, now=12.0, wall=0.0)  # strike 2
    assert transition is not None
    assert transition.new is S.UNHEALTHY


def test_starting_instance_that_never_passes_goes_unhealthy() -> None:
    """Without grace, N failures take a STARTING instance to UNHEALTHY."""
    state = HealthState("a", registered_at=0.0)
    assert _run(state, HealthPolicy(failure_threshold=3), "xxx")[-1] is S.UNHEALTHY


def test_deregister_after_counts_from_going_unhealthy() -> None:
    """deregister_due turns true deregister_after seconds after the instance went down."""
    state = HealthState("a", registered_at=0.0)
    policy = HealthPolicy(failure_threshold=1, deregister_after=60.0)
    state.observe(policy, True, now=0.0, wall=0.0)
    state.observe(policy, False, now=10.0, wall=0.0)
    assert not state.deregister_due(policy, 69.9)
    assert state.deregister_due(policy, 70.0)
    state.observe(policy, True, now=71.0, wall=0.0)
    assert not state.deregister_due(policy, 500.0)


def test_stopping_ignores_results() -> None:
    """Once stopping, check results change nothing."""
    state = HealthState("a", registered_at=0.0)
    assert state.stop(1.0) is not None
    assert state.observe(HealthPolicy(), True, now=2.0, wall=0.0) is None
    assert state.status is S.STOPPING


def test_from_health_continues_a_published_state() -> None:
    """A taken-over state keeps status and failure count (UNKNOWN starts as STARTING)."""
    state = HealthState.from_health(
        ServiceHealth("a", S.HEALTHY, consecutive_failures=2, error_count=7), now=5.0
    )
    assert state.status is S.HEALTHY
    transition = state.observe(HealthPolicy(failure_threshold=3), False, now=6.0, wall=0.0)
    assert transition is not None
    assert transition.new is S.UNHEALTHY
    assert HealthState.from_health(ServiceHealth("b", S.UNKNOWN), 0.0).status is S.STARTING


def test_snapshot_reports_the_last_error() -> None:
    """The public snapshot carries counts, response time and the last error."""
    state = HealthState("a", registered_at=0.0)
    state.observe(HealthPolicy(), False, now=1.0, wall=123.0, response_time_ms=4.0, error="boom")
    snap = state.snapshot()
    assert (snap.last_check, snap.response_time_ms, snap.error_count) == (123.0, 4.0, 1)
    assert snap.metadata["last_error"] == "boom"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"success_threshold": 0},
        {"startup_grace": -1.0},
        {"deregister_after": 0.0},
    ],
)
def test_policy_validation(kwargs: dict[str, float]) -> None:
    """Nonsense thresholds are rejected with the field named."""
    with pytest.raises(ValidationError) as info:
        HealthPolicy(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == next(iter(kwargs))


@given(
    outcomes=st.text(alphabet="ox", max_size=60),
    down=st.integers(1, 5),
    up=st.integers(1, 5),
)
def test_hysteresis_property(outcomes: str, down: int, up: int) -> None:
    """Healthy->unhealthy only after `down` failures in a row; unhealthy->healthy only
    after `up` passes in a row; every transition is between different statuses."""
    policy = HealthPolicy(failure_threshold=down, success_threshold=up)
    state = HealthState("a", registered_at=0.0)
    fails = passes = 0
    for i, c in enumerate(outcomes):
        ok = c == "o"
        fails = 0 if ok else fails + 1
        passes = passes + 1 if ok else 0
        before = state.status
        transition = state.observe(policy, ok, now=float(i), wall=0.0)
        if transition is not None:
            assert transition.old is before
            assert transition.new is not before
            if transition.new is S.UNHEALTHY:
                assert fails >= down
            if before is S.UNHEALTHY:
                assert passes >= up
        else:
            assert state.status is before
