"""Observability: Prometheus metrics (registry, exposition, component collectors) and
OpenTelemetry tracing for the request path."""

from .metrics import CONTENT_TYPE, Counter, Gauge, Histogram, MetricFamily, Registry, render

__all__ = [
    "CONTENT_TYPE",
    "Counter",
    "Gauge",
    "Histogram",
    "MetricFamily",
    "Registry",
    "render",
]
