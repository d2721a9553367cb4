"""What the demo measures: every client call, every event, and the checks (pure: no I/O).

Times are seconds since the scenario began, passed in by the caller.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..dtesn.metrics import percentile

__all__ = ["Call", "Check", "Event", "Recorder"]


@dataclass(frozen=True, slots=True)
class Call:
    """One request as the caller saw it."""

    t: float
    latency: float
    outcome: str  # "ok" (a membrane answered), "fallback" (local answer), "failed"
    served_by: str | None = None
    depth: int = 0
    degraded: bool = False
    error: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened: ``kind`` (e.g. ``"breaker"``), ``subject``, details."""

    t: float
    kind: str
    subject: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Check:
    """One thing the demo set out to show, whether it happened, and the evidence."""

    name: str
    passed: bool
    detail: str


class Recorder:
    """Calls, events and checks of one demo run."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.events: list[Event] = []
        self.checks: list[Check] = []

    # --- calls ------------------------------------------------------------------------

    def call(self, call: Call) -> None:
        self.calls.append(call)

    def outcomes(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        return Counter(c.outcome for c in self.calls if since <= c.t < until)

    def served_by(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        return Counter(
            c.served_by for c in self.calls if c.served_by is not None and since <= c.t < until
        )

    def failures(self) -> list[Call]:
        return [c for c in self.calls if c.outcome == "failed"]

    def latency_ms(self, q: float) -> float:
        return percentile([c.latency for c in self.calls if c.outcome != "failed"], q) * 1000

    # --- events -----------------------------------------------------------------------

    def event(self, event: Event) -> None:
        self.events.append(event)

    def first(
        self, kind: str, subject: str | None = None, *, after: float = 0.0, detail: str = ""
    ) -> Event | None:
        """The first event of ``kind`` (for ``subject``, containing ``detail``) at/after."""
        for e in self.events:
            if (
                e.kind == kind
                and e.t >= after
                and (subject is None or e.subject == subject)
                and detail in e.detail
            ):
                return e
        return None

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events if e.kind == kind)

    # --- checks -----------------------------------------------------------------------

    def check(self, name: str, passed: bool, detail: str) -> Check:
        result = Check(name, bool(passed), detail)
        self.checks.append(result)
        return result

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)
