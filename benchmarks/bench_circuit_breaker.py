"""Circuit breaker overhead: ours against a bare ``await`` and against the Python peers.

Run: ``python benchmarks/bench_circuit_breaker.py`` (peers from the ``bench`` extra;
a missing peer is skipped). Everything is measured in ONE run, in one process:

* closed-state overhead per async call = (time per call through the breaker) - (time
  per bare ``await`` of the same function): each variant is timed right after a bare
  run of the same length, variants interleaved over many short rounds (so a pair
  shares the machine's conditions), and the median over rounds is reported;
* rejection cost while open (the caller catching the breaker's exception);
* memory per breaker (10,000 breakers, tracemalloc);
* shared (Redis-backed) overhead against in-memory, and how fast a transition made by
  one fleet member reaches another (a real Valkey/Redis server is started for it).

Ratios are against the fastest peer measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import backend_services.infrastructure.circuit_breaker as cbmod
from backend_services.infrastructure.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerEvent,
    CircuitState,
    EventKind,
)
from backend_services.settings import Settings

Loop = Callable[[int], Awaitable[None]]
NO_SETTINGS = Settings()  # the spec's built-in defaults, whatever the environment says


async def target(x: int) -> int:
    return x


async def failing(x: int) -> int:
    raise RuntimeError("down")


def spec_defaults(**overrides: Any) -> CircuitBreakerConfig:
    """The spec's default config: count window of 100, slow-call detection at 5 s,
    request_timeout 30 s, 5 consecutive failures, 60 s open."""
    return CircuitBreakerConfig(settings=NO_SETTINGS, **overrides)


# --- closed-state loops ----------------------------------------------------------------


def call_loop(fn: Callable[[int], Awaitable[Any]]) -> Loop:
    async def run(n: int) -> None:
        for i in range(n):
            await fn(i)

    return run


def async_with_loop(cb: Any) -> Loop:
    async def run(n: int) -> None:
        for i in range(n):
            async with cb:
                await target(i)

    return run


def method_loop(cb: CircuitBreaker) -> Loop:
    async def run(n: int) -> None:
        call = cb.call
        for i in range(n):
            await call(target, i)

    return run


def ours_closed() -> dict[str, Loop]:
    defaults = CircuitBreaker("bench-defaults", spec_defaults(), None)
    untimed = CircuitBreaker("bench-untimed", spec_defaults(request_timeout=None), None)
    return {
        "ours: decorator, spec defaults": call_loop(defaults.decorate(target)),
        "ours: decorator, request_timeout=None": call_loop(untimed.decorate(target)),
        "ours: async with, spec defaults": async_with_loop(defaults),
        "ours: async with, request_timeout=None": async_with_loop(untimed),
        "ours: cb.call(), spec defaults": method_loop(defaults),
    }


async def peers_closed() -> dict[str, Loop]:
    loops: dict[str, Loop] = {}
    with contextlib.suppress(ImportError):
        from circuitbreaker import circuit

        loops["circuitbreaker 2.1.3 (decorator)"] = call_loop(
            circuit(failure_threshold=5, recovery_timeout=60)(target)
        )
    with contextlib.suppress(ImportError):
        import pybreaker

        pb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)

        async def pybreaker_run(n: int) -> None:
            for i in range(n):
                with pb.calling():
                    await target(i)

        loops["pybreaker 1.4.1 (calling())"] = pybreaker_run
    with contextlib.suppress(ImportError):
        import aiobreaker

        ab = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=60))
        loops["aiobreaker 1.2.0 (decorator)"] = call_loop(ab(target))
    with contextlib.suppress(ImportError):
        import asyncbreaker

        asb = asyncbreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=60))
        loops["asyncbreaker 2.1.1 (decorator)"] = call_loop(asb(target))
    with contextlib.suppress(ImportError):
        from purgatory import AsyncCircuitBreakerFactory

        factory = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=60)
        await factory.initialize()
        loops["purgatory 3.0.1 (decorator)"] = call_loop(factory("bench")(target))
    with contextlib.suppress(ImportError):
        from pyresilience import CircuitBreakerConfig as PRConfig
        from pyresilience import resilient

        loops["pyresilience 0.4.1 (consecutive)"] = call_loop(
            resilient(circuit_breaker=PRConfig(failure_threshold=5, recovery_timeout=60))(target)
        )
    return loops


async def pyresilience_windowed() -> dict[str, Loop]:
    try:
        from pyresilience import CircuitBreakerConfig as PRConfig
        from pyresilience import TimeoutConfig, resilient
    except ImportError:
        return {}
    windowed = PRConfig(
        failure_threshold=5,
        recovery_timeout=60,
        sliding_window_size=100,
        minimum_calls=10,
        failure_rate_threshold=0.5,
        slow_call_duration=5.0,
        slow_call_rate_threshold=0.5,
    )
    return {
        "pyresilience: window + slow calls": call_loop(resilient(circuit_breaker=windowed)(target)),
        "pyresilience: window + slow + timeout": call_loop(
            resilient(circuit_breaker=windowed, timeout=TimeoutConfig(seconds=30))(target)
        ),
    }


async def measure(loops: dict[str, Loop], n: int, rounds: int) -> dict[str, float]:
    """Median over rounds of (variant - bare) microseconds per call, each variant
    measured right after its own bare run, the order rotating every round."""
    bare = call_loop(target)
    names = list(loops)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for loop in [bare, *loops.values()]:
        await loop(n // 10)  # warm up
    gc.collect()
    gc.freeze()  # collections below only look at what the runs themselves allocate
    try:
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                gc.disable()
                try:
                    t0 = time.perf_counter()
                    await bare(n)
                    t1 = time.perf_counter()
                    await loops[name](n)
                    t2 = time.perf_counter()
                finally:
                    gc.enable()
                samples[name].append(((t2 - t1) - (t1 - t0)) / n * 1e6)
            gc.collect()  # once per round, outside the timed pairs
    finally:
        gc.unfreeze()
    return {name: statistics.median(values) for name, values in samples.items()}


# --- rejection -------------------------------------------------------------------------


def reject_loop(fn: Callable[[int], Awaitable[Any]], exc: type[BaseException]) -> Loop:
    async def run(n: int) -> None:
        for i in range(n):
            try:  # noqa: SIM105 - the plain form is what callers write, and cheaper
                await fn(i)
            except exc:
                pass

    return run


async def rejection_loops() -> dict[str, Loop]:
    from backend_services.errors import CircuitBreakerException

    loops: dict[str, Loop] = {}
    ours = CircuitBreaker("bench-open", spec_defaults(), None)
    await ours.open_for(1e9)
    loops["ours: decorator"] = reject_loop(ours.decorate(target), CircuitBreakerException)
    with contextlib.suppress(ImportError):
        from circuitbreaker import CircuitBreakerError, circuit

        wrapped = circuit(failure_threshold=1, recovery_timeout=1e6)(failing)
        with contextlib.suppress(RuntimeError):
            await wrapped(0)
        loops["circuitbreaker"] = reject_loop(wrapped, CircuitBreakerError)
    with contextlib.suppress(ImportError):
        import pybreaker

        pb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=1e6)
        pb.open()

        async def pybreaker_run(n: int) -> None:
            for i in range(n):
                try:
                    with pb.calling():
                        await target(i)
                except pybreaker.CircuitBreakerError:
                    pass

        loops["pybreaker"] = pybreaker_run
    with contextlib.suppress(ImportError):
        import aiobreaker

        ab = aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(days=1))
        wrapped_ab = ab(failing)
        with contextlib.suppress(Exception):
            await wrapped_ab(0)
        loops["aiobreaker"] = reject_loop(wrapped_ab, aiobreaker.CircuitBreakerError)
    with contextlib.suppress(ImportError):
        import asyncbreaker

        asb = asyncbreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(days=1))
        wrapped_asb = asb(failing)
        with contextlib.suppress(Exception):
            await wrapped_asb(0)
        loops["asyncbreaker"] = reject_loop(wrapped_asb, Exception)
    with contextlib.suppress(ImportError):
        from purgatory import AsyncCircuitBreakerFactory

        factory = AsyncCircuitBreakerFactory(default_threshold=1, default_ttl=1e6)
        await factory.initialize()
        wrapped_pg = factory("bench-open")(failing)
        with contextlib.suppress(Exception):
            await wrapped_pg(0)
        loops["purgatory"] = reject_loop(wrapped_pg, Exception)
    with contextlib.suppress(ImportError):
        from pyresilience import CircuitBreakerConfig as PRConfig
        from pyresilience import CircuitOpenError, resilient

        wrapped_pr = resilient(circuit_breaker=PRConfig(failure_threshold=1, recovery_timeout=1e6))(
            failing
        )
        with contextlib.suppress(RuntimeError):
            await wrapped_pr(0)
        loops["pyresilience"] = reject_loop(wrapped_pr, CircuitOpenError)
    return loops


# --- memory ----------------------------------------------------------------------------


def memory_per_breaker(count: int) -> dict[str, float]:
    def traced(make: Callable[[int], Any]) -> float:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        keep = [make(i) for i in range(count)]
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del keep
        return (after - before) / count

    shared_config = spec_defaults()
    out = {
        "ours (own config each, from settings)": traced(
            lambda i: CircuitBreaker(f"m{i}", None, None)
        ),
        "ours (one shared config)": traced(lambda i: CircuitBreaker(f"m{i}", shared_config, None)),
    }
    with contextlib.suppress(ImportError):
        from circuitbreaker import CircuitBreaker as PeerCB

        out["circuitbreaker"] = traced(lambda i: PeerCB(failure_threshold=5, name=f"m{i}"))
    with contextlib.suppress(ImportError):
        import pybreaker

        out["pybreaker"] = traced(lambda i: pybreaker.CircuitBreaker(name=f"m{i}"))
    return out


# --- shared state ----------------------------------------------------------------------


async def shared_state(n: int, rounds: int, samples: int) -> dict[str, Any]:
    from backend_services.testing import RedisServer

    out: dict[str, Any] = {}
    with RedisServer("valkey") as server:
        members = []
        for process in ("bench-a", "bench-b"):
            cbmod.PROCESS_ID = process  # two fleet members in this process
            cb = CircuitBreaker("bench-shared", spec_defaults(), server.url)
            await cb.initialize()
            members.append(cb)
        a, b = members
        local = CircuitBreaker("bench-local", spec_defaults(), None)
        overheads = await measure(
            {
                "ours: decorator, shared via Redis": call_loop(a.decorate(target)),
                "ours: decorator, in memory": call_loop(local.decorate(target)),
                "ours: async with, shared via Redis": async_with_loop(a),
                "ours: async with, in memory": async_with_loop(local),
            },
            n,
            rounds,
        )
        out["overheads"] = overheads

        # propagation: a transition in member a, applied by member b
        seen: asyncio.Queue[tuple[CircuitState, float]] = asyncio.Queue()

        def on_change(event: CircuitBreakerEvent) -> None:
            if event.remote:
                seen.put_nowait((event.state, time.perf_counter()))

        b.add_listener(on_change, EventKind.STATE_TRANSITION)
        latencies = []
        for i in range(samples):
            started = time.perf_counter()
            if i % 2 == 0:
                await a.open_for(60.0)
                want = CircuitState.OPEN
            else:
                await a.reset()
                want = CircuitState.CLOSED
            while True:
                state, at = await asyncio.wait_for(seen.get(), 5.0)
                if state is want:
                    break
            latencies.append((at - started) * 1e3)
        latencies.sort()
        out["propagation_ms"] = {
            "p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "max": latencies[-1],
            "samples": len(latencies),
        }

        with contextlib.suppress(ImportError):
            import pybreaker
            import redis

            client = redis.Redis.from_url(server.url)
            storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client)
            pb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60, state_storage=storage)

            async def pybreaker_redis(count: int) -> None:
                for i in range(count):
                    with pb.calling():
                        await target(i)

            peer = await measure({"pybreaker + Redis storage": pybreaker_redis}, 300, 3)
            out["peer_redis"] = peer
            client.close()
        for cb in members:
            await cb.close()
    return out


# --- report ----------------------------------------------------------------------------


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def row(name: str, value: float, ref: float | None, unit: str = "us", target: str = "") -> str:
    ratio = f"{value / ref:6.2f}x" if ref else "      -"
    return f"  {name:<44} {value:9.3f} {unit}  {ratio}  {target}"


def verdict(value: float, ref: float, limit: float) -> str:
    return f"target <= {limit:g}x: {'met' if value <= limit * ref else 'MISSED'}"


async def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    print(
        "peers: "
        + ", ".join(
            f"{p} {version(p)}"
            for p in (
                "circuitbreaker",
                "pybreaker",
                "aiobreaker",
                "purgatory",
                "asyncbreaker",
                "pyresilience",
            )
        )
    )
    print(f"{args.calls} calls per run, {args.rounds} interleaved rounds, medians\n")

    ours = ours_closed()
    peers = await peers_closed()
    windowed = await pyresilience_windowed()
    closed = await measure({**ours, **peers, **windowed}, args.calls, args.rounds)
    fastest_name = min(peers, key=lambda name: closed[name]) if peers else None
    fastest = closed[fastest_name] if fastest_name else None
    print("Closed-state overhead per async call (time through the breaker - bare await)")
    print(f"  {'':<44} {'overhead':>12}  {'vs fastest peer':>8}")
    targets = {
        "ours: decorator, spec defaults": 1.0,
        "ours: async with, spec defaults": 1.0,
        "ours: decorator, request_timeout=None": 0.5,
        "ours: async with, request_timeout=None": 0.5,
    }
    for name in ours:
        limit = targets.get(name)
        note = verdict(closed[name], fastest, limit) if (limit and fastest) else ""
        print(row(name, closed[name], fastest, target=note))
    for name in peers:
        print(
            row(
                name,
                closed[name],
                fastest,
                target="<- fastest peer" if name == fastest_name else "",
            )
        )
    if windowed:
        print("\nAgainst pyresilience with an equivalent window and slow-call config")
        ref = closed["pyresilience: window + slow calls"]
        for name in windowed:
            print(row(name, closed[name], fastest))
        ours_full = closed["ours: decorator, spec defaults"]
        print(
            f"  ours (decorator, spec defaults: window + slow calls + timeout) / "
            f"pyresilience (window + slow calls) = {ours_full / ref:.3f}x  "
            f"{verdict(ours_full, ref, 0.1)}"
        )

    rejections = await measure(await rejection_loops(), args.calls, args.rounds)
    peer_rejections = {k: v for k, v in rejections.items() if not k.startswith("ours")}
    fastest_reject = min(peer_rejections.values()) if peer_rejections else None
    print("\nRejection while open (cost per rejected call, caller catching the exception)")
    for name, value in sorted(rejections.items(), key=lambda kv: kv[1]):
        note = (
            verdict(value, fastest_reject, 1.0)
            if name.startswith("ours") and fastest_reject
            else ""
        )
        print(row(name, value, fastest_reject, target=note))

    print(f"\nMemory per breaker ({args.breakers:,} breakers, tracemalloc)")
    for name, value in memory_per_breaker(args.breakers).items():
        note = (
            "target <= 1 KB: " + ("met" if value <= 1024 else "MISSED")
            if name.startswith("ours")
            else ""
        )
        print(f"  {name:<44} {value:9.0f} bytes  {note}")

    if not args.no_redis:
        shared = await shared_state(args.calls, args.rounds, args.samples)
        o = shared["overheads"]
        print("\nShared state through Redis (no round trip on the call path)")
        for kind in ("decorator", "async with"):
            redis_v = o[f"ours: {kind}, shared via Redis"]
            mem_v = o[f"ours: {kind}, in memory"]
            print(row(f"ours: {kind}, shared via Redis", redis_v, None))
            print(row(f"ours: {kind}, in memory", mem_v, None))
            print(
                f"  {'':<44} shared / in-memory = {redis_v / mem_v:.2f}x  "
                f"target <= 1.5x: {'met' if redis_v <= 1.5 * mem_v else 'MISSED'}"
            )
        for name, value in shared.get("peer_redis", {}).items():
            print(row(name, value, None))
        p = shared["propagation_ms"]
        print(
            f"  transition seen by another member: p50 {p['p50']:.2f} ms, p99 {p['p99']:.2f} ms, "
            f"max {p['max']:.2f} ms over {p['samples']} transitions "
            f"(target p99 <= 100 ms: {'met' if p['p99'] <= 100 else 'MISSED'})"
        )
    print(f"\n(total {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5_000, help="calls per timed run")
    parser.add_argument("--rounds", type=int, default=31, help="interleaved rounds (>= 5)")
    parser.add_argument("--breakers", type=int, default=10_000, help="breakers for memory")
    parser.add_argument("--samples", type=int, default=60, help="propagation samples")
    parser.add_argument("--no-redis", action="store_true", help="skip the shared-state part")
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
