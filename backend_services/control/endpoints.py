"""The control API's operations, described once: :data:`OPERATIONS`.

Every operation with its method, path, parameters and body schema (:class:`Operation`,
:class:`Param`), and the JSON Schema fragments they share. The server registers its
routes from this table and validates each request against these schemas; the OpenAPI
document (:mod:`.openapi`) is built from the same table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "API_PREFIX",
    "DEGRADATION_LEVELS",
    "OPERATIONS",
    "Operation",
    "Param",
    "operation",
]

API_PREFIX: Final = "/api/v1"
DEGRADATION_LEVELS: Final = ("normal", "partial", "minimal", "emergency", "offline")

NAME: Final[dict[str, Any]] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$",
}
CONFIG_KEY: Final[dict[str, Any]] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 256,
    "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
}
VERSION_ID: Final[dict[str, Any]] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "pattern": r"^[A-Za-z0-9_.:-]+$",
}
REASON: Final[dict[str, Any]] = {"type": "string", "maxLength": 500}
LIMIT: Final[dict[str, Any]] = {"type": "integer", "minimum": 1, "maximum": 10_000}
DURATION: Final[dict[str, Any]] = {"type": "number", "exclusiveMinimum": 0, "maximum": 31_536_000}
"""Seconds a forced state lasts: more than 0, at most a year."""


@dataclass(frozen=True, slots=True)
class Param:
    """A path or query parameter."""

    name: str
    location: Literal["path", "query"]
    schema: Mapping[str, Any]
    required: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class Operation:
    """One HTTP operation of the control API."""

    operation_id: str
    method: Literal["GET", "POST", "PUT", "DELETE"]
    path: str
    summary: str
    tag: str
    mutating: bool = False
    params: tuple[Param, ...] = ()
    body: Mapping[str, Any] | None = None
    body_required: bool = False
    response: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})
    content_type: str = "application/json"
    not_found: bool = False
    documented: bool = True
    public: bool = False
    """Open even when reads are protected (liveness)."""


def _path(name: str, schema: Mapping[str, Any], description: str) -> Param:
    return Param(name, "path", schema, True, description)


def _query(name: str, schema: Mapping[str, Any], description: str, required: bool = False) -> Param:
    return Param(name, "query", schema, required, description)


_SERVICE_QUERY = _query(
    "service", NAME, "configuration service name (default: the server's)", False
)
_REASON_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"reason": REASON},
    "additionalProperties": False,
}
_OPEN_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "reason": REASON,
        "duration": DURATION,
    },
    "additionalProperties": False,
}

OPERATIONS: Final[tuple[Operation, ...]] = (
    Operation(
        "getHealth",
        "GET",
        "/healthz",
        "Liveness of the control server",
        "meta",
        response={"type": "object"},
        public=True,
    ),
    Operation(
        "getMetrics",
        "GET",
        "/metrics",
        "Prometheus metrics of the control server and the components it sees",
        "meta",
        content_type="text/plain",
        response={"type": "string"},
    ),
    Operation(
        "getOverview",
        "GET",
        f"{API_PREFIX}/overview",
        "Everything the dashboard shows: services, circuits, degradation, config, transitions",
        "overview",
        response={"$ref": "#/components/schemas/Overview"},
    ),
    Operation(
        "watchEvents",
        "GET",
        f"{API_PREFIX}/events",
        "Server-sent events: a 'snapshot' on connect and on every change, 'transition' events",
        "overview",
        content_type="text/event-stream",
        response={"type": "string"},
    ),
    Operation(
        "listTransitions",
        "GET",
        f"{API_PREFIX}/transitions",
        "Recent state transitions (oldest first; limit gives the newest N)",
        "overview",
        params=(_query("limit", LIMIT, "newest N transitions"),),
        response={"type": "array", "items": {"$ref": "#/components/schemas/Transition"}},
    ),
    Operation(
        "listServices",
        "GET",
        f"{API_PREFIX}/services",
        "Registered service instances with their health",
        "services",
        params=(
            _query("service_type", NAME, "only instances of this type (e.g. dtesn_membrane)"),
            _query("status", NAME, "only instances in this health status (e.g. healthy)"),
        ),
        response={"type": "array", "items": {"$ref": "#/components/schemas/Service"}},
    ),
    Operation(
        "getService",
        "GET",
        f"{API_PREFIX}/services/{{service_id}}",
        "One service instance with its health",
        "services",
        params=(_path("service_id", NAME, "instance id"),),
        response={"$ref": "#/components/schemas/Service"},
        not_found=True,
    ),
    Operation(
        "listCircuits",
        "GET",
        f"{API_PREFIX}/circuits",
        "Circuit breakers with their state and rates",
        "circuits",
        response={"type": "array", "items": {"$ref": "#/components/schemas/Circuit"}},
    ),
    Operation(
        "getCircuit",
        "GET",
        f"{API_PREFIX}/circuits/{{name}}",
        "One circuit breaker",
        "circuits",
        params=(_path("name", NAME, "circuit name"),),
        response={"$ref": "#/components/schemas/Circuit"},
        not_found=True,
    ),
    *(
        Operation(
            f"{verb}Circuit",
            "POST",
            f"{API_PREFIX}/circuits/{{name}}/{verb}",
            summary,
            "circuits",
            mutating=True,
            params=(_path("name", NAME, "circuit name"),),
            body=body,
            response={"$ref": "#/components/schemas/Circuit"},
            not_found=True,
        )
        for verb, summary, body in (
            (
                "open",
                "Force a circuit open fleet-wide (for duration seconds, or until closed)",
                _OPEN_BODY,
            ),
            ("close", "Force a circuit back to closed, fleet-wide", _REASON_BODY),
            ("reset", "Back to closed with empty windows, fleet-wide", _REASON_BODY),
        )
    ),
    Operation(
        "listDegradation",
        "GET",
        f"{API_PREFIX}/degradation",
        "Degradation level of every service",
        "degradation",
        response={"type": "array", "items": {"$ref": "#/components/schemas/Degradation"}},
    ),
    Operation(
        "getDegradation",
        "GET",
        f"{API_PREFIX}/degradation/{{service}}",
        "Degradation level of one service",
        "degradation",
        params=(_path("service", NAME, "service name"),),
        response={"$ref": "#/components/schemas/Degradation"},
        not_found=True,
    ),
    Operation(
        "forceDegradation",
        "POST",
        f"{API_PREFIX}/degradation/{{service}}/force",
        "Force a level until cleared or for duration seconds: on every degradation manager "
        "of the fleet (service 'fleet') or on every manager of one service",
        "degradation",
        mutating=True,
        params=(_path("service", NAME, "a service name, or 'fleet' for every service"),),
        body={
            "type": "object",
            "properties": {
                "level": {"type": "string", "enum": list(DEGRADATION_LEVELS)},
                "reason": REASON,
                "duration": DURATION,
            },
            "required": ["level"],
            "additionalProperties": False,
        },
        body_required=True,
        response={"$ref": "#/components/schemas/DegradationCommand"},
        not_found=True,
    ),
    Operation(
        "clearDegradation",
        "POST",
        f"{API_PREFIX}/degradation/{{service}}/clear",
        "Clear a forced level: 'fleet' ends the fleet-wide and every per-service one; a "
        "service name ends that service's own (a fleet-wide one still applies)",
        "degradation",
        mutating=True,
        params=(_path("service", NAME, "a service name, or 'fleet' for every service"),),
        body=_REASON_BODY,
        response={"$ref": "#/components/schemas/DegradationCommand"},
        not_found=True,
    ),
    Operation(
        "getConfig",
        "GET",
        f"{API_PREFIX}/config",
        "All configuration values of a service, with its current version",
        "config",
        params=(_SERVICE_QUERY,),
        response={"$ref": "#/components/schemas/ConfigState"},
    ),
    Operation(
        "getConfigValue",
        "GET",
        f"{API_PREFIX}/config/values/{{key}}",
        "One configuration value (dotted key)",
        "config",
        params=(_path("key", CONFIG_KEY, "dotted configuration key"), _SERVICE_QUERY),
        response={"$ref": "#/components/schemas/ConfigValue"},
        not_found=True,
    ),
    Operation(
        "setConfigValue",
        "PUT",
        f"{API_PREFIX}/config/values/{{key}}",
        "Set one configuration value (validated; a new version)",
        "config",
        mutating=True,
        params=(_path("key", CONFIG_KEY, "dotted configuration key"), _SERVICE_QUERY),
        body={
            "type": "object",
            "properties": {"value": {}, "description": REASON},
            "required": ["value"],
            "additionalProperties": False,
        },
        body_required=True,
        response={"$ref": "#/components/schemas/ConfigValue"},
    ),
    Operation(
        "listConfigVersions",
        "GET",
        f"{API_PREFIX}/config/versions",
        "Configuration versions (oldest first; limit gives the newest N)",
        "config",
        params=(_SERVICE_QUERY, _query("limit", LIMIT, "newest N versions")),
        response={"type": "array", "items": {"$ref": "#/components/schemas/ConfigVersion"}},
    ),
    Operation(
        "createConfigSnapshot",
        "POST",
        f"{API_PREFIX}/config/versions",
        "Snapshot the current configuration as a new version",
        "config",
        mutating=True,
        params=(_SERVICE_QUERY,),
        body={
            "type": "object",
            "properties": {"description": REASON},
            "additionalProperties": False,
        },
        response={"$ref": "#/components/schemas/ConfigState"},
    ),
    Operation(
        "diffConfig",
        "GET",
        f"{API_PREFIX}/config/diff",
        "What changed between two versions",
        "config",
        params=(
            _query("from", VERSION_ID, "older version (id or number)", True),
            _query("to", VERSION_ID, "newer version (id or number; default: the newest)"),
            _SERVICE_QUERY,
        ),
        response={"$ref": "#/components/schemas/ConfigDiff"},
        not_found=True,
    ),
    Operation(
        "rollbackConfig",
        "POST",
        f"{API_PREFIX}/config/rollback",
        "Restore exactly one version's values, as a new version",
        "config",
        mutating=True,
        params=(_SERVICE_QUERY,),
        body={
            "type": "object",
            "properties": {"version": VERSION_ID, "description": REASON},
            "required": ["version"],
            "additionalProperties": False,
        },
        body_required=True,
        response={"$ref": "#/components/schemas/ConfigState"},
        not_found=True,
    ),
)

_BY_ID: Final = {op.operation_id: op for op in OPERATIONS}


def operation(operation_id: str) -> Operation:
    """The operation of that id (KeyError when unknown)."""
    return _BY_ID[operation_id]
