"""Requests per second through the full request path vs calling the membrane directly.

Starts real DTESN membrane processes on this machine, then measures, interleaved in one
run, with the same aiohttp session and the same number of concurrent callers:

* **direct** — ``session.post(membrane_url + "/process")`` (round robin over the
  membranes when there are several);
* **full path** — :class:`~backend_services.client.ServiceClient`: discovery's local
  cache, the balancer, a circuit breaker per endpoint (default config: sliding window,
  slow-call detection, request timeout), outcome reporting, retries when needed.

Against one and three membranes; prints requests/s (median of the rounds) and the
throughput the resilience layers cost. Target: at most 10%.

    python benchmarks/bench_request_path.py [--rounds 5] [--seconds 1.5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp

from backend_services.client import ServiceClient
from backend_services.dtesn.process import MembraneProcess
from backend_services.dtesn.service import sample_inputs
from backend_services.infrastructure.service_discovery import (
    ServiceDiscovery,
    ServiceEndpoint,
    ServiceStatus,
    ServiceType,
)

Call = Callable[[], Awaitable[None]]


async def throughput(call: Call, concurrency: int, seconds: float) -> float:
    """Requests per second completed by ``concurrency`` callers looping for ``seconds``."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def wait_healthy(discovery: ServiceDiscovery, ids: set[str]) -> None:
    for _ in range(400):
        healthy = {
            sid for sid, h in discovery.service_health.items() if h.status == ServiceStatus.HEALTHY
        }
        if ids <= healthy:
            return
        await asyncio.sleep(0.025)
    raise RuntimeError(f"membranes did not become healthy: {sorted(ids)}")


async def measure(
    procs: list[MembraneProcess], session: aiohttp.ClientSession, args: argparse.Namespace
) -> tuple[float, float]:
    """Median requests/s direct and through the full path, interleaved rounds."""
    body = {"inputs": sample_inputs(args.steps, 8, seed=1)}
    urls = itertools.cycle([f"{p.url}/process" for p in procs])

    async def direct() -> None:
        async with session.post(next(urls), json=body) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"direct call failed: HTTP {resp.status}")

    discovery = ServiceDiscovery(
        redis_url=None, health_check_interval=5.0, health_check_timeout=2.0
    )
    await discovery.initialize()
    try:
        for p in procs:
            await discovery.register_service(
                ServiceEndpoint(p.membrane_id, ServiceType.DTESN_MEMBRANE, "127.0.0.1", p.port)
            )
        await wait_healthy(discovery, {p.membrane_id for p in procs})
        client = ServiceClient(discovery, ServiceType.DTESN_MEMBRANE, session=session)

        async def full() -> None:
            resp = await client.request("POST", "/process", json=body, idempotent=True)
            if resp.status != 200:
                raise RuntimeError(f"full-path call failed: HTTP {resp.status}")

        await throughput(direct, args.concurrency, 0.3)  # warm connections and caches
        await throughput(full, args.concurrency, 0.3)
        direct_runs, full_runs = [], []
        for i in range(args.rounds):
            order = [(direct, direct_runs), (full, full_runs)]
            if i % 2:
                order.reverse()
            for call, runs in order:
                runs.append(await throughput(call, args.concurrency, args.seconds))
        metrics = client.get_metrics()
        if metrics["failures"] or metrics["retries"]:
            print(
                f"  note: client saw {metrics['failures']} failures, {metrics['retries']} retries"
            )
        return statistics.median(direct_runs), statistics.median(full_runs)
    finally:
        await discovery.shutdown()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--seconds", type=float, default=1.5, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent callers")
    parser.add_argument("--steps", type=int, default=12, help="input vectors per request")
    args = parser.parse_args()

    procs = [
        MembraneProcess(f"bench-{i}", kind="memory", args=["--monitors", "process"])
        for i in (1, 2, 3)
    ]
    await asyncio.gather(*(p.start() for p in procs))
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    results = []
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            for group in ([procs[0]], procs):
                direct, full = await measure(group, session, args)
                results.append((len(group), direct, full))
    finally:
        await asyncio.gather(*(p.terminate() for p in procs))

    print(
        f"request path throughput ({args.concurrency} concurrent callers, "
        f"{args.steps} input vectors per request, median of {args.rounds} interleaved "
        f"rounds of {args.seconds:g} s)"
    )
    print(f"{'membranes':>9}  {'direct req/s':>12}  {'full path req/s':>15}  {'ratio':>6}  cost")
    worst = -1.0
    for n, direct, full in results:
        ratio = full / direct
        cost = 1.0 - ratio
        worst = max(worst, cost)
        print(f"{n:>9}  {direct:>12.0f}  {full:>15.0f}  {ratio:>6.3f}  {cost * 100:+.1f}%")
    verdict = "within" if worst <= 0.10 else "OVER"
    print(
        f"largest measured cost of the resilience layers: {worst * 100:+.1f}% of throughput "
        f"({verdict} the 10% target; a negative cost means the full path was faster, "
        "e.g. the peak-EWMA balancer avoiding the busiest membrane)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
