"""The spec's settings, parsed and validated in one place.

Precedence (API.md): constructor argument > environment variable > settings file >
built-in default. The settings file is the spec's JSON (sections ``service_discovery``,
``circuit_breaker``, ``degradation``), named by ``DTESN_CONFIG_FILE`` or passed explicitly.

==========================================  =============================================
environment variable                        settings-file key
==========================================  =============================================
``DTESN_SERVICE_REDIS_URL``                 ``service_discovery.redis_url`` (all components)
``DTESN_SERVICE_HEALTH_CHECK_INTERVAL``     ``service_discovery.health_check_interval``
``DTESN_SERVICE_HEALTH_CHECK_TIMEOUT``      ``service_discovery.health_check_timeout``
``DTESN_SERVICE_MAX_FAILURES``              ``service_discovery.max_consecutive_failures``
``DTESN_SERVICE_TTL``                       ``service_discovery.service_ttl``
``DTESN_CB_FAILURE_THRESHOLD``              ``circuit_breaker.default_failure_threshold``
``DTESN_CB_TIMEOUT``                        ``circuit_breaker.default_timeout``
``DTESN_CB_REQUEST_TIMEOUT``                ``circuit_breaker.request_timeout``
``DTESN_CB_SLOW_CALL_THRESHOLD``            ``circuit_breaker.slow_call_threshold``
``DTESN_DEGRADATION_CHECK_INTERVAL``        ``degradation.check_interval``
``DTESN_DEGRADATION_RECOVERY_DELAY``        ``degradation.recovery_delay``
``DTESN_DEGRADATION_CPU_THRESHOLD``         ``degradation.thresholds.cpu.minimal``
``DTESN_DEGRADATION_MEMORY_THRESHOLD``      ``degradation.thresholds.memory.minimal``
==========================================  =============================================

A malformed value raises :class:`~backend_services.errors.SettingsError` naming the
variable (or file and key) and the value (a password in a URL is masked). Intervals,
timeouts and TTLs are finite numbers > 0 (``recovery_delay`` may be 0), counts are
integers >= 1, thresholds are fractions in (0, 1] keyed by level name (``partial``,
``minimal``, ``emergency``, ``offline``). A file ending in ``.yaml``/``.yml`` is read as
YAML, any other as JSON; an empty section (``circuit_breaker:`` with nothing under it in
YAML) counts as absent.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Final, TypeVar

from .errors import SettingsError

__all__ = [
    "UNSET",
    "CircuitBreakerSettings",
    "DegradationSettings",
    "DiscoverySettings",
    "Settings",
    "Unset",
    "load_settings",
    "pick",
    "resolve_redis_url",
]

T = TypeVar("T")


class Unset(Enum):
    """Type of :data:`UNSET`, the default of arguments where ``None`` means something."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET
"""Argument not given: settings decide. (``redis_url=None`` means in-memory only.)"""

LEVEL_NAMES: Final = ("partial", "minimal", "emergency", "offline")


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    health_check_interval: float | None = None
    health_check_timeout: float | None = None
    max_consecutive_failures: int | None = None
    service_ttl: float | None = None


@dataclass(frozen=True, slots=True)
class CircuitBreakerSettings:
    failure_threshold: int | None = None
    timeout: float | None = None
    request_timeout: float | None = None
    slow_call_threshold: float | None = None


@dataclass(frozen=True, slots=True)
class DegradationSettings:
    check_interval: float | None = None
    recovery_delay: float | None = None
    # resource name ("cpu", "memory", ...) -> level name ("partial", ...) -> entry usage
    thresholds: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """Everything the environment and the settings file said (None = not said).

    Its ``repr`` masks a password in ``redis_url``, so a logged Settings leaks nothing.
    """

    redis_url: str | None = None
    config_file: str | None = None
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    circuit_breaker: CircuitBreakerSettings = field(default_factory=CircuitBreakerSettings)
    degradation: DegradationSettings = field(default_factory=DegradationSettings)

    def __repr__(self) -> str:
        from .log import mask_url

        url = None if self.redis_url is None else mask_url(self.redis_url)
        return (
            f"Settings(redis_url={url!r}, config_file={self.config_file!r}, "
            f"discovery={self.discovery!r}, circuit_breaker={self.circuit_breaker!r}, "
            f"degradation={self.degradation!r})"
        )


