"""The control API's operations, described once: routes, validation and OpenAPI 3.

:data:`OPERATIONS` lists every operation with its parameters and body schema. The server
registers its routes from this table and validates each request against the same
schemas it publishes at ``/openapi.json`` (:func:`build_document`), so the document and
the behaviour cannot disagree.
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
    "build_document",
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
        "duration": {"type": "number", "exclusiveMinimum": 0, "maximum": 31_536_000},
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
                "duration": {"type": "number", "exclusiveMinimum": 0, "maximum": 31_536_000},
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


# --- the document --------------------------------------------------------------------

_NUM = {"type": "number"}
_STR = {"type": "string"}
_NULLABLE_NUM = {"type": ["number", "null"]}

_INT = {"type": "integer"}
_ANY: dict[str, Any] = {}
_OBJ = {"type": "object"}

_SCHEMAS: Final[dict[str, Any]] = {
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


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _responses(op: Operation, secured: bool) -> dict[str, Any]:
    ok: dict[str, Any] = {
        "description": "OK",
        "content": {op.content_type: {"schema": dict(op.response)}},
    }
    out: dict[str, Any] = {"200": ok, "429": _problem("rate limit exceeded (see Retry-After)")}
    if op.params or op.body is not None:
        out["400"] = _problem("malformed request (bad JSON, wrong content type)")
        out["422"] = _problem("a parameter or body field failed validation")
    if secured:
        out["401"] = _problem("missing or wrong bearer token")
        out["403"] = _problem("forbidden (no token configured, or cross-origin request)")
    if op.not_found:
        out["404"] = _problem("no such item")
    if op.mutating:
        out["409"] = _problem("conflicting concurrent change; re-read and retry")
    return out


def build_document(*, protect_reads: bool, version: str, title: str = "") -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API as this server is configured."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        if not op.documented:
            continue
        secured = op.mutating or (protect_reads and not op.public)
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": [
                {
                    "name": p.name,
                    "in": p.location,
                    "required": p.required,
                    "description": p.description,
                    "schema": dict(p.schema),
                }
                for p in op.params
            ],
            "responses": _responses(op, secured),
            "security": [{"bearerAuth": []}] if secured else [],
        }
        if op.body is not None:
            entry["requestBody"] = {
                "required": op.body_required,
                "content": {"application/json": {"schema": dict(op.body)}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title or "backend_services control API",
            "version": version,
            "description": (
                "Watch and steer a fleet: services and health, circuit breakers, "
                "degradation levels and versioned configuration. Mutating operations need "
                "'Authorization: Bearer <token>'. Errors are application/problem+json."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
