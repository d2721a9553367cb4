"""The control API's HTTP messages: what a request carries, what a response holds.

:func:`read_params` and :func:`read_body` take a request's path and query parameters and
its JSON body, validated against the operation's schemas (a failure names the field, the
value and what was expected); :func:`json_response` writes any result as compact JSON,
with non-finite floats as ``null``, enums as their values and unknown objects as text
(:func:`jsonable`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

from aiohttp import web

from ..errors import ValidationError
from .endpoints import Operation
from .problems import Problem
from .schema import validate

__all__ = ["MAX_BODY_BYTES", "Args", "json_response", "jsonable", "read_body", "read_params"]

MAX_BODY_BYTES = 64 * 1024
Args = dict[str, Any]


def jsonable(value: Any) -> Any:
    """``value`` with only JSON types in it (non-finite floats become ``None``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def json_response(data: Any, status: int = 200) -> web.Response:
    """A compact ``application/json`` response of :func:`jsonable` ``data``."""
    body = json.dumps(jsonable(data), separators=(",", ":")).encode()
    return web.Response(status=status, body=body, content_type="application/json")


def read_params(request: web.Request, op: Operation) -> Args:
    """The operation's path and query parameters, validated (absent optional ones are
    ``None``)."""
    args: Args = {}
    for param in op.params:
        if param.location == "path":
            raw: str | None = request.match_info.get(param.name)
        else:
            raw = request.query.get(param.name)
        where = f"{param.location}.{param.name}"
        if raw is None:
            if param.required:
                raise ValidationError(where, None, "a required parameter")
            args[param.name] = None
            continue
        value: Any = raw
        if param.schema.get("type") == "integer":
            try:
                value = int(raw.strip())
            except ValueError:
                raise ValidationError(where, raw, "an integer") from None
        args[param.name] = validate(value, param.schema, where)
    return args


async def read_body(request: web.Request, op: Operation) -> Args:
    """The request's JSON body, validated against the operation's body schema (an empty
    body is ``{}`` unless one is required)."""
    assert op.body is not None
    raw = await request.read()
    if not raw.strip():
        if op.body_required:
            raise ValidationError("body", None, "a JSON object body")
        return {}
    if request.content_type != "application/json":
        raise Problem(
            415,
            f"the body must be JSON (Content-Type: application/json), not {request.content_type!r}",
        )
    try:
        doc = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}") from None
    validated: Args = validate(doc, op.body, "body")
    return validated


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
