"""Errors as RFC 9457 problem documents (``application/problem+json``).

Handlers raise :class:`Problem` (or a library error); :func:`problem_for` turns any
exception into a problem document with a clear title and detail. Unexpected errors become
a 500 whose detail says nothing internal (the exception is logged instead).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ..errors import (
    AuthorizationError,
    ConflictError,
    LifecycleError,
    StoreError,
    StoreUnavailableError,
    ValidationError,
)

__all__ = ["PROBLEM_CONTENT_TYPE", "Problem", "problem_for", "problem_response"]

PROBLEM_CONTENT_TYPE = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):
    """An HTTP error with a human-readable ``detail`` (and optional extra members)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.status = status
        self.title = title or _TITLES.get(status, "Error")
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra
        super().__init__(f"{status} {self.title}: {detail}")


def problem_response(problem: Problem, instance: str | None = None) -> web.Response:
    """The problem document of ``problem`` as a response."""
    doc: dict[str, Any] = {
        "type": "about:blank",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if instance:
        doc["instance"] = instance
    doc.update(problem.extra)
    return web.Response(
        status=problem.status,
        body=json.dumps(doc, default=str).encode(),
        headers={"Content-Type": PROBLEM_CONTENT_TYPE, **problem.headers},
    )


def problem_for(exc: BaseException) -> Problem | None:
    """The problem an exception means to a client (``None``: unexpected, a 500)."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, ValidationError):
        return Problem(
            422,
            str(exc),
            title="Invalid value",
            field=exc.field,
            expected=exc.expected,
        )
    if isinstance(exc, AuthorizationError):
        return Problem(403, str(exc))
    if isinstance(exc, ConflictError):
        return Problem(409, str(exc))
    if isinstance(exc, StoreUnavailableError):
        return Problem(503, f"shared state is unreachable right now: {exc}")
    if isinstance(exc, StoreError):
        return Problem(503, f"shared state failed: {exc}")
    if isinstance(exc, LifecycleError):
        return Problem(503, str(exc))
    if isinstance(exc, ValueError):
        # the library's convention: invalid input raises a ValueError (subclass)
        return Problem(422, str(exc) or "invalid value", title="Invalid value")
    if isinstance(exc, web.HTTPException):
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else None
        return Problem(
            exc.status,
            detail or exc.reason,
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )
    return None
