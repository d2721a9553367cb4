"""The Prometheus text exposition format (version 0.0.4): :func:`render` and
:func:`merge`, served with :data:`CONTENT_TYPE`."""

from __future__ import annotations

from collections.abc import Iterable

from ..log import get_logger
from .families import MetricFamily, format_value
from .registry import Registry

__all__ = ["CONTENT_TYPE", "merge", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Content-Type of the text exposition format."""

_log = get_logger("metrics")


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
                lines.append(f"{fam.name}{sample.suffix}{{{inner}}} {format_value(sample.value)}")
            else:
                lines.append(f"{fam.name}{sample.suffix} {format_value(sample.value)}")
    return "\n".join(lines) + "\n" if lines else ""
