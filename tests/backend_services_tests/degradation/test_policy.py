"""The level policy: worst resource decides, immediate degradation, stable recovery."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from backend_services.degradation.levels import (
    DegradationLevel,
    ResourceThreshold,
    ResourceType,
)
from backend_services.degradation.policy import DegradationPolicy

L = DegradationLevel
CPU, MEM, DB = ResourceType.CPU, ResourceType.MEMORY, ResourceType.DATABASE


def policy(recovery_delay: float = 60.0, **kw: object) -> DegradationPolicy:
    return DegradationPolicy(None, recovery_delay, **kw)  # type: ignore[arg-type]


class TestDegradation:
    def test_worse_level_applies_at_first_crossing_sample(self) -> None:
        """One sample at 0.91 CPU moves NORMAL straight to EMERGENCY."""
        p = policy()
        change = p.observe({CPU: 0.91}, 0.0)
        assert change is not None
        assert (change.old, change.new) == (L.NORMAL, L.EMERGENCY)
        assert "cpu usage 0.910 reached the emergency entry threshold 0.900" in change.reason
        assert change.is_degradation

    def test_worst_resource_decides(self) -> None:
        """Memory at MINIMAL and CPU at PARTIAL give MINIMAL."""
        p = policy()
        p.observe({CPU: 0.72, MEM: 0.86}, 0.0)
        assert p.level is L.MINIMAL

    def test_below_entry_never_degrades(self) -> None:
        """Usage just under the PARTIAL entry keeps NORMAL."""
        p = policy()
        assert p.observe({CPU: 0.699, MEM: 0.749}, 0.0) is None
        assert p.level is L.NORMAL


class TestRecovery:
    def test_one_level_per_recovery_delay(self) -> None:
        """From OFFLINE with idle resources: one step after each 60 s, never sooner."""
        p = policy(60.0)
        p.observe({CPU: 0.99}, 0.0)
        assert p.level is L.OFFLINE
        levels = []
        for t in range(10, 301, 10):
            p.observe({CPU: 0.1}, float(t))
            levels.append((t, p.level))
        pairs = zip(levels[1:], levels, strict=False)
        steps = [(t, lv) for (t, lv), (_, prev) in pairs if lv != prev]
        assert [lv for _, lv in steps] == [L.EMERGENCY, L.MINIMAL, L.PARTIAL, L.NORMAL]
        assert levels[5] == (60, L.OFFLINE)  # below since t=10: not yet at t=60
        assert [t for t, _ in steps] == [70, 130, 190, 250]

    def test_spike_restarts_the_wait(self) -> None:
        """A single sample above the exit threshold resets the recovery timer."""
        p = policy(60.0)
        p.observe({CPU: 0.85}, 0.0)
        p.observe({CPU: 0.1}, 10.0)
        p.observe({CPU: 0.78}, 50.0)  # inside the hysteresis band of MINIMAL (0.75..0.80)
        p.observe({CPU: 0.1}, 60.0)
        assert p.observe({CPU: 0.1}, 100.0) is None
        assert p.level is L.MINIMAL
        change = p.observe({CPU: 0.1}, 120.0)
        assert change is not None
        assert change.new is L.PARTIAL

    def test_alternating_spikes_do_not_flap(self) -> None:
        """High/low every sample: the level degrades once and then holds."""
        p = policy(60.0)
        changes = [p.observe({CPU: 0.92 if i % 2 == 0 else 0.1}, i * 10.0) for i in range(100)]
        assert sum(1 for c in changes if c is not None) == 1
        assert p.level is L.EMERGENCY

    def test_hysteresis_band_holds_the_level(self) -> None:
        """Usage between exit (entry - 0.05) and entry keeps the level indefinitely."""
        p = policy(10.0)
        p.observe({CPU: 0.81}, 0.0)
        for t in range(1, 100):
            assert p.observe({CPU: 0.77}, float(t)) is None
        assert p.level is L.MINIMAL

    def test_recovery_delay_zero_steps_each_sample(self) -> None:
        """With no delay each good sample improves by exactly one level."""
        p = policy(0.0)
        p.observe({CPU: 0.96}, 0.0)
        seen = []
        for t in range(1, 6):
            p.observe({CPU: 0.0}, float(t))
            seen.append(p.level)
        assert seen == [L.EMERGENCY, L.MINIMAL, L.PARTIAL, L.NORMAL, L.NORMAL]

    def test_missing_sample_keeps_previous_value_until_stale(self) -> None:
        """A failed monitor's last value blocks recovery until it is older than
        stale_after; then the resource stops counting and recovery proceeds."""
        p = policy(0.0, stale_after=30.0)
        p.observe({CPU: 0.85, MEM: 0.1}, 0.0)
        assert p.observe({MEM: 0.1}, 10.0) is None  # CPU 0.85 still in force
        change = p.observe({MEM: 0.1}, 40.0)  # CPU sample now stale
        assert change is not None
        assert change.new is L.PARTIAL

    def test_no_data_at_all_lets_recovery_complete(self) -> None:
        """Fail open: when every monitor is gone, the service recovers (one step at a time)."""
        p = policy(5.0, stale_after=1.0)
        p.observe({CPU: 0.9}, 0.0)
        for t in range(2, 60):
            p.observe({}, float(t))
        assert p.level is L.NORMAL


class TestOverride:
    def test_force_sets_level_and_clear_returns_to_automatic(self) -> None:
        """force() wins over samples; clear() hands back to the sample-driven level."""
        p = policy()
        change = p.force(L.OFFLINE, "maintenance", 0.0)
        assert change is not None
        assert change.new is L.OFFLINE
        assert change.source == "manual"
        p.observe({CPU: 0.82}, 1.0)
        assert p.level is L.OFFLINE
        assert p.auto_level is L.MINIMAL
        change = p.clear(2.0)
        assert change is not None
        assert change.new is L.MINIMAL
        assert change.source == "clear"

    def test_force_better_than_resources(self) -> None:
        """An operator may force NORMAL over a (broken) monitor's high reading."""
        p = policy()
        p.observe({CPU: 0.99}, 0.0)
        p.force(L.NORMAL, "monitor is wrong", 1.0)
        assert p.level is L.NORMAL

    def test_override_expires(self) -> None:
        """A forced level with an expiry ends at that time (tick or next sample)."""
        p = policy()
        p.force(L.EMERGENCY, "drill", 0.0, until=30.0)
        assert p.tick(29.9) is None
        change = p.tick(30.0)
        assert change is not None
        assert change.new is L.NORMAL
        assert change.source == "expiry"
        assert "override expired (drill)" in change.reason

    def test_clear_by_source_only_clears_that_source(self) -> None:
        """A fleet clear leaves a manual override alone."""
        p = policy()
        p.force(L.MINIMAL, "manual", 0.0)
        assert p.clear(1.0, source="fleet") is None
        assert p.level is L.MINIMAL

    def test_next_improvement_in(self) -> None:
        """The ETA reflects the override expiry or the running recovery timer."""
        p = policy(60.0)
        p.force(L.MINIMAL, "x", 0.0, until=25.0)
        assert p.next_improvement_in(5.0) == 20.0
        p.clear(6.0)
        p.observe({CPU: 0.85}, 10.0)
        assert p.next_improvement_in(10.0) is None
        p.observe({CPU: 0.1}, 20.0)
        assert p.next_improvement_in(30.0) == 50.0


