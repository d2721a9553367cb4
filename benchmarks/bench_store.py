"""Store reads and writes through our layers beside the plain redis.asyncio command.

One run, on a Valkey server started by the test harness (or ``REDIS_URL`` when set):

* read  — ``RedisStore.get`` beside a plain ``GET`` of the same key;
* write — ``RedisStore.put`` beside the same Lua script sent directly with ``EVALSHA``
  (same key, same arguments);
* the same two operations through ``FailoverStore`` (over that RedisStore) and
  ``MemoryStore``.

Rounds are interleaved (every variant once per round, order rotated); within a round each
variant is measured A-B-A-B beside its plain command, and the median of those paired
ratios is reported with the median µs/op.

    python benchmarks/bench_store.py [--rounds 15] [--ops 300]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from typing import Any

import redis.asyncio as aioredis

from backend_services.store.failover import FailoverStore
from backend_services.store.memory import MemoryStore
from backend_services.store.redis import RedisStore
from backend_services.testing import RedisServer

Op = Callable[[], Awaitable[Any]]
VALUE = {"state": "closed", "failures": 3, "opened_at": None, "window": [1, 0, 1, 1]}


async def _time(op: Op, n: int) -> float:
    """µs per call of ``op`` over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        await op()
    return (time.perf_counter() - start) / n * 1e6


async def run(url: str, rounds: int, ops: int) -> None:
    plain = aioredis.Redis.from_url(url)
    store = RedisStore(url, namespace="bench")
    await store.initialize()
    failover = FailoverStore(store, MemoryStore())
    await failover.initialize()
    others: dict[str, Any] = {"memory": MemoryStore(), "failover": failover}
    key = "cb:state:payments"
    raw_key = store.keys.doc + key
    await store.put(key, VALUE)
    put_sha = store._scripts["put"].sha
    body = '{"state":"closed","failures":3,"opened_at":null,"window":[1,0,1,1]}'
    at = repr(time.time())

    baselines: dict[str, Op] = {
        "get": lambda: plain.get(raw_key),
        "put": lambda: plain.evalsha(put_sha, 1, raw_key, "", at, "", body),
    }
    variants: dict[str, tuple[str, Op]] = {
        "RedisStore.get": ("get", lambda: store.get(key)),
        "RedisStore.put": ("put", lambda: store.put(key, VALUE)),
    }
    for name, other in others.items():
        await other.put(key, VALUE)
        label = f"{name.capitalize()}Store"
        variants[f"{label}.get"] = ("get", lambda s=other: s.get(key))
        variants[f"{label}.put"] = ("put", lambda s=other: s.put(key, VALUE))

    for op in [*baselines.values(), *(op for _, op in variants.values())]:
        await _time(op, 200)  # warm up connections, scripts, caches
    base_us: dict[str, list[float]] = {"get": [], "put": []}
    ours_us: dict[str, list[float]] = {name: [] for name in variants}
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    chunk = max(1, ops // 2)
    for r in range(rounds):
        gc.collect()
        for name in names[r % len(names) :] + names[: r % len(names)]:
            kind, op = variants[name]
            # A B A B: each variant is paired with its plain command measured right beside it
            b1 = await _time(baselines[kind], chunk)
            o1 = await _time(op, chunk)
            b2 = await _time(baselines[kind], chunk)
            o2 = await _time(op, chunk)
            base_us[kind] += [b1, b2]
            ours_us[name].append((o1 + o2) / 2)
            ratios[name].append((o1 + o2) / (b1 + b2))

    med = statistics.median
    print(f"store benchmark: {rounds} interleaved rounds x {ops} ops per variant, medians")
    print(f"server: {store.server_name} {store.server_version}, namespace {store.namespace!r}")
    print(f"{'variant':<22}{'us/op':>9}{'vs plain':>10}")
    print(f"{'plain GET':<22}{med(base_us['get']):>9.1f}{1:>9.2f}x")
    print(f"{'plain EVALSHA (put)':<22}{med(base_us['put']):>9.1f}{1:>9.2f}x")
    for name in names:
        print(f"{name:<22}{med(ours_us[name]):>9.1f}{med(ratios[name]):>9.2f}x")
    for label in ("RedisStore", "FailoverStore"):
        get_over = med(ratios[f"{label}.get"]) - 1
        put_over = med(ratios[f"{label}.put"]) - 1
        print(
            f"{label} overhead over the plain command: read {get_over:+.1%}, "
            f"write {put_over:+.1%} (target < +20%)"
        )
    for other in others.values():
        await other.close()
    await store.close()
    await plain.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--ops", type=int, default=300)
    args = parser.parse_args()
    with ExitStack() as stack:
        url = os.environ.get("REDIS_URL")
        if not url:
            url = stack.enter_context(RedisServer("valkey")).url
        asyncio.run(run(url, args.rounds, args.ops))


if __name__ == "__main__":
    main()
