"""The control plane: HTTP API, live dashboard, server-sent events and ``/metrics``.

* :mod:`.server` — :class:`ControlServer` (aiohttp) and :func:`serve`;
* :mod:`.openapi` — the operations table and the OpenAPI document built from it;
* :mod:`.security` — bearer token, cross-site checks, security headers;
* :mod:`.ratelimit` — per-client token buckets; :mod:`.schema` — request validation;
* :mod:`.watch` — snapshots, transitions and subscribers for the live view;
* ``static/`` — the dashboard page (Chart.js vendored under ``static/vendor/``).
"""

from .backend import ControlBackend
from .server import ControlServer

__all__ = ["ControlBackend", "ControlServer"]
