"""The control plane: HTTP API, live dashboard, server-sent events and ``/metrics``.

* :mod:`.server` — :class:`ControlServer` (aiohttp): middlewares, routes, auth; the
  operations' work is in :mod:`.handlers`, bodies and replies in :mod:`.messages`,
  server-sent event streams in :mod:`.events`; :mod:`.serve` runs it for the CLI;
* :mod:`.endpoints` — the operations table; :mod:`.components` — the schemas replies
  follow; :mod:`.openapi` — the OpenAPI document built from both;
* :mod:`.backend` / :mod:`.operations` — what the API acts on; :mod:`.fleet_view` — the
  fleet snapshot and its metric families; :mod:`.problems` — problem+json errors;
* :mod:`.security` — bearer token, cross-site checks, security headers;
* :mod:`.ratelimit` — per-client token buckets; :mod:`.schema` — request validation;
* :mod:`.watch` — snapshots, transitions and subscribers for the live view;
* ``static/`` — the dashboard page (Chart.js vendored under ``static/vendor/``).
"""

from .backend import ControlBackend
from .server import ControlServer

__all__ = ["ControlBackend", "ControlServer"]
