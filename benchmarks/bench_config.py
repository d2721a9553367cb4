"""Configuration manager benchmark: read path, fleet propagation, snapshot and rollback.

Run: ``python benchmarks/bench_config.py`` (needs the test extra for the Redis-compatible
server binary). Prints, from one run:

1. ``get_config`` against a bare ``await`` of a coroutine returning a constant (rounds
   interleaved, median of 7) — target at most 2x;
2. change propagation between two OS processes through a real Redis: the time from just
   before ``set_config`` in one process to the change callback in the other, over 1,000
   changes (both read CLOCK_MONOTONIC, shared by processes on one machine) — target p99 at
   most 100 ms;
3. snapshot and rollback of 10,000 keys, in memory and through Redis — target < 1 s.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from backend_services.infrastructure.config_manager import ConfigurationManager
from backend_services.testing import RedisServer

SERVICE = "bench-config"
CHANGES = int(__import__("os").environ.get("BENCH_CONFIG_CHANGES", "1000"))


def _manager(url: str | None, lkg: Path | None, **kw: Any) -> ConfigurationManager:
    return ConfigurationManager(
        SERVICE, redis_url=url, last_known_good=lkg, environ={}, feed_block=1.0, **kw
    )


# --- 1. read path -----------------------------------------------------------------------


async def bench_get() -> None:
    cm = _manager(None, None)
    await cm.initialize()
    await cm.set_config("membrane_depth", 6)
    value = 6

    async def bare(key: str, default: Any = None) -> Any:
        return value

    n = 200_000
    get = cm.get_config

    async def run_bare() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await bare("membrane_depth", 4)
        return (time.perf_counter() - t0) / n

    async def run_ours() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await get("membrane_depth", 4)
        return (time.perf_counter() - t0) / n

    async def run_nested() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await get("circuit_breaker.default_timeout", 60)
        return (time.perf_counter() - t0) / n

    await cm.set_config("circuit_breaker.default_timeout", 30)
    bares, ours, nested = [], [], []
    for _ in range(7):
        bares.append(await run_bare())
        ours.append(await run_ours())
        nested.append(await run_nested())
    b, o, d = (statistics.median(x) for x in (bares, ours, nested))
    print("get_config (memory; median of 7 interleaved rounds of 200,000 calls)")
    print(f"  bare await                       {b * 1e9:8.1f} ns")
    print(
        f"  get_config('membrane_depth')     {o * 1e9:8.1f} ns   ratio {o / b:5.2f}x"
        "  (target <= 2x)"
    )
    print(f"  get_config('a.b' dotted key)     {d * 1e9:8.1f} ns   ratio {d / b:5.2f}x")
    await cm.shutdown()


# --- 2. propagation ---------------------------------------------------------------------


async def child(url: str) -> None:
    """The receiving process: records CLOCK_MONOTONIC at each change callback."""
    cm = _manager(url, None)
    await cm.initialize()
    seen: dict[int, float] = {}
    done = asyncio.Event()

    def on_change(key: str, new: Any, old: Any) -> None:
        seen[int(new)] = time.monotonic()
        if int(new) == CHANGES - 1:
            done.set()

    cm.add_change_callback("tick", on_change)
    print(json.dumps({"ready": True}), flush=True)
    try:
        await asyncio.wait_for(done.wait(), 120)
    finally:
        print(json.dumps({"seen": seen, "metrics": cm.get_metrics()}), flush=True)
    await cm.shutdown()


async def bench_propagation(url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", url, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readline(), 60)
    cm = _manager(url, None)
    await cm.initialize()
    sent: dict[int, float] = {}
    commit: list[float] = []
    for i in range(CHANGES):
        t0 = time.monotonic()
        sent[i] = t0
        await cm.set_config("tick", i)
        commit.append(time.monotonic() - t0)
        await asyncio.sleep(0.002)  # a change every few ms: latency, not queueing
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    report = json.loads(line)
    seen = {int(k): v for k, v in report["seen"].items()}
    missed = CHANGES - len(seen)
    if missed:
        print(f"  ({missed} changes coalesced by a resync; receiver metrics: {report['metrics']})")
    await proc.wait()
    await cm.shutdown()
    lat = sorted((seen[i] - sent[i]) * 1000 for i in range(CHANGES) if i in seen)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    print(f"propagation between two processes through Redis ({len(lat)} of {CHANGES} changes)")
    print(
        f"  set_config commit (one round trip)   median {statistics.median(commit) * 1000:6.2f} ms"
    )
    print(
        f"  set_config -> other process callback p50 {p(0.50):6.2f} ms  p99 {p(0.99):6.2f} ms"
        f"  max {lat[-1]:6.2f} ms   p99/100 ms = {p(0.99) / 100:4.2f}  (target <= 1)"
    )


# --- 3. snapshot and rollback of 10,000 keys --------------------------------------------


async def bench_snapshot(url: str | None, label: str) -> None:
    cm = _manager(url, None, max_versions=20)
    await cm.initialize()
    keys = {f"membrane.{i // 100}.unit_{i % 100}": i for i in range(10_000)}
    t0 = time.perf_counter()
    await cm.bulk_update(keys, description="10k keys")
    t_bulk = time.perf_counter() - t0
    t0 = time.perf_counter()
    snap = await cm.create_version_snapshot("10k baseline")
    t_snap = time.perf_counter() - t0
    await cm.bulk_update({k: v + 1 for k, v in keys.items()} | {"extra": 1})
    t0 = time.perf_counter()
    content = await cm.get_version_config(snap)
    t_read = time.perf_counter() - t0
    assert len(content) == 10_000
    t0 = time.perf_counter()
    await cm.rollback_to_version(snap)
    t_roll = time.perf_counter() - t0
    assert await cm.get_config("membrane.0.unit_1") == 1
    assert await cm.get_config("extra") is None
    t0 = time.perf_counter()
    text = await cm.export_configuration()
    t_export = time.perf_counter() - t0
    print(f"10,000 keys ({label})")
    print(f"  bulk_update of 10,000 keys      {t_bulk * 1000:8.1f} ms")
    print(f"  create_version_snapshot         {t_snap * 1000:8.1f} ms   /1 s = {t_snap:5.3f}")
    print(f"  read the snapshot back (10,000 keys, after 10,000 changes) {t_read * 1000:6.1f} ms")
    print(
        f"  rollback_to_version (10,000 changed, 1 removed)"
        f" {t_roll * 1000:8.1f} ms   /1 s = {t_roll:5.3f}  (target < 1)"
    )
    print(f"  export_configuration ({len(text) // 1024} KiB)     {t_export * 1000:8.1f} ms")
    if url is not None:
        m = cm.get_metrics()
        print(f"  store connected throughout: {m['store_connected'] and m['store_outages'] == 0}")
    await cm.shutdown()


async def main() -> None:
    await bench_get()
    with tempfile.TemporaryDirectory():
        await bench_snapshot(None, "in memory")
        with RedisServer("valkey") as server:
            await bench_snapshot(server.url, "through Redis")
        with RedisServer("valkey") as server:
            await bench_propagation(server.url)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        asyncio.run(child(sys.argv[2]))
    else:
        asyncio.run(main())
