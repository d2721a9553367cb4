"""ServiceDegradationManager: the spec's example, settings, levels driven by monitors,
callbacks and listeners, feature gating, fallbacks, overrides, admission and status."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend_services.degradation import ALLOWED_PRIORITIES, AimdLimit
from backend_services.errors import LifecycleError, RequestShedError, ValidationError
from backend_services.infrastructure.service_degradation import (
    DegradationEvent,
    DegradationLevel,
    Feature,
    FeaturePriority,
    ResourceThreshold,
    ResourceType,
    ServiceDegradationManager,
)
from backend_services.testing import FakeClock

L, P, R = DegradationLevel, FeaturePriority, ResourceType

Factory = Callable[..., ServiceDegradationManager]


class Usage:
    """A settable monitor value."""

    def __init__(self, value: float = 0.1) -> None:
        self.value: Any = value
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.value


async def started(m: ServiceDegradationManager, clock: FakeClock) -> ServiceDegradationManager:
    await m.initialize()
    await clock.advance(0)
    return m


def features(m: ServiceDegradationManager) -> None:
    for f in (
        Feature("core_processing", P.CRITICAL),
        Feature("advanced_analytics", P.HIGH),
        Feature("reports", P.MEDIUM),
        Feature("recommendations", P.LOW),
        Feature("debug_interface", P.OPTIONAL),
    ):
        m.register_feature(f)


async def enabled(m: ServiceDegradationManager) -> set[str]:
    return {n for n in m.features if await m.is_feature_enabled(n)}


class TestSpecExample:
    async def test_spec_usage_example_runs_unchanged(self) -> None:
        """The spec's example: constructor, initialize, register, is_feature_enabled."""
        manager = ServiceDegradationManager(
            service_name="dtesn-processor", check_interval=30.0, recovery_delay=60.0
        )
        await manager.initialize()
        try:
            for feature in [
                Feature("core_processing", FeaturePriority.CRITICAL),
                Feature("advanced_analytics", FeaturePriority.HIGH),
                Feature("debug_interface", FeaturePriority.OPTIONAL),
            ]:
                manager.register_feature(feature)
            assert await manager.is_feature_enabled("advanced_analytics") is (
                manager.current_level <= L.MINIMAL
            )
            assert manager.get_status()["monitors"]["builtin"] == ["cpu", "memory", "event_loop"]
        finally:
            await manager.shutdown()

    async def test_metrics_have_the_spec_shape(self, make: Factory, clock: FakeClock) -> None:
        """get_metrics holds the spec's keys with its value types (level as a string)."""
        m = make("svc")
        cpu, mem = Usage(0.45), Usage(0.62)
        m.register_resource_monitor(R.CPU, cpu, in_thread=False)
        m.register_resource_monitor("memory", mem, in_thread=False)
        features(m)
        await started(m, clock)
        metrics = m.get_metrics()
        assert metrics["current_level"] == "normal"
        assert metrics["enabled_features"] == 5
        assert metrics["disabled_features"] == 0
        assert metrics["degradation_events"] == 0
        assert metrics["resource_usage"] == {"cpu": 0.45, "memory": 0.62}
        json.dumps(metrics)


