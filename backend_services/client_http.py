"""HTTP as the client speaks it: the responses it returns (:class:`HttpResponse`), which
statuses count as a failed attempt (server errors), and which methods are retried by
default (:data:`IDEMPOTENT_METHODS`). The requests themselves are
:meth:`ServiceClient.request <backend_services.client.ServiceClient.request>`."""

from __future__ import annotations

import json as _json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .discovery.model import ServiceEndpoint

__all__ = ["IDEMPOTENT_METHODS", "HttpResponse"]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A response read in full."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    endpoint: ServiceEndpoint | None = field(default=None, compare=False)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return _json.loads(self.body)


class _BadStatus(Exception):
    """An upstream answered with a server error (counts as a failed attempt)."""

    def __init__(self, response: HttpResponse):
        self.response = response
        super().__init__(f"HTTP {response.status}")


def _is_failure_status(status: int) -> bool:
    return status >= 500