def pick(argument: T | Unset, setting: T | None, default: T) -> T:
    """Constructor argument if given, else the setting if said, else the default."""
    if argument is not UNSET:
        return argument
    return default if setting is None else setting


def resolve_redis_url(argument: str | Unset | None, settings: Settings | None = None) -> str | None:
    """The Redis URL a component should use: the argument when given (``None`` = memory
    only), else ``DTESN_SERVICE_REDIS_URL``, else the settings file, else ``None``."""
    if argument is not UNSET:
        if argument is not None and not isinstance(argument, str):
            raise SettingsError("redis_url", argument, "a redis:// or rediss:// URL, or None")
        return argument or None
    return (settings or load_settings()).redis_url


# --- parsing -------------------------------------------------------------------------


def _number(
    source: str, raw: Any, *, integer: bool = False, minimum: float = 0.0, strict_min: bool = False
) -> Any:
    what = "an integer" if integer else "a number"
    bound = f"> {minimum:g}" if strict_min else f">= {minimum:g}"
    try:
        if isinstance(raw, bool):
            raise ValueError
        if integer:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            value: float = int(raw) if not isinstance(raw, str) else int(raw.strip())
        else:
            value = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise SettingsError(source, raw, f"{what} {bound}") from None
    if (
        math.isnan(value)
        or math.isinf(value)
        or value < minimum
        or (strict_min and value == minimum)
    ):
        raise SettingsError(source, raw, f"{what} {bound}")
    return value


def _fraction(source: str, raw: Any) -> float:
    expected = "a fraction > 0 and <= 1"
    try:
        value = _number(source, raw, strict_min=True)
    except SettingsError:
        raise SettingsError(source, raw, expected) from None
    if value > 1.0:
        raise SettingsError(source, raw, expected)
    return float(value)


_URL_SCHEMES: Final = frozenset(
    {
        "redis",
        "rediss",
        "unix",
        "redis+sentinel",
        "rediss+sentinel",
        "redis+cluster",
        "rediss+cluster",
    }
)


def _url(source: str, raw: Any) -> str | None:
    if raw is None or raw == "":
        return None
    if (
        not isinstance(raw, str)
        or "://" not in raw
        or raw.split("://", 1)[0].lower() not in _URL_SCHEMES
        or raw.split("://", 1)[1] == ""
    ):
        from .log import mask_url

        shown = mask_url(raw) if isinstance(raw, str) else raw
        raise SettingsError(source, shown, "a redis://, rediss:// or unix:// URL")
    return raw