class TestSettings:
    def test_precedence_argument_env_file_default(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """check_interval/recovery_delay: argument > environment > file > default."""
        cfg = tmp_path / "config.json"
        cfg.write_text(
            json.dumps(
                {
                    "degradation": {
                        "check_interval": 20,
                        "recovery_delay": 45,
                        "thresholds": {
                            "cpu": {"partial": 0.7, "minimal": 0.8, "emergency": 0.9},
                            "memory": {"partial": 0.6, "minimal": 0.7, "emergency": 0.8},
                        },
                    }
                }
            )
        )
        monkeypatch.setenv("DTESN_CONFIG_FILE", str(cfg))
        m = ServiceDegradationManager("a", redis_url=None)
        assert (m.check_interval, m.recovery_delay) == (20.0, 45.0)
        assert m.resource_thresholds[R.MEMORY].minimal == 0.7
        monkeypatch.setenv("DTESN_DEGRADATION_CHECK_INTERVAL", "7")
        monkeypatch.setenv("DTESN_DEGRADATION_MEMORY_THRESHOLD", "0.75")
        m = ServiceDegradationManager("a", redis_url=None)
        assert m.check_interval == 7.0
        assert m.resource_thresholds[R.MEMORY].minimal == 0.75
        m = ServiceDegradationManager("a", None, 3.0, 4.0, redis_url=None)
        assert (m.check_interval, m.recovery_delay) == (3.0, 4.0)

    def test_defaults(self) -> None:
        """Without settings: 30 s interval, 60 s recovery delay, spec thresholds."""
        m = ServiceDegradationManager("a", redis_url=None)
        assert (m.check_interval, m.recovery_delay) == (30.0, 60.0)
        assert m.resource_thresholds[R.CPU].minimal == 0.8
        assert m.resource_thresholds[R.MEMORY].minimal == 0.85

    def test_env_cpu_threshold_sets_minimal_entry(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """DTESN_DEGRADATION_CPU_THRESHOLD is the MINIMAL entry threshold for CPU."""
        monkeypatch.setenv("DTESN_DEGRADATION_CPU_THRESHOLD", "0.85")
        m = ServiceDegradationManager("a", redis_url=None)
        assert m.resource_thresholds[R.CPU].minimal == 0.85

    def test_threshold_not_increasing_is_a_clear_error(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A CPU MINIMAL entry at 0.95 (above EMERGENCY 0.90) is refused with names."""
        monkeypatch.setenv("DTESN_DEGRADATION_CPU_THRESHOLD", "0.95")
        with pytest.raises(ValidationError, match=r"thresholds\.cpu\.emergency.*increase"):
            ServiceDegradationManager("a", redis_url=None)

    def test_argument_thresholds_win(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """ResourceThreshold arguments replace settings for that resource."""
        monkeypatch.setenv("DTESN_DEGRADATION_CPU_THRESHOLD", "0.85")
        th = ResourceThreshold(R.CPU, 0.5, 0.6, 0.7, 0.8)
        m = ServiceDegradationManager("a", [th], redis_url=None)
        assert m.resource_thresholds[R.CPU] is th

    @pytest.mark.parametrize(
        ("kw", "field"),
        [
            ({"check_interval": 0}, "check_interval"),
            ({"recovery_delay": -1}, "recovery_delay"),
            ({"check_interval": math.nan}, "check_interval"),
            ({"history_size": 0}, "history_size"),
        ],
    )
    def test_invalid_arguments(self, kw: dict[str, Any], field: str) -> None:
        """Invalid timings are refused, naming the argument."""
        with pytest.raises(ValidationError) as err:
            ServiceDegradationManager("a", redis_url=None, **kw)
        assert err.value.field == field

    def test_empty_service_name(self) -> None:
        """A service needs a name."""
        with pytest.raises(ValidationError, match="service_name"):
            ServiceDegradationManager("  ", redis_url=None)


class TestLevels:
    async def test_degrades_at_first_crossing_and_recovers_step_by_step(
        self, make: Factory, clock: FakeClock
    ) -> None:
        """0.93 CPU -> EMERGENCY at the next round; idle -> one level per 60 s."""
        m = make("svc")
        cpu = Usage(0.1)
        m.register_resource_monitor(R.CPU, cpu, in_thread=False)
        features(m)
        await started(m, clock)
        assert m.current_level is L.NORMAL
        cpu.value = 0.93
        await clock.advance(10)
        assert m.current_level is L.EMERGENCY
        assert await enabled(m) == {"core_processing"}
        cpu.value = 0.1
        seen = []
        for _ in range(25):
            await clock.advance(10)
            seen.append(m.current_level)
        assert seen[:6] == [L.EMERGENCY] * 6
        assert seen[6] is L.MINIMAL
        assert seen[12] is L.PARTIAL
        assert seen[18] is L.NORMAL
        assert await enabled(m) == set(m.features)

    async def test_callbacks_fire_for_their_direction(
        self, make: Factory, clock: FakeClock
    ) -> None:
        """Degradation callbacks get worse levels, recovery callbacks better ones;
        sync and async both work; a failing callback does not stop the others."""
        m = make("svc", recovery_delay=0.0)
        cpu = Usage(0.1)
        m.register_resource_monitor(R.CPU, cpu, in_thread=False)
        down: list[DegradationLevel] = []
        up: list[DegradationLevel] = []

        async def on_up(level: DegradationLevel) -> None:
            up.append(level)

        def broken(level: DegradationLevel) -> None:
            raise RuntimeError("callback bug")

        m.add_degradation_callback(broken)
        m.add_degradation_callback(down.append)
        m.add_recovery_callback(on_up)
        await started(m, clock)
        cpu.value = 0.85
        await clock.advance(10)
        cpu.value = 0.0
        await clock.advance(30)
        assert down == [L.MINIMAL]
        assert up == [L.PARTIAL, L.NORMAL]

    async def test_listener_events_and_history(self, make: Factory, clock: FakeClock) -> None:
        """Listeners get events with old/new level, reason and resource snapshot; the
        history holds the same, oldest first, limit=N the newest N."""
        m = make("svc", recovery_delay=0.0, history_size=3)
        cpu = Usage(0.1)
        m.register_resource_monitor(R.CPU, cpu, in_thread=False)
        events: list[DegradationEvent] = []
        m.add_listener(events.append)
        await started(m, clock)
        cpu.value = 0.96
        await clock.advance(10)
        ev = events[0]
        assert (ev.old_level, ev.new_level) == (L.NORMAL, L.OFFLINE)
        assert "cpu usage 0.960" in ev.reason
        assert ev.resources == {"cpu": 0.96}
        assert ev.is_degradation
        assert ev.timestamp == clock.time()
        cpu.value = 0.0
        await clock.advance(40)
        assert [e.new_level for e in events] == [
            L.OFFLINE,
            L.EMERGENCY,
            L.MINIMAL,
            L.PARTIAL,
            L.NORMAL,
        ]
        history = m.get_degradation_history()
        assert [h["new_level"] for h in history] == ["minimal", "partial", "normal"]
        assert [h["new_level"] for h in m.get_degradation_history(limit=1)] == ["normal"]
        assert m.get_degradation_history(limit=0) == []
        assert set(history[0]) >= {"old_level", "new_level", "reason", "resources", "timestamp"}
        assert m.get_metrics()["degradation_events"] == 5
        assert m.remove_listener(events.append)
        with pytest.raises(ValidationError):
            m.get_degradation_history(limit=-1)

    async def test_worst_resource_decides(self, make: Factory, clock: FakeClock) -> None:
        """A user DATABASE signal at 0.82 with idle CPU gives MINIMAL."""
        m = make("svc")
        m.register_resource_monitor(R.CPU, Usage(0.1), in_thread=False)
        m.register_resource_monitor(R.DATABASE, Usage(0.82), in_thread=False)
        await started(m, clock)
        assert m.current_level is L.MINIMAL

    async def test_pushed_usage_is_used_next_round(self, make: Factory, clock: FakeClock) -> None:
        """report_resource_usage feeds a signal produced elsewhere into the next round."""
        m = make("svc")
        await started(m, clock)
        m.report_resource_usage("external_api", 0.91)
        await clock.advance(10)
        assert m.current_level is L.EMERGENCY
        assert m.current_resources[R.EXTERNAL_API] == 0.91
        with pytest.raises(ValidationError):
            m.report_resource_usage(R.CPU, 1.5)

    async def test_dependents_scope_gates_only_dependent_features(
        self, make: Factory, clock: FakeClock
    ) -> None:
        """An unhealthy EXTERNAL_API with scope 'dependents' switches off only features
        that depend on it; the service level stays NORMAL."""
        th = ResourceThreshold(R.EXTERNAL_API, scope="dependents")
        m = make("svc", resource_thresholds=[th])
        m.register_feature(Feature("pay", P.HIGH, resource_dependencies=[R.EXTERNAL_API]))
        m.register_feature(Feature("browse", P.HIGH))
        api = Usage(0.0)
        m.register_resource_monitor(R.EXTERNAL_API, api, in_thread=False)
        await started(m, clock)
        api.value = 1.0
        await clock.advance(10)
        assert m.current_level is L.NORMAL
        assert await enabled(m) == {"browse"}
        assert m.get_status()["dependency_levels"] == {"external_api": "offline"}


class TestMonitors:
    @pytest.mark.parametrize("bad", [1.5, -0.1, math.nan, "0.5", None, True])
    async def test_out_of_range_values_are_reported_and_ignored(
        self, make: Factory, clock: FakeClock, bad: Any
    ) -> None:
        """A monitor returning something outside 0..1 is counted and skipped."""
        m = make("svc")
        mon = Usage(bad)
        m.register_resource_monitor(R.CPU, mon, in_thread=False)
        await started(m, clock)
        await clock.advance(10)
        assert mon.calls == 2
        assert m.current_level is L.NORMAL
        assert R.CPU not in m.current_resources
        status = m.get_status()["monitors"]
        assert status["errors"] == {"cpu": 2}
        assert "expected a usage between 0 and 1" in status["last_errors"]["cpu"]

    async def test_raising_monitor_never_stops_the_loop(
        self, make: Factory, clock: FakeClock
    ) -> None:
        """A raising monitor is reported; other monitors still drive the level."""
        m = make("svc")

        def boom() -> float:
            raise OSError("sensor gone")

        m.register_resource_monitor(R.DISK, boom, in_thread=False)
        mem = Usage(0.1)
        m.register_resource_monitor(R.MEMORY, mem, in_thread=False)
        await started(m, clock)
        mem.value = 0.9
        await clock.advance(10)
        assert m.current_level is L.EMERGENCY
        assert m.get_metrics()["monitor_errors"] == 2
        assert "sensor gone" in m.get_status()["monitors"]["last_errors"]["disk"]

    async def test_async_and_threaded_monitors(self, make: Factory, clock: FakeClock) -> None:
        """Async monitors are awaited; sync ones run in a worker thread by default."""
        m = make("svc")
        threads: list[str] = []

        def in_thread() -> float:
            threads.append(threading.current_thread().name)
            return 0.72

        async def network() -> float:
            await asyncio.sleep(0)
            return 0.3

        m.register_resource_monitor(R.CACHE, in_thread)
        m.register_resource_monitor(R.NETWORK, network)
        await m.initialize()
        level = await m.check_resources()
        assert level is L.PARTIAL
        assert m.current_resources[R.NETWORK] == 0.3
        assert threads
        assert threads[0] != threading.current_thread().name

    async def test_hung_async_monitor_times_out(self, make: Factory, clock: FakeClock) -> None:
        """A monitor that never answers is skipped after monitor_timeout (clock time)
        and not started again while it hangs."""
        m = make("svc", monitor_timeout=2.0)
        started_calls = 0

        async def hang() -> float:
            nonlocal started_calls
            started_calls += 1
            await asyncio.Event().wait()
            return 0.0

        m.register_resource_monitor(R.DATABASE, hang)
        m.register_resource_monitor(R.CPU, Usage(0.85), in_thread=False)
        await m.initialize()
        round_task = asyncio.ensure_future(m.check_resources())
        await clock.advance(2.0)
        assert await round_task is L.MINIMAL
        assert "no answer within 2s" in m.get_status()["monitors"]["last_errors"]["database"]
        assert started_calls == 1

    async def test_builtin_monitors_read_cgroup_files(
        self, make: Factory, clock: FakeClock, tmp_path: Path
    ) -> None:
        """With the cgroup root pointed at files the test wrote, memory comes from them."""
        root = tmp_path / "cg"
        root.mkdir()
        (root / "cgroup.controllers").write_text("memory cpu\n")
        (root / "memory.current").write_text(str(920 * 2**20))
        (root / "memory.stat").write_text(f"inactive_file {20 * 2**20}\n")
        (root / "memory.max").write_text(str(1000 * 2**20))
        (root / "cpu.max").write_text("100000 100000\n")
        (root / "cpu.stat").write_text("usage_usec 0\nnr_periods 0\nnr_throttled 0\n")
        proc = tmp_path / "proc"
        proc.write_text("0::/\n")
        m = make(
            "svc", builtin_monitors=True, cgroup_root=root, proc_cgroup=proc, loop_lag_interval=None
        )
        await started(m, clock)
        assert m.current_resources[R.MEMORY] == pytest.approx(0.9)
        assert m.current_level is L.EMERGENCY
        (root / "cpu.stat").write_text("usage_usec 5000000\nnr_periods 100\nnr_throttled 0\n")
        await clock.advance(10)
        assert m.current_resources[R.CPU] == pytest.approx(0.5)
        assert m.get_status()["monitors"]["builtin"] == ["cpu", "memory"]

    async def test_builtin_disk_monitor_runs_in_a_thread(
        self, make: Factory, clock: FakeClock, tmp_path: Path
    ) -> None:
        """With disk_path set, the disk's used share arrives (read off the event loop)."""
        m = make("svc", builtin_monitors=True, loop_lag_interval=None, disk_path=tmp_path)
        await m.initialize()
        for _ in range(500):  # bounded wait for the worker thread's statvfs
            if R.DISK in m.current_resources:
                break
            await asyncio.sleep(0.01)
        assert 0.0 <= m.current_resources[R.DISK] <= 1.0
        assert m.get_status()["monitors"]["builtin"] == ["cpu", "memory", "disk"]

    async def test_user_monitor_replaces_builtin(self, make: Factory, clock: FakeClock) -> None:
        """Registering a CPU monitor takes CPU off the built-in list."""
        m = make("svc", builtin_monitors=True, loop_lag_interval=None)
        m.register_resource_monitor(R.CPU, Usage(0.2), in_thread=False)
        await started(m, clock)
        assert m.get_status()["monitors"]["builtin"] == ["memory"]
        assert m.current_resources[R.CPU] == 0.2
        assert set(m.resource_monitors) == {R.CPU}

    async def test_registering_junk_is_refused(self, make: Factory) -> None:
        """Unknown resource types and non-callables are validation errors."""
        m = make("svc")
        with pytest.raises(ValidationError):
            m.register_resource_monitor("gpu", Usage())
        with pytest.raises(ValidationError):
            m.register_resource_monitor(R.CPU, 0.5)  # type: ignore[arg-type]


class TestFeatures:
    async def test_gating_per_level(self, make: Factory, clock: FakeClock) -> None:
        """PARTIAL drops OPTIONAL; MINIMAL keeps CRITICAL+HIGH; EMERGENCY CRITICAL;
        OFFLINE nothing."""
        m = make("svc")
        features(m)
        expected = {
            L.NORMAL: set(m.features),
            L.PARTIAL: set(m.features) - {"debug_interface"},
            L.MINIMAL: {"core_processing", "advanced_analytics"},
            L.EMERGENCY: {"core_processing"},
            L.OFFLINE: set(),
        }
        for level, names in expected.items():
            await m.force_degradation(level)
            assert await enabled(m) == names
            assert {n for n in m.features if m.feature_enabled(n)} == names

    async def test_unknown_feature_is_false_and_warned_once(
        self, make: Factory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An unknown name returns False and logs one warning however often it is asked."""
        m = make("svc")
        with caplog.at_level(logging.WARNING, logger="backend_services.service_degradation"):
            for _ in range(3):
                assert await m.is_feature_enabled("nope") is False
        warnings = [r for r in caplog.records if r.getMessage() == "unknown_feature"]
        assert len(warnings) == 1
        assert m.get_metrics()["unknown_feature_lookups"] == 3

    async def test_operator_switch(self, make: Factory) -> None:
        """set_feature_enabled(False) turns a feature off at every level."""
        m = make("svc")
        features(m)
        m.set_feature_enabled("core_processing", False)
        assert await m.is_feature_enabled("core_processing") is False
        m.set_feature_enabled("core_processing", True)
        assert await m.is_feature_enabled("core_processing") is True
        with pytest.raises(ValidationError):
            m.set_feature_enabled("nope", True)
        assert m.unregister_feature("core_processing")
        assert not m.unregister_feature("core_processing")

    async def test_execute_with_fallback(self, make: Factory) -> None:
        """Enabled: the function; disabled: the fallback with the same args; a failing
        function falls back too; no fallback when disabled sheds; unknown is invalid."""
        m = make("svc")
        calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

        async def full(*a: Any, **k: Any) -> str:
            calls.append(("full", a, k))
            return "full"

        def basic(*a: Any, **k: Any) -> str:
            calls.append(("basic", a, k))
            return "basic"

        m.register_feature(Feature("analytics", P.HIGH, fallback_function=basic))
        m.register_feature(Feature("extras", P.LOW))
        assert await m.execute_with_fallback("analytics", full, 1, x=2) == "full"
        await m.force_degradation(L.EMERGENCY, duration=30)
        assert await m.execute_with_fallback("analytics", full, 1, x=2) == "basic"
        assert calls[-1] == ("basic", (1,), {"x": 2})
        with pytest.raises(RequestShedError, match=r"'extras'.*'emergency'") as err:
            await m.execute_with_fallback("extras", full)
        assert err.value.retry_after == pytest.approx(30.0)
        await m.clear_forced_degradation()

        def broken(*a: Any) -> str:
            raise RuntimeError("bug")

        assert await m.execute_with_fallback("analytics", broken, 5) == "basic"
        with pytest.raises(RuntimeError):
            await m.execute_with_fallback("extras", broken)
        with pytest.raises(ValidationError):
            await m.execute_with_fallback("nope", full)


class TestOverride:
    async def test_force_with_duration_expires_on_the_clock(
        self, make: Factory, clock: FakeClock
    ) -> None:
        """A forced level with duration ends when the fake clock passes it."""
        m = make("svc")
        m.register_resource_monitor(R.CPU, Usage(0.1), in_thread=False)
        recovered: list[DegradationLevel] = []
        m.add_recovery_callback(recovered.append)
        await started(m, clock)
        await m.force_degradation(L.EMERGENCY, "drill", duration=25)
        assert m.current_level is L.EMERGENCY
        assert m.get_status()["override"]["remaining"] == 25
        await clock.advance(24.9)
        assert m.current_level is L.EMERGENCY
        await clock.advance(0.2)
        assert m.current_level is L.NORMAL
        assert recovered == [L.NORMAL]
        assert m.get_degradation_history()[-1]["source"] == "expiry"

    async def test_clear_hands_back_to_resources(self, make: Factory, clock: FakeClock) -> None:
        """clear_forced_degradation returns to the level the samples decide."""
        m = make("svc")
        m.register_resource_monitor(R.CPU, Usage(0.82), in_thread=False)
        await started(m, clock)
        await m.force_degradation("offline", "maintenance")
        assert m.forced
        assert await m.clear_forced_degradation() is True
        assert m.current_level is L.MINIMAL
        assert await m.clear_forced_degradation() is False

    async def test_invalid_force(self, make: Factory) -> None:
        """Unknown levels and non-positive durations are refused."""
        m = make("svc")
        with pytest.raises(ValidationError):
            await m.force_degradation("panic")
        with pytest.raises(ValidationError):
            await m.force_degradation(L.MINIMAL, duration=0)


class TestAdmission:
    async def test_admit_sheds_by_priority_with_retry_hint(
        self, make: Factory, clock: FakeClock
    ) -> None:
        """Under MINIMAL only CRITICAL/HIGH get in; shed requests carry retry_after."""
        m = make("svc")
        cpu = Usage(0.85)
        m.register_resource_monitor(R.CPU, cpu, in_thread=False)
        await started(m, clock)
        m.admit(P.CRITICAL)
        m.admit(P.HIGH)
        with pytest.raises(RequestShedError, match=r"'medium'.*admits only critical, high") as e:
            m.admit(P.MEDIUM)
        assert e.value.retry_after == pytest.approx(70.0)
        cpu.value = 0.1
        await clock.advance(10)
        with pytest.raises(RequestShedError) as e:
            m.admit("low")  # type: ignore[arg-type]
        assert e.value.retry_after == pytest.approx(60.0)
        assert m.get_metrics()["shed_requests"] == 2
        assert m.admits(P.HIGH)
        assert not m.admits(P.LOW)

    async def test_offline_admits_nothing(self, make: Factory) -> None:
        """OFFLINE sheds even CRITICAL requests (health checks bypass admission)."""
        m = make("svc")
        await m.force_degradation(L.OFFLINE)
        with pytest.raises(RequestShedError, match="health checks"):
            m.admit(P.CRITICAL)

    async def test_adaptive_concurrency_limit(self, make: Factory, clock: FakeClock) -> None:
        """With an AIMD limit, requests over the limit are shed; slow ones shrink it."""
        m = make("svc", concurrency_limit=AimdLimit(initial_limit=2, latency_threshold=1.0))
        first, second = m.admission(P.HIGH), m.admission(P.HIGH)
        async with first, second:
            with pytest.raises(RequestShedError, match="concurrency limit 2"), m.admission(P.HIGH):
                pass
            await clock.advance(5.0)
        assert m.get_metrics()["concurrency_limit"] == 1
        assert m.get_metrics()["inflight"] == 0


class TestLifecycle:
    async def test_async_with_and_no_tasks_left(self, clock: FakeClock) -> None:
        """async with starts and stops the manager; no task of it survives shutdown."""
        before = {t.get_name() for t in asyncio.all_tasks()}
        async with ServiceDegradationManager(
            "svc", clock=clock, redis_url=None, loop_lag_interval=0.5
        ) as m:
            await clock.advance(1.0)
            assert m.get_status()["running"]
            await m.force_degradation(L.PARTIAL, duration=100)
        after = {t.get_name() for t in asyncio.all_tasks() if not t.done()}
        assert after <= before | {asyncio.current_task().get_name()}  # type: ignore[union-attr]
        with pytest.raises(LifecycleError):
            await m.force_degradation(L.MINIMAL)
        with pytest.raises(LifecycleError):
            await m.initialize()

    async def test_status_is_plain_data(self, make: Factory, clock: FakeClock) -> None:
        """get_status is JSON-serialisable and names levels by value."""
        m = make("svc")
        features(m)
        await started(m, clock)
        status = m.get_status()
        json.dumps(status)
        assert status["current_level"] == "normal"
        assert status["features"]["debug_interface"]["priority"] == "optional"
        assert status["allowed_priorities"] == ["critical", "high", "medium", "low", "optional"]


class TestProperties:
    @given(
        st.lists(
            st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.integers(1, 12)),
            min_size=1,
            max_size=15,
        )
    )
    def test_enabled_features_match_level_and_recovery_is_stepwise(
        self, script: list[tuple[float, float, int]]
    ) -> None:
        """Driven through the monitoring loop on a fake clock: after every round the
        enabled features are exactly those the current level allows, and the level never
        improves by more than one step per recovery_delay."""

        async def scenario() -> None:
            clock = FakeClock()
            cpu, mem = Usage(0.0), Usage(0.0)
            m = ServiceDegradationManager(
                "p", None, 5.0, 20.0, clock=clock, redis_url=None, builtin_monitors=False
            )
            m.register_resource_monitor(R.CPU, cpu, in_thread=False)
            m.register_resource_monitor(R.MEMORY, mem, in_thread=False)
            features(m)
            improvements: list[tuple[float, int]] = []
            m.add_recovery_callback(lambda lv: improvements.append((clock.monotonic(), lv.rank)))
            await m.initialize()
            await clock.advance(0)
            try:
                for c, mm, rounds in script:
                    cpu.value, mem.value = c, mm
                    for _ in range(rounds):
                        before = m.current_level
                        await clock.advance(5.0)
                        assert m.current_level.rank >= before.rank - 1
                        allowed = ALLOWED_PRIORITIES[m.current_level]
                        expected = {n for n, f in m.features.items() if f.priority in allowed}
                        assert await enabled(m) == expected
                times = [t for t, _ in improvements]
                assert all(b - a >= 20.0 for a, b in itertools.pairwise(times))
            finally:
                await m.shutdown()

        asyncio.run(scenario())
