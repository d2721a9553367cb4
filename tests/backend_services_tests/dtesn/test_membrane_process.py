"""Membranes as real OS processes: start, serve, crash, kill, restart, stop gracefully."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from backend_services.dtesn.process import MembraneProcess, MembraneProcessError
from backend_services.dtesn.service import sample_inputs


@pytest.fixture
async def membrane() -> AsyncIterator[MembraneProcess]:
    proc = MembraneProcess("proc-test-1", kind="reasoning", faults=True, args=["--levels", "3"])
    yield proc
    await proc.kill()


async def _process(http: aiohttp.ClientSession, url: str) -> dict[str, object]:
    async with http.post(f"{url}/process", json={"inputs": sample_inputs(6, 8)}) as resp:
        assert resp.status == 200
        return dict(await resp.json())


class TestProcessLifecycle:
    async def test_starts_on_a_free_port_and_serves(
        self, membrane: MembraneProcess, http: aiohttp.ClientSession
    ):
        """The process announces its port; health and /process answer there."""
        info = await membrane.start()
        assert info["event"] == "ready"
        assert info["membrane_id"] == "proc-test-1"
        assert info["pid"] == membrane.pid
        async with http.get(f"{membrane.url}/health") as resp:
            assert resp.status == 200
        out = await _process(http, membrane.url)
        assert out["depth"] == 3

    async def test_sigkill_then_restart_on_the_same_port_gives_the_same_results(
        self, membrane: MembraneProcess, http: aiohttp.ClientSession
    ):
        """After a kill the port refuses connections; a restart serves identical results."""
        await membrane.start()
        before = await _process(http, membrane.url)
        first_pid = membrane.pid
        code = await membrane.kill()
        assert code == -9
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(f"{membrane.url}/health"):
                pass
        await membrane.start()
        assert membrane.pid != first_pid
        after = await _process(http, membrane.url)
        assert after["readout"] == before["readout"]

    async def test_crash_fault_exits_the_process(
        self, membrane: MembraneProcess, http: aiohttp.ClientSession
    ):
        """POST /admin/faults crash=true makes the process exit with code 70."""
        await membrane.start()
        async with http.post(f"{membrane.url}/admin/faults", json={"crash": True}) as resp:
            assert resp.status == 200
        assert await membrane.wait(within=10) == 70

    async def test_sigterm_stops_gracefully(self, membrane: MembraneProcess):
        """SIGTERM ends the process with exit code 0."""
        await membrane.start()
        assert await membrane.terminate() == 0
        assert not membrane.running

    async def test_bad_arguments_fail_with_a_clear_message(self):
        """An invalid option makes start() raise with the process's own error line."""
        proc = MembraneProcess("bad", args=["--levels", "99"])
        with pytest.raises(MembraneProcessError, match="levels"):
            await proc.start()
        assert proc.returncode == 2
