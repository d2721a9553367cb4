"""Feature gating table and admission / adaptive concurrency limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend_services.degradation.gating import ALLOWED_PRIORITIES, Feature, FeatureGate, allowed
from backend_services.degradation.levels import DegradationLevel, FeaturePriority, ResourceType
from backend_services.degradation.shedding import AdmissionController, AimdLimit
from backend_services.errors import ValidationError

L, P = DegradationLevel, FeaturePriority


class TestAllowedTable:
    def test_spec_levels(self) -> None:
        """PARTIAL drops OPTIONAL; MINIMAL keeps CRITICAL+HIGH; EMERGENCY keeps CRITICAL;
        OFFLINE keeps nothing."""
        assert ALLOWED_PRIORITIES[L.NORMAL] == frozenset(P)
        assert ALLOWED_PRIORITIES[L.PARTIAL] == frozenset(P) - {P.OPTIONAL}
        assert ALLOWED_PRIORITIES[L.MINIMAL] == {P.CRITICAL, P.HIGH}
        assert ALLOWED_PRIORITIES[L.EMERGENCY] == {P.CRITICAL}
        assert ALLOWED_PRIORITIES[L.OFFLINE] == frozenset()


class TestFeature:
    def test_validation(self) -> None:
        """Empty names, unknown priorities and non-callable fallbacks are refused."""
        with pytest.raises(ValidationError, match=r"feature\.name"):
            Feature("", P.HIGH)
        with pytest.raises(ValidationError, match=r"feature\.priority"):
            Feature("x", "urgent")  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="fallback_function"):
            Feature("x", P.HIGH, fallback_function=42)  # type: ignore[arg-type]

    def test_strings_are_coerced(self) -> None:
        """Priority and dependencies may be given by name."""
        f = Feature("x", "high", resource_dependencies=["database"])  # type: ignore[arg-type]
        assert f.priority is P.HIGH
        assert f.resource_dependencies == (ResourceType.DATABASE,)


class TestFeatureGate:
    def test_apply_reports_changes_and_updates_table(self) -> None:
        """Going to MINIMAL switches off MEDIUM and below, and says which."""
        g = FeatureGate()
        for name, prio in [("a", P.CRITICAL), ("b", P.HIGH), ("c", P.MEDIUM), ("d", P.OPTIONAL)]:
            g.register(Feature(name, prio))
        on, off = g.apply(L.MINIMAL)
        assert on == []
        assert sorted(off) == ["c", "d"]
        assert g.table == {"a": True, "b": True, "c": False, "d": False}
        on, off = g.apply(L.NORMAL)
        assert sorted(on) == ["c", "d"]
        assert off == []

    def test_operator_switch(self) -> None:
        """A feature switched off stays off at NORMAL; switching on restores it."""
        g = FeatureGate()
        g.register(Feature("a", P.CRITICAL, enabled=False))
        assert g.table["a"] is False
        g.set_enabled("a", True)
        assert g.table["a"] is True

    def test_dependency_levels_gate_dependents(self) -> None:
        """A feature depending on a degraded resource follows that resource's level."""
        g = FeatureGate()
        g.register(Feature("reports", P.MEDIUM, resource_dependencies=[ResourceType.DATABASE]))
        g.register(Feature("other", P.MEDIUM))
        g.apply(L.NORMAL, {ResourceType.DATABASE: L.MINIMAL})
        assert g.table == {"reports": False, "other": True}

    @given(
        st.lists(st.tuples(st.sampled_from(list(P)), st.booleans()), min_size=0, max_size=30),
        st.lists(st.sampled_from(list(L)), min_size=1, max_size=10),
    )
    def test_enabled_features_are_exactly_those_allowed(
        self, specs: list[tuple[FeaturePriority, bool]], levels: list[DegradationLevel]
    ) -> None:
        """After any sequence of levels, enabled == switched on and allowed at the level."""
        g = FeatureGate()
        features = [Feature(f"f{i}", prio, enabled=on) for i, (prio, on) in enumerate(specs)]
        for i, f in enumerate(features):
            if i % 2:
                g.register(f)
        for level in levels:
            g.apply(level)
        for i, f in enumerate(features):
            if not i % 2:
                g.register(f)
        level = levels[-1]
        expected = {f.name for f in features if f.enabled and allowed(f.priority, level)}
        assert set(g.enabled_names()) == expected
        assert set(g.disabled_names()) == {f.name for f in features} - expected


class TestAdmission:
    def test_admits_by_level(self) -> None:
        """Under MINIMAL only CRITICAL and HIGH requests get in."""
        a = AdmissionController()
        a.set_level(L.MINIMAL, retry_at=100.0)
        assert [p for p in P if a.admits(p)] == [P.CRITICAL, P.HIGH]
        assert a.admitted_priorities() == ["critical", "high"]
        assert a.retry_after(90.0, fallback=5.0) == 10.0
        a.set_level(L.OFFLINE)
        assert not any(a.admits(p) for p in P)
        assert a.retry_after(90.0, fallback=5.0) == 5.0

    def test_counts_sheds(self) -> None:
        """Shed requests are counted in total and per priority."""
        a = AdmissionController()
        a.record_shed(P.LOW)
        a.record_shed(P.LOW)
        assert a.shed_total == 2
        assert a.shed_by_priority["low"] == 2


class TestAimd:
    def test_limit_caps_inflight(self) -> None:
        """Requests beyond the limit are refused and counted."""
        lim = AimdLimit(initial_limit=2, min_limit=1, max_limit=10)
        assert lim.try_acquire() == 1
        assert lim.try_acquire() == 2
        assert lim.try_acquire() is None
        assert lim.shed == 1

    def test_slow_requests_shrink_fast_ones_grow(self) -> None:
        """Latency above the threshold multiplies the limit down; fast saturating
        requests add one."""
        lim = AimdLimit(initial_limit=10, latency_threshold=0.5, backoff=0.5, max_limit=100)
        slot = lim.try_acquire()
        assert slot is not None
        lim.release(2.0, slot)
        assert lim.limit == 5
        for _ in range(5):
            lim.try_acquire()
        lim.release(0.01, 5)
        assert lim.limit == 6
        lim.release(0.01, 1)  # not saturated: no growth
        assert lim.limit == 6

    def test_limit_stays_within_bounds(self) -> None:
        """Never below min_limit, never above max_limit."""
        lim = AimdLimit(initial_limit=2, min_limit=2, max_limit=3, latency_threshold=0.1)
        for _ in range(10):
            lim.release(5.0, 1, dropped=True)
        assert lim.limit == 2
        for _ in range(10):
            lim.release(0.0, 10)
        assert lim.limit == 3

    @pytest.mark.parametrize(
        "kwargs",
        [{"min_limit": 0}, {"initial_limit": 5000}, {"backoff": 1.0}, {"latency_threshold": 0}],
    )
    def test_invalid_settings(self, kwargs: dict[str, float]) -> None:
        """Bad limits are refused with the field named."""
        with pytest.raises(ValidationError):
            AimdLimit(**kwargs)  # type: ignore[arg-type]
