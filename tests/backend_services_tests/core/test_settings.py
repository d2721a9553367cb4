"""Settings: the spec's environment variables and settings file, validated in one place."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from backend_services import settings as settings_module
from backend_services.errors import SettingsError
from backend_services.settings import (
    UNSET,
    CircuitBreakerSettings,
    DegradationSettings,
    DiscoverySettings,
    Settings,
    load_settings,
    pick,
    resolve_redis_url,
)

# The spec's "Configuration Reference", verbatim.
SPEC_ENV = {
    "DTESN_SERVICE_REDIS_URL": "redis://localhost:6379",
    "DTESN_SERVICE_HEALTH_CHECK_INTERVAL": "30",
    "DTESN_SERVICE_MAX_FAILURES": "3",
    "DTESN_CB_FAILURE_THRESHOLD": "5",
    "DTESN_CB_TIMEOUT": "60",
    "DTESN_CB_REQUEST_TIMEOUT": "30",
    "DTESN_DEGRADATION_CHECK_INTERVAL": "30",
    "DTESN_DEGRADATION_RECOVERY_DELAY": "60",
    "DTESN_DEGRADATION_CPU_THRESHOLD": "0.8",
    "DTESN_DEGRADATION_MEMORY_THRESHOLD": "0.85",
}

SPEC_JSON = """{
  "service_discovery": {
    "redis_url": "redis://localhost:6379",
    "health_check_interval": 30,
    "service_ttl": 300
  },
  "circuit_breaker": {
    "default_failure_threshold": 5,
    "default_timeout": 60,
    "slow_call_threshold": 5.0
  },
  "degradation": {
    "check_interval": 30,
    "recovery_delay": 60,
    "thresholds": {
      "cpu": {"partial": 0.7, "minimal": 0.8, "emergency": 0.9},
      "memory": {"partial": 0.75, "minimal": 0.85, "emergency": 0.9}
    }
  }
}
"""

SPEC_FILE_SETTINGS = {
    "redis_url": "redis://localhost:6379",
    "discovery": DiscoverySettings(health_check_interval=30.0, service_ttl=300.0),
    "circuit_breaker": CircuitBreakerSettings(
        failure_threshold=5, timeout=60.0, slow_call_threshold=5.0
    ),
    "degradation": DegradationSettings(
        check_interval=30.0,
        recovery_delay=60.0,
        thresholds={
            "cpu": {"partial": 0.7, "minimal": 0.8, "emergency": 0.9},
            "memory": {"partial": 0.75, "minimal": 0.85, "emergency": 0.9},
        },
    ),
}

# How each variable is read back from Settings, and what kind of value it takes.
READ: dict[str, tuple[Callable[[Settings], Any], str]] = {
    "DTESN_SERVICE_REDIS_URL": (lambda s: s.redis_url, "url"),
    "DTESN_SERVICE_HEALTH_CHECK_INTERVAL": (lambda s: s.discovery.health_check_interval, "pos"),
    "DTESN_SERVICE_HEALTH_CHECK_TIMEOUT": (lambda s: s.discovery.health_check_timeout, "pos"),
    "DTESN_SERVICE_MAX_FAILURES": (lambda s: s.discovery.max_consecutive_failures, "count"),
    "DTESN_SERVICE_TTL": (lambda s: s.discovery.service_ttl, "pos"),
    "DTESN_CB_FAILURE_THRESHOLD": (lambda s: s.circuit_breaker.failure_threshold, "count"),
    "DTESN_CB_TIMEOUT": (lambda s: s.circuit_breaker.timeout, "pos"),
    "DTESN_CB_REQUEST_TIMEOUT": (lambda s: s.circuit_breaker.request_timeout, "pos"),
    "DTESN_CB_SLOW_CALL_THRESHOLD": (lambda s: s.circuit_breaker.slow_call_threshold, "pos"),
    "DTESN_DEGRADATION_CHECK_INTERVAL": (lambda s: s.degradation.check_interval, "pos"),
    "DTESN_DEGRADATION_RECOVERY_DELAY": (lambda s: s.degradation.recovery_delay, "nonneg"),
    "DTESN_DEGRADATION_CPU_THRESHOLD": (
        lambda s: s.degradation.thresholds.get("cpu", {}).get("minimal"),
        "fraction",
    ),
    "DTESN_DEGRADATION_MEMORY_THRESHOLD": (
        lambda s: s.degradation.thresholds.get("memory", {}).get("minimal"),
        "fraction",
    ),
}

# A valid environment value and a different valid file value, with what each parses to.
SAMPLES: dict[str, tuple[tuple[str, Any], tuple[Any, Any]]] = {
    "url": (("redis://env-host:6380/1", "redis://env-host:6380/1"), ("rediss://file:1", None)),
    "pos": (("12.5", 12.5), (7, 7.0)),
    "nonneg": (("0", 0.0), (45, 45.0)),
    "count": (("4", 4), (9, 9)),
    "fraction": (("0.66", 0.66), (0.5, 0.5)),
}
BAD_VALUES: dict[str, list[str]] = {
    "url": ["http://host:6379", "localhost:6379", "redis://", "ftp://x"],
    "pos": ["abc", "-1", "0", "nan", "inf", "-inf", "1e400", "true"],
    "nonneg": ["abc", "-0.5", "nan", "inf"],
    "count": ["2.5", "0", "-3", "three", "nan", "1e3"],
    "fraction": ["1.5", "0", "-0.1", "nan", "inf", "high"],
}


def _table() -> dict[str, str]:
    """The module docstring's table: environment variable -> dotted settings-file key."""
    rows = re.findall(r"``(DTESN_\w+)``\s+``([\w.]+)``", settings_module.__doc__ or "")
    return dict(rows)


