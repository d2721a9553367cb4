"""The control API's operations, described once: routes, validation and OpenAPI 3.

:data:`OPERATIONS` lists every operation with its parameters and body schema. The server
registers its routes from this table and validates each request against the same
schemas it publishes at ``/openapi.json`` (:func:`build_document`), so the document and
the behaviour cannot disagree.

**Where the pieces live.** This module builds the document (:func:`build_document`) and
names the public API; the table itself (:data:`OPERATIONS`, :class:`Operation`,
:class:`Param`, :func:`operation`, :data:`API_PREFIX`, :data:`DEGRADATION_LEVELS` and the
schema fragments the operations share) is in :mod:`.endpoints`; the schemas of what the
API returns (the document's ``components/schemas``) are in :mod:`.components`.
"""

from __future__ import annotations

from typing import Any

from .components import COMPONENT_SCHEMAS
from .endpoints import API_PREFIX, DEGRADATION_LEVELS, OPERATIONS, Operation, Param, operation

__all__ = [
    "API_PREFIX",
    "DEGRADATION_LEVELS",
    "OPERATIONS",
    "Operation",
    "Param",
    "build_document",
    "operation",
]


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
            "schemas": COMPONENT_SCHEMAS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
