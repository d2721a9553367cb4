"""What observability costs, from one run.

* a request-path span with tracing off (no tracer provider configured, or OpenTelemetry
  not installed) beside a bare function call — the claim is "no cost";
* the same span with the OpenTelemetry SDK recording (when installed), for comparison;
* a labelled counter increment beside a bare dict increment;
* one scrape (collect + render) of 100 circuit breakers, 100 discovery instances and a
  degradation manager, in milliseconds — paid by the scraper, never by a request.

Timed variants are interleaved over rounds; the median per variant is reported.

    python benchmarks/bench_observability.py [--rounds 7] [--ops 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

from backend_services.infrastructure.circuit_breaker import CircuitBreakerRegistry
from backend_services.infrastructure.service_degradation import ServiceDegradationManager
from backend_services.observability import tracing
from backend_services.observability.collectors import breaker_families, degradation_families
from backend_services.observability.metrics import Counter, Registry, render
from backend_services.testing import FakeClock


def _bare() -> None:
    return None


def _per_op(fn: Callable[[], None], ops: int) -> float:
    start = time.perf_counter()
    for _ in range(ops):
        fn()
    return (time.perf_counter() - start) / ops * 1e9


def _span_off() -> None:
    with tracing.span(tracing.SPAN_CALL):
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=200_000)
    ns = parser.parse_args()

    counter = Counter("bench_total", "b", ["outcome"])
    child = counter.labels(outcome="ok")
    plain: dict[str, int] = {"ok": 0}

    def labelled_inc() -> None:
        counter.labels(outcome="ok").inc()

    def child_inc() -> None:
        child.inc()

    def dict_inc() -> None:
        plain["ok"] += 1

    variants: dict[str, Callable[[], None]] = {
        "bare call": _bare,
        "span, tracing off": _span_off,
        "dict increment": dict_inc,
        "counter child .inc()": child_inc,
        "counter .labels().inc()": labelled_inc,
    }
    recording = None
    if tracing.AVAILABLE:
        try:
            from opentelemetry.sdk.trace import TracerProvider
        except ImportError:
            recording = None
        else:
            recording = TracerProvider()

            def span_on() -> None:
                tracing.set_tracer_provider(recording)
                try:
                    with tracing.span(tracing.SPAN_CALL):
                        pass
                finally:
                    tracing.set_tracer_provider(None)

            variants["span, SDK recording (incl. switch)"] = span_on

    results: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(ns.rounds):
        for name, fn in variants.items():
            ops = ns.ops if "SDK" not in name else max(1, ns.ops // 20)
            results[name].append(_per_op(fn, ops))
    med = {k: statistics.median(v) for k, v in results.items()}
    bare = med["bare call"]
    print(f"opentelemetry installed: {tracing.AVAILABLE}; tracing enabled: {tracing.enabled()}")
    print(f"{'variant':40} {'ns/op':>10} {'x bare call':>12}")
    for name, ns_op in med.items():
        print(f"{name:40} {ns_op:10.1f} {ns_op / bare:12.2f}")
    print(
        f"counter child .inc() vs dict increment: "
        f"{med['counter child .inc()'] / med['dict increment']:.2f}x"
    )

    async def scrape() -> float:
        clock = FakeClock()
        reg_cb = CircuitBreakerRegistry(redis_url=None, clock=clock)
        for i in range(100):
            reg_cb.get_or_create(f"membrane-{i}")
        manager = ServiceDegradationManager(
            "bench", redis_url=None, clock=clock, builtin_monitors=False
        )
        registry = Registry()
        registry.register_collector(lambda: breaker_families(reg_cb))
        registry.register_collector(lambda: degradation_families(manager))
        times = []
        for _ in range(ns.rounds * 5):
            start = time.perf_counter()
            text = render(registry)
            times.append((time.perf_counter() - start) * 1e3)
        print(
            f"scrape of 100 breakers + 1 degradation manager: {len(text)} bytes, "
            f"median {statistics.median(times):.2f} ms"
        )
        return statistics.median(times)

    asyncio.run(scrape())
    if recording is not None:
        recording.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