def _file_doc(dotted: str, value: Any) -> dict[str, Any]:
    """A settings-file document setting one dotted key."""
    doc: dict[str, Any] = {}
    node = doc
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return doc


def _write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _file_value(kind: str, var: str) -> tuple[Any, Any]:
    raw, parsed = SAMPLES[kind][1]
    if kind == "url":
        return raw, raw
    return raw, parsed


# --- the table and the spec ----------------------------------------------------------


def test_docstring_table_lists_every_spec_variable_and_every_read_variable() -> None:
    """The docstring's table covers the spec's variables and exactly those this test reads."""
    table = _table()
    assert set(SPEC_ENV) <= set(table)
    assert set(table) == set(READ)


def test_empty_environment_and_no_file_say_nothing() -> None:
    """With nothing set, every setting is None (components use their built-in defaults)."""
    assert load_settings(environ={}) == Settings()


def test_spec_environment_example_parses() -> None:
    """The spec's environment block, verbatim, gives the values it shows."""
    s = load_settings(environ=SPEC_ENV)
    assert s.redis_url == "redis://localhost:6379"
    assert s.discovery == DiscoverySettings(health_check_interval=30.0, max_consecutive_failures=3)
    assert s.circuit_breaker == CircuitBreakerSettings(
        failure_threshold=5, timeout=60.0, request_timeout=30.0
    )
    assert s.degradation.check_interval == 30.0
    assert s.degradation.recovery_delay == 60.0
    assert s.degradation.thresholds == {"cpu": {"minimal": 0.8}, "memory": {"minimal": 0.85}}
    assert isinstance(s.circuit_breaker.failure_threshold, int)


def test_spec_json_file_by_argument(tmp_path: Path) -> None:
    """The spec's JSON example, written verbatim and passed explicitly, loads as shown."""
    path = tmp_path / "settings.json"
    path.write_text(SPEC_JSON)
    s = load_settings(path, environ={})
    for name, expected in SPEC_FILE_SETTINGS.items():
        assert getattr(s, name) == expected, name
    assert s.config_file == str(path)