class TestFloorAndDependents:
    def test_floor_is_advisory_unless_followed(self) -> None:
        """A fleet floor changes the level only for a policy that follows it."""
        advisory, follower = policy(), policy(follow_floor=True)
        assert advisory.set_floor(L.MINIMAL) is None
        assert advisory.level is L.NORMAL
        change = follower.set_floor(L.MINIMAL)
        assert change is not None
        assert follower.level is L.MINIMAL
        follower.set_floor(None)
        assert follower.level is L.NORMAL

    def test_dependents_scope_gates_only_dependents(self) -> None:
        """A 'dependents' resource does not move the service level, but has its own."""
        th = {DB: ResourceThreshold(DB, scope="dependents")}
        p = DegradationPolicy(th, 60.0)
        before = p.gate_version
        assert p.observe({DB: 0.96, CPU: 0.1}, 0.0) is None
        assert p.level is L.NORMAL
        assert p.dependency_levels[DB] is L.OFFLINE
        assert p.gate_version > before


samples = st.lists(
    st.tuples(
        st.floats(0.1, 40.0),
        st.dictionaries(st.sampled_from([CPU, MEM, DB]), st.floats(0.0, 1.0), max_size=3),
    ),
    min_size=1,
    max_size=60,
)


class TestProperties:
    @given(samples, st.floats(0.0, 120.0))
    def test_never_improves_more_than_one_step_per_recovery_delay(
        self, steps: list[tuple[float, dict[ResourceType, float]]], delay: float
    ) -> None:
        """Every improvement is one level, and improvements are >= recovery_delay apart
        (also from the last degradation)."""
        p = policy(delay)
        now = 0.0
        last_change_at = -math.inf
        for dt, usage in steps:
            now += dt
            old = p.level
            change = p.observe(usage, now)
            if change is None:
                continue
            if change.new < old:
                assert old.rank - change.new.rank == 1
                assert now - last_change_at >= delay
            last_change_at = now

    @given(samples)
    def test_level_reaches_every_sample_entry_level(
        self, steps: list[tuple[float, dict[ResourceType, float]]]
    ) -> None:
        """After a sample, the level is at least the worst level that sample enters."""
        p = policy(30.0)
        now = 0.0
        for dt, usage in steps:
            now += dt
            p.observe(usage, now)
            worst = max((p.thresholds[r].level_for(u) for r, u in usage.items()), default=L.NORMAL)
            assert p.level >= worst

    @given(samples, st.floats(0.0, 100.0), st.floats(1.0, 30.0))
    def test_recovery_always_completes_when_conditions_stay_good(
        self,
        steps: list[tuple[float, dict[ResourceType, float]]],
        delay: float,
        interval: float,
    ) -> None:
        """Whatever happened before, idle readings bring NORMAL back within
        4 steps of (recovery_delay + one interval)."""
        p = policy(delay)
        now = 0.0
        for dt, usage in steps:
            now += dt
            p.observe(usage, now)
        deadline = now + 4 * (delay + interval) + interval
        while now <= deadline and p.level is not L.NORMAL:
            now += interval
            p.observe({CPU: 0.0, MEM: 0.0, DB: 0.0}, now)
        assert p.level is L.NORMAL
