"""Validation before anything is applied: limits, per-key validators, a typed schema.

Checks run in this order and the first failure raises
:class:`~backend_services.errors.ConfigValidationError` naming the key, the value and the
reason; the caller then applies nothing.

1. **Structure and size** (always, even with ``validate=False``): a valid dotted key,
   a JSON-compatible value (no NaN/Infinity, string object keys), at most
   ``Limits.max_value_bytes`` encoded, at most ``Limits.max_keys`` keys in a layer.
2. **Per-key validators**: ``fn(value) -> bool`` (sync or async), or raising
   ``ValueError`` with its reason (any other exception also rejects the change: a broken
   validator fails closed). A validator registered for ``K`` is called with what
   ``get_config(K)`` would return after the change — the leaf value, or the dict of
   everything under ``K`` — whenever the change touches ``K`` or a key below it
   (not when ``K`` ends up unset).
3. **Schema**: a pydantic model class (anything with ``model_validate``), or any
   callable taking the whole nested configuration and raising ``ValueError``; it sees the
   complete configuration as it would be after the change.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from ..errors import ConfigValidationError
from .tree import DEFAULT_MAX_KEY_LENGTH, SortedKeys, check_key, parents

__all__ = [
    "Limits",
    "Validator",
    "ValidatorRegistry",
    "check_value",
    "run_schema",
    "run_validators",
]

Validator: TypeAlias = Callable[[Any], "bool | Awaitable[bool | None] | None"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits applied to every change."""

    max_key_length: int = DEFAULT_MAX_KEY_LENGTH
    max_value_bytes: int = 1 << 20
    max_keys: int = 100_000

    def __post_init__(self) -> None:
        for name in ("max_key_length", "max_value_bytes", "max_keys"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigValidationError(name, value, "an integer >= 1")


def _check_json(key: str, value: Any, depth: int = 0) -> None:
    if depth > 64:
        raise ConfigValidationError(key, value, "at most 64 levels of nesting")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ConfigValidationError(key, value, "a finite number (JSON has no NaN/Infinity)")
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_json(key, item, depth + 1)
        return
    if isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str):
                raise ConfigValidationError(key, value, "string object keys")
            _check_json(key, item, depth + 1)
        return
    raise ConfigValidationError(key, value, f"a JSON-compatible value (not {type(value).__name__})")


def check_value(key: str, value: Any, limits: Limits) -> Any:
    """The value in canonical JSON form (tuples become lists), or an error."""
    check_key(key, limits.max_key_length)
    _check_json(key, value)
    if isinstance(value, (list, tuple, dict)):
        encoded = json.dumps(value, separators=(",", ":"))
        if len(encoded) > limits.max_value_bytes:
            raise ConfigValidationError(
                key, value, f"at most {limits.max_value_bytes} bytes as JSON (got {len(encoded)})"
            )
        return json.loads(encoded)
    if isinstance(value, str) and len(value) > limits.max_value_bytes // 4:
        size = len(value.encode("utf-8"))
        if size > limits.max_value_bytes:
            raise ConfigValidationError(
                key, value, f"at most {limits.max_value_bytes} bytes (got {size})"
            )
    return value


class ValidatorRegistry:
    """Validators by key (a validator for ``K`` covers ``K`` and everything under it)."""

    def __init__(self) -> None:
        self._by_key: dict[str, list[Validator]] = {}
        self._index: SortedKeys | None = None

    def add(self, key: str, fn: Validator) -> None:
        if not callable(fn):
            raise ConfigValidationError("validator", fn, "a callable fn(value) -> bool")
        self._by_key.setdefault(check_key(key), []).append(fn)
        self._index = None

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def count(self) -> int:
        """How many validators are registered."""
        return sum(len(v) for v in self._by_key.values())

    def affected(self, changed: Iterable[str]) -> list[str]:
        """Registered keys a change of ``changed`` touches, sorted."""
        if not self._by_key:
            return []
        changed = list(changed)
        hit: set[str] = set()
        registered = self._by_key
        for key in changed:
            if key in registered:
                hit.add(key)
            for parent in parents(key):
                if parent in registered:
                    hit.add(parent)
        if self._index is None:
            self._index = SortedKeys(registered)
        for key in changed:  # a registered key below a changed one (a subtree replaced)
            hit.update(self._index.under(key))
        return sorted(hit)

    def validators(self, key: str) -> list[Validator]:
        return list(self._by_key.get(key, ()))


async def run_validators(
    registry: ValidatorRegistry,
    changed: Iterable[str],
    value_after: Callable[[str], Any],
    shown: Callable[[str, Any], Any],
    sentinel: Any,
) -> None:
    """Call every validator a change touches with the value after the change."""
    for key in registry.affected(changed):
        value = value_after(key)
        if value is sentinel:
            continue
        for fn in registry.validators(key):
            reason = f"a value accepted by validator {_name(fn)}"
            try:
                result = fn(value)
                if inspect.isawaitable(result):
                    result = await result
            except ConfigValidationError:
                raise
            except Exception as exc:
                display = shown(key, value)
                if display is not value:  # a secret: its validator's words may quote it
                    detail = f"{type(exc).__name__}; details withheld for a secret"
                elif isinstance(exc, ValueError):
                    detail = str(exc)
                else:
                    detail = f"the validator failed: {exc!r}"
                raise ConfigValidationError(key, display, f"{reason} ({detail})") from None
            if result is False:
                raise ConfigValidationError(key, shown(key, value), reason)


def run_schema(schema: Any, document: Mapping[str, Any], shown: Callable[[str, Any], Any]) -> None:
    """Validate the whole nested configuration against ``schema``."""
    validate = getattr(schema, "model_validate", None)
    try:
        if validate is not None:
            validate(dict(document))
        else:
            schema(dict(document))
    except ConfigValidationError:
        raise
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        errors = getattr(exc, "errors", None)
        if callable(errors):
            details = errors()
            if details:
                first = details[0]
                key = ".".join(str(p) for p in first.get("loc", ())) or "<config>"
                value = first.get("input")
                raise ConfigValidationError(
                    key,
                    shown(key, value),
                    f"a value matching schema {_name(schema)} ({first.get('msg', exc)})",
                ) from None
        raise ConfigValidationError(
            "<config>",
            "<configuration>",
            f"a configuration matching schema {_name(schema)} ({exc})",
        ) from None


def _name(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))