def test_spec_json_file_by_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DTESN_CONFIG_FILE names the same file; the real process environment is read."""
    path = tmp_path / "settings.json"
    path.write_text(SPEC_JSON)
    monkeypatch.setenv("DTESN_CONFIG_FILE", str(path))
    s = load_settings()
    for name, expected in SPEC_FILE_SETTINGS.items():
        assert getattr(s, name) == expected, name
    assert s.config_file == str(path)


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".YAML"])
def test_spec_example_as_yaml(tmp_path: Path, suffix: str) -> None:
    """The same document written as YAML loads to the same settings."""
    path = tmp_path / f"settings{suffix}"
    path.write_text(yaml.safe_dump(json.loads(SPEC_JSON)))
    s = load_settings(path, environ={})
    for name, expected in SPEC_FILE_SETTINGS.items():
        assert getattr(s, name) == expected, name


def test_yaml_empty_sections_count_as_absent(tmp_path: Path) -> None:
    """A YAML section with nothing under it (null) is no error and sets nothing."""
    path = tmp_path / "settings.yaml"
    path.write_text("service_discovery:\ncircuit_breaker:\n  default_timeout: 9\ndegradation:\n")
    s = load_settings(path, environ={})
    assert s.circuit_breaker.timeout == 9.0
    assert s.discovery == DiscoverySettings()
    assert s.degradation == DegradationSettings()


def test_empty_file_is_empty_settings(tmp_path: Path) -> None:
    """An empty YAML file sets nothing."""
    path = tmp_path / "settings.yaml"
    path.write_text("")
    assert load_settings(path, environ={}) == Settings(config_file=str(path))


def test_argument_file_wins_over_dtesn_config_file(tmp_path: Path) -> None:
    """An explicitly passed file is read instead of the one DTESN_CONFIG_FILE names."""
    named = _write(tmp_path / "a.json", {"circuit_breaker": {"default_timeout": 1}})
    passed = _write(tmp_path / "b.json", {"circuit_breaker": {"default_timeout": 2}})
    s = load_settings(passed, environ={"DTESN_CONFIG_FILE": str(named)})
    assert s.circuit_breaker.timeout == 2.0


# --- every variable, from the environment and from the file --------------------------


@pytest.mark.parametrize("var", sorted(READ))
def test_each_variable_parses_from_the_environment(var: str) -> None:
    """Each variable is read from the environment and parsed to its type."""
    read, kind = READ[var]
    raw, parsed = SAMPLES[kind][0]
    assert read(load_settings(environ={var: raw})) == parsed
    assert read(load_settings(environ={var: f"  {raw} "})) == parsed  # padding ignored


@pytest.mark.parametrize("var", sorted(READ))
def test_each_variable_has_its_file_key(var: str, tmp_path: Path) -> None:
    """The settings-file key the table names for each variable sets the same setting."""
    read, kind = READ[var]
    raw, parsed = _file_value(kind, var)
    path = _write(tmp_path / "s.json", _file_doc(_table()[var], raw))
    assert read(load_settings(path, environ={})) == parsed


@pytest.mark.parametrize("var", sorted(READ))
def test_environment_wins_over_the_file(var: str, tmp_path: Path) -> None:
    """When both say something, the environment variable wins; blank env defers to file."""
    read, kind = READ[var]
    env_raw, env_parsed = SAMPLES[kind][0]
    file_raw, file_parsed = _file_value(kind, var)
    path = _write(tmp_path / "s.json", _file_doc(_table()[var], file_raw))
    assert read(load_settings(path, environ={var: env_raw})) == env_parsed
    assert read(load_settings(path, environ={var: "   "})) == file_parsed


def test_threshold_variables_keep_the_files_other_levels(tmp_path: Path) -> None:
    """DTESN_DEGRADATION_CPU_THRESHOLD replaces only the minimal level of the file's cpu."""
    path = tmp_path / "settings.json"
    path.write_text(SPEC_JSON)
    s = load_settings(path, environ={"DTESN_DEGRADATION_CPU_THRESHOLD": "0.82"})
    assert s.degradation.thresholds["cpu"] == {"partial": 0.7, "minimal": 0.82, "emergency": 0.9}
    assert s.degradation.thresholds["memory"]["minimal"] == 0.85


