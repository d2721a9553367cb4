"""Running the control server as a program: ready line, token file, Redis, stopping."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from backend_services.control.serve import add_serve_arguments, serve, serve_from_args
from backend_services.control.server import ControlServer
from backend_services.errors import SettingsError

from .conftest import TOKEN
from .fleet import Fleet


async def _run(**kwargs: Any) -> tuple[asyncio.Task[int], asyncio.Event, dict[str, Any]]:
    stop = asyncio.Event()
    ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(host="127.0.0.1", port=0, stop=stop, announce=ready.set_result, **kwargs)
    )
    info = await asyncio.wait_for(ready, 20)
    return task, stop, info


async def test_serves_until_stopped_with_the_token_from_a_file(
    fleet: Fleet, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """serve() announces where it listens, reads the token from a file, accepts changes
    with it, and returns 0 once stopped."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    task, stop, info = await _run(backend=fleet.ops, token_file=str(token_file))
    assert info["changes"] == "enabled"
    assert info["url"].startswith("http://127.0.0.1:")
    async with http.post(
        info["api"] + "/circuits/membrane-1/reset", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        assert resp.status == 200
    stop.set()
    assert await asyncio.wait_for(task, 20) == 0


@pytest.mark.redis
async def test_serves_a_fleet_through_redis(redis_url: str, http: aiohttp.ClientSession) -> None:
    """Given only a Redis URL, serve() reads the fleet from Redis (here: empty), and the
    configuration written through it lands in Redis."""
    task, stop, info = await _run(redis_url=redis_url, token=TOKEN)
    try:
        assert info["redis"] == redis_url
        async with http.get(info["api"] + "/services") as resp:
            assert await resp.json() == []
        async with http.put(
            info["api"] + "/config/values/membrane_depth",
            json={"value": 3},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            assert (await resp.json())["version"] == 1
        async with http.get(info["api"] + "/config/versions") as resp:
            assert [v["version"] for v in await resp.json()] == [1]
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 20) == 0


async def test_without_a_token_changes_are_announced_disabled(fleet: Fleet) -> None:
    """With no token configured, the ready line says changes are disabled and how."""
    task, stop, info = await _run(backend=fleet.ops)
    stop.set()
    await asyncio.wait_for(task, 20)
    assert "DTESN_CONTROL_TOKEN" in info["changes"]


async def test_a_weak_token_stops_the_start(fleet: Fleet) -> None:
    """A token that is too short is a clear error before anything listens."""
    with pytest.raises(SettingsError, match="at least"):
        await serve(backend=fleet.ops, token="short", port=0, stop=asyncio.Event())


def test_serve_arguments_parse() -> None:
    """The serve options parse with their defaults and repeatable origins."""
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    ns = parser.parse_args(["--port", "9000", "--allowed-origin", "https://ops.example"])
    assert (ns.host, ns.port, ns.protect_reads) == ("127.0.0.1", 9000, False)
    assert ns.allowed_origin == ["https://ops.example"]


def test_without_redis_the_command_fails_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """With no Redis URL anywhere, the command exits 2 with one line naming the setting."""
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    code = serve_from_args(parser.parse_args(["--port", "0"]))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert "DTESN_SERVICE_REDIS_URL" in err


async def test_a_port_in_use_is_an_error_that_leaves_nothing_running(fleet: Fleet) -> None:
    """Starting on a port that is taken raises OSError and stops the watcher again."""
    first = ControlServer(fleet.ops)
    url = await first.start("127.0.0.1", 0)
    second = ControlServer(fleet.ops)
    try:
        with pytest.raises(OSError, match="in use"):
            await second.start("127.0.0.1", int(url.rsplit(":", 1)[1]))
        assert second.watcher.subscribers == 0
        assert second.watcher._supervisor is None
    finally:
        await first.close()


def test_cli_serve_without_redis_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """``backend-services serve`` with no Redis anywhere exits 2 with one error line."""
    from backend_services.cli import main

    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1


@pytest.mark.redis
async def test_cli_serve_runs_as_a_process_until_sigterm(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    """``backend-services serve`` as a real OS process: prints a JSON ready line, serves
    the API with the token from the environment, and exits 0 on SIGTERM."""
    env = {**os.environ, "DTESN_CONTROL_TOKEN": TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backend_services.cli",
        "serve",
        "--redis-url",
        redis_url,
        "--port",
        "0",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        info = json.loads(line)
        assert info["changes"] == "enabled"
        async with http.post(
            info["api"] + "/circuits/payments/open",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"reason": "drill"},
        ) as resp:
            assert (await resp.json())["state"] == "forced_open"
        async with http.get(info["url"]) as resp:
            assert "Fleet dashboard" in await resp.text()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    assert TOKEN not in (await proc.stderr.read()).decode()
