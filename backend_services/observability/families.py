"""What a scrape returns: :class:`Sample` and :class:`MetricFamily`, with the checks
of metric and label names and the text forms of label and sample values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from ..errors import ValidationError

__all__ = [
    "MetricFamily",
    "MetricKind",
    "Sample",
    "check_labels",
    "check_name",
    "format_value",
    "label_text",
]

MetricKind: TypeAlias = Literal["counter", "gauge", "histogram", "untyped"]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_KINDS = ("counter", "gauge", "histogram", "untyped")


def check_name(name: str) -> str:
    """``name`` if it is a valid metric name (else a ValidationError)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError("name", name, "a metric name matching [a-zA-Z_:][a-zA-Z0-9_:]*")
    return name


def check_labels(labelnames: Iterable[str]) -> tuple[str, ...]:
    """The label names as a tuple, if valid, distinct and not the reserved ``le``."""
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
        check_name(self.name)
        if self.kind not in _KINDS:
            raise ValidationError("kind", self.kind, f"one of {', '.join(_KINDS)}")

    def add(
        self,
        value: float | int | bool,
        labels: Mapping[str, object] | None = None,
        suffix: str = "",
    ) -> MetricFamily:
        """Append a sample (label values are turned into strings); returns ``self``."""
        items = tuple((str(k), label_text(v)) for k, v in (labels or {}).items())
        self.samples.append(Sample(suffix, items, float(value)))
        return self


def label_text(value: object) -> str:
    """A label value as text (an enum gives its string value)."""
    enum_value = getattr(value, "value", None)
    if isinstance(enum_value, str):
        return enum_value
    return str(value)


def format_value(value: float) -> str:
    """A sample value as exposition text (integers without ``.0``, ``NaN``, ``+Inf``)."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)