def test_integer_settings_accept_whole_floats_from_files(tmp_path: Path) -> None:
    """A count written 3.0 in a file is 3; written 3.5 it is an error."""
    ok = _write(tmp_path / "ok.json", {"service_discovery": {"max_consecutive_failures": 3.0}})
    assert load_settings(ok, environ={}).discovery.max_consecutive_failures == 3
    bad = _write(tmp_path / "bad.json", {"service_discovery": {"max_consecutive_failures": 3.5}})
    with pytest.raises(SettingsError, match=r"max_consecutive_failures=3\.5"):
        load_settings(bad, environ={})


def test_redis_url_schemes_are_case_insensitive_and_cover_topologies() -> None:
    """Every scheme the store understands is accepted, in any letter case."""
    for url in (
        "REDIS://h:1",
        "rediss://h:1/2",
        "unix:///tmp/redis.sock",
        "redis+cluster://a:1,b:2",
        "redis+sentinel://s:26379/mymaster",
    ):
        assert load_settings(environ={"DTESN_SERVICE_REDIS_URL": url}).redis_url == url


@given(st.floats(min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=False))
def test_any_finite_positive_number_round_trips_for_intervals(value: float) -> None:
    """Any finite positive float, written as Python writes it, parses back exactly."""
    env = {var: repr(value) for var, (_, kind) in READ.items() if kind == "pos"}
    s = load_settings(environ=env)
    for var in env:
        assert READ[var][0](s) == value, var


@given(st.integers(min_value=1, max_value=10**12))
def test_any_positive_integer_round_trips_for_counts(value: int) -> None:
    """Any positive integer parses back exactly for the count variables."""
    env = {var: str(value) for var, (_, kind) in READ.items() if kind == "count"}
    s = load_settings(environ=env)
    for var in env:
        assert READ[var][0](s) == value, var


# --- malformed values ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "raw"),
    [(var, raw) for var, (_, kind) in sorted(READ.items()) for raw in BAD_VALUES[kind]],
)
def test_malformed_environment_value_names_variable_and_value(var: str, raw: str) -> None:
    """A malformed value is a SettingsError whose message names the variable and value."""
    with pytest.raises(SettingsError) as info:
        load_settings(environ={var: raw})
    message = str(info.value)
    assert message.startswith(f"{var}={raw!r}: expected ")
    assert info.value.field == var
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("doc", "key", "value"),
    [
        ({"service_discovery": {"health_check_interval": "soon"}}, "health_check_interval", "soon"),
        ({"service_discovery": {"service_ttl": -5}}, "service_ttl", "-5"),
        ({"service_discovery": {"health_check_timeout": True}}, "health_check_timeout", "True"),
        ({"circuit_breaker": {"default_timeout": 0}}, "default_timeout", "0"),
        ({"circuit_breaker": {"default_failure_threshold": [5]}}, "default_failure_threshold", ""),
        ({"circuit_breaker": {"request_timeout": 10**400}}, "request_timeout", "1000"),
        ({"degradation": {"check_interval": {"s": 1}}}, "check_interval", "{'s': 1}"),
        ({"degradation": {"thresholds": {"cpu": {"minimal": 1.2}}}}, "cpu.minimal", "1.2"),
        ({"degradation": {"thresholds": {"cpu": {"severe": 0.9}}}}, "cpu.severe", "0.9"),
        ({"degradation": {"thresholds": {"cpu": 0.8}}}, "thresholds.cpu", "0.8"),
        ({"degradation": {"thresholds": [0.8]}}, "thresholds", "[0.8]"),
        ({"service_discovery": {"redis_url": "http://h:1"}}, "redis_url", "'http://h:1'"),
        ({"service_discovery": {"redis_url": 6379}}, "redis_url", "6379"),
        ({"circuit_breaker": [1, 2]}, "circuit_breaker", "[1, 2]"),
        ({"degradation": "off"}, "degradation", "'off'"),
    ],
)
def test_malformed_file_value_names_file_key_and_value(
    tmp_path: Path, doc: dict[str, Any], key: str, value: str
) -> None:
    """A malformed file entry is a SettingsError naming the file, the key and the value."""
    path = _write(tmp_path / "settings.json", doc)
    with pytest.raises(SettingsError) as info:
        load_settings(path, environ={})
    message = str(info.value)
    assert str(path) in message
    assert key in message
    assert value in message
    assert ": expected " in message


