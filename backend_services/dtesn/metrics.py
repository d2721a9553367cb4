"""What a membrane counts about itself, as a dict and as Prometheus text (pure)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["OUTCOMES", "MembraneMetrics", "percentile", "prometheus_text"]

OUTCOMES: Final = ("ok", "invalid", "error", "timeout", "unavailable")
_WINDOW: Final = 2048


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[rank]


@dataclass
class MembraneMetrics:
    """Request counts by outcome, in-flight requests and recent latencies."""

    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    in_flight: int = 0
    degraded_requests: int = 0
    steps_processed: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))

    def record(
        self, outcome: str, seconds: float, *, steps: int = 0, degraded: bool = False
    ) -> None:
        """Count one finished /process call."""
        self.requests[outcome] = self.requests.get(outcome, 0) + 1
        if outcome == "ok":
            self.latencies.append(seconds)
            self.steps_processed += steps
            if degraded:
                self.degraded_requests += 1

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def as_dict(self) -> dict[str, Any]:
        recent = list(self.latencies)
        return {
            "requests_total": self.total,
            "requests_by_outcome": dict(self.requests),
            "in_flight": self.in_flight,
            "degraded_requests": self.degraded_requests,
            "steps_processed": self.steps_processed,
            "latency_ms": {
                "p50": round(percentile(recent, 0.5) * 1000, 3),
                "p99": round(percentile(recent, 0.99) * 1000, 3),
                "samples": len(recent),
            },
        }


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    body = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(labels.items())
    )
    return "{" + body + "}"


def prometheus_text(
    metrics: MembraneMetrics,
    *,
    labels: dict[str, str],
    gauges: dict[str, tuple[str, float]],
) -> str:
    """Prometheus exposition (text format 0.0.4) of the membrane's metrics.

    ``gauges`` maps a metric name (without prefix) to ``(help, value)``.
    """
    base = _labels(labels)
    lines = [
        "# HELP dtesn_membrane_requests_total /process calls by outcome.",
        "# TYPE dtesn_membrane_requests_total counter",
    ]
    for outcome, count in sorted(metrics.requests.items()):
        lines.append(
            f"dtesn_membrane_requests_total{_labels({**labels, 'outcome': outcome})} {count}"
        )
    recent = list(metrics.latencies)
    lines += [
        "# HELP dtesn_membrane_request_latency_seconds Latency of recent successful calls.",
        "# TYPE dtesn_membrane_request_latency_seconds summary",
    ]
    for q in (0.5, 0.9, 0.99):
        lines.append(
            "dtesn_membrane_request_latency_seconds"
            f"{_labels({**labels, 'quantile': str(q)})} {percentile(recent, q):.6f}"
        )
    lines.append(f"dtesn_membrane_request_latency_seconds_count{base} {len(recent)}")
    lines.append(f"dtesn_membrane_request_latency_seconds_sum{base} {sum(recent):.6f}")
    all_gauges = {
        "in_flight": ("Requests being processed now.", float(metrics.in_flight)),
        "degraded_requests_total": (
            "Calls answered with reduced depth.",
            float(metrics.degraded_requests),
        ),
        **gauges,
    }
    for name, (help_text, value) in sorted(all_gauges.items()):
        full = f"dtesn_membrane_{name}"
        kind = "counter" if name.endswith("_total") else "gauge"
        lines += [f"# HELP {full} {help_text}", f"# TYPE {full} {kind}", f"{full}{base} {value:g}"]
    return "\n".join(lines) + "\n"
