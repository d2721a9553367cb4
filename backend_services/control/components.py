"""The shared schemas of the OpenAPI document (``components/schemas``).

What the control API returns: services, circuits, degradation levels, configuration
values, versions and diffs, transitions, the dashboard's overview, and RFC 9457 problem
documents. Operations refer to them as ``#/components/schemas/<Name>``.
"""

from __future__ import annotations

from typing import Any, Final

from .endpoints import DEGRADATION_LEVELS

__all__ = ["COMPONENT_SCHEMAS"]

_NUM = {"type": "number"}
_STR = {"type": "string"}
_NULLABLE_NUM = {"type": ["number", "null"]}

_INT = {"type": "integer"}
_ANY: dict[str, Any] = {}
_OBJ = {"type": "object"}

COMPONENT_SCHEMAS: Final[dict[str, Any]] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details",
        "properties": {
            "type": _STR,
            "title": _STR,
            "status": _INT,
            "detail": _STR,
            "instance": _STR,
            "field": _STR,
            "expected": _STR,
            "retry_after": _NUM,
        },
        "required": ["title", "status", "detail"],
    },
    "Service": {
        "type": "object",
        "description": "A registered instance and its shared health",
        "properties": {
            "service_id": _STR,
            "service_type": _STR,
            "url": _STR,
            "address": _STR,
            "status": _STR,
            "response_time_ms": _NULLABLE_NUM,
            "last_check": _NULLABLE_NUM,
            "consecutive_failures": _INT,
            "error_count": _INT,
            "weight": _NUM,
            "metadata": _OBJ,
            "owner": {"type": ["string", "null"]},
        },
        "required": ["service_id", "service_type", "status"],
    },
    "Circuit": {
        "type": "object",
        "description": "A circuit breaker's fleet-wide state (call counts are per process, "
        "on each process's /metrics)",
        "properties": {
            "name": _STR,
            "state": _STR,
            "open_until": _NULLABLE_NUM,
            "open_remaining": _NULLABLE_NUM,
            "openings": {"type": ["integer", "null"]},
            "trigger": {"type": ["string", "null"]},
            "origin": {"type": ["string", "null"]},
            "changed_at": _NULLABLE_NUM,
            "version": _INT,
        },
        "required": ["name", "state"],
    },
    "Degradation": {
        "type": "object",
        "description": "A service's worst level across its instances, and the instances",
        "properties": {
            "service": _STR,
            "level": {"type": "string", "enum": list(DEGRADATION_LEVELS)},
            "degraded": {"type": "boolean"},
            "instances": {"type": "object", "additionalProperties": _OBJ},
        },
        "required": ["service", "level"],
    },
    "DegradationCommand": {
        "type": "object",
        "description": "The result of forcing or clearing a level (fleet-wide or per service)",
        "properties": {
            "service": _STR,
            "command_id": _STR,
            "level": _STR,
            "reason": _STR,
            "published": {"type": "boolean"},
            "cleared": {"type": "boolean"},
        },
    },
    "ConfigValue": {
        "type": "object",
        "properties": {
            "service": _STR,
            "key": _STR,
            "value": _ANY,
            "source": _STR,
            "version": _INT,
        },
        "required": ["key", "value"],
    },
    "ConfigVersion": {
        "type": "object",
        "properties": {
            "id": _STR,
            "version_id": _STR,
            "version": _INT,
            "created_at": _NUM,
            "description": _STR,
            "source": _STR,
            "kind": _STR,
            "author": {"type": ["string", "null"]},
            "changed_keys": {"type": "array", "items": _STR},
            "config_count": _INT,
            "restored_id": {"type": ["string", "null"]},
        },
        "required": ["id"],
    },
    "ConfigState": {
        "type": "object",
        "properties": {
            "service": _STR,
            "version": _INT,
            "version_id": {"type": ["string", "null"]},
            "values": _OBJ,
            "restored": _STR,
        },
        "required": ["service", "version"],
    },
    "ConfigDiff": {
        "type": "object",
        "properties": {
            "service": _STR,
            "from": _STR,
            "to": _STR,
            "added": _OBJ,
            "removed": _OBJ,
            "changed": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {"old": _ANY, "new": _ANY},
                },
            },
        },
        "required": ["from", "to", "added", "removed", "changed"],
    },
    "Transition": {
        "type": "object",
        "properties": {
            "seq": _INT,
            "time": _NUM,
            "kind": {"type": "string", "enum": ["service", "circuit", "degradation", "config"]},
            "name": _STR,
            "old": {"type": ["string", "null"]},
            "new": _STR,
            "reason": _STR,
        },
        "required": ["seq", "time", "kind", "name", "new"],
    },
    "Overview": {
        "type": "object",
        "properties": {
            "time": _NUM,
            "services": {"type": "array", "items": {"$ref": "#/components/schemas/Service"}},
            "circuits": {"type": "array", "items": {"$ref": "#/components/schemas/Circuit"}},
            "degradation": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Degradation"},
            },
            "config": {"type": ["object", "null"]},
            "transitions": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Transition"},
            },
        },
        "required": ["time", "services", "circuits", "degradation", "transitions"],
    },
}
