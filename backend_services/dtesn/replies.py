"""JSON replies and request reading shared by the membrane's handlers."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..errors import ValidationError
from .protocol import MAX_BODY_BYTES, PayloadTooLargeError

__all__ = ["error_reply", "read_json", "validation_reply"]


def error_reply(status: int, message: str, **extra: Any) -> web.Response:
    """``{"error": message, ...}`` with ``status``."""
    return web.json_response({"error": message, **extra}, status=status)


def validation_reply(exc: ValidationError) -> web.Response:
    """400 (413 when too large) naming the field, the value and what was expected."""
    status = 413 if isinstance(exc, PayloadTooLargeError) else 400
    return error_reply(
        status, str(exc), field=exc.field, expected=exc.expected, value=_jsonable(exc.value)
    )


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    text = json.dumps(value)
    return value if len(text) <= 200 else text[:197] + "..."


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, or a ValidationError (size, syntax, encoding)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise PayloadTooLargeError(
            "body",
            f"{request.content_length} bytes",
            f"at most {MAX_BODY_BYTES} bytes",
            message=f"request body too large: {request.content_length} bytes; "
            f"expected at most {MAX_BODY_BYTES} bytes",
        )
    try:
        return await request.json()
    except json.JSONDecodeError as exc:
        raise ValidationError("body", "invalid JSON", f"a JSON object ({exc.msg})") from None
    except UnicodeDecodeError:
        raise ValidationError("body", "undecodable bytes", "UTF-8 JSON") from None