def test_unknown_level_name_lists_the_known_ones(tmp_path: Path) -> None:
    """An unknown threshold level says which level names exist."""
    path = _write(tmp_path / "s.json", {"degradation": {"thresholds": {"cpu": {"Minimal": 0.8}}}})
    with pytest.raises(SettingsError, match="partial, minimal, emergency, offline"):
        load_settings(path, environ={})


@pytest.mark.parametrize("where", ["env", "file"])
def test_password_in_a_bad_url_is_masked(tmp_path: Path, where: str) -> None:
    """A rejected URL is shown with its password replaced by ***."""
    url = "http://admin:hunter2@cache.internal:6379/0"
    path = _write(tmp_path / "s.json", {"service_discovery": {"redis_url": url}})
    file, env = (None, {"DTESN_SERVICE_REDIS_URL": url}) if where == "env" else (path, {})
    with pytest.raises(SettingsError) as info:
        load_settings(file, environ=env)
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(info.value.value)
    assert "admin:***@cache.internal" in str(info.value)


def test_settings_repr_masks_the_password() -> None:
    """Printing or logging the settings does not show the Redis password."""
    s = load_settings(environ={"DTESN_SERVICE_REDIS_URL": "redis://u:s3cr3t@h:1/0"})
    assert s.redis_url == "redis://u:s3cr3t@h:1/0"
    assert "s3cr3t" not in repr(s)
    assert "redis://u:***@h:1/0" in repr(s)


def test_missing_file_by_argument_is_a_clear_error(tmp_path: Path) -> None:
    """A missing file passed explicitly names the argument and the path."""
    missing = tmp_path / "nope.json"
    with pytest.raises(SettingsError) as info:
        load_settings(missing, environ={})
    assert str(info.value) == f"config_file={str(missing)!r}: expected an existing settings file"


def test_missing_file_by_environment_names_the_variable(tmp_path: Path) -> None:
    """A missing file named by DTESN_CONFIG_FILE names that variable and the path."""
    missing = str(tmp_path / "nope.json")
    with pytest.raises(SettingsError, match=r"^DTESN_CONFIG_FILE='.*nope\.json': expected an"):
        load_settings(environ={"DTESN_CONFIG_FILE": missing})


def test_blank_dtesn_config_file_means_no_file() -> None:
    """DTESN_CONFIG_FILE set to blanks reads no file (no error, nothing set)."""
    assert load_settings(environ={"DTESN_CONFIG_FILE": "  "}) == Settings()


def test_directory_instead_of_file_is_a_clear_error(tmp_path: Path) -> None:
    """A directory where a file should be is an error naming the path."""
    with pytest.raises(SettingsError, match="readable settings file"):
        load_settings(tmp_path, environ={})


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("s.json", "{not json", "a valid JSON file"),
        ("s.json", "[1, 2]", "an object at the top level of the file, not list"),
        ("s.yaml", "a: [1,\n", "a valid YAML file"),
        ("s.yaml", "- 1\n- 2\n", "an object at the top level of the file, not list"),
        ("s.json", b"\xff\xfe{}", "not UTF-8 text"),
    ],
)
def test_unreadable_file_contents_are_clear_errors(
    tmp_path: Path, name: str, text: str | bytes, expected: str
) -> None:
    """Bad syntax, a non-object document or non-text bytes are errors naming the file."""
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(SettingsError) as info:
        load_settings(path, environ={})
    assert str(path) in str(info.value)
    assert expected in str(info.value)


