"""The demo's measured figures, from what the recorder saw (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .record import Recorder

__all__ = ["Figures", "Marks", "figures_rows", "measure"]


@dataclass
class Marks:
    """When the scenario did things (seconds since start; None = did not happen)."""

    killed: str = ""
    slowed: str = ""
    t_kill: float | None = None
    t_breaker_open: float | None = None
    t_discovery_down: float | None = None
    t_slow: float | None = None
    t_slow_open: float | None = None
    t_slow_closed: float | None = None
    t_pressure: float | None = None
    t_pressure_peak: float | None = None
    t_release: float | None = None
    t_recovered: float | None = None
    t_config: float | None = None
    t_config_seen: float | None = None
    t_rollback: float | None = None
    t_rollback_seen: float | None = None
    t_restart: float | None = None
    t_rejoined: float | None = None
    t_closed_again: float | None = None
    levels_seen: dict[str, list[str]] = field(default_factory=dict)
    config_versions: int = 0
    duration: float = 0.0


@dataclass
class Figures:
    """The numbers of the summary table."""

    requests: int
    answered: int
    fallback: int
    failed: int
    rate: float
    p50_ms: float
    p99_ms: float
    failover_ms: float | None
    failed_attempts_on_killed: int
    breaker_transitions: int
    discovery_transitions: int
    degradation_transitions: int
    degraded_responses: int
    served_by: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)


def _ms(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return round((b - a) * 1000, 1)


def measure(rec: Recorder, marks: Marks) -> Figures:
    """Turn the record into figures."""
    counts = rec.outcomes()
    failover = None
    failed_on_killed = 0
    if marks.t_kill is not None:
        failed = [
            e
            for e in rec.events
            if e.kind == "attempt_failed"
            and e.subject == marks.killed
            and marks.t_kill <= e.t < (marks.t_slow or float("inf"))
        ]
        failed_on_killed = len(failed)
        failover = _ms(marks.t_kill, max(e.t for e in failed)) if failed else 0.0
    total = sum(counts.values())
    return Figures(
        requests=total,
        answered=counts.get("ok", 0),
        fallback=counts.get("fallback", 0),
        failed=counts.get("failed", 0),
        rate=round(total / marks.duration, 1) if marks.duration else 0.0,
        p50_ms=round(rec.latency_ms(0.5), 2),
        p99_ms=round(rec.latency_ms(0.99), 2),
        failover_ms=failover,
        failed_attempts_on_killed=failed_on_killed,
        breaker_transitions=rec.count("breaker"),
        discovery_transitions=rec.count("discovery"),
        degradation_transitions=rec.count("degradation"),
        degraded_responses=sum(1 for c in rec.calls if c.outcome == "ok" and c.degraded),
        served_by=dict(sorted(rec.served_by().items())),
        extra={
            "kill_to_breaker_open_ms": _ms(marks.t_kill, marks.t_breaker_open),
            "kill_to_discovery_down_ms": _ms(marks.t_kill, marks.t_discovery_down),
            "slow_to_breaker_open_ms": _ms(marks.t_slow, marks.t_slow_open),
            "pressure_to_peak_ms": _ms(marks.t_pressure, marks.t_pressure_peak),
            "release_to_normal_ms": _ms(marks.t_release, marks.t_recovered),
            "config_change_seen_ms": _ms(marks.t_config, marks.t_config_seen),
            "rollback_seen_ms": _ms(marks.t_rollback, marks.t_rollback_seen),
            "restart_to_healthy_ms": _ms(marks.t_restart, marks.t_rejoined),
            "restart_to_breaker_closed_ms": _ms(marks.t_restart, marks.t_closed_again),
        },
    )


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def figures_rows(fig: Figures, marks: Marks) -> list[tuple[str, str]]:
    """(what, value) rows of the summary table."""
    ex = fig.extra
    levels = next(iter(marks.levels_seen.values()), [])
    rows = [
        ("requests sent through the request path", f"{fig.requests:,} ({fig.rate:g}/s)"),
        ("answered by a membrane", f"{fig.answered:,}"),
        ("answered by the local fallback", f"{fig.fallback:,}"),
        ("failed, as the caller saw it", f"{fig.failed:,}"),
        ("latency p50 / p99", f"{fig.p50_ms:.1f} ms / {fig.p99_ms:.1f} ms"),
        (
            f"failover: kill -> last failed attempt on {marks.killed}",
            _fmt_ms(fig.failover_ms),
        ),
        ("  failed attempts on it (retried elsewhere)", f"{fig.failed_attempts_on_killed:,}"),
        ("  kill -> its breaker open", _fmt_ms(ex["kill_to_breaker_open_ms"])),
        ("  kill -> discovery marks it down", _fmt_ms(ex["kill_to_discovery_down_ms"])),
        (
            f"slow-down of {marks.slowed} -> its breaker open",
            _fmt_ms(ex["slow_to_breaker_open_ms"]),
        ),
        ("pressure -> peak level", _fmt_ms(ex["pressure_to_peak_ms"])),
        ("levels seen", " -> ".join(levels) if levels else "-"),
        ("pressure released -> normal again", _fmt_ms(ex["release_to_normal_ms"])),
        ("responses at reduced depth (degraded)", f"{fig.degraded_responses:,}"),
        ("config change seen by every membrane", _fmt_ms(ex["config_change_seen_ms"])),
        ("rollback seen by every membrane", _fmt_ms(ex["rollback_seen_ms"])),
        ("configuration versions", f"{marks.config_versions}"),
        ("restart -> healthy in discovery", _fmt_ms(ex["restart_to_healthy_ms"])),
        ("restart -> breaker closed", _fmt_ms(ex["restart_to_breaker_closed_ms"])),
        (
            "transitions: breaker / discovery / degradation",
            f"{fig.breaker_transitions} / {fig.discovery_transitions} / "
            f"{fig.degradation_transitions}",
        ),
        ("requests served per membrane", ", ".join(f"{k} {v:,}" for k, v in fig.served_by.items())),
    ]
    return rows
