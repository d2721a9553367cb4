"""Requests per second through the full request path vs calling the membrane directly.

Starts real DTESN membrane processes on this machine, then measures, in one run, with the
same aiohttp session and the same number of concurrent callers:

* **direct** — ``session.post(membrane_url + "/process")`` (round robin over the
  membranes when there are several);
* **full path** — :class:`~backend_services.client.ServiceClient`: discovery's local
  cache, the balancer, a circuit breaker per endpoint (default config: sliding window,
  slow-call detection, request timeout), outcome reporting, retries when needed.

Each round runs both back to back (alternating which goes first); the figures are medians
over the rounds. Besides requests per second it measures CPU seconds per request, in this
process (the caller: where the resilience layers run) and in the membrane processes. On a
busy machine the wall-clock rates swing with other load; the CPU figures do not, and they
give the throughput a CPU-bound machine reaches with each path:
``(caller + membranes CPU, direct) / (caller + membranes CPU, full path)``. Target: the
layers cost at most 10% of throughput.

    python benchmarks/bench_request_path.py [--rounds 7] [--seconds 1] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import psutil

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


@dataclass
class Run:
    """One measurement: requests per second, CPU seconds per request here and there."""

    rate: float
    caller_cpu: float
    membrane_cpu: float


def _cpu(procs: list[psutil.Process]) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs)


async def run_for(
    call: Call, concurrency: int, seconds: float, membranes: list[psutil.Process]
) -> Run:
    """``concurrency`` callers loop on ``call`` for ``seconds``."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await call()
            done += 1

    cpu0, mem0, t0 = time.process_time(), _cpu(membranes), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    n = max(done, 1)
    return Run(done / elapsed, (time.process_time() - cpu0) / n, (_cpu(membranes) - mem0) / n)


async def wait_healthy(discovery: ServiceDiscovery, ids: set[str]) -> None:
    for _ in range(400):
        healthy = {
            sid for sid, h in discovery.service_health.items() if h.status == ServiceStatus.HEALTHY
        }
        if ids <= healthy:
            return
        await asyncio.sleep(0.025)
    raise RuntimeError(f"membranes did not become healthy: {sorted(ids)}")


@dataclass
class Result:
    membranes: int
    direct: Run
    full: Run

    @property
    def rate_ratio(self) -> float:
        return self.full.rate / self.direct.rate

    @property
    def cpu_ratio(self) -> float:
        """Throughput of the full path relative to direct on a CPU-bound machine."""
        direct = self.direct.caller_cpu + self.direct.membrane_cpu
        full = self.full.caller_cpu + self.full.membrane_cpu
        return direct / full


def _median(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.rate for r in runs),
        statistics.median(r.caller_cpu for r in runs),
        statistics.median(r.membrane_cpu for r in runs),
    )


async def measure(
    procs: list[MembraneProcess], session: aiohttp.ClientSession, args: argparse.Namespace
) -> Result:
    body = {"inputs": sample_inputs(args.steps, 8, seed=1)}
    urls = itertools.cycle([f"{p.url}/process" for p in procs])
    membranes = [psutil.Process(p.pid) for p in procs if p.pid is not None]

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
        client = ServiceClient(
            discovery, ServiceType.DTESN_MEMBRANE, session=session, balancer=args.balancer
        )

        async def full() -> None:
            resp = await client.request("POST", "/process", json=body, idempotent=True)
            if resp.status != 200:
                raise RuntimeError(f"full-path call failed: HTTP {resp.status}")

        await run_for(direct, args.concurrency, 0.3, membranes)  # warm connections
        await run_for(full, args.concurrency, 0.3, membranes)
        runs: dict[str, list[Run]] = {"direct": [], "full": []}
        for i in range(args.rounds):
            order = [("direct", direct), ("full", full)]
            for name, call in order if i % 2 == 0 else reversed(order):
                runs[name].append(await run_for(call, args.concurrency, args.seconds, membranes))
        metrics = client.get_metrics()
        if metrics["failures"] or metrics["retries"]:
            print(
                f"  note: client saw {metrics['failures']} failures, {metrics['retries']} retries"
            )
        return Result(len(procs), _median(runs["direct"]), _median(runs["full"]))
    finally:
        await discovery.shutdown()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="paired rounds (default 7)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent callers")
    parser.add_argument("--steps", type=int, default=12, help="input vectors per request")
    parser.add_argument(
        "--balancer",
        default=None,
        help="full-path balancer (default: the client's own, peak_ewma)",
    )
    args = parser.parse_args()

    procs = [
        MembraneProcess(f"bench-{i}", kind="memory", args=["--monitors", "process"])
        for i in (1, 2, 3)
    ]
    await asyncio.gather(*(p.start() for p in procs))
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    results: list[Result] = []
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            for group in ([procs[0]], procs):
                results.append(await measure(group, session, args))
    finally:
        await asyncio.gather(*(p.terminate() for p in procs))

    print(
        f"request path: {args.concurrency} concurrent callers, {args.steps} input vectors per "
        f"request, medians of {args.rounds} paired rounds of {args.seconds:g} s"
    )
    print(
        f"{'membranes':>9}  {'direct req/s':>12}  {'full req/s':>10}  {'ratio':>5}  "
        f"{'caller us/req direct -> full':>28}  {'membranes us/req':>16}  {'CPU-bound ratio':>15}"
    )
    for r in results:
        print(
            f"{r.membranes:>9}  {r.direct.rate:>12.0f}  {r.full.rate:>10.0f}  "
            f"{r.rate_ratio:>5.3f}  "
            f"{r.direct.caller_cpu * 1e6:>13.0f} -> {r.full.caller_cpu * 1e6:<6.0f}"
            f"({(r.full.caller_cpu - r.direct.caller_cpu) * 1e6:+.0f})  "
            f"{r.direct.membrane_cpu * 1e6:>16.0f}  {r.cpu_ratio:>15.3f}"
        )
    worst_rate = max(1.0 - r.rate_ratio for r in results)
    worst_cpu = max(1.0 - r.cpu_ratio for r in results)
    print(
        f"throughput cost of the resilience layers: {worst_cpu * 100:+.1f}% CPU-bound "
        f"({'within' if worst_cpu <= 0.10 else 'OVER'} the 10% target); "
        f"{worst_rate * 100:+.1f}% in wall-clock req/s on this machine now"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
