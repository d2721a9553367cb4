"""The membrane's HTTP API on a real server in this process (fake clock for delays)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import numpy as np
import pytest

from backend_services.dtesn.reservoir import DeepReservoir, MembraneKind
from backend_services.dtesn.service import (
    FEATURE_ADVANCED,
    FEATURE_CORE,
    FEATURE_DEBUG,
    MembraneOptions,
    MembraneService,
    sample_inputs,
)
from backend_services.testing import FakeClock

Factory = Callable[..., Any]


@pytest.fixture
async def start() -> AsyncIterator[Factory]:
    started: list[MembraneService] = []

    async def factory(**kwargs: Any) -> MembraneService:
        clock = kwargs.pop("clock", None)
        gate = kwargs.pop("feature_gate", None)
        on_crash = kwargs.pop("on_crash", None)
        service = MembraneService(
            MembraneOptions(**kwargs), clock=clock, feature_gate=gate, on_crash=on_crash
        )
        await service.start()
        service.set_ready(True)
        started.append(service)
        return service

    yield factory
    for service in started:
        await service.stop()


async def _until_sleeping(clock: FakeClock) -> None:
    """Wait (bounded) for a real request to reach the server and sleep on the fake clock."""
    for _ in range(1000):
        if clock.sleepers:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the request never reached the server")


def _body(steps: int = 5, **extra: Any) -> dict[str, Any]:
    return {"inputs": sample_inputs(steps, 8, seed=3), **extra}


class TestHealth:
    async def test_ready_membrane_is_healthy(self, start: Factory, http: aiohttp.ClientSession):
        """GET /health is 200 with ready=true and the membrane's identity."""
        svc = await start(kind=MembraneKind.GRAMMAR, membrane_id="g-1")
        async with http.get(f"{svc.url}/health") as resp:
            body = await resp.json()
        assert resp.status == 200
        assert body["ready"] is True
        assert body["membrane_id"] == "g-1"
        assert body["kind"] == "grammar"

    async def test_not_ready_membrane_says_why(self, start: Factory, http: aiohttp.ClientSession):
        """A membrane marked not ready answers 503 with the reason, and refuses work."""
        svc = await start()
        svc.set_ready(False, "warming up")
        async with http.get(f"{svc.url}/health") as resp:
            body = await resp.json()
        assert resp.status == 503
        assert (body["ready"], body["reason"]) == (False, "warming up")
        async with http.post(f"{svc.url}/process", json=_body()) as resp:
            assert resp.status == 503
            assert "warming up" in (await resp.json())["error"]

    async def test_offline_degradation_makes_health_fail(
        self, start: Factory, http: aiohttp.ClientSession
    ):
        """When the status provider reports level offline, health is 503."""
        svc = await start()
        svc.status_provider = lambda: {"degradation_level": "offline"}
        async with http.get(f"{svc.url}/health") as resp:
            assert resp.status == 503
            assert "offline" in (await resp.json())["reason"]


