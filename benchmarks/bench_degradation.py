"""Graceful degradation hot paths, memory and monitoring cost, from one run.

* ``is_feature_enabled`` beside a bare ``await`` of an empty coroutine (target: <= 2x);
* ``admit(priority)`` (the admission check) beside the same bare ``await`` (target: <= 1x);
* bytes per registered feature (tracemalloc; target: <= 500 B, the spec's figure);
* event-loop time of one monitoring round with the built-in monitors (main-thread CPU
  time, so work moved to a worker thread does not count; target: <= 1 ms): on this
  machine's signals (cgroup or psutil), and on a cgroup v2 tree written to a temporary
  directory;
* emergency shutdown delivery across processes through a real Valkey server: every
  process's delay from ``emergency_shutdown_all`` to its level change (target: p99 <=
  100 ms).

Timed variants are interleaved over rounds; the median per variant is reported.

    python benchmarks/bench_degradation.py [--rounds 7] [--ops 200000] [--processes 4]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from backend_services.infrastructure.service_degradation import (
    DegradationLevel,
    Feature,
    FeaturePriority,
    GlobalDegradationManager,
    ServiceDegradationManager,
)


async def _bare() -> bool:
    return True


async def time_hot_paths(rounds: int, ops: int) -> dict[str, float]:
    m = ServiceDegradationManager("bench", redis_url=None, builtin_monitors=False)
    m.register_feature(Feature("analytics", FeaturePriority.HIGH))
    is_enabled = m.is_feature_enabled
    admit = m.admit
    high = FeaturePriority.HIGH

    async def bare_await() -> float:
        start = time.perf_counter()
        for _ in range(ops):
            await _bare()
        return time.perf_counter() - start

    async def feature() -> float:
        start = time.perf_counter()
        for _ in range(ops):
            await is_enabled("analytics")
        return time.perf_counter() - start

    async def admission() -> float:
        start = time.perf_counter()
        for _ in range(ops):
            admit(high)
        return time.perf_counter() - start

    variants = {"bare await": bare_await, "is_feature_enabled": feature, "admit": admission}
    samples: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds):
        gc.collect()
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(await variants[name]() / ops * 1e9)
    return {k: statistics.median(v) for k, v in samples.items()}


def feature_memory(count: int = 20_000) -> tuple[float, float]:
    """(bytes per feature including the Feature object and its name, bytes the manager
    adds per registration)."""
    m = ServiceDegradationManager("bench", redis_url=None, builtin_monitors=False)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    feats = [Feature(f"feature-{i:06d}", FeaturePriority.MEDIUM) for i in range(count)]
    mid = tracemalloc.take_snapshot()
    for f in feats:
        m.register_feature(f)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()

    def diff(a: Any, b: Any) -> int:
        return sum(s.size_diff for s in b.compare_to(a, "filename"))

    objects, registration = diff(before, mid), diff(mid, after)
    return (objects + registration) / count, registration / count


def write_cgroup(root: Path) -> Path:
    mib = 1 << 20
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "memory.current").write_text(str(600 * mib))
    stat = "".join(f"key_{i} {i}\n" for i in range(30)) + f"inactive_file {100 * mib}\n"
    (root / "memory.stat").write_text(stat)
    (root / "memory.max").write_text(str(1000 * mib))
    (root / "memory.high").write_text("max\n")
    (root / "cpu.max").write_text("200000 100000\n")
    (root / "cpu.stat").write_text(
        "usage_usec 1000\nuser_usec 600\nsystem_usec 400\n"
        "nr_periods 10\nnr_throttled 1\nthrottled_usec 50\n"
    )
    proc = root / "proc_self_cgroup"
    proc.write_text("0::/\n")
    return proc


async def monitoring_round(rounds: int = 300) -> dict[str, float]:
    """Median main-thread CPU time (µs) of one check_resources() round."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        proc = write_cgroup(root)
        setups: dict[str, dict[str, Any]] = {
            "round, this machine's signals (cpu, memory, loop lag)": {},
            "round, cgroup v2 files (cpu, memory, loop lag)": {
                "cgroup_root": root,
                "proc_cgroup": proc,
            },
            "round, + disk usage in a worker thread": {"disk_path": tmp},
        }
        for label, kw in setups.items():
            m = ServiceDegradationManager("bench", redis_url=None, check_interval=3600, **kw)
            for i in range(50):
                m.register_feature(Feature(f"f{i}", list(FeaturePriority)[i % 5]))
            await m.check_resources()
            times = []
            for _ in range(rounds):
                t0 = time.thread_time()
                await m.check_resources()
                times.append((time.thread_time() - t0) * 1e6)
            out[label] = statistics.median(times)
            out[label + " [p99]"] = sorted(times)[int(len(times) * 0.99) - 1]
            sources = m._sampler
            if "cgroup" in label:
                assert sources.memory is not None
                reading = sources.memory.read()
                assert reading is not None
                assert reading.source == "cgroup2", reading
    return out