# --- pick() and resolve_redis_url() --------------------------------------------------


def test_pick_prefers_argument_then_setting_then_default() -> None:
    """An explicit argument wins, else the setting, else the default."""
    assert pick(5, 7, 9) == 5
    assert pick(UNSET, 7, 9) == 7
    assert pick(UNSET, None, 9) == 9


def test_pick_honours_falsy_explicit_values() -> None:
    """Zero, False and None passed explicitly are arguments; a zero setting is a setting."""
    assert pick(0, 7, 9) == 0
    assert pick(None, 7, 9) is None
    assert pick(False, True, True) is False
    assert pick(UNSET, 0.0, 9.0) == 0.0


def test_unset_is_a_readable_singleton() -> None:
    """UNSET prints as UNSET and is distinct from None."""
    assert repr(UNSET) == "UNSET"
    assert UNSET is not None
    assert UNSET is settings_module.Unset.UNSET


def test_resolve_redis_url_uses_environment_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an argument, DTESN_SERVICE_REDIS_URL decides."""
    monkeypatch.setenv("DTESN_SERVICE_REDIS_URL", "redis://env:1")
    assert resolve_redis_url(UNSET) == "redis://env:1"


def test_resolve_redis_url_environment_beats_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The variable wins over the file named by DTESN_CONFIG_FILE; without it the file does."""
    path = _write(tmp_path / "s.json", {"service_discovery": {"redis_url": "redis://file:1"}})
    monkeypatch.setenv("DTESN_CONFIG_FILE", str(path))
    assert resolve_redis_url(UNSET) == "redis://file:1"
    monkeypatch.setenv("DTESN_SERVICE_REDIS_URL", "redis://env:1")
    assert resolve_redis_url(UNSET) == "redis://env:1"


def test_resolve_redis_url_defaults_to_memory() -> None:
    """With no argument and no setting the answer is None (in-memory)."""
    assert resolve_redis_url(UNSET) is None


def test_resolve_redis_url_explicit_values_win(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit URL wins over the environment; explicit None or "" means memory only."""
    monkeypatch.setenv("DTESN_SERVICE_REDIS_URL", "redis://env:1")
    assert resolve_redis_url("redis://arg:2") == "redis://arg:2"
    assert resolve_redis_url(None) is None
    assert resolve_redis_url("") is None


def test_resolve_redis_url_uses_given_settings_not_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Settings passed in are used as they are; the environment is not read again."""
    monkeypatch.setenv("DTESN_SERVICE_REDIS_URL", "redis://env:1")
    assert resolve_redis_url(UNSET, Settings(redis_url="redis://given:3")) == "redis://given:3"
    assert resolve_redis_url(UNSET, Settings()) is None


def test_resolve_redis_url_rejects_a_non_string_argument() -> None:
    """A URL argument of the wrong type is a SettingsError naming redis_url."""
    with pytest.raises(SettingsError, match=r"^redis_url=6379: expected"):
        resolve_redis_url(6379)  # type: ignore[arg-type]


def test_resolve_redis_url_reports_a_malformed_environment_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A malformed DTESN_SERVICE_REDIS_URL surfaces when a component resolves its URL."""
    monkeypatch.setenv("DTESN_SERVICE_REDIS_URL", "localhost:6379")
    with pytest.raises(SettingsError, match="DTESN_SERVICE_REDIS_URL"):
        resolve_redis_url(UNSET)


def test_nan_and_inf_are_rejected_even_from_yaml(tmp_path: Path) -> None:
    """YAML's .nan and .inf literals are refused like the strings."""
    for literal in (".nan", ".inf", "-.inf"):
        path = tmp_path / "s.yaml"
        path.write_text(f"degradation:\n  check_interval: {literal}\n")
        with pytest.raises(SettingsError, match="check_interval"):
            load_settings(path, environ={})
