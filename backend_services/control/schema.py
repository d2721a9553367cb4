"""Validation of request data against the JSON Schema fragments of the OpenAPI document.

One schema, two uses: published in ``/openapi.json`` and enforced on every request, so
the description and the behaviour cannot drift apart. Supported keywords (the subset the
API uses): ``type`` (one or a list), ``enum``, ``minLength``/``maxLength``, ``pattern``,
``minimum``/``maximum``, ``exclusiveMinimum``, ``properties``, ``required``,
``additionalProperties`` (boolean), ``items``, ``maxItems``. An empty schema accepts any
JSON value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from ..errors import ValidationError

__all__ = ["validate"]

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


@lru_cache(maxsize=256)
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


def _type_ok(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "number" and isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, _TYPES[name])


def _describe(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    return str(kind or "a JSON value")


def validate(value: Any, schema: Mapping[str, Any], where: str) -> Any:
    """Return ``value`` if it matches ``schema``; else raise
    :class:`~backend_services.errors.ValidationError` naming the field (``where`` plus the
    path inside the value), the value and what was expected."""
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_type_ok(value, k) for k in kinds):
            raise ValidationError(where, value, _describe(schema))
    if "enum" in schema and value not in schema["enum"]:
        raise ValidationError(where, value, _describe(schema))
    if isinstance(value, str):
        _check_string(value, schema, where)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_number(value, schema, where)
    elif isinstance(value, dict):
        _check_object(value, schema, where)
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise ValidationError(where, value, f"at most {schema['maxItems']} items")
        items = schema.get("items")
        if items is not None:
            for i, item in enumerate(value):
                validate(item, items, f"{where}[{i}]")
    return value


def _check_string(value: str, schema: Mapping[str, Any], where: str) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        raise ValidationError(where, value, f"a string of at least {schema['minLength']} chars")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise ValidationError(where, value, f"a string of at most {schema['maxLength']} chars")
    if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
        raise ValidationError(where, value, f"a string matching {schema['pattern']}")


def _check_number(value: float, schema: Mapping[str, Any], where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(where, value, "a finite number")
    if "minimum" in schema and value < schema["minimum"]:
        raise ValidationError(where, value, f"a number >= {schema['minimum']}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        raise ValidationError(where, value, f"a number > {schema['exclusiveMinimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        raise ValidationError(where, value, f"a number <= {schema['maximum']}")


def _check_object(value: dict[str, Any], schema: Mapping[str, Any], where: str) -> None:
    properties: Mapping[str, Any] = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in value:
            raise ValidationError(f"{where}.{name}", None, "a required field")
    if schema.get("additionalProperties", True) is False:
        extra = sorted(set(value) - set(properties))
        if extra:
            raise ValidationError(
                f"{where}.{extra[0]}",
                value[extra[0]],
                f"no such field (known: {sorted(properties)})",
            )
    for name, sub in properties.items():
        if name in value:
            validate(value[name], sub, f"{where}.{name}")
