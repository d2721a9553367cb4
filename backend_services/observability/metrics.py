"""A small Prometheus registry and its text exposition format (version 0.0.4).

Two ways to publish a metric:

* **instruments** — :class:`Counter`, :class:`Gauge`, :class:`Histogram`, updated by the
  code that owns them (``requests.labels(route="/x", status="200").inc()``);
* **collectors** — callables registered with :meth:`Registry.register_collector` that
  build :class:`MetricFamily` snapshots *at scrape time* from a component's own counters
  (its ``get_metrics()``), so hot paths pay nothing for being observable.

:func:`render` turns a registry (or families) into the text format Prometheus scrapes;
serve it with :data:`CONTENT_TYPE`. Names follow one scheme: ``backend_services_*`` for
the library's components, ``dtesn_*`` for the DTESN membrane services; counters end in
``_total``, durations are in seconds (``_seconds``), ratios are 0..1.

**Where the pieces live.** This module names the public API; the code is in one module
per layer: :mod:`.families` (:class:`Sample`, :class:`MetricFamily`, :data:`MetricKind`,
the checks of metric and label names, the text forms of label and sample values),
:mod:`.instruments` (:class:`Counter`, :class:`Gauge`, :class:`Histogram`, their
labelled series and :data:`DEFAULT_BUCKETS`), :mod:`.registry` (:class:`Registry` and
:data:`Collector`) and :mod:`.exposition` (:func:`render`, :func:`merge` and
:data:`CONTENT_TYPE`).
"""

from __future__ import annotations

from .exposition import CONTENT_TYPE, merge, render
from .families import MetricFamily, MetricKind, Sample
from .instruments import DEFAULT_BUCKETS, Counter, Gauge, Histogram
from .registry import Collector, Registry

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "Collector",
    "Counter",
    "Gauge",
    "Histogram",
    "MetricFamily",
    "MetricKind",
    "Registry",
    "Sample",
    "merge",
    "render",
]