CHILD = r"""
import asyncio, json, sys, time
from backend_services.infrastructure.service_degradation import ServiceDegradationManager

async def main(url: str, name: str) -> None:
    m = ServiceDegradationManager(name, redis_url=url, builtin_monitors=False,
                                  check_interval=60, recovery_delay=0)
    m.add_listener(lambda ev: print(json.dumps({"level": ev.new_level.value,
                                                "t": time.time()}), flush=True))
    await m.initialize()
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await m.shutdown()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def _next_level(proc: asyncio.subprocess.Process, level: str) -> float:
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        if not line:
            raise RuntimeError("benchmark child exited")
        data = json.loads(line)
        if data.get("level") == level:
            return float(data["t"])


async def emergency_latency(url: str, processes: int, cycles: int) -> list[float]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            url,
            f"svc-{i}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for i in range(processes)
    ]
    latencies: list[float] = []
    try:
        for p in procs:
            assert p.stdout is not None
            await asyncio.wait_for(p.stdout.readline(), 30)
        async with GlobalDegradationManager(redis_url=url) as g:
            for _ in range(cycles):
                t0 = time.time()
                await g.emergency_shutdown_all("bench", level=DegradationLevel.EMERGENCY)
                arrivals = await asyncio.gather(*(_next_level(p, "emergency") for p in procs))
                latencies += [(t - t0) * 1000 for t in arrivals]
                await g.clear_emergency()
                await asyncio.gather(*(_next_level(p, "normal") for p in procs))
    finally:
        for p in procs:
            if p.stdin is not None:
                p.stdin.close()
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 10)
            except TimeoutError:
                p.kill()
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--cycles", type=int, default=50)
    args = parser.parse_args()

    print(f"python {sys.version.split()[0]} on {os.cpu_count()} cpus\n")
    hot = await time_hot_paths(args.rounds, args.ops)
    bare = hot["bare await"]
    print("hot paths (median ns/op, ratio to a bare await)")
    for name, ns in hot.items():
        print(f"  {name:<22} {ns:8.1f} ns   {ns / bare:5.2f}x")
    total, registration = feature_memory()
    print("\nmemory per registered feature")
    print(f"  Feature object + name + registration  {total:6.0f} B")
    print(f"  registration alone (manager tables)   {registration:6.0f} B")
    print("\nevent-loop time of one monitoring round (main-thread CPU, median / p99)")
    rounds = await monitoring_round()
    for label, us in rounds.items():
        if not label.endswith("[p99]"):
            print(f"  {label:<55} {us:7.1f} µs  p99 {rounds[label + ' [p99]']:7.1f} µs")

    from backend_services.testing import RedisServer

    url = os.environ.get("REDIS_URL")
    server = None
    if not url:
        server = RedisServer("valkey").start()
        url = server.url
    try:
        lat = sorted(await emergency_latency(url, args.processes, args.cycles))
    finally:
        if server is not None:
            server.stop()
    p50 = statistics.median(lat)
    p99 = lat[max(0, int(len(lat) * 0.99) - 1)]
    print(
        f"\nemergency_shutdown_all -> every process ({args.processes} processes x "
        f"{args.cycles} cycles = {len(lat)} deliveries)"
    )
    print(f"  p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   max {lat[-1]:6.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
