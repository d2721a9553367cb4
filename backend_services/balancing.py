"""Client-side load balancing: choose one endpoint for the next call.

Every balancer answers :meth:`Balancer.pick` from memory in microseconds and learns from
:meth:`Balancer.on_start` / :meth:`Balancer.on_finish` (the request path reports each
call's outcome and latency).

* :class:`RoundRobin` — each endpoint in turn.
* :class:`WeightedRoundRobin` — smooth weighted round robin on ``endpoint.weight``.
* :class:`LeastOutstanding` — two random choices, the one with fewer calls in flight.
* :class:`PeakEwma` — two random choices, lowest ``peak-EWMA latency x (in flight + 1)``
  divided by weight: reacts at once to a slow endpoint, forgets slowly.
* :class:`Filtered` — prefer endpoints matching a zone / metadata filter, spilling over to
  the rest when too few match.
* :func:`panic_candidates` — when too few endpoints are usable, spread over all of them
  rather than overload the survivors.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from .clock import Clock, resolve_clock
from .discovery.model import ServiceEndpoint
from .errors import ValidationError

__all__ = [
    "BALANCERS",
    "Balancer",
    "Filtered",
    "LeastOutstanding",
    "PeakEwma",
    "RoundRobin",
    "WeightedRoundRobin",
    "make_balancer",
    "match_metadata",
    "panic_candidates",
]


@runtime_checkable
class Balancer(Protocol):
    """Picks an endpoint; learns from outcomes."""

    def pick(
        self, candidates: Sequence[ServiceEndpoint], exclude: Collection[str] = ()
    ) -> ServiceEndpoint | None:
        """One of ``candidates`` whose id is not in ``exclude`` (``None`` when none)."""
        ...

    def on_start(self, endpoint: ServiceEndpoint) -> None:
        """A call to ``endpoint`` starts."""
        ...

    def on_finish(self, endpoint: ServiceEndpoint, latency: float, ok: bool) -> None:
        """A call to ``endpoint`` ended after ``latency`` seconds."""
        ...


def _usable(
    candidates: Sequence[ServiceEndpoint], exclude: Collection[str]
) -> Sequence[ServiceEndpoint]:
    if not exclude:
        return candidates
    return [c for c in candidates if c.service_id not in exclude]


class _Tracking:
    """In-flight counts shared by the balancers."""

    def __init__(self) -> None:
        self.outstanding: dict[str, int] = {}

    def on_start(self, endpoint: ServiceEndpoint) -> None:
        sid = endpoint.service_id
        self.outstanding[sid] = self.outstanding.get(sid, 0) + 1

    def on_finish(self, endpoint: ServiceEndpoint, latency: float, ok: bool) -> None:
        sid = endpoint.service_id
        left = self.outstanding.get(sid, 0) - 1
        if left > 0:
            self.outstanding[sid] = left
        else:
            self.outstanding.pop(sid, None)


class RoundRobin(_Tracking):
    """Each endpoint in turn."""

    def __init__(self) -> None:
        super().__init__()
        self._next = 0

    def pick(
        self, candidates: Sequence[ServiceEndpoint], exclude: Collection[str] = ()
    ) -> ServiceEndpoint | None:
        n = len(candidates)
        for _ in range(n):
            endpoint = candidates[self._next % n]
            self._next += 1
            if endpoint.service_id not in exclude:
                return endpoint
        return None


class WeightedRoundRobin(_Tracking):
    """Smooth weighted round robin: over any window, endpoint *i* gets its weight's share,
    spread evenly (no bursts of the heavy endpoint)."""

    def __init__(self) -> None:
        super().__init__()
        self._current: dict[str, float] = {}

    def pick(
        self, candidates: Sequence[ServiceEndpoint], exclude: Collection[str] = ()
    ) -> ServiceEndpoint | None:
        usable = _usable(candidates, exclude)
        if not usable:
            return None
        total = 0.0
        best: ServiceEndpoint | None = None
        best_value = -math.inf
        current = self._current
        for endpoint in usable:
            value = current.get(endpoint.service_id, 0.0) + endpoint.weight
            current[endpoint.service_id] = value
            total += endpoint.weight
            if value > best_value:
                best, best_value = endpoint, value
        assert best is not None
        current[best.service_id] -= total
        if len(current) > 2 * len(candidates) + 16:
            live = {c.service_id for c in candidates}
            for sid in [s for s in current if s not in live]:
                del current[sid]
        return best


class LeastOutstanding(_Tracking):
    """Power of two random choices on in-flight calls (ties: the heavier endpoint)."""

    def __init__(self, *, rng: random.Random | None = None) -> None:
        super().__init__()
        self._rng = rng or random.Random()

    def _cost(self, endpoint: ServiceEndpoint) -> float:
        return (self.outstanding.get(endpoint.service_id, 0) + 1) / endpoint.weight

    def pick(
        self, candidates: Sequence[ServiceEndpoint], exclude: Collection[str] = ()
    ) -> ServiceEndpoint | None:
        usable = _usable(candidates, exclude)
        n = len(usable)
        if n <= 1:
            return usable[0] if n else None
        i = int(self._rng.random() * n)
        j = int(self._rng.random() * (n - 1))
        if j >= i:
            j += 1
        a, b = usable[i], usable[j]
        return a if self._cost(a) <= self._cost(b) else b


class PeakEwma(LeastOutstanding):
    """Two random choices on ``peak-EWMA latency x (in flight + 1) / weight``.

    A latency above the average replaces it at once (peak); below, the average decays
    toward it with time constant ``decay`` seconds. Endpoints not measured yet cost
    ``initial_latency`` (so new endpoints get tried). Failed calls count as ``penalty``
    seconds.
    """

    def __init__(
        self,
        *,
        decay: float = 10.0,
        initial_latency: float = 0.001,
        penalty: float = 1.0,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(rng=rng)
        if not decay > 0:
            raise ValidationError("decay", decay, "seconds > 0")
        self.decay = decay
        self.initial_latency = initial_latency
        self.penalty = penalty
        self._clock = resolve_clock(clock)
        self._ewma: dict[str, tuple[float, float]] = {}

    def latency(self, service_id: str) -> float:
        """The current peak-EWMA latency estimate of an endpoint, in seconds."""
        value = self._ewma.get(service_id)
        return self.initial_latency if value is None else value[0]

    def _cost(self, endpoint: ServiceEndpoint) -> float:
        sid = endpoint.service_id
        return self.latency(sid) * (self.outstanding.get(sid, 0) + 1) / endpoint.weight

    def on_finish(self, endpoint: ServiceEndpoint, latency: float, ok: bool) -> None:
        super().on_finish(endpoint, latency, ok)
        sample = latency if ok else max(latency, self.penalty)
        now = self._clock.monotonic()
        sid = endpoint.service_id
        previous = self._ewma.get(sid)
        if previous is None or sample > previous[0]:
            self._ewma[sid] = (sample, now)
            return
        value, stamp = previous
        weight = math.exp(-max(0.0, now - stamp) / self.decay)
        self._ewma[sid] = (value * weight + sample * (1.0 - weight), now)


def match_metadata(wanted: Mapping[str, Any]) -> Callable[[ServiceEndpoint], bool]:
    """A filter: endpoints whose metadata has every key/value of ``wanted``."""
    items = tuple(wanted.items())

    def matches(endpoint: ServiceEndpoint) -> bool:
        metadata = endpoint.metadata
        return all(metadata.get(k) == v for k, v in items)

    return matches


class Filtered:
    """Prefer endpoints that match ``prefer`` (e.g. same zone); when fewer than
    ``min_matching`` of them are usable, spill over to all candidates."""

    def __init__(
        self,
        inner: Balancer,
        prefer: Callable[[ServiceEndpoint], bool] | Mapping[str, Any],
        *,
        min_matching: int = 1,
    ) -> None:
        self.inner = inner
        self.prefer = prefer if callable(prefer) else match_metadata(prefer)
        self.min_matching = max(1, min_matching)
        self.spillovers = 0

    def pick(
        self, candidates: Sequence[ServiceEndpoint], exclude: Collection[str] = ()
    ) -> ServiceEndpoint | None:
        prefer = self.prefer
        usable = [c for c in candidates if c.service_id not in exclude and prefer(c)]
        if len(usable) >= self.min_matching:
            return self.inner.pick(usable)
        self.spillovers += 1
        return self.inner.pick(candidates, exclude)

    def on_start(self, endpoint: ServiceEndpoint) -> None:
        self.inner.on_start(endpoint)

    def on_finish(self, endpoint: ServiceEndpoint, latency: float, ok: bool) -> None:
        self.inner.on_finish(endpoint, latency, ok)


def panic_candidates(
    usable: Sequence[ServiceEndpoint],
    everything: Sequence[ServiceEndpoint],
    threshold: float,
) -> tuple[Sequence[ServiceEndpoint], bool]:
    """``(usable, False)`` normally; ``(everything, True)`` when fewer than ``threshold``
    of all endpoints are usable (panic mode: spread the load over all of them)."""
    if everything and len(usable) < threshold * len(everything):
        return everything, True
    return usable, False


BALANCERS: dict[str, Callable[[], Balancer]] = {
    "round_robin": RoundRobin,
    "weighted": WeightedRoundRobin,
    "least_outstanding": LeastOutstanding,
    "peak_ewma": PeakEwma,
}


def make_balancer(name: str | Balancer | None, *, clock: Clock | None = None) -> Balancer:
    """A balancer by name (``round_robin``, ``weighted``, ``least_outstanding``,
    ``peak_ewma``), or the given one; ``None`` means ``peak_ewma``."""
    if name is None:
        return PeakEwma(clock=clock)
    if not isinstance(name, str):
        return name
    if name == "peak_ewma":
        return PeakEwma(clock=clock)
    factory = BALANCERS.get(name)
    if factory is None:
        raise ValidationError("balancer", name, "one of " + ", ".join(sorted(BALANCERS)))
    return factory()
