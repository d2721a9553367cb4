"""Observability: Prometheus metrics (registry, exposition, component collectors) and
OpenTelemetry tracing for the request path.

* :mod:`.metrics` — :class:`Registry`, :class:`Counter`, :class:`Gauge`,
  :class:`Histogram`, :func:`render` (text format 0.0.4, :data:`CONTENT_TYPE`);
* :mod:`.collectors` — families built at scrape time from circuit breakers, discovery,
  degradation and configuration managers; :func:`metrics_text` for a ``/metrics`` page;
* :mod:`.tracing` — spans for discover/pick/breaker/call/retry, W3C trace context in
  HTTP headers; a no-op without the ``otel`` extra.
"""

from .collectors import metrics_text, register_components
from .metrics import CONTENT_TYPE, Counter, Gauge, Histogram, MetricFamily, Registry, render

__all__ = [
    "CONTENT_TYPE",
    "Counter",
    "Gauge",
    "Histogram",
    "MetricFamily",
    "Registry",
    "metrics_text",
    "register_components",
    "render",
]
