"""The fleet on a real Redis: managers in separate OS processes share one configuration.

Each test runs one manager in this process and one or two in child processes
(``fleet_child.py``, driven by JSON lines). Waits are for real network events and are
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from backend_services.infrastructure.config_manager import ConfigurationManager
from backend_services.testing import RedisServer

pytestmark = pytest.mark.redis

CHILD = Path(__file__).with_name("fleet_child.py")
SERVICE = "fleet-svc"
WAIT = 20.0


class Child:
    """A configuration manager in another OS process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, url: str, lkg: Path) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            url,
            SERVICE,
            str(lkg),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        child = cls(proc)
        await asyncio.wait_for(asyncio.shield(child.ready), 60)
        return child

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            doc = json.loads(line)
            if "ready" in doc:
                self.ready.set_result(doc)
            elif "event" in doc:
                await self.events.put(doc)
            else:
                await self.replies.put(doc)

    def send(self, op: str, **kw: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())

    async def reply(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.replies.get(), WAIT)

    async def call(self, op: str, **kw: Any) -> Any:
        self.send(op, **kw)
        doc = await self.reply()
        assert doc["ok"], doc
        return doc["result"]

    async def wait_event(self, key: str, new: Any) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            while True:
                doc = await self.events.get()
                if doc["key"] == key and doc["new"] == new:
                    return doc

        return await asyncio.wait_for(find(), WAIT)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("quit")
            await asyncio.wait_for(self.proc.wait(), 15)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def _until(
    check: Callable[[], Any], what: str, describe: Callable[[], Any] | None = None
) -> None:
    """Wait (bounded) until ``await check()`` is truthy: the fleet converging.
    On timeout the message includes ``await describe()`` (what each side holds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    last: Any = None
    while loop.time() < deadline:
        last = await check()
        if last:
            return
        await asyncio.sleep(0.05)
    state = None
    if describe is not None:
        try:
            state = await describe()
        except Exception as exc:  # the description must not hide the timeout
            state = f"(could not describe: {exc!r})"
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}; state: {state!r}")


@pytest.fixture
async def local(tmp_path: Path, redis_url: str) -> AsyncIterator[ConfigurationManager]:
    cm = ConfigurationManager(
        SERVICE,
        redis_url=redis_url,
        last_known_good=tmp_path / "a.json",
        environ={},
        feed_block=0.5,
    )
    await cm.initialize()
    yield cm
    await cm.shutdown()


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    children: list[Child] = []

    async def start(url: str, name: str = "b") -> Child:
        child = await Child.start(url, tmp_path / f"{name}.json")
        children.append(child)
        return child

    yield start
    await asyncio.gather(*(c.close() for c in children))


def _watch(cm: ConfigurationManager) -> asyncio.Queue[tuple[str, Any]]:
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cm.add_global_change_callback(lambda k, n, o: queue.put_nowait((k, n)))
    return queue


async def _expect(queue: asyncio.Queue[tuple[str, Any]], key: str, value: Any) -> None:
    async def find() -> None:
        while (await queue.get()) != (key, value):
            pass

    await asyncio.wait_for(find(), WAIT)


class TestPropagation:
    async def test_change_in_one_process_is_seen_in_the_other(
        self, local: ConfigurationManager, spawn: Callable[..., Any], redis_url: str
    ) -> None:
        """A change made here fires the other process's callback, and the other way round."""
        child = await spawn(redis_url)
        seen = _watch(local)
        await local.set_config("membrane_depth", 6)
        event = await child.wait_event("membrane_depth", 6)
        assert event["version"] == 1
        await child.call("set", key="reservoir", value={"size": 100})
        await _expect(seen, "reservoir.size", 100)
        assert await local.get_config("reservoir") == {"size": 100}
        assert local.version == await child.call("version") == 2

    async def test_restarted_process_starts_from_the_shared_state(
        self, local: ConfigurationManager, spawn: Callable[..., Any], redis_url: str
    ) -> None:
        """A process started later loads the fleet's configuration and history."""
        await local.bulk_update({"a": 1, "b": [1, 2]})
        snap = await local.create_version_snapshot("base")
        child = await spawn(redis_url, "late")
        assert await child.call("all") == {"a": 1, "b": [1, 2]}
        versions = await child.call("versions")
        assert [v["version_id"] for v in versions][-1] == snap


class TestConcurrentWriters:
    async def test_compare_and_set_lets_exactly_one_writer_win(
        self, local: ConfigurationManager, spawn: Callable[..., Any], redis_url: str
    ) -> None:
        """Two processes writing the same key version at once: one wins, one conflicts."""
        b, c = await spawn(redis_url, "b"), await spawn(redis_url, "c")
        await local.set_config("k", "start")
        await b.wait_event("k", "start")
        await c.wait_event("k", "start")
        b.send("set", key="k", value="from-b", expected=1)
        c.send("set", key="k", value="from-c", expected=1)
        replies = [await b.reply(), await c.reply()]
        assert sorted(r["ok"] for r in replies) == [False, True]
        loser = next(r for r in replies if not r["ok"])
        assert loser["error"] == "ConflictError"
        assert "expected version 1, found 2" in loser["message"]
        winner = "from-b" if replies[0]["ok"] else "from-c"

        async def converged() -> bool:
            got = {await b.call("get", key="k"), await c.call("get", key="k")}
            return got == {winner} and await local.get_config("k") == winner

        await _until(converged, "every process to hold the winner's value")

    async def test_racing_writers_without_expectations_lose_nothing(
        self, local: ConfigurationManager, spawn: Callable[..., Any], redis_url: str
    ) -> None:
        """Writers racing on the head re-plan: every write lands, in one history."""
        b, c = await spawn(redis_url, "b"), await spawn(redis_url, "c")
        for i in range(15):
            b.send("set", key=f"b{i}", value=i)
            c.send("set", key=f"c{i}", value=i)
        for _ in range(15):
            assert (await b.reply())["ok"]
            assert (await c.reply())["ok"]
        expected = {f"{p}{i}": i for p in "bc" for i in range(15)}

        async def converged() -> bool:
            return await local.get_all_config() == expected and await b.call(
                "all"
            ) == expected == await c.call("all")

        await _until(converged, "all 30 writes everywhere")
        assert local.version == 30
        ids = [v["version_id"] for v in await b.call("versions")]
        assert len(set(ids)) == 30


