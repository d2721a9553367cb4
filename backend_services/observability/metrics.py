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
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeAlias, TypeVar

from ..errors import ValidationError
from ..log import get_logger

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

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Content-Type of the text exposition format."""

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Histogram upper bounds in seconds, from 1 ms to 10 s (``+Inf`` is always added)."""

MetricKind: TypeAlias = Literal["counter", "gauge", "histogram", "untyped"]
LabelValues: TypeAlias = tuple[str, ...]

_log = get_logger("metrics")
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_KINDS = ("counter", "gauge", "histogram", "untyped")
_MISSING = object()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError("name", name, "a metric name matching [a-zA-Z_:][a-zA-Z0-9_:]*")
    return name


def _check_labels(labelnames: Iterable[str]) -> tuple[str, ...]:
    names = tuple(labelnames)
    for label in names:
        if not isinstance(label, str) or not _LABEL.match(label) or label.startswith("__"):
            raise ValidationError(
                "labelnames",
                label,
                "a label name matching [a-zA-Z_][a-zA-Z0-9_]* not starting with '__'",
            )
        if label == "le":
            raise ValidationError("labelnames", label, "a label name other than 'le' (reserved)")
    if len(set(names)) != len(names):
        raise ValidationError("labelnames", names, "distinct label names")
    return names


@dataclass(frozen=True, slots=True)
class Sample:
    """One line of exposition: ``<family name><suffix>{labels} value``."""

    suffix: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(slots=True)
class MetricFamily:
    """A metric's samples at one moment, as collectors return them."""

    name: str
    kind: MetricKind
    help: str
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.kind not in _KINDS:
            raise ValidationError("kind", self.kind, f"one of {', '.join(_KINDS)}")

    def add(
        self,
        value: float | int | bool,
        labels: Mapping[str, object] | None = None,
        suffix: str = "",
    ) -> MetricFamily:
        """Append a sample (label values are turned into strings); returns ``self``."""
        items = tuple((str(k), _label_text(v)) for k, v in (labels or {}).items())
        self.samples.append(Sample(suffix, items, float(value)))
        return self


def _label_text(value: object) -> str:
    enum_value = getattr(value, "value", None)
    if isinstance(enum_value, str):
        return enum_value
    return str(value)


# --- instruments ---------------------------------------------------------------------


ChildT = TypeVar("ChildT")


class _Metric(Generic[ChildT]):
    """An instrument: one child (series) per combination of label values."""

    kind: MetricKind = "untyped"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        *,
        registry: Registry | None = None,
    ) -> None:
        self._children: dict[LabelValues, ChildT] = {}
        self.name = _check_name(name)
        self.help = help
        self.labelnames = _check_labels(labelnames)
        if registry is not None:
            registry.register(self)

    def _key(self, args: tuple[object, ...], kwargs: Mapping[str, object]) -> LabelValues:
        names = self.labelnames
        if kwargs and not args and len(kwargs) == len(names):
            key: list[str] = []
            for n in names:
                v = kwargs.get(n, _MISSING)
                if v is _MISSING:
                    break
                key.append(v if type(v) is str else _label_text(v))
            else:
                return tuple(key)
        if args and kwargs:
            raise ValidationError("labels", (args, dict(kwargs)), "positional or keyword labels")
        if kwargs:
            if set(kwargs) != set(self.labelnames):
                raise ValidationError(
                    "labels", sorted(kwargs), f"exactly the labels {list(self.labelnames)}"
                )
            return tuple(_label_text(kwargs[n]) for n in self.labelnames)
        if len(args) != len(self.labelnames):
            raise ValidationError(
                "labels", args, f"{len(self.labelnames)} values for {list(self.labelnames)}"
            )
        return tuple(_label_text(a) for a in args)

    def _pairs(self, key: LabelValues) -> tuple[tuple[str, str], ...]:
        return tuple(zip(self.labelnames, key, strict=True))

    def _new_child(self) -> ChildT:  # pragma: no cover - overridden
        raise NotImplementedError

    def labels(self, *args: object, **kwargs: object) -> ChildT:
        """The series for these label values (created at first use)."""
        key = self._key(args, kwargs)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def remove(self, *args: object, **kwargs: object) -> None:
        """Forget one labelled series (e.g. an instance that was deregistered)."""
        self._children.pop(self._key(args, kwargs), None)

    def collect(self) -> MetricFamily:  # pragma: no cover - overridden
        raise NotImplementedError


class _HasValue(Protocol):
    value: float


ValueChildT = TypeVar("ValueChildT", bound=_HasValue)


