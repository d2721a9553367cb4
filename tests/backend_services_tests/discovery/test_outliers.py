"""Passive outlier detection: ejection, growing ejection time, the ejection cap."""

from __future__ import annotations

import pytest

from backend_services.discovery.outliers import Ejection, OutlierDetector, OutlierPolicy
from backend_services.errors import ValidationError


def _fail(
    det: OutlierDetector, sid: str, n: int, now: float, population: int = 10
) -> Ejection | None:
    result = None
    for _ in range(n):
        result = det.record(sid, False, now, population) or result
    return result


def test_consecutive_failures_eject() -> None:
    """N failures in a row eject for the base time; a success in between resets."""
    det = OutlierDetector(OutlierPolicy(consecutive_failures=3, base_ejection_time=30))
    _fail(det, "a", 2, 0.0)
    det.record("a", True, 0.0, 10)
    assert _fail(det, "a", 2, 0.0) is None
    ejection = _fail(det, "a", 1, 0.0)
    assert ejection is not None
    assert det.is_ejected("a", 29.9)
    assert not det.is_ejected("a", 30.0)
    assert det.any_ejected(10.0)
    assert not det.any_ejected(31.0)


def test_ejection_time_grows_with_repeats_and_is_capped() -> None:
    """Each repeat ejection lasts base x n, at most max_ejection_time."""
    policy = OutlierPolicy(consecutive_failures=1, base_ejection_time=10, max_ejection_time=25)
    det = OutlierDetector(policy)
    durations = []
    now = 0.0
    for _ in range(4):
        ejection = det.record("a", False, now, 10)
        assert ejection is not None
        durations.append(ejection.until - now)
        now = ejection.until
    assert durations == [10, 20, 25, 25]


def test_multiplier_resets_after_a_calm_period() -> None:
    """An endpoint clean for max_ejection_time after its last ejection starts over."""
    policy = OutlierPolicy(consecutive_failures=1, base_ejection_time=10, max_ejection_time=50)
    det = OutlierDetector(policy)
    det.record("a", False, 0.0, 10)
    det.record("a", False, 10.0, 10)
    assert det.times_ejected("a") == 2
    ejection = det.record("a", False, 200.0, 10)
    assert ejection is not None
    assert ejection.times == 1


def test_at_most_the_configured_share_is_ejected() -> None:
    """With 4 endpoints and 50%, two can be ejected, never a third."""
    det = OutlierDetector(OutlierPolicy(consecutive_failures=1, max_ejection_percent=0.5))
    assert det.record("a", False, 0.0, 4) is not None
    assert det.record("b", False, 0.0, 4) is not None
    assert det.record("c", False, 0.0, 4) is None
    assert det.ejected(0.0) == {"a", "b"}


def test_a_single_endpoint_is_never_ejected() -> None:
    """Ejecting the only endpoint would leave nothing: it is not done."""
    det = OutlierDetector(OutlierPolicy(consecutive_failures=1))
    assert det.record("a", False, 0.0, 1) is None


def test_forget_drops_state() -> None:
    """A deregistered endpoint's ejection is forgotten."""
    det = OutlierDetector(OutlierPolicy(consecutive_failures=1))
    det.record("a", False, 0.0, 5)
    det.forget("a")
    assert not det.is_ejected("a", 0.0)


def test_policy_validation() -> None:
    """Invalid settings name the field."""
    with pytest.raises(ValidationError, match="max_ejection_percent"):
        OutlierPolicy(max_ejection_percent=1.5)
    with pytest.raises(ValidationError, match="max_ejection_time"):
        OutlierPolicy(base_ejection_time=10, max_ejection_time=5)
