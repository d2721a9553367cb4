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

The run is built from parts: :mod:`.state` (the fleet, settings, time and output),
:mod:`.watching` (callbacks, level polling, the status line) and :mod:`.wiring` (setting
up the coordinator's components); the phases are in :mod:`.phases`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from .phases import PHASES
from .summary import figures_rows, measure
from .view import ProgressView
from .wiring import Wiring

__all__ = ["Scenario", "run_demo"]


class Scenario(Wiring):
    """One run of the demo."""

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