class _ValueMetric(_Metric[ValueChildT]):
    """Counters and gauges: one sample per series."""

    def collect(self) -> MetricFamily:
        fam = MetricFamily(self.name, self.kind, self.help)
        for key, child in self._children.items():
            fam.samples.append(Sample("", self._pairs(key), child.value))
        return fam


class _CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0) to the counter."""
        if amount < 0:
            raise ValidationError("amount", amount, "a value >= 0 (counters only go up)")
        self.value += amount


class Counter(_ValueMetric[_CounterChild]):
    """A value that only goes up (name should end in ``_total``)."""

    kind: MetricKind = "counter"

    def _new_child(self) -> _CounterChild:
        return _CounterChild()

    def inc(self, amount: float = 1.0) -> None:
        """Increment the unlabelled counter."""
        self.labels().inc(amount)


class _GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class Gauge(_ValueMetric[_GaugeChild]):
    """A value that goes up and down."""

    kind: MetricKind = "gauge"

    def _new_child(self) -> _GaugeChild:
        return _GaugeChild()

    def set(self, value: float) -> None:
        self.labels().set(value)

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self.labels().dec(amount)


class _HistogramChild:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Record one observation (seconds, bytes, ...)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value


class Histogram(_Metric[_HistogramChild]):
    """Observations counted into cumulative buckets, with their count and sum."""

    kind: MetricKind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        registry: Registry | None = None,
    ) -> None:
        bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        if not bounds or any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValidationError("buckets", list(buckets), "a non-empty increasing sequence")
        self.buckets = bounds
        super().__init__(name, help, labelnames, registry=registry)

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self.buckets)

    def observe(self, value: float) -> None:
        self.labels().observe(value)

    def collect(self) -> MetricFamily:
        fam = MetricFamily(self.name, "histogram", self.help)
        for key, child in self._children.items():
            pairs = self._pairs(key)
            cumulative = 0
            for bound, n in zip(self.buckets, child.counts, strict=False):
                cumulative += n
                fam.samples.append(Sample("_bucket", (*pairs, ("le", _fmt(bound))), cumulative))
            fam.samples.append(Sample("_bucket", (*pairs, ("le", "+Inf")), child.count))
            fam.samples.append(Sample("_count", pairs, child.count))
            fam.samples.append(Sample("_sum", pairs, child.sum))
        return fam


# --- registry ------------------------------------------------------------------------

Collector: TypeAlias = Callable[[], Iterable[MetricFamily]]
"""A callable that builds metric families when the registry is scraped."""


class Registry:
    """Instruments and lazy collectors, rendered together by :func:`render`.

    A collector that raises is logged and skipped: one broken component never takes the
    whole ``/metrics`` page down.
    """

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric[Any]] = {}
        self._collectors: list[Collector] = []

    def register(self, metric: _Metric[Any]) -> _Metric[Any]:
        """Add an instrument; its name must be new to this registry."""
        if metric.name in self._metrics and self._metrics[metric.name] is not metric:
            raise ValidationError("name", metric.name, "a metric name not yet registered")
        self._metrics[metric.name] = metric
        return metric

    def unregister(self, item: _Metric[Any] | Collector) -> None:
        """Remove an instrument or a collector (no error when absent)."""
        if isinstance(item, _Metric):
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


# --- exposition ----------------------------------------------------------------------


def _fmt(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def merge(families: Iterable[MetricFamily]) -> list[MetricFamily]:
    """One family per name (samples of same-named families joined, first kind wins; a
    sample whose name and labels were already seen is dropped)."""
    merged: dict[str, MetricFamily] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for fam in families:
        target = merged.get(fam.name)
        if target is None:
            target = merged[fam.name] = MetricFamily(fam.name, fam.kind, fam.help)
        elif target.kind != fam.kind:
            _log.warning(
                "metric_kind_conflict", name=fam.name, kind=fam.kind, registered=target.kind
            )
            continue
        for sample in fam.samples:
            ident = (fam.name + sample.suffix, tuple(sorted(sample.labels)))
            if ident not in seen:
                seen.add(ident)
                target.samples.append(sample)
    return list(merged.values())


def render(source: Registry | Iterable[MetricFamily]) -> str:
    """The text exposition of a registry or of families (``# HELP``, ``# TYPE``, samples)."""
    families = source.collect() if isinstance(source, Registry) else list(source)
    lines: list[str] = []
    for fam in merge(families):
        lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for sample in fam.samples:
            if sample.labels:
                inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sample.labels)
                lines.append(f"{fam.name}{sample.suffix}{{{inner}}} {_fmt(sample.value)}")
            else:
                lines.append(f"{fam.name}{sample.suffix} {_fmt(sample.value)}")
    return "\n".join(lines) + "\n" if lines else ""
