"""The integration demo: one live scenario through the spec's five demonstrations.

1. membrane processes start, are registered and discovered as they pass real health checks;
2. a steady stream of requests goes through the resilient request path;
3. one membrane is killed: its breaker opens, discovery marks it down, traffic shifts and
   the fallback covers what nothing else can; the caller should see no failure;
4. one membrane slows down: slow-call detection opens its breaker; resource pressure
   rises: degradation levels change and features switch off, then recover step by step;
5. configuration changes live (seen by the running membranes), is snapshotted and rolled
   back;
6. the killed membrane restarts: it rejoins after passing health checks, its breaker closes.

On the in-memory default the coordinator (this process) owns the shared state: it
registers the membranes and pushes configuration to them over HTTP. With ``--redis`` each
membrane registers itself and reads its configuration from Redis, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..client import ServiceClient
from ..dtesn.reservoir import MembraneSpec
from ..infrastructure.circuit_breaker import CircuitBreaker, CircuitBreakerConfig
from ..infrastructure.config_manager import ConfigSource, ConfigurationManager
from ..infrastructure.service_discovery import (
    ServiceDiscovery,
    ServiceEndpoint,
    ServiceStatus,
    ServiceType,
)
from ..retry_budget import RetryBudget
from ..store.memory import MemoryStore
from ..store.protocol import Store
from .constants import KIND, LEVEL_ORDER, LEVELS, SEED, SERVICE_NAME
from .fleet import Fleet
from .phases import PHASES
from .record import Event, Recorder
from .summary import Marks, figures_rows, measure
from .traffic import LocalFallback, Traffic
from .view import ProgressView

__all__ = ["Scenario", "run_demo"]


class _Guard:
    """A membrane's breaker, recording each attempt's outcome for the failover figures."""

    def __init__(self, breaker: CircuitBreaker, mid: str, scenario: Scenario) -> None:
        self.breaker = breaker
        self.mid = mid
        self.scenario = scenario

    async def call(self, func: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        try:
            return await self.breaker.call(func, *args, **kwargs)
        except Exception as exc:
            if type(exc).__name__ != "CircuitBreakerException":
                self.scenario.rec.event(
                    Event(self.scenario.t(), "attempt_failed", self.mid, type(exc).__name__)
                )
            raise


class Scenario:
    """One run of the demo."""

    def __init__(
        self,
        *,
        redis_url: str | None,
        membranes: int = 3,
        rate: float = 60.0,
        view: ProgressView | None = None,
        dashboard: int | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.dashboard = dashboard
        self.dashboard_url: str | None = None
        self.linger = 0.0
        self.store: Store | None = None
        self.ids = [f"dtesn-{KIND}-{i}" for i in range(1, membranes + 1)]
        self.rate = rate
        self.view = view or ProgressView()
        self.rec = Recorder()
        self.marks = Marks()
        self._t0 = time.monotonic()
        args = ["--levels", str(LEVELS), "--seed", str(SEED), "--monitors", "process"]
        args += ["--last-known-good", "none"]
        if redis_url:
            args += ["--redis", redis_url]
        env = {
            "DTESN_DEGRADATION_CHECK_INTERVAL": "0.2",
            "DTESN_DEGRADATION_RECOVERY_DELAY": "0.8",
            "DTESN_SERVICE_HEALTH_CHECK_INTERVAL": "0.5",
            "DTESN_SERVICE_HEALTH_CHECK_TIMEOUT": "0.5",
            "DTESN_SERVICE_MAX_FAILURES": "2",
        }
        self.fleet = Fleet(self.ids, kind=KIND, args=args, env=env)
        self.breaker_config = CircuitBreakerConfig(
            failure_threshold=3,
            timeout=2.0,
            half_open_max_calls=2,
            success_threshold=2,
            request_timeout=2.0,
            slow_call_threshold=0.25,
            slow_call_rate_threshold=0.5,
            minimum_throughput=5,
            window_size=10,
        )
        self.breakers: dict[str, CircuitBreaker] = {}
        self.breaker_state: dict[str, str] = {}
        self.levels: dict[str, str] = dict.fromkeys(self.ids, "normal")
        self.discovery: ServiceDiscovery | None = None
        self.config: ConfigurationManager | None = None
        self.client: ServiceClient | None = None
        self.traffic: Traffic | None = None
        self._watch: asyncio.Task[None] | None = None
        self._closing = False
        self._pushes: set[asyncio.Task[None]] = set()

    # --- time and output ----------------------------------------------------------------

    def t(self) -> float:
        return time.monotonic() - self._t0

    def say(self, text: str, style: str = "") -> None:
        self.view.event(self.t(), text, style)

    def note(self, kind: str, subject: str, detail: str, style: str = "") -> None:
        self.rec.event(Event(self.t(), kind, subject, detail))
        self.say(f"{subject}: {detail}", style)

    async def until(self, condition: Callable[[], bool], within: float) -> float | None:
        """Wait (real time, bounded) until ``condition()``; its time, or None."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if condition():
                return self.t()
            await asyncio.sleep(0.05)
        return self.t() if condition() else None

    # --- set-up -----------------------------------------------------------------------

    def _new_breaker(self, mid: str) -> CircuitBreaker:
        breaker = CircuitBreaker(f"membrane:{mid}", config=self.breaker_config, **self._shared())
        breaker.add_listener(self._on_breaker_event, "state_transition")
        self.breakers[mid] = breaker
        self.breaker_state[mid] = str(breaker.state.value)
        return breaker

    def _breaker_for(self, endpoint: ServiceEndpoint) -> _Guard:
        mid = endpoint.service_id
        breaker = self.breakers.get(mid) or self._new_breaker(mid)
        return _Guard(breaker, mid, self)

    def _on_breaker_event(self, event: Any) -> None:
        if self._closing:
            return
        mid = event.name.removeprefix("membrane:")
        state = str(event.state.value)
        self.breaker_state[mid] = state
        trigger = getattr(event.trigger, "value", event.trigger)
        style = {"open": "red", "half_open": "yellow", "closed": "green"}.get(state, "")
        why = f" ({str(trigger).replace('_', ' ')})" if trigger else ""
        self.note("breaker", mid, f"breaker {state}{why}", style)

    async def setup(self, stack: contextlib.AsyncExitStack) -> None:
        if self.dashboard is not None and not self.redis_url:
            # one in-memory store shared by the coordinator's components, so the
            # dashboard can show them
            self.store = MemoryStore()
            await self.store.initialize()
            stack.push_async_callback(self.store.close)
        self.discovery = ServiceDiscovery(
            **self._shared(),
            health_check_interval=0.5,
            health_check_timeout=0.5,
            max_consecutive_failures=2,
        )
        await self.discovery.initialize()
        stack.push_async_callback(self.discovery.shutdown)
        self.discovery.add_service_up_callback(self._on_up)
        self.discovery.add_service_down_callback(self._on_down)
        self.discovery.add_listener(self._on_discovery_event)

        self.config = ConfigurationManager(SERVICE_NAME, **self._shared(), last_known_good=None)
        await self.config.initialize()
        stack.push_async_callback(self.config.shutdown)
        await self.config.bulk_update(
            {"membrane_depth": LEVELS, "processing_timeout": 5.0},
            source=ConfigSource.API,
            description="demo baseline",
        )
        if not self.redis_url:
            self.config.add_global_change_callback(self._push_config)

        for mid in self.ids:
            breaker = self._new_breaker(mid)
            if self.redis_url or self.store is not None:
                await breaker.initialize()
                await breaker.reset()
                stack.push_async_callback(breaker.close)
        spec = MembraneSpec.for_kind(KIND, levels=LEVELS, seed=SEED)
        self.client = ServiceClient(
            self.discovery,
            ServiceType.DTESN_MEMBRANE,
            balancer="round_robin",
            max_attempts=3,
            retry_budget=RetryBudget(0.5, min_per_second=20.0),
            timeout=5.0,
            attempt_timeout=2.0,
            breaker_factory=self._breaker_for,
            fallback=LocalFallback(spec),
        )
        stack.push_async_callback(self.client.close)
        stack.push_async_callback(self.fleet.stop_all)
        self.traffic = Traffic(self.client, self.rec, rate=self.rate, now=self.t)
        if self.dashboard is not None:
            await self._start_dashboard(stack)

    def _shared(self) -> dict[str, Any]:
        """Where the coordinator's components keep shared state."""
        if self.redis_url:
            return {"redis_url": self.redis_url}
        if self.store is not None:
            return {"store": self.store}
        return {"redis_url": None}

    async def _start_dashboard(self, stack: contextlib.AsyncExitStack) -> None:
        from ..control.operations import FleetOperations
        from ..control.server import ControlServer

        ops = FleetOperations(self.redis_url, store=self.store, config_service=SERVICE_NAME)
        await ops.initialize()
        stack.push_async_callback(ops.close)
        server = ControlServer(ops, watch_interval=0.5)
        base = await server.start("127.0.0.1", self.dashboard or 0)
        stack.push_async_callback(server.close)
        self.dashboard_url = base + "/"
        where = "" if self.redis_url else " (degradation levels live in the membranes: --redis)"
        self.view.line(f"  live dashboard: {self.dashboard_url}{where}")

    # --- callbacks and watching ---------------------------------------------------------

    def _on_up(self, service_id: str) -> None:
        if self._closing:
            return
        self.note("discovery", service_id, "healthy (health checks pass)", "green")
        if not self.redis_url and self.config is not None:
            task = asyncio.get_running_loop().create_task(self._push_current_config([service_id]))
            self._pushes.add(task)
            task.add_done_callback(self._pushes.discard)

    def _on_discovery_event(self, event: Any) -> None:
        if self._closing or event.service_id not in self.ids:
            return
        if event.kind == "registered":
            who = "registered itself" if self.redis_url else "registered by the coordinator"
            self.note("registry", event.service_id, f"{who} (starting)")
        elif event.kind == "deregistered":
            self.note("registry", event.service_id, "deregistered")
        elif event.kind == "ejected":
            self.note("discovery", event.service_id, "ejected after failed calls (passive)")
        elif event.kind == "readmitted":
            self.note("discovery", event.service_id, "readmitted (healthy again)")

    def _on_down(self, service_id: str) -> None:
        if self._closing:
            return
        self.note("discovery", service_id, "marked down (health checks fail)", "red")

    async def _push_current_config(self, mids: list[str]) -> None:
        assert self.config is not None
        values = {
            "membrane_depth": await self.config.get_config("membrane_depth", LEVELS),
            "processing_timeout": await self.config.get_config("processing_timeout", 5.0),
        }
        await self.fleet.push_config(values, mids)

    async def _push_config(self, key: str, new: Any, old: Any) -> None:
        if key in ("membrane_depth", "processing_timeout") and new is not None:
            await self.fleet.push_config({key: new})

    async def _watch_loop(self) -> None:
        tick = 0
        while True:
            if tick % 4 == 0:
                await asyncio.gather(*(self._poll_level(mid) for mid in self.fleet.running()))
            self.view.status(self.t(), self._status_line())
            tick += 1
            await asyncio.sleep(0.05)

    async def _poll_level(self, mid: str) -> None:
        view = await self.fleet.poll(mid)
        if not view.reachable or view.level in ("?", self.levels.get(mid)):
            return
        old, self.levels[mid] = self.levels.get(mid, "normal"), view.level
        self.marks.levels_seen.setdefault(mid, [old]).append(view.level)
        worse = LEVEL_ORDER.index(view.level) > LEVEL_ORDER.index(old)
        off = sorted(k for k, v in view.features.items() if not v)
        detail = f"degradation {old} -> {view.level}"
        if off:
            detail += f" (off: {', '.join(off)})"
        self.note("degradation", mid, detail, "yellow" if worse else "green")

    def _status_line(self) -> str:
        counts = self.rec.outcomes()
        parts = [
            f"req {sum(counts.values())}",
            f"ok {counts.get('ok', 0)}",
            f"fallback {counts.get('fallback', 0)}",
            f"failed {counts.get('failed', 0)}",
        ]
        mems = []
        known = self.discovery.service_health if self.discovery is not None else {}
        for mid in self.ids:
            short = mid.rsplit("-", 1)[-1]
            record = known.get(mid)
            health = str(record.status.value) if record is not None else "?"
            mems.append(
                f"#{short} {self.view.paint(health[:4], 'green' if health == 'healthy' else 'red')}"
                f"/{self.breaker_state.get(mid, '?')}/{self.levels.get(mid, '?')}"
            )
        return " ".join(parts) + " | " + "  ".join(mems)

    # --- the phases ---------------------------------------------------------------------

    def healthy(self) -> set[str]:
        assert self.discovery is not None
        return {
            sid
            for sid, h in self.discovery.service_health.items()
            if h.status == ServiceStatus.HEALTHY
        }

    def endpoint(self, mid: str, port: int) -> ServiceEndpoint:
        return ServiceEndpoint(
            service_id=mid,
            service_type=ServiceType.DTESN_MEMBRANE,
            host="127.0.0.1",
            port=port,
            metadata={"membrane_type": KIND, "capacity": 1000, "levels": LEVELS},
        )

    def serving(self) -> set[str]:
        """Membranes healthy in discovery with their breaker closed."""
        return {m for m in self.healthy() if self.breaker_state.get(m) == "closed"}

    # --- the run ------------------------------------------------------------------------

    async def run(self) -> bool:
        mode = f"Redis at {self.redis_url}" if self.redis_url else "in-memory (embedded default)"
        self.view.title("backend_services integration demo")
        self.view.line(f"  shared state: {mode}; {len(self.ids)} membrane processes")
        async with contextlib.AsyncExitStack() as stack:
            await self.setup(stack)
            self._watch = asyncio.create_task(self._watch_loop(), name="demo:watch")
            try:
                for phase in PHASES:
                    await phase(self)
                if self.dashboard_url and self.linger > 0:
                    self.say(f"dashboard stays up for {self.linger:g} s: {self.dashboard_url}")
                    await asyncio.sleep(self.linger)  # a person is watching
            finally:
                if self.traffic is not None:
                    await self.traffic.stop()
                self._closing = True
                if self._pushes:
                    await asyncio.wait(self._pushes, timeout=5.0)
                self._watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watch
                self.view.close()
        self.marks.duration = self.t()
        failures = self.rec.failures()
        self.rec.check(
            "no request failed as the caller saw it",
            not failures,
            f"{len(failures)} failed"
            + (f" ({', '.join(sorted({c.error for c in failures}))})" if failures else ""),
        )
        self.report()
        return self.rec.passed

    def report(self) -> None:
        fig = measure(self.rec, self.marks)
        self.view.line()
        self.view.title(f"Summary ({self.marks.duration:.1f} s)")
        self.view.table(["measured", "value"], figures_rows(fig, self.marks))
        self.view.line()
        for check in self.rec.checks:
            mark = (
                self.view.paint("PASS", "green") if check.passed else self.view.paint("FAIL", "red")
            )
            self.view.line(f"  {mark}  {check.name} ({check.detail})")
        self.view.line()
        verdict = (
            self.view.paint("demo passed: everything it set out to show happened", "bold", "green")
            if self.rec.passed
            else self.view.paint("demo FAILED: see the FAIL lines above", "bold", "red")
        )
        self.view.line(verdict)

    def summary_dict(self) -> dict[str, Any]:
        fig = measure(self.rec, self.marks)
        return {
            "passed": self.rec.passed,
            "duration_s": round(self.marks.duration, 2),
            "figures": {k: v for k, v in vars(fig).items() if k != "extra"} | fig.extra,
            "levels_seen": self.marks.levels_seen,
            "checks": [dataclasses.asdict(c) for c in self.rec.checks],
        }


