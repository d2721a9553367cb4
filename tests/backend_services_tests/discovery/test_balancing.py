"""Balancers: round robin, smooth weighted, two random choices, peak-EWMA, filters, panic."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from backend_services.balancing import (
    Filtered,
    LeastOutstanding,
    PeakEwma,
    RoundRobin,
    WeightedRoundRobin,
    make_balancer,
    panic_candidates,
)
from backend_services.discovery.model import ServiceEndpoint, ServiceType
from backend_services.errors import ValidationError
from backend_services.testing import FakeClock


def _eps(n: int, **meta: str) -> list[ServiceEndpoint]:
    return [
        ServiceEndpoint(f"e{i}", ServiceType.DTESN_MEMBRANE, "h", 1000 + i, metadata=dict(meta))
        for i in range(n)
    ]


def test_round_robin_cycles_and_skips_excluded() -> None:
    """Each endpoint in turn; excluded ones are skipped; all excluded gives None."""
    eps = _eps(3)
    rr = RoundRobin()
    assert [rr.pick(eps).service_id for _ in range(6)] == ["e0", "e1", "e2"] * 2  # type: ignore[union-attr]
    assert rr.pick(eps, {"e0"}).service_id == "e1"  # type: ignore[union-attr]
    assert rr.pick(eps, {"e0", "e1", "e2"}) is None
    assert rr.pick([]) is None


def test_weighted_round_robin_is_exact_and_smooth() -> None:
    """Weights 5:1:1 give exactly 5:1:1, interleaved (never all five a in a row)."""
    eps = [
        ServiceEndpoint("a", ServiceType.CACHE_SERVICE, "h", 1, weight=5),
        ServiceEndpoint("b", ServiceType.CACHE_SERVICE, "h", 2, weight=1),
        ServiceEndpoint("c", ServiceType.CACHE_SERVICE, "h", 3, weight=1),
    ]
    wrr = WeightedRoundRobin()
    picks = [wrr.pick(eps).service_id for _ in range(70)]  # type: ignore[union-attr]
    assert Counter(picks) == {"a": 50, "b": 10, "c": 10}
    assert "aaaaa" not in "".join(picks)


def test_least_outstanding_prefers_idle_endpoints() -> None:
    """With two choices, a busy endpoint loses against an idle one."""
    eps = _eps(2)
    lo = LeastOutstanding(rng=random.Random(1))
    for _ in range(5):
        lo.on_start(eps[0])
    assert all(lo.pick(eps).service_id == "e1" for _ in range(20))  # type: ignore[union-attr]
    for _ in range(5):
        lo.on_finish(eps[0], 0.01, True)
    assert lo.outstanding == {}


def test_two_choices_spread_load_over_all() -> None:
    """Every endpoint gets traffic when all are equal."""
    eps = _eps(5)
    lo = LeastOutstanding(rng=random.Random(2))
    assert set(Counter(lo.pick(eps).service_id for _ in range(500))) == {  # type: ignore[union-attr]
        e.service_id for e in eps
    }


def test_peak_ewma_avoids_a_slow_endpoint_and_forgives_it_later() -> None:
    """A slow sample raises cost at once; faster samples decay it with time."""
    clock = FakeClock(start=0.0)
    eps = _eps(2)
    pe = PeakEwma(decay=1.0, clock=clock, rng=random.Random(3))
    pe.on_start(eps[0])
    pe.on_finish(eps[0], 0.5, True)
    pe.on_start(eps[1])
    pe.on_finish(eps[1], 0.01, True)
    assert pe.latency("e0") == 0.5
    assert all(pe.pick(eps).service_id == "e1" for _ in range(20))  # type: ignore[union-attr]
    clock._now = 10.0  # ten decay constants later
    pe.on_start(eps[0])
    pe.on_finish(eps[0], 0.001, True)
    assert pe.latency("e0") < 0.01


def test_peak_ewma_penalises_failures() -> None:
    """A fast failure costs at least the penalty."""
    pe = PeakEwma(penalty=2.0, clock=FakeClock())
    ep = _eps(1)[0]
    pe.on_start(ep)
    pe.on_finish(ep, 0.001, False)
    assert pe.latency(ep.service_id) == 2.0


def test_zone_filter_prefers_matching_and_spills_over() -> None:
    """Matching endpoints are used while enough are usable; else all are."""
    near = _eps(2, zone="a")
    far = [
        ServiceEndpoint(f"f{i}", ServiceType.DTESN_MEMBRANE, "h", 2000 + i, metadata={"zone": "b"})
        for i in range(2)
    ]
    bal = Filtered(RoundRobin(), {"zone": "a"})
    assert {bal.pick(near + far).service_id for _ in range(10)} == {"e0", "e1"}  # type: ignore[union-attr]
    picked = bal.pick(near + far, {"e0", "e1"})
    assert picked is not None
    assert picked.service_id.startswith("f")
    assert bal.spillovers == 1


def test_panic_mode_uses_everything_below_threshold() -> None:
    """Fewer usable than threshold x all: balance over all of them."""
    everything = _eps(4)
    assert panic_candidates(everything[:3], everything, 0.5) == (everything[:3], False)
    assert panic_candidates(everything[:1], everything, 0.5) == (everything, True)
    assert panic_candidates([], [], 0.5) == ([], False)


def test_make_balancer_by_name() -> None:
    """Names map to balancers; unknown names are a clear error."""
    assert isinstance(make_balancer("round_robin"), RoundRobin)
    assert isinstance(make_balancer(None), PeakEwma)
    with pytest.raises(ValidationError, match="balancer"):
        make_balancer("fastest")
