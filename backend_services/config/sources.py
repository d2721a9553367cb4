"""Parsing of the per-process sources: the configuration file and the environment.

**File.** JSON, or YAML when the name ends in ``.yaml``/``.yml``; the top level is an
object; nested objects are read as dotted keys (``circuit_breaker.default_timeout``).

**Environment.** ``<SERVICE>__<KEY>``: the service name upper-cased with every
non-alphanumeric character as ``_``, two underscores, then the key upper-cased with dots
as ``__`` (``dtesn-service`` + ``membrane_depth`` → ``DTESN_SERVICE__MEMBRANE_DEPTH``;
``circuit_breaker.default_timeout`` → ``DTESN_SERVICE__CIRCUIT_BREAKER__DEFAULT_TIMEOUT``).
Values parse as JSON, else as a plain string; text that starts like a JSON array, object
or quoted string but does not parse is an error naming the variable. The spec's own
``DTESN_*`` variables also override the keys of its JSON file (table below), parsed and
checked by :func:`backend_services.settings.load_settings`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from ..errors import ConfigValidationError, SettingsError
from ..settings import load_settings
from .tree import flatten
from .validation import Limits, check_value

__all__ = [
    "SPEC_ENVIRONMENT",
    "env_prefix",
    "env_var_for",
    "parse_document",
    "parse_env_value",
    "read_environment",
]

SPEC_ENVIRONMENT: Final[Mapping[str, str]] = {
    "DTESN_SERVICE_REDIS_URL": "service_discovery.redis_url",
    "DTESN_SERVICE_HEALTH_CHECK_INTERVAL": "service_discovery.health_check_interval",
    "DTESN_SERVICE_HEALTH_CHECK_TIMEOUT": "service_discovery.health_check_timeout",
    "DTESN_SERVICE_MAX_FAILURES": "service_discovery.max_consecutive_failures",
    "DTESN_SERVICE_TTL": "service_discovery.service_ttl",
    "DTESN_CB_FAILURE_THRESHOLD": "circuit_breaker.default_failure_threshold",
    "DTESN_CB_TIMEOUT": "circuit_breaker.default_timeout",
    "DTESN_CB_REQUEST_TIMEOUT": "circuit_breaker.request_timeout",
    "DTESN_CB_SLOW_CALL_THRESHOLD": "circuit_breaker.slow_call_threshold",
    "DTESN_DEGRADATION_CHECK_INTERVAL": "degradation.check_interval",
    "DTESN_DEGRADATION_RECOVERY_DELAY": "degradation.recovery_delay",
    "DTESN_DEGRADATION_CPU_THRESHOLD": "degradation.thresholds.cpu.minimal",
    "DTESN_DEGRADATION_MEMORY_THRESHOLD": "degradation.thresholds.memory.minimal",
}
"""The spec's variables and the file keys they override."""

_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")


def env_prefix(service_name: str) -> str:
    """``dtesn-service`` → ``DTESN_SERVICE__``."""
    return _NON_ALNUM.sub("_", service_name).upper() + "__"


def env_var_for(service_name: str, key: str) -> str:
    """The variable that overrides ``key`` for ``service_name``."""
    return env_prefix(service_name) + key.upper().replace(".", "__")


def _no_constants(name: str) -> Any:
    raise ValueError(name)


def parse_env_value(var: str, text: str) -> Any:
    """JSON if it parses, else the plain string (see the module docstring)."""
    stripped = text.strip()
    try:
        return json.loads(stripped, parse_constant=_no_constants)
    except ValueError as exc:
        if stripped[:1] in ("[", "{", '"'):
            raise SettingsError(
                var, text, f"valid JSON, since it starts like JSON ({exc})"
            ) from None
        return text


def read_environment(
    service_name: str,
    environ: Mapping[str, str],
    limits: Limits,
    *,
    spec_variables: bool = True,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The environment layer: ``({key: value}, {key: variable name})``."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if spec_variables:
        present = {
            var: environ[var]
            for var in SPEC_ENVIRONMENT
            if var in environ and environ[var].strip() != ""
        }
        if present:
            settings = load_settings(config_file=None, environ=present)
            parsed: dict[str, Any] = {
                "DTESN_SERVICE_REDIS_URL": settings.redis_url,
                "DTESN_SERVICE_HEALTH_CHECK_INTERVAL": settings.discovery.health_check_interval,
                "DTESN_SERVICE_HEALTH_CHECK_TIMEOUT": settings.discovery.health_check_timeout,
                "DTESN_SERVICE_MAX_FAILURES": settings.discovery.max_consecutive_failures,
                "DTESN_SERVICE_TTL": settings.discovery.service_ttl,
                "DTESN_CB_FAILURE_THRESHOLD": settings.circuit_breaker.failure_threshold,
                "DTESN_CB_TIMEOUT": settings.circuit_breaker.timeout,
                "DTESN_CB_REQUEST_TIMEOUT": settings.circuit_breaker.request_timeout,
                "DTESN_CB_SLOW_CALL_THRESHOLD": settings.circuit_breaker.slow_call_threshold,
                "DTESN_DEGRADATION_CHECK_INTERVAL": settings.degradation.check_interval,
                "DTESN_DEGRADATION_RECOVERY_DELAY": settings.degradation.recovery_delay,
                "DTESN_DEGRADATION_CPU_THRESHOLD": settings.degradation.thresholds.get(
                    "cpu", {}
                ).get("minimal"),
                "DTESN_DEGRADATION_MEMORY_THRESHOLD": settings.degradation.thresholds.get(
                    "memory", {}
                ).get("minimal"),
            }
            for var in present:
                if parsed.get(var) is not None:
                    values[SPEC_ENVIRONMENT[var]] = parsed[var]
                    origin[SPEC_ENVIRONMENT[var]] = var
    prefix = env_prefix(service_name)
    for var in sorted(environ):
        if not var.startswith(prefix):
            continue
        rest = var[len(prefix) :]
        key = rest.lower().replace("__", ".")
        if not rest or any(part == "" for part in key.split(".")):
            raise SettingsError(
                var, environ[var], f"a name {prefix}<KEY> with the key's dots written as __"
            )
        value = parse_env_value(var, environ[var])
        try:
            for leaf, item in flatten(value, key).items():
                values[leaf] = check_value(leaf, item, limits)
                origin[leaf] = var
        except ConfigValidationError as exc:
            raise SettingsError(var, environ[var], exc.expected) from None
    return values, origin


def parse_document(text: str, name: str, fmt: str | None = None) -> dict[str, Any]:
    """A JSON/YAML document's flat keys (``fmt``: ``"json"``, ``"yaml"`` or by ``name``)."""
    kind = (fmt or ("yaml" if name.lower().endswith((".yaml", ".yml")) else "json")).lower()
    if kind not in ("json", "yaml"):
        raise ConfigValidationError("format", fmt, '"json" or "yaml"')
    try:
        if kind == "yaml":
            import yaml

            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text, parse_constant=_no_constants)
    except Exception as exc:
        raise ConfigValidationError(
            name, "<file contents>", f"valid {kind.upper()} ({_one_line(exc)})"
        ) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigValidationError(name, type(doc).__name__, "an object at the top level")
    return flatten(doc)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
