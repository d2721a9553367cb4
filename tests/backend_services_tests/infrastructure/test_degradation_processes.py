"""Fleet coordination across real OS processes through a real Redis server."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import pytest

from backend_services.infrastructure.service_degradation import GlobalDegradationManager

pytestmark = pytest.mark.redis

CHILD = r"""
import asyncio, json, sys, time
from backend_services.infrastructure.service_degradation import (
    ResourceType, ServiceDegradationManager,
)

async def main(url: str, name: str, cpu: float) -> None:
    m = ServiceDegradationManager(
        name, redis_url=url, builtin_monitors=False, check_interval=0.5, recovery_delay=0
    )
    m.register_resource_monitor(ResourceType.CPU, lambda: cpu, in_thread=False)
    m.add_listener(lambda ev: print(json.dumps(
        {"level": ev.new_level.value, "t": time.time(), "reason": ev.reason}), flush=True))
    await m.initialize()
    await m.check_resources()
    print(json.dumps({"ready": m.instance_id, "level": m.current_level.value}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await m.shutdown()

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


async def read_json(proc: asyncio.subprocess.Process, wait_s: float = 20.0) -> dict[str, Any]:
    """The child's next JSON line (bounded wait: these are real process events)."""
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), wait_s)
        if not line:
            raise AssertionError("child exited early")
        text = line.decode().strip()
        if text.startswith("{"):
            data: dict[str, Any] = json.loads(text)
            return data


async def until_level(proc: asyncio.subprocess.Process, level: str) -> dict[str, Any]:
    while True:
        event = await read_json(proc)
        if event.get("level") == level and "t" in event:
            return event


async def test_fleet_across_processes(redis_url: str) -> None:
    """Three processes publish their levels; the global view shows all of them; an
    emergency shutdown reaches every process through the change feed, and so does
    clearing it."""
    cpus = {"svc-a": 0.1, "svc-b": 0.1, "svc-c": 0.85}
    procs = {
        name: await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            redis_url,
            name,
            str(cpu),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for name, cpu in cpus.items()
    }
    g = GlobalDegradationManager(redis_url=redis_url)
    try:
        ready = {name: await read_json(p) for name, p in procs.items()}
        assert ready["svc-c"]["level"] == "minimal"
        status: dict[str, Any] = {}
        for _ in range(200):  # records arrive as each publisher runs (real time, bounded)
            status = await g.get_global_status()
            if status["total_instances"] == 3:
                break
            await asyncio.sleep(0.05)
        assert status["total_instances"] == 3
        assert status["worst_level"] == "minimal"
        assert status["degraded_services"] == 1
        assert status["services"]["svc-c"]["level"] == "minimal"

        t0 = time.time()
        result = await g.emergency_shutdown_all("processes drill")
        assert result["published"] is True
        arrivals = {name: await until_level(p, "emergency") for name, p in procs.items()}
        latencies = sorted(e["t"] - t0 for e in arrivals.values())
        print(f"emergency delivery latencies (s): {[round(x, 4) for x in latencies]}")
        assert all(e["reason"] == "processes drill" for e in arrivals.values())

        assert await g.clear_emergency("drill over") is True
        back = {
            name: await until_level(p, cpu_level)
            for name, p, cpu_level in [
                ("svc-a", procs["svc-a"], "normal"),
                ("svc-b", procs["svc-b"], "normal"),
                ("svc-c", procs["svc-c"], "minimal"),
            ]
        }
        assert set(back) == set(procs)
    finally:
        await g.shutdown()
        for p in procs.values():
            if p.stdin is not None:
                p.stdin.close()
        for p in procs.values():
            try:
                await asyncio.wait_for(p.wait(), 15)
            except TimeoutError:
                p.kill()
                await p.wait()
    assert all(p.returncode == 0 for p in procs.values())
    async with GlobalDegradationManager(redis_url=redis_url) as after:
        status = await after.get_global_status()
    assert status["total_instances"] == 0  # clean shutdowns withdrew their records


async def test_losing_redis_never_forces_degradation(redis_server_factory: Any) -> None:
    """With the real server stopped mid-run the manager keeps its local level, keeps
    monitoring and answering; when the server is back its record is published again."""
    from backend_services.degradation.fleet import instance_key
    from backend_services.infrastructure.service_degradation import (
        DegradationLevel,
        ResourceType,
        ServiceDegradationManager,
    )

    server = redis_server_factory()
    m = ServiceDegradationManager(
        "survivor", redis_url=server.url, builtin_monitors=False, check_interval=0.1
    )
    m.register_resource_monitor(ResourceType.CPU, lambda: 0.2, in_thread=False)
    await m.initialize()
    try:
        server.stop()
        for _ in range(10):  # several monitoring rounds against a dead server
            level = await asyncio.wait_for(m.check_resources(), 10)
            assert level is DegradationLevel.NORMAL
        assert await m.is_feature_enabled("anything") is False  # still answers locally
        assert m.current_level is DegradationLevel.NORMAL
        server.start()
        async with GlobalDegradationManager(redis_url=server.url) as g:
            found = False
            for _ in range(300):  # reconnect + next publish (real time, bounded)
                store = g.store
                assert store is not None
                if await store.get(instance_key(m.instance_id)) is not None:
                    found = True
                    break
                m._want_publish()
                await asyncio.sleep(0.05)
            assert found
    finally:
        await m.shutdown()