class TestProcess:
    async def test_process_returns_states_per_level_and_readout(
        self, start: Factory, http: aiohttp.ClientSession
    ):
        """POST /process gives one final state per level and the readout, as computed locally."""
        svc = await start(kind=MembraneKind.MEMORY, levels=3, seed=9)
        body = _body(7, request_id="r1")
        async with http.post(f"{svc.url}/process", json=body) as resp:
            out = await resp.json()
        assert resp.status == 200
        expected = DeepReservoir(svc.spec).run(np.asarray(body["inputs"]))
        assert out["request_id"] == "r1"
        assert [lvl["size"] for lvl in out["levels"]] == [p.size for p in svc.spec.levels]
        assert np.allclose(out["readout"], expected.readout)
        assert np.allclose(out["levels"][2]["state"], expected.states[2])
        assert out["degraded"] is False

    async def test_depth_follows_configuration(self, start: Factory, http: aiohttp.ClientSession):
        """With membrane_depth=2 only two levels are computed; a request may ask for fewer."""
        svc = await start(levels=4, membrane_depth=2)
        async with http.post(f"{svc.url}/process", json=_body()) as resp:
            assert (await resp.json())["depth"] == 2
        async with http.post(f"{svc.url}/process", json=_body(depth=1)) as resp:
            assert (await resp.json())["depth"] == 1
        async with http.post(f"{svc.url}/process", json=_body(depth=4)) as resp:
            assert (await resp.json())["depth"] == 2

    @pytest.mark.parametrize(
        ("payload", "status", "field"),
        [
            ({"inputs": [[1, 2]]}, 400, "inputs[0]"),
            ({"inputs": []}, 400, "inputs"),
            ({"inputs": [[1, 2, 3, 4, 5, 6, 7, True]]}, 400, "inputs[0][7]"),
            ({"inputs": [[0] * 8], "depth": 0}, 400, "depth"),
            ({"inputs": [[0] * 8], "debug": "yes"}, 400, "debug"),
            ({"inputs": [[0] * 8], "extra": 1}, 400, "body"),
            ({"inputs": [[0] * 8] * 11}, 413, "inputs"),
            ([1, 2, 3], 400, "body"),
        ],
    )
    async def test_bad_bodies_get_4xx_naming_the_field(
        self,
        start: Factory,
        http: aiohttp.ClientSession,
        payload: Any,
        status: int,
        field: str,
    ):
        """Shape, type, size and unknown-field errors are 4xx JSON naming the field."""
        svc = await start(max_steps=10)
        async with http.post(f"{svc.url}/process", json=payload) as resp:
            body = await resp.json()
        assert resp.status == status
        assert body["field"] == field
        assert body["error"]
        assert body["expected"]
        assert svc.metrics.requests["invalid"] == 1

    async def test_non_finite_numbers_are_rejected(
        self, start: Factory, http: aiohttp.ClientSession
    ):
        """NaN and Infinity (accepted by Python's JSON parser) are refused with 400."""
        svc = await start()
        raw = '{"inputs": [[NaN, 0, 0, 0, 0, 0, 0, Infinity]]}'
        async with http.post(
            f"{svc.url}/process", data=raw, headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["field"] == "inputs[0][0]"

    async def test_invalid_json_and_oversized_body(
        self, start: Factory, http: aiohttp.ClientSession
    ):
        """Malformed JSON is a 400; a body over the size limit is a 413, both JSON."""
        svc = await start()
        async with http.post(f"{svc.url}/process", data=b"{nope") as resp:
            assert resp.status == 400
            assert "JSON" in (await resp.json())["error"]
        async with http.post(f"{svc.url}/process", data=b"x" * (1024 * 1024 + 10)) as resp:
            assert resp.status == 413
            assert "too large" in (await resp.json())["error"]

    async def test_unknown_path_is_json_404(self, start: Factory, http: aiohttp.ClientSession):
        """An unknown path gets a JSON 404."""
        svc = await start()
        async with http.get(f"{svc.url}/nope") as resp:
            assert resp.status == 404
            assert (await resp.json())["path"] == "/nope"


class TestFeatureGates:
    async def test_advanced_analytics_off_means_one_level(
        self, start: Factory, http: aiohttp.ClientSession
    ):
        """With advanced_analytics disabled the membrane answers at depth 1, marked degraded."""

        async def gate(name: str) -> bool:
            return name != FEATURE_ADVANCED

        svc = await start(levels=4, feature_gate=gate)
        async with http.post(f"{svc.url}/process", json=_body()) as resp:
            out = await resp.json()
        assert (out["depth"], out["degraded"]) == (1, True)
        assert svc.metrics.degraded_requests == 1

    async def test_debug_interface_gates_trajectories_and_debug_endpoint(
        self, start: Factory, http: aiohttp.ClientSession
    ):
        """debug=true returns trajectories only while debug_interface is on; /debug likewise."""
        enabled = {FEATURE_CORE, FEATURE_ADVANCED, FEATURE_DEBUG}

        async def gate(name: str) -> bool:
            return name in enabled

        svc = await start(levels=2, feature_gate=gate)
        async with http.post(f"{svc.url}/process", json=_body(4, debug=True)) as resp:
            out = await resp.json()
        assert [len(n) for n in out["debug"]["trajectory_norms"]] == [4, 4]
        async with http.get(f"{svc.url}/debug") as resp:
            assert (await resp.json())["last"]["steps"] == 4
        enabled.discard(FEATURE_DEBUG)
        async with http.post(f"{svc.url}/process", json=_body(4, debug=True)) as resp:
            assert "unavailable" in (await resp.json())["debug"]
        async with http.get(f"{svc.url}/debug") as resp:
            assert resp.status == 503

    async def test_core_processing_off_refuses_work(
        self, start: Factory, http: aiohttp.ClientSession
    ):
        """With core_processing disabled, /process is a 503 naming the level."""

        async def gate(name: str) -> bool:
            return False

        svc = await start(feature_gate=gate)
        svc.status_provider = lambda: {"degradation_level": "offline"}
        async with http.post(f"{svc.url}/process", json=_body()) as resp:
            assert resp.status == 503
            assert "offline" in (await resp.json())["error"]


class TestInfoAndMetrics:
    async def test_membrane_info_describes_the_reservoir(
        self, start: Factory, http: aiohttp.ClientSession
    ):
        """GET /membrane_info lists every level's parameters and the configured depth."""
        svc = await start(kind=MembraneKind.REASONING, levels=3, membrane_depth=2)
        async with http.get(f"{svc.url}/membrane_info") as resp:
            info = await resp.json()
        assert info["kind"] == "reasoning"
        assert (info["max_depth"], info["membrane_depth"]) == (3, 2)
        assert [lvl["leak_rate"] for lvl in info["levels"]] == [0.5, 0.5, 0.5]

    async def test_metrics_count_outcomes_in_json_and_prometheus(
        self, start: Factory, http: aiohttp.ClientSession
    ):
        """/metrics counts ok and invalid calls and reports own resource use."""
        svc = await start(membrane_id="m-1")
        for _ in range(3):
            async with http.post(f"{svc.url}/process", json=_body()) as resp:
                assert resp.status == 200
        async with http.post(f"{svc.url}/process", json={"inputs": 1}) as resp:
            assert resp.status == 400
        async with http.get(f"{svc.url}/metrics?format=json") as resp:
            data = await resp.json()
        assert data["requests_by_outcome"]["ok"] == 3
        assert data["requests_by_outcome"]["invalid"] == 1
        assert data["latency_ms"]["samples"] == 3
        assert data["resources"]["rss_bytes"] > 0
        async with http.get(f"{svc.url}/metrics") as resp:
            text = await resp.text()
        assert resp.content_type == "text/plain"
        assert 'dtesn_membrane_requests_total{kind="memory",membrane="m-1",outcome="ok"} 3' in text
        assert "dtesn_membrane_resident_memory_bytes" in text


class TestConfigEndpoint:
    async def test_config_changes_apply_live(self, start: Factory, http: aiohttp.ClientSession):
        """POST /admin/config changes depth and timeout for the next call."""
        svc = await start(levels=4)
        async with http.post(
            f"{svc.url}/admin/config", json={"membrane_depth": 3, "processing_timeout": 2.5}
        ) as resp:
            assert await resp.json() == {"membrane_depth": 3, "processing_timeout": 2.5}
        async with http.post(f"{svc.url}/process", json=_body()) as resp:
            assert (await resp.json())["depth"] == 3

    @pytest.mark.parametrize(
        "payload",
        [
            {"membrane_depth": 9},
            {"processing_timeout": -1},
            {"colour": "red"},
            {"membrane_depth": 2.5},
        ],
    )
    async def test_invalid_config_changes_nothing(
        self, start: Factory, http: aiohttp.ClientSession, payload: dict[str, Any]
    ):
        """An invalid value or key is a 400 and leaves the configuration as it was."""
        svc = await start(levels=4)
        async with http.post(
            f"{svc.url}/admin/config", json={"membrane_depth": 2, **payload}
        ) as resp:
            assert resp.status == 400
        assert svc.depth == 4

    async def test_admin_token_is_required_when_set(
        self, start: Factory, http: aiohttp.ClientSession
    ):
        """With an admin token, changes need the bearer header."""
        svc = await start(admin_token="s3cret", enable_faults=True)
        async with http.post(f"{svc.url}/admin/config", json={"membrane_depth": 1}) as resp:
            assert resp.status == 401
        async with http.post(f"{svc.url}/admin/faults", json={"slow": 1}) as resp:
            assert resp.status == 401
        async with http.post(
            f"{svc.url}/admin/config",
            json={"membrane_depth": 1},
            headers={"Authorization": "Bearer s3cret"},
        ) as resp:
            assert resp.status == 200
        assert svc.depth == 1


class TestFaults:
    async def test_faults_are_refused_unless_enabled(
        self, start: Factory, http: aiohttp.ClientSession
    ):
        """Without enable_faults, /admin/faults is 403 and nothing changes."""
        svc = await start()
        async with http.post(f"{svc.url}/admin/faults", json={"hang": True}) as resp:
            assert resp.status == 403
        assert not svc.faults.active

    async def test_error_fault_returns_500(self, start: Factory, http: aiohttp.ClientSession):
        """error_rate=1 makes every /process a 500; clear restores service."""
        svc = await start(enable_faults=True)
        async with http.post(f"{svc.url}/admin/faults", json={"error_rate": 1.0}) as resp:
            assert (await resp.json())["error_rate"] == 1.0
        async with http.post(f"{svc.url}/process", json=_body()) as resp:
            assert resp.status == 500
        async with http.post(f"{svc.url}/admin/faults", json={"clear": True}) as resp:
            assert resp.status == 200
        async with http.post(f"{svc.url}/process", json=_body()) as resp:
            assert resp.status == 200
        assert svc.metrics.requests["error"] == 1

    async def test_slow_fault_delays_by_the_clock(
        self, start: Factory, http: aiohttp.ClientSession
    ):
        """slow=2 holds /process until the clock has moved 2 s, health stays immediate."""
        clock = FakeClock()
        svc = await start(enable_faults=True, clock=clock)
        async with http.post(f"{svc.url}/admin/faults", json={"slow": 2.0}) as resp:
            assert resp.status == 200
        call = asyncio.create_task(http.post(f"{svc.url}/process", json=_body()))
        await _until_sleeping(clock)
        async with http.get(f"{svc.url}/health") as resp:
            assert resp.status == 200
        await clock.advance(1.0)
        assert not call.done()
        await clock.advance(1.0)
        resp = await asyncio.wait_for(call, 5)
        assert resp.status == 200
        resp.release()

    async def test_slow_beyond_processing_timeout_is_504(
        self, start: Factory, http: aiohttp.ClientSession
    ):
        """A delay longer than processing_timeout ends in a 504 at the timeout."""
        clock = FakeClock()
        svc = await start(enable_faults=True, clock=clock, processing_timeout=1.0)
        svc.faults = svc.faults.__class__(slow=5.0)
        call = asyncio.create_task(http.post(f"{svc.url}/process", json=_body()))
        await _until_sleeping(clock)
        await clock.advance(1.0)
        resp = await asyncio.wait_for(call, 5)
        assert resp.status == 504
        assert "processing_timeout=1" in (await resp.json())["error"]
        assert svc.metrics.requests["timeout"] == 1

    async def test_hang_blocks_everything_but_admin(
        self, start: Factory, http: aiohttp.ClientSession
    ):
        """hang=true stalls health and process until cleared through the admin endpoint."""
        svc = await start(enable_faults=True)
        async with http.post(f"{svc.url}/admin/faults", json={"hang": True}) as resp:
            assert resp.status == 200
        health = asyncio.create_task(http.get(f"{svc.url}/health"))
        done, _ = await asyncio.wait({health}, timeout=0.2)  # real network: nothing arrives
        assert not done
        async with http.post(f"{svc.url}/admin/faults", json={"hang": False}) as resp:
            assert resp.status == 200
        resp = await asyncio.wait_for(health, 5)
        assert resp.status == 200
        resp.release()

    async def test_crash_calls_the_crash_action_after_answering(
        self, start: Factory, http: aiohttp.ClientSession
    ):
        """crash=true answers, then invokes the crash action (process exit in production)."""
        crashed = asyncio.Event()
        svc = await start(enable_faults=True, on_crash=crashed.set)
        async with http.post(f"{svc.url}/admin/faults", json={"crash": True}) as resp:
            assert resp.status == 200
        await asyncio.wait_for(crashed.wait(), 5)

    @pytest.mark.parametrize(
        "payload",
        [{"slow": -1}, {"error_rate": 2}, {"hang": "yes"}, {"explode": True}, {}, [1]],
    )
    async def test_bad_fault_updates_are_400(
        self, start: Factory, http: aiohttp.ClientSession, payload: Any
    ):
        """Invalid fault updates are rejected and change nothing."""
        svc = await start(enable_faults=True)
        async with http.post(f"{svc.url}/admin/faults", json=payload) as resp:
            assert resp.status == 400
        assert not svc.faults.active


class TestLifecycle:
    async def test_stop_waits_for_in_flight_calls(
        self, start: Factory, http: aiohttp.ClientSession
    ):
        """stop() lets a call in flight finish before closing the server."""
        clock = FakeClock()
        svc = await start(enable_faults=True, clock=clock)
        svc.faults = svc.faults.__class__(slow=1.0)
        call = asyncio.create_task(http.post(f"{svc.url}/process", json=_body()))
        await _until_sleeping(clock)
        stopping = asyncio.create_task(svc.stop())
        await asyncio.sleep(0.05)  # real time for a stop() that did not wait to finish
        assert not svc.ready
        assert not stopping.done()
        await clock.advance(1.0)
        resp = await asyncio.wait_for(call, 5)
        assert resp.status == 200
        resp.release()
        await stopping

    async def test_port_in_use_is_a_clear_error(self, start: Factory):
        """Binding a port already taken raises a ValidationError naming the port."""
        first = await start()
        with pytest.raises(ValueError, match="port"):
            await start(port=first.port)
