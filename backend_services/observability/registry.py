"""The :class:`Registry`: instruments and the collectors run at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

from ..errors import ValidationError
from ..log import get_logger
from .families import MetricFamily
from .instruments import DEFAULT_BUCKETS, Counter, Gauge, Histogram, Instrument

__all__ = ["Collector", "Registry"]

_log = get_logger("metrics")

Collector: TypeAlias = Callable[[], Iterable[MetricFamily]]
"""A callable that builds metric families when the registry is scraped."""


class Registry:
    """Instruments and lazy collectors, rendered together by :func:`.exposition.render`.

    A collector that raises is logged and skipped: one broken component never takes the
    whole ``/metrics`` page down.
    """

    def __init__(self) -> None:
        self._metrics: dict[str, Instrument[Any]] = {}
        self._collectors: list[Collector] = []

    def register(self, metric: Instrument[Any]) -> Instrument[Any]:
        """Add an instrument; its name must be new to this registry."""
        if metric.name in self._metrics and self._metrics[metric.name] is not metric:
            raise ValidationError("name", metric.name, "a metric name not yet registered")
        self._metrics[metric.name] = metric
        return metric

    def unregister(self, item: Instrument[Any] | Collector) -> None:
        """Remove an instrument or a collector (no error when absent)."""
        if isinstance(item, Instrument):
            if self._metrics.get(item.name) is item:
                del self._metrics[item.name]
            return
        self._collectors = [c for c in self._collectors if c is not item]

    def register_collector(self, collector: Collector) -> Collector:
        """Add a callable run at every scrape; returns it (to unregister later)."""
        self._collectors.append(collector)
        return collector

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        """Create and register a :class:`Counter` (or return the one of that name)."""
        existing = self._metrics.get(name)
        if isinstance(existing, Counter) and existing.labelnames == tuple(labelnames):
            return existing
        return Counter(name, help, labelnames, registry=self)

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        """Create and register a :class:`Gauge` (or return the one of that name)."""
        existing = self._metrics.get(name)
        if isinstance(existing, Gauge) and existing.labelnames == tuple(labelnames):
            return existing
        return Gauge(name, help, labelnames, registry=self)

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        """Create and register a :class:`Histogram` (or return the one of that name)."""
        existing = self._metrics.get(name)
        if isinstance(existing, Histogram) and existing.labelnames == tuple(labelnames):
            return existing
        return Histogram(name, help, labelnames, buckets=buckets, registry=self)

    def collect(self) -> list[MetricFamily]:
        """Every family now: instruments first, then each collector's output."""
        families = [m.collect() for m in self._metrics.values()]
        for collector in list(self._collectors):
            try:
                families.extend(collector())
            except Exception as exc:
                _log.exception("collector_failed", collector=repr(collector), error=repr(exc))
        return families