def _read_file(path: str, source: str) -> dict[str, Any]:
    """The settings file as a dict; ``source`` (the argument or variable that named it)
    is named in errors."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(source, path, "an existing settings file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingsError(source, path, f"a readable settings file ({reason})") from None
    yaml_file = path.lower().endswith((".yaml", ".yml"))
    try:
        if yaml_file:
            import yaml

            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
    except (ValueError, ImportError) as exc:  # JSONDecodeError is a ValueError
        raise SettingsError(
            source, path, f"a valid {'YAML' if yaml_file else 'JSON'} file ({exc})"
        ) from None
    except Exception as exc:  # yaml.YAMLError and friends
        raise SettingsError(source, path, f"a valid YAML file ({exc})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise SettingsError(
            source, path, f"an object at the top level of the file, not {type(doc).__name__}"
        )
    return doc


def _section(doc: Mapping[str, Any], name: str, path: str) -> Mapping[str, Any]:
    value = doc.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SettingsError(f"{path}:{name}", value, "an object")
    return value


def _get(
    env: Mapping[str, str],
    var: str,
    section: Mapping[str, Any],
    key: str,
    where: str,
    parse: Callable[[str, Any], Any],
) -> Any:
    """Environment first, then the file section; parsed with the source named in errors."""
    raw_env = env.get(var)
    if raw_env is not None and raw_env.strip() != "":
        return parse(var, raw_env.strip())
    if key in section and section[key] is not None:
        return parse(f"{where}.{key}", section[key])
    return None


def load_settings(
    config_file: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the ``DTESN_*`` environment variables and the settings file, validated."""
    env = os.environ if environ is None else environ
    path: str | None
    if config_file is not None:
        path = os.fspath(config_file)
        doc = _read_file(path, "config_file")
    else:
        path = (env.get("DTESN_CONFIG_FILE") or "").strip() or None
        doc = _read_file(path, "DTESN_CONFIG_FILE") if path else {}
    where = path or "<settings>"

    sections = {
        name: _section(doc, name, where)
        for name in ("service_discovery", "circuit_breaker", "degradation")
    }

    def num(name: str, s: Any) -> float:
        return float(_number(name, s))

    def pos(name: str, s: Any) -> float:
        return float(_number(name, s, strict_min=True))

    def posint(name: str, s: Any) -> int:
        return int(_number(name, s, integer=True, minimum=1))

    def said(section: str, var: str, key: str, parse: Callable[[str, Any], Any]) -> Any:
        return _get(env, var, sections[section], key, f"{where}:{section}", parse)

    redis_url = said("service_discovery", "DTESN_SERVICE_REDIS_URL", "redis_url", _url)
    discovery = DiscoverySettings(
        health_check_interval=said(
            "service_discovery", "DTESN_SERVICE_HEALTH_CHECK_INTERVAL", "health_check_interval", pos
        ),
        health_check_timeout=said(
            "service_discovery", "DTESN_SERVICE_HEALTH_CHECK_TIMEOUT", "health_check_timeout", pos
        ),
        max_consecutive_failures=said(
            "service_discovery", "DTESN_SERVICE_MAX_FAILURES", "max_consecutive_failures", posint
        ),
        service_ttl=said("service_discovery", "DTESN_SERVICE_TTL", "service_ttl", pos),
    )
    breaker = CircuitBreakerSettings(
        failure_threshold=said(
            "circuit_breaker", "DTESN_CB_FAILURE_THRESHOLD", "default_failure_threshold", posint
        ),
        timeout=said("circuit_breaker", "DTESN_CB_TIMEOUT", "default_timeout", pos),
        request_timeout=said("circuit_breaker", "DTESN_CB_REQUEST_TIMEOUT", "request_timeout", pos),
        slow_call_threshold=said(
            "circuit_breaker", "DTESN_CB_SLOW_CALL_THRESHOLD", "slow_call_threshold", pos
        ),
    )
    thresholds = _thresholds(
        sections["degradation"].get("thresholds"), f"{where}:degradation.thresholds"
    )
    for var, resource in (
        ("DTESN_DEGRADATION_CPU_THRESHOLD", "cpu"),
        ("DTESN_DEGRADATION_MEMORY_THRESHOLD", "memory"),
    ):
        raw = env.get(var)
        if raw is not None and raw.strip() != "":
            thresholds.setdefault(resource, {})["minimal"] = _fraction(var, raw.strip())
    degradation = DegradationSettings(
        check_interval=said(
            "degradation", "DTESN_DEGRADATION_CHECK_INTERVAL", "check_interval", pos
        ),
        recovery_delay=said(
            "degradation", "DTESN_DEGRADATION_RECOVERY_DELAY", "recovery_delay", num
        ),
        thresholds=thresholds,
    )
    return Settings(
        redis_url=redis_url,
        config_file=path,
        discovery=discovery,
        circuit_breaker=breaker,
        degradation=degradation,
    )


def _thresholds(raw: Any, where: str) -> dict[str, dict[str, float]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SettingsError(where, raw, "an object of resource -> {level: usage}")
    out: dict[str, dict[str, float]] = {}
    for resource, levels in raw.items():
        if levels is None:
            continue
        if not isinstance(levels, Mapping):
            raise SettingsError(f"{where}.{resource}", levels, "an object of level -> usage")
        parsed: dict[str, float] = {}
        for level, value in levels.items():
            if level not in LEVEL_NAMES:
                raise SettingsError(
                    f"{where}.{resource}.{level}",
                    value,
                    f"a level name, one of {', '.join(LEVEL_NAMES)}",
                )
            parsed[level] = _fraction(f"{where}.{resource}.{level}", value)
        out[str(resource).lower()] = parsed
    return out