class TestRollback:
    async def test_rollback_is_seen_fleet_wide(
        self, local: ConfigurationManager, spawn: Callable[..., Any], redis_url: str
    ) -> None:
        """Rolling back in one process restores that exact snapshot in every process."""
        child = await spawn(redis_url)
        await local.bulk_update({"a": 1, "b": 2})
        snap = await local.create_version_snapshot("known good")
        await child.wait_event("b", 2)
        seen = _watch(local)
        await child.call("set", key="a", value=99)
        await child.call("set", key="added", value=True)
        await _expect(seen, "added", True)
        assert await local.rollback_to_version(snap) is True
        await child.wait_event("added", None)
        assert await child.call("all") == {"a": 1, "b": 2}
        versions = await child.call("versions")
        assert versions[-1]["kind"] == "rollback"
        assert versions[-1]["restored_id"] == snap


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestOutages:
    async def test_redis_down_then_back_loses_nothing(
        self,
        tmp_path: Path,
        spawn: Callable[..., Any],
        redis_server_factory: Callable[..., RedisServer],
    ) -> None:
        """Outage changes of two processes survive Redis coming back empty; newest wins."""
        server = redis_server_factory(port=_free_port())
        local = ConfigurationManager(
            SERVICE,
            redis_url=server.url,
            environ={},
            feed_block=0.5,
            last_known_good=tmp_path / "a.json",
        )
        await local.initialize()
        child = await spawn(server.url)
        try:
            await local.bulk_update({"base": 1, "x": 0})
            await child.wait_event("x", 0)
            before = local.version

            await asyncio.to_thread(server.stop)
            await local.set_config("x", 1)  # older ...
            await local.set_config("y", 3)
            await child.call("set", key="x", value=2)  # ... newer: must win
            await child.call("set", key="z", value=4)
            await child.call("delete", key="base")  # a deletion made during the outage
            assert await local.get_config("x") == 1  # each process goes on locally
            assert await child.call("get", key="x") == 2

            await asyncio.to_thread(server.start)
            expected = {"x": 2, "y": 3, "z": 4}

            async def converged() -> bool:
                mine = await local.get_all_config()
                return mine == expected and await child.call("all") == expected

            async def describe() -> dict[str, Any]:
                return {
                    "local": await local.get_all_config(),
                    "local_metrics": local.get_metrics(),
                    "child": await child.call("all"),
                    "child_metrics": await child.call("metrics"),
                }

            await _until(converged, "both processes to merge the outage's changes", describe)
            assert local.version > before
            await _until(
                lambda: _same_version(local, child), "both processes on the same version", describe
            )
            await local.set_config("after", "ok")  # the feed works again
            await child.wait_event("after", "ok")
        finally:
            await local.shutdown()

    async def test_flush_keeps_configuration_and_ids_unique(
        self, local: ConfigurationManager, spawn: Callable[..., Any], redis_url: str
    ) -> None:
        """After FLUSHALL the store is re-seeded from the processes; no id is reused."""
        child = await spawn(redis_url)
        for i in range(5):
            await local.set_config("k", i)
        await child.wait_event("k", 4)
        ids_before = {v["version_id"] for v in await local.list_versions()}
        client = redis.Redis.from_url(redis_url)
        try:
            client.flushall()
        finally:
            client.close()
        await local.resync()
        seen = _watch(local)
        await child.call("set", key="after_flush", value=True)
        await _expect(seen, "after_flush", True)
        assert await local.get_config("k") == 4
        ids_after = {v["version_id"] for v in await local.list_versions()}
        new_ids = ids_after - ids_before
        assert new_ids
        assert not new_ids & ids_before
        assert await child.call("get", key="k") == 4


async def _same_version(local: ConfigurationManager, child: Child) -> bool:
    return bool(local.version == await child.call("version"))


class TestExit:
    async def test_program_that_never_shuts_down_exits(self, redis_url: str) -> None:
        """Like the spec's examples: no shutdown() call, and the process still exits."""
        script = (
            "import asyncio\n"
            "from backend_services.infrastructure.config_manager import ConfigurationManager\n"
            "async def main():\n"
            f"    c = ConfigurationManager('exit-svc', redis_url={redis_url!r},"
            " last_known_good=None)\n"
            "    await c.initialize()\n"
            "    await c.set_config('a', 1)\n"
            "for _ in range(5):\n"
            "    asyncio.run(main())\n"
            "print('exited')\n"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
        assert out.decode().strip() == "exited"
