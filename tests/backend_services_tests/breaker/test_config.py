"""CircuitBreakerConfig: validation on creation and defaults from settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from backend_services.breaker.config import CircuitBreakerConfig, WindowType
from backend_services.errors import ValidationError
from backend_services.settings import Settings, load_settings

EMPTY = Settings()


class TestDefaults:
    def test_api_defaults(self) -> None:
        """Without settings the defaults are those of API.md."""
        c = CircuitBreakerConfig(settings=EMPTY)
        assert (c.failure_threshold, c.timeout, c.half_open_max_calls, c.success_threshold) == (
            5,
            60.0,
            3,
            2,
        )
        assert (c.request_timeout, c.slow_call_threshold, c.slow_call_rate_threshold) == (
            30.0,
            5.0,
            0.5,
        )
        assert (c.minimum_throughput, c.failure_rate_threshold) == (10, 0.5)
        assert c.window_type is WindowType.COUNT
        assert c.window_size == 100

    def test_spec_example(self) -> None:
        """The spec's example builds and keeps its values."""
        c = CircuitBreakerConfig(failure_threshold=5, timeout=60.0, request_timeout=30.0)
        assert (c.failure_threshold, c.timeout, c.request_timeout) == (5, 60.0, 30.0)

    def test_equal_configs_compare_equal(self) -> None:
        """Two configs with the same values are equal (the registry relies on it)."""
        assert CircuitBreakerConfig(timeout=3.0, settings=EMPTY) == CircuitBreakerConfig(
            timeout=3.0, settings=EMPTY
        )
        assert CircuitBreakerConfig(timeout=3.0) != CircuitBreakerConfig(timeout=4.0)

    def test_replace_keeps_validation(self) -> None:
        """dataclasses.replace goes through the same validation."""
        c = CircuitBreakerConfig(settings=EMPTY)
        assert dataclasses.replace(c, timeout=2.0).timeout == 2.0
        with pytest.raises(ValidationError):
            dataclasses.replace(c, timeout=-1.0)

    def test_off_switches(self) -> None:
        """request_timeout and slow_call_threshold accept None (off)."""
        c = CircuitBreakerConfig(request_timeout=None, slow_call_threshold=None)
        assert c.request_timeout is None
        assert c.slow_call_threshold is None
        assert c.effective_trial_timeout == c.timeout

    def test_to_dict_is_plain(self) -> None:
        """to_dict names exception classes and callables."""
        d = CircuitBreakerConfig(ignore_exceptions=(KeyError,), settings=EMPTY).to_dict()
        assert d["ignore_exceptions"] == ["KeyError"]
        assert d["window_type"] == "count"
        json.dumps(d)


class TestValidation:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("failure_threshold", -1),
            ("failure_threshold", 2.5),
            ("failure_threshold", True),
            ("timeout", 0),
            ("timeout", -5.0),
            ("timeout", float("nan")),
            ("timeout", "60"),
            ("half_open_max_calls", 0),
            ("success_threshold", 0),
            ("request_timeout", 0.0),
            ("slow_call_threshold", -1.0),
            ("slow_call_rate_threshold", 1.5),
            ("slow_call_rate_threshold", 0.0),
            ("failure_rate_threshold", -0.1),
            ("minimum_throughput", 0),
            ("window_size", 0),
            ("window_duration", 0.0),
            ("window_buckets", 0),
            ("window_type", "sliding"),
            ("timeout_multiplier", 0.5),
            ("timeout_jitter", 1.5),
            ("max_timeout", 0),
            ("trial_timeout", -2),
            ("count_cancellation_as_failure", "yes"),
            ("record_exceptions", "ValueError"),
            ("ignore_exceptions", (int,)),
            ("is_failure", 3),
            ("failure_on_result", "no"),
        ],
    )
    def test_bad_value_names_field_and_value(self, field: str, value: Any) -> None:
        """A bad value raises ValidationError (a ValueError) naming the field and value."""
        with pytest.raises(ValidationError) as info:
            CircuitBreakerConfig(settings=EMPTY, **{field: value})
        assert info.value.field == field
        assert isinstance(info.value, ValueError)
        assert field in str(info.value)
        assert "expected" in str(info.value)

    def test_max_timeout_below_timeout(self) -> None:
        """A cap below the base open duration is an error."""
        with pytest.raises(ValidationError, match="max_timeout"):
            CircuitBreakerConfig(timeout=10.0, max_timeout=5.0)

    def test_window_type_accepts_strings(self) -> None:
        """window_type takes "time" / "count"."""
        assert CircuitBreakerConfig(window_type="time").window_type is WindowType.TIME

    def test_single_exception_class(self) -> None:
        """A single class is accepted where a tuple is expected."""
        assert CircuitBreakerConfig(ignore_exceptions=KeyError).ignore_exceptions == (KeyError,)


class TestSettingsPrecedence:
    def _file(self, tmp_path: Path, section: dict[str, Any]) -> Path:
        path = tmp_path / "settings.json"
        path.write_text(json.dumps({"circuit_breaker": section}))
        return path

    def test_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """DTESN_CB_* variables set the defaults."""
        monkeypatch.setenv("DTESN_CB_FAILURE_THRESHOLD", "7")
        monkeypatch.setenv("DTESN_CB_TIMEOUT", "12")
        monkeypatch.setenv("DTESN_CB_REQUEST_TIMEOUT", "3.5")
        c = CircuitBreakerConfig()
        assert (c.failure_threshold, c.timeout, c.request_timeout) == (7, 12.0, 3.5)

    def test_file_keys(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The spec's JSON section (default_failure_threshold, default_timeout, ...) applies."""
        path = self._file(
            tmp_path,
            {"default_failure_threshold": 4, "default_timeout": 20, "slow_call_threshold": 2.0},
        )
        monkeypatch.setenv("DTESN_CONFIG_FILE", str(path))
        c = CircuitBreakerConfig()
        assert (c.failure_threshold, c.timeout, c.slow_call_threshold) == (4, 20.0, 2.0)

    def test_argument_beats_env_beats_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Explicit argument > environment variable > file > built-in default."""
        path = self._file(tmp_path, {"default_failure_threshold": 4, "default_timeout": 20})
        monkeypatch.setenv("DTESN_CONFIG_FILE", str(path))
        monkeypatch.setenv("DTESN_CB_TIMEOUT", "30")
        c = CircuitBreakerConfig(failure_threshold=9)
        assert c.failure_threshold == 9  # argument over file
        assert c.timeout == 30.0  # environment over file
        assert c.request_timeout == 30.0  # built-in default
        assert CircuitBreakerConfig().failure_threshold == 4  # file over default

    def test_explicit_none_beats_settings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """request_timeout=None passed explicitly is not replaced by the environment."""
        monkeypatch.setenv("DTESN_CB_REQUEST_TIMEOUT", "3")
        assert CircuitBreakerConfig(request_timeout=None).request_timeout is None

    def test_explicit_settings_object(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """settings= is used instead of reading the environment."""
        monkeypatch.setenv("DTESN_CB_TIMEOUT", "30")
        assert CircuitBreakerConfig(settings=EMPTY).timeout == 60.0
        loaded = load_settings(environ={"DTESN_CB_TIMEOUT": "8"})
        assert CircuitBreakerConfig.from_settings(loaded, failure_threshold=2).timeout == 8.0

    def test_malformed_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A malformed variable is a clear error naming it."""
        monkeypatch.setenv("DTESN_CB_FAILURE_THRESHOLD", "many")
        with pytest.raises(ValidationError, match="DTESN_CB_FAILURE_THRESHOLD"):
            CircuitBreakerConfig()
