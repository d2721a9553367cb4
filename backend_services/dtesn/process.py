"""Start, kill and restart membrane services as real OS processes (demo, tests, benchmarks).

::

    proc = MembraneProcess("memory-1", kind="memory", faults=True)
    await proc.start()            # waits for the process's "ready" line
    print(proc.url)               # http://127.0.0.1:<port it bound>
    await proc.kill()             # SIGKILL, as a crash would
    await proc.start()            # again, on the same port

The port is chosen by the process on first start (``--port 0``) and kept on restarts, so
the membrane comes back at the address discovery knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import BackendServicesError

__all__ = ["MembraneProcess", "MembraneProcessError"]


class MembraneProcessError(BackendServicesError):
    """A membrane process did not start (its last stderr lines are in the message)."""


class MembraneProcess:
    """One membrane service in its own OS process."""

    def __init__(
        self,
        membrane_id: str,
        *,
        kind: str = "memory",
        host: str = "127.0.0.1",
        port: int = 0,
        faults: bool = False,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        self.membrane_id = membrane_id
        self.kind = kind
        self.host = host
        self.port = port
        self.faults = faults
        self.args = list(args)
        self.env = dict(env or {})
        self.python = python or sys.executable
        self.ready_info: dict[str, Any] = {}
        self.starts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr: deque[str] = deque(maxlen=40)
        self._drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    def command(self) -> list[str]:
        cmd = [
            self.python,
            "-m",
            "backend_services.dtesn",
            "--kind",
            self.kind,
            "--id",
            self.membrane_id,
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        if self.faults:
            cmd.append("--enable-faults")
        return cmd + self.args

    async def start(self, ready_within: float = 20.0) -> dict[str, Any]:
        """Start the process and wait for its ready line; returns that line."""
        if self.running:
            raise MembraneProcessError(f"membrane {self.membrane_id!r} is already running")
        env = {**os.environ, **self.env}
        self._stderr.clear()
        self._proc = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        self._drain = asyncio.create_task(self._drain_stderr(self._proc))
        assert self._proc.stdout is not None
        try:
            async with asyncio.timeout(ready_within):
                line = await self._proc.stdout.readline()
        except TimeoutError:
            await self.kill()
            raise MembraneProcessError(
                f"membrane {self.membrane_id!r} did not become ready within {ready_within:g}s\n"
                + self.stderr_tail
            ) from None
        if not line:
            await self._reap()
            raise MembraneProcessError(
                f"membrane {self.membrane_id!r} exited with code {self.returncode} "
                "before it was ready\n" + self.stderr_tail
            )
        try:
            info: dict[str, Any] = dict(json.loads(line))
        except (json.JSONDecodeError, TypeError, ValueError):
            await self.kill()
            raise MembraneProcessError(
                f"membrane {self.membrane_id!r} printed {line[:200]!r}; expected its ready line"
            ) from None
        self.ready_info = info
        self.port = int(info["port"])
        self.starts += 1
        return info

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while True:
            line = await proc.stderr.readline()
            if not line:
                return
            self._stderr.append(line.decode(errors="replace").rstrip())

    async def _reap(self) -> int | None:
        if self._proc is None:
            return None
        code = await self._proc.wait()
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain, 2.0)
            self._drain = None
        if self._proc.stdout is not None:
            self._proc.stdout.feed_eof()
        return code

    async def kill(self) -> int | None:
        """SIGKILL the process (no goodbye: a crash) and reap it."""
        if self.running:
            assert self._proc is not None
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGKILL)
        return await self._reap()

    async def terminate(self, grace: float = 10.0) -> int | None:
        """SIGTERM (graceful: drain, deregister) and wait; SIGKILL after ``grace`` s."""
        if not self.running:
            return await self._reap()
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self._reap(), grace)
        except TimeoutError:
            return await self.kill()

    async def wait(self, within: float | None = None) -> int | None:
        """Wait for the process to exit by itself (e.g. after a crash fault)."""
        return await asyncio.wait_for(self._reap(), within)

    async def restart(self, ready_within: float = 20.0) -> dict[str, Any]:
        """Kill if running, then start again on the same port."""
        await self.kill()
        return await self.start(ready_within)
