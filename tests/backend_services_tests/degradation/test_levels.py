"""Levels, priorities, resource types and thresholds."""

from __future__ import annotations

import math

import pytest

from backend_services.degradation.levels import (
    DEFAULT_THRESHOLDS,
    DegradationLevel,
    FeaturePriority,
    ResourceThreshold,
    ResourceType,
    build_thresholds,
    coerce_level,
)
from backend_services.errors import SettingsError, ValidationError

L = DegradationLevel


class TestEnums:
    def test_levels_are_ordered_by_severity_not_alphabetically(self) -> None:
        """NORMAL < PARTIAL < MINIMAL < EMERGENCY < OFFLINE, and sorting follows it."""
        assert L.NORMAL < L.PARTIAL < L.MINIMAL < L.EMERGENCY < L.OFFLINE
        assert sorted([L.OFFLINE, L.MINIMAL, L.NORMAL]) == [L.NORMAL, L.MINIMAL, L.OFFLINE]
        assert max(L.PARTIAL, L.EMERGENCY) is L.EMERGENCY

    def test_values_are_lower_case_names(self) -> None:
        """Every enum value is the member name in lower case."""
        for enum in (DegradationLevel, FeaturePriority, ResourceType):
            for member in enum:
                assert member.value == member.name.lower()

    def test_priorities_are_ordered_most_important_first(self) -> None:
        """CRITICAL < HIGH < MEDIUM < LOW < OPTIONAL (the original 1..5 numbering)."""
        p = FeaturePriority
        assert p.CRITICAL < p.HIGH < p.MEDIUM < p.LOW < p.OPTIONAL
        assert [m.rank for m in p] == [0, 1, 2, 3, 4]

    def test_levels_do_not_compare_with_other_types(self) -> None:
        """Comparing a level with a priority is a TypeError, not a silent answer."""
        with pytest.raises(TypeError):
            _ = L.NORMAL < FeaturePriority.HIGH  # type: ignore[operator]

    def test_better_and_worse_step_one_level(self) -> None:
        """better/worse move one step and stop at the ends."""
        assert L.MINIMAL.better is L.PARTIAL
        assert L.MINIMAL.worse is L.EMERGENCY
        assert L.NORMAL.better is L.NORMAL
        assert L.OFFLINE.worse is L.OFFLINE

    def test_coerce_accepts_names_and_rejects_junk(self) -> None:
        """Strings map case-insensitively; anything else names the field and choices."""
        assert coerce_level("Emergency") is L.EMERGENCY
        with pytest.raises(ValidationError, match=r"level='panic'.*normal, partial"):
            coerce_level("panic")


class TestThresholds:
    def test_spec_defaults(self) -> None:
        """CPU 0.70/0.80/0.90/0.95 and memory 0.75/0.85/0.90/0.95 as in the spec."""
        cpu = DEFAULT_THRESHOLDS[ResourceType.CPU]
        mem = DEFAULT_THRESHOLDS[ResourceType.MEMORY]
        assert (cpu.partial, cpu.minimal, cpu.emergency, cpu.offline) == (0.7, 0.8, 0.9, 0.95)
        assert (mem.partial, mem.minimal, mem.emergency, mem.offline) == (0.75, 0.85, 0.9, 0.95)

    @pytest.mark.parametrize(
        ("usage", "level"),
        [
            (0.0, L.NORMAL),
            (0.699, L.NORMAL),
            (0.70, L.PARTIAL),
            (0.79, L.PARTIAL),
            (0.80, L.MINIMAL),
            (0.90, L.EMERGENCY),
            (0.95, L.OFFLINE),
            (1.0, L.OFFLINE),
        ],
    )
    def test_level_for_uses_entry_thresholds(self, usage: float, level: DegradationLevel) -> None:
        """The spec's table: <0.70 normal, 0.70 partial, 0.80 minimal, 0.90 emergency,
        0.95 offline."""
        assert ResourceThreshold(ResourceType.CPU).level_for(usage) is level

    def test_exit_is_entry_minus_hysteresis(self) -> None:
        """A level is left below entry - hysteresis; NORMAL is never left."""
        th = ResourceThreshold(ResourceType.CPU, hysteresis=0.1)
        assert th.exit(L.MINIMAL) == pytest.approx(0.7)
        assert th.exit(L.NORMAL) == math.inf

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"partial": 0.8, "minimal": 0.8}, "minimal"),
            ({"minimal": 0.95}, "emergency"),
            ({"offline": 1.5}, "offline"),
            ({"partial": 0.0}, "partial"),
            ({"partial": "high"}, "partial"),
            ({"hysteresis": 0.7}, "hysteresis"),
            ({"scope": "everything"}, "scope"),
        ],
    )
    def test_invalid_thresholds_name_field_and_value(
        self, kwargs: dict[str, object], field: str
    ) -> None:
        """Non-increasing, out-of-range or mistyped values raise naming the field."""
        with pytest.raises(ValidationError) as err:
            ResourceThreshold(ResourceType.CPU, **kwargs)  # type: ignore[arg-type]
        assert err.value.field == f"thresholds.cpu.{field}"

    def test_inf_means_never_entered(self) -> None:
        """offline=inf keeps a resource from ever forcing OFFLINE."""
        th = ResourceThreshold("disk", offline=math.inf)
        assert th.level_for(1.0) is L.EMERGENCY
        assert th.resource_type is ResourceType.DISK


class TestBuildThresholds:
    def test_settings_then_overrides(self) -> None:
        """Settings values replace defaults per level; constructor overrides win."""
        out = build_thresholds(
            {"cpu": {"minimal": 0.85}, "memory": {"partial": 0.6}},
            {ResourceType.CPU: {"emergency": 0.93}},
        )
        cpu, mem = out[ResourceType.CPU], out[ResourceType.MEMORY]
        assert (cpu.partial, cpu.minimal, cpu.emergency) == (0.7, 0.85, 0.93)
        assert mem.partial == 0.6

    def test_resource_threshold_objects_replace_whole_entry(self) -> None:
        """A ResourceThreshold argument replaces that resource's entry outright."""
        th = ResourceThreshold(ResourceType.DISK, 0.5, 0.6, 0.7, 0.8)
        assert build_thresholds(None, [th])[ResourceType.DISK] is th

    def test_env_minimal_above_emergency_is_a_clear_error(self) -> None:
        """A MINIMAL entry above the EMERGENCY default is refused with the level named."""
        with pytest.raises(ValidationError, match=r"thresholds\.cpu\.emergency=0\.9.*increase"):
            build_thresholds({"cpu": {"minimal": 0.95}})

    def test_unknown_resource_in_settings(self) -> None:
        """An unknown resource name in the settings file is a SettingsError."""
        with pytest.raises(SettingsError, match="gpu"):
            build_thresholds({"gpu": {"partial": 0.5}})

    def test_mismatched_override_key(self) -> None:
        """A threshold filed under another resource's key is refused."""
        with pytest.raises(ValidationError, match="a threshold for cpu"):
            build_thresholds(None, {"cpu": ResourceThreshold(ResourceType.MEMORY)})