async def run_demo(ns: argparse.Namespace, *, colour: bool | None = None) -> int:
    """Run the demo with parsed options; returns the exit code (0 passed, 1 not, 2 setup)."""
    view = ProgressView(live=False if ns.plain else None, colour=False if ns.plain else colour)
    server = None
    redis_url: str | None = ns.redis
    if ns.start_redis:
        server = await _start_redis(view)
        if server is None:
            return 2
        redis_url = server.url
    try:
        scenario = Scenario(
            redis_url=redis_url,
            membranes=ns.membranes,
            rate=ns.rate,
            view=view,
            dashboard=ns.dashboard,
        )
        scenario.linger = ns.linger
        passed = await scenario.run()
        if ns.summary_json:
            text = json.dumps(scenario.summary_dict(), indent=2, default=str)
            await asyncio.to_thread(Path(ns.summary_json).write_text, text, encoding="utf-8")
        return 0 if passed else 1
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)


async def _start_redis(view: ProgressView) -> Any:
    try:
        from ..testing import RedisServer, RedisServerError
    except ImportError as exc:  # pragma: no cover - testing ships with the package
        print(f"error: cannot start a Redis server: {exc}", file=sys.stderr)
        return None
    try:
        server = RedisServer()
        await asyncio.to_thread(server.start)
    except RedisServerError as exc:
        print(
            f"error: cannot start a Redis-compatible server for the demo: {exc}\n"
            "  install the test extra (pip install 'backend_services[test]'), "
            "or pass --redis URL of a server you run",
            file=sys.stderr,
        )
        return None
    view.line(f"  started a Redis-compatible server for the demo at {server.url}")
    return server
