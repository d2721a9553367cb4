"""The instruments: :class:`Counter`, :class:`Gauge` and :class:`Histogram`, updated by
the code that owns them, one series per combination of label values.

Hot path: holding the child (``ok = counter.labels(outcome="ok")``, then ``ok.inc()``)
skips finding the series by its label values on every update.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Generic, Protocol, TypeAlias, TypeVar

from ..errors import ValidationError
from .families import (
    MetricFamily,
    MetricKind,
    Sample,
    check_labels,
    check_name,
    format_value,
    label_text,
)

if TYPE_CHECKING:
    from .registry import Registry

__all__ = ["DEFAULT_BUCKETS", "Counter", "Gauge", "Histogram", "Instrument"]

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

LabelValues: TypeAlias = tuple[str, ...]

_MISSING = object()


ChildT = TypeVar("ChildT")


class Instrument(Generic[ChildT]):
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
        self.name = check_name(name)
        self.help = help
        self.labelnames = check_labels(labelnames)
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
                key.append(v if type(v) is str else label_text(v))
            else:
                return tuple(key)
        if args and kwargs:
            raise ValidationError("labels", (args, dict(kwargs)), "positional or keyword labels")
        if kwargs:
            if set(kwargs) != set(self.labelnames):
                raise ValidationError(
                    "labels", sorted(kwargs), f"exactly the labels {list(self.labelnames)}"
                )
            return tuple(label_text(kwargs[n]) for n in self.labelnames)
        if len(args) != len(self.labelnames):
            raise ValidationError(
                "labels", args, f"{len(self.labelnames)} values for {list(self.labelnames)}"
            )
        return tuple(label_text(a) for a in args)

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


class _ValueMetric(Instrument[ValueChildT]):
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


class Histogram(Instrument[_HistogramChild]):
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
                fam.samples.append(
                    Sample("_bucket", (*pairs, ("le", format_value(bound))), cumulative)
                )
            fam.samples.append(Sample("_bucket", (*pairs, ("le", "+Inf")), child.count))
            fam.samples.append(Sample("_count", pairs, child.count))
            fam.samples.append(Sample("_sum", pairs, child.sum))
        return fam
