"""Breaker state shared across processes through the store.

Fleet members in one test process are told apart by their process id (each gets its
own link to the store, as separate processes would); the last tests use real Redis
and real OS processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import backend_services.infrastructure.circuit_breaker as cbmod
from backend_services.errors import CircuitBreakerException
from backend_services.infrastructure.cb.fleet import state_key
from backend_services.infrastructure.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerEvent,
    CircuitState,
    EventKind,
)
from backend_services.settings import Settings
from backend_services.store.memory import MemoryStore
from backend_services.testing import FakeClock, RedisServer


def cfg(**kw: Any) -> CircuitBreakerConfig:
    base: dict[str, Any] = {
        "failure_threshold": 2,
        "timeout": 10.0,
        "request_timeout": None,
        "minimum_throughput": 100,
        "settings": Settings(),
    }
    base.update(kw)
    return CircuitBreakerConfig(**base)


async def boom() -> None:
    raise RuntimeError("down")


async def ok() -> str:
    return "ok"


async def trip(cb: CircuitBreaker) -> None:
    for _ in range(cb.config.failure_threshold):
        with pytest.raises(RuntimeError):
            await cb.call(boom)


class CountingStore(MemoryStore):
    """A real in-memory store that counts the operations made on it."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.ops: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.ops[name] = self.ops.get(name, 0) + 1

    async def get(self, key: str) -> Any:
        self._count("get")
        return await super().get(key)

    async def commit(self, ops: Any) -> Any:
        self._count("commit")
        return await super().commit(ops)

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        self._count("acquire_lease")
        return await super().acquire_lease(name, owner, ttl)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> CountingStore:
    return CountingStore(clock)


@pytest.fixture
async def member(
    store: CountingStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Any]]:
    """member(process, name, **config) -> a connected breaker of fleet member `process`."""
    made: list[CircuitBreaker] = []

    async def make(process: str, name: str = "api", **kw: Any) -> CircuitBreaker:
        monkeypatch.setattr(cbmod, "PROCESS_ID", process)
        cb = CircuitBreaker(name, cfg(**kw), None, clock=clock, store=store)
        await cb.initialize()
        made.append(cb)
        return cb

    yield make
    for cb in made:
        await cb.close()


async def wait_for_state(cb: CircuitBreaker, state: CircuitState, seconds: float) -> None:
    """Wait (bounded, real time) until ``cb`` is in ``state``: a real network event."""
    reached = asyncio.Event()

    def check(event: CircuitBreakerEvent | None = None) -> None:
        if cb.state is state:
            reached.set()

    cb.add_listener(check, EventKind.STATE_TRANSITION)
    try:
        check()
        await asyncio.wait_for(reached.wait(), seconds)
    finally:
        cb.remove_listener(check)


async def settle(clock: FakeClock, rounds: int = 3) -> None:
    for _ in range(rounds):
        await clock.advance(0)


class TestPropagation:
    async def test_opening_reaches_other_members(
        self, member: Callable[..., Any], clock: FakeClock
    ) -> None:
        """A transition in one member is applied by the others, which then reject."""
        a, b = await member("p1"), await member("p2")
        assert a.shared
        assert b.shared
        await trip(a)
        await settle(clock)
        assert b.state is CircuitState.OPEN
        with pytest.raises(CircuitBreakerException) as info:
            await b.call(ok)
        assert info.value.retry_after == pytest.approx(10.0)
        assert b.metrics.failed_calls == 0  # counting stays per process

    async def test_remote_events_reach_listeners(
        self, member: Callable[..., Any], clock: FakeClock
    ) -> None:
        """Listeners see a remote transition, marked remote."""
        a, b = await member("p1"), await member("p2")
        events: list[CircuitBreakerEvent] = []
        b.add_listener(events.append, EventKind.STATE_TRANSITION)
        await trip(a)
        await settle(clock)
        assert [(e.state, e.remote) for e in events] == [(CircuitState.OPEN, True)]

    async def test_reset_is_fleet_wide(self, member: Callable[..., Any], clock: FakeClock) -> None:
        """reset() in one member closes the breaker everywhere."""
        a, b = await member("p1"), await member("p2")
        await trip(a)
        await settle(clock)
        await b.reset()
        await settle(clock)
        assert a.state is CircuitState.CLOSED
        assert await a.call(ok) == "ok"

    async def test_forced_state_is_fleet_wide(
        self, member: Callable[..., Any], clock: FakeClock
    ) -> None:
        """A manual forced_open reaches every member."""
        a, b = await member("p1"), await member("p2")
        await a.force_state("forced_open")
        await settle(clock)
        assert b.state is CircuitState.FORCED_OPEN

    async def test_half_open_and_close_propagate(
        self, member: Callable[..., Any], clock: FakeClock
    ) -> None:
        """Half-open and the closing trial in one member close the others too."""
        a, b = await member("p1", success_threshold=1), await member("p2", success_threshold=1)
        await trip(a)
        await settle(clock)
        await clock.advance(10.0)
        assert await a.call(ok) == "ok"
        await settle(clock)
        assert a.state is CircuitState.CLOSED
        assert b.state is CircuitState.CLOSED

    async def test_simultaneous_openings_do_not_clobber(
        self, member: Callable[..., Any], clock: FakeClock, store: CountingStore
    ) -> None:
        """Two members opening at once end with one shared opening (one version)."""
        a, b = await member("p1"), await member("p2", timeout=30.0)
        await trip(a)
        await trip(b)  # before either write reached the store
        await settle(clock)
        record = await store.get(state_key("api"))
        assert record is not None
        assert record.version == 1
        assert a.state is b.state is CircuitState.OPEN
        # both follow the one opening that won
        now = clock.monotonic()
        assert a.retry_after(now) == pytest.approx(b.retry_after(now))

    async def test_names_are_independent(
        self, member: Callable[..., Any], clock: FakeClock
    ) -> None:
        """Breakers of other names are not affected."""
        a = await member("p1", "one")
        b = await member("p2", "two")
        await trip(a)
        await settle(clock)
        assert b.state is CircuitState.CLOSED


class TestStartAndRecovery:
    async def test_new_member_starts_from_shared_state(
        self, member: Callable[..., Any], clock: FakeClock
    ) -> None:
        """A member that starts later (a restart) begins in the shared state."""
        a = await member("p1")
        await trip(a)
        await settle(clock)
        await clock.advance(3.0)
        late = await member("p3")
        assert late.state is CircuitState.OPEN
        assert late.retry_after(clock.monotonic()) == pytest.approx(7.0)

    async def test_forced_state_before_connecting_is_shared(
        self, store: CountingStore, clock: FakeClock, member: Callable[..., Any]
    ) -> None:
        """A breaker forced open before connecting publishes that state when it connects."""
        cb = CircuitBreaker("api", cfg(), None, clock=clock, store=store)
        cb.transition_to("forced_open", clock.monotonic())
        await cb.initialize()
        await settle(clock)
        other = await member("p2")
        assert other.state is CircuitState.FORCED_OPEN
        await cb.close()

    async def test_corrupt_record_is_skipped(
        self,
        store: CountingStore,
        member: Callable[..., Any],
        clock: FakeClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A malformed shared record is reported and ignored, never a crash."""
        await store.put(state_key("api"), {"state": "sideways"})
        cb = await member("p1")
        assert cb.state is CircuitState.CLOSED
        assert "shared_state_corrupt" in caplog.text
        await trip(cb)
        await settle(clock)
        record = await store.get(state_key("api"))
        assert record is not None
        assert record.value["state"] == "open"

    async def test_auto_connect_on_first_use(self, store: CountingStore, clock: FakeClock) -> None:
        """A breaker used without initialize() connects itself in the background."""
        cb = CircuitBreaker("auto", cfg(), None, clock=clock, store=store)
        assert await cb.call(ok) == "ok"
        await settle(clock)
        assert cb.shared
        await cb.close()


class TestHotPath:
    async def test_calls_never_touch_the_store(
        self, member: Callable[..., Any], clock: FakeClock, store: CountingStore
    ) -> None:
        """Closed-state calls make no store operation; only transitions write."""
        a = await member("p1", request_timeout=5.0)
        await settle(clock)
        before = dict(store.ops)
        for _ in range(1000):
            await a.call(ok)
        async with a:
            pass
        assert store.ops == before
        await trip(a)
        await settle(clock)
        assert store.ops.get("commit", 0) == before.get("commit", 0) + 1

    async def test_half_open_permits_are_fleet_wide(
        self, member: Callable[..., Any], clock: FakeClock, store: CountingStore
    ) -> None:
        """With one trial allowed, a second member's trial is refused while one runs."""
        a = await member("p1", half_open_max_calls=1, success_threshold=1)
        b = await member("p2", half_open_max_calls=1, success_threshold=1)
        await trip(a)
        await settle(clock)
        await clock.advance(10.0)
        gate = asyncio.Event()

        async def trial() -> str:
            await gate.wait()
            return "ok"

        running = asyncio.create_task(a.call(trial))
        await settle(clock)
        with pytest.raises(CircuitBreakerException):
            await b.call(ok)
        assert store.ops.get("acquire_lease", 0) >= 2
        gate.set()
        assert await running == "ok"
        await settle(clock)
        assert b.state is CircuitState.CLOSED

    async def test_dead_members_permit_expires(
        self, member: Callable[..., Any], clock: FakeClock
    ) -> None:
        """A permit held by a member that never finishes expires after the trial deadline."""
        a = await member("p1", half_open_max_calls=1, trial_timeout=3.0)
        b = await member("p2", half_open_max_calls=1, trial_timeout=3.0, success_threshold=1)
        await trip(a)
        await settle(clock)
        await clock.advance(10.0)
        hung = asyncio.create_task(a.call(asyncio.Event().wait))
        await settle(clock)
        with pytest.raises(CircuitBreakerException):
            await b.call(ok)
        await clock.advance(3.0)  # the lease of a's hung trial expires
        assert await b.call(ok) == "ok"
        await settle(clock)
        assert b.state is CircuitState.CLOSED
        assert a.state is CircuitState.CLOSED  # a's stale trial changes nothing now
        hung.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hung


class TestRealRedis:
    async def test_two_members_share_through_redis(
        self, redis_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Through a real Redis, an opening in one member reaches the other quickly."""
        breakers = []
        for process in ("r1", "r2"):
            monkeypatch.setattr(cbmod, "PROCESS_ID", process)
            cb = CircuitBreaker("redis-api", cfg(), redis_url)
            await cb.initialize()
            breakers.append(cb)
        a, b = breakers
        try:
            await trip(a)
            await wait_for_state(b, CircuitState.OPEN, 5.0)
            await b.reset()
            await wait_for_state(a, CircuitState.CLOSED, 5.0)
        finally:
            for cb in breakers:
                await cb.close()

    async def test_redis_outage_decides_locally_then_resyncs(
        self, redis_server_factory: Callable[..., RedisServer], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With Redis down each member decides locally; when it returns they resync."""
        server = redis_server_factory()
        breakers = []
        for process in ("o1", "o2"):
            monkeypatch.setattr(cbmod, "PROCESS_ID", process)
            cb = CircuitBreaker("outage-api", cfg(), server.url)
            await cb.initialize()
            breakers.append(cb)
        a, b = breakers
        try:
            await asyncio.to_thread(server.stop)
            await trip(a)  # decided locally, while Redis is away
            assert a.state is CircuitState.OPEN
            assert await b.call(ok) == "ok"  # b goes on deciding for itself
            await asyncio.to_thread(server.start)
            await wait_for_state(b, CircuitState.OPEN, 20.0)
        finally:
            for cb in breakers:
                await cb.close()


NEVER_CLOSED = textwrap.dedent(
    """
    import asyncio
    from backend_services.infrastructure.circuit_breaker import (
        CircuitBreaker, CircuitBreakerConfig, circuit_breaker)

    @circuit_breaker("dtesn-membrane")
    async def process_membrane(data):
        return data * 2

    async def main():
        config = CircuitBreakerConfig(failure_threshold=5, timeout=60.0, request_timeout=30.0)
        cb = CircuitBreaker("external-api", config=config)
        await cb.initialize()
        async with cb:
            await asyncio.sleep(0)
        print(await process_membrane(21), cb.shared)

    asyncio.run(main())
    """
)


class TestProgramExit:
    async def test_spec_example_exits_cleanly_without_shutdown(
        self, redis_url: str, tmp_path: Path
    ) -> None:
        """The spec's example, shared through Redis from the environment and never
        closed, exits with status 0 and leaves no unclosed resource or pending task."""
        script = tmp_path / "never_closed.py"
        script.write_text(NEVER_CLOSED)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DTESN_")}
        env.update(DTESN_SERVICE_REDIS_URL=redis_url, PYTHONWARNINGS="default")
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-X", "dev", str(script)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["42", "True"]
        assert "Warning" not in result.stderr, result.stderr
        assert "destroyed" not in result.stderr, result.stderr


CHILD = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from backend_services.infrastructure.circuit_breaker import (
        CircuitBreaker, CircuitBreakerConfig, CircuitState)
    from backend_services.settings import Settings

    async def main(url, role):
        config = CircuitBreakerConfig(failure_threshold=2, timeout=30.0, settings=Settings())
        cb = CircuitBreaker("two-process-api", config, url)
        await cb.initialize()
        print(json.dumps({"role": role, "state": cb.state.value}), flush=True)
        if role == "opener":
            async def boom():
                raise RuntimeError("down")
            for _ in range(2):
                try:
                    await cb.call(boom)
                except RuntimeError:
                    pass
            await cb.close()  # flushes the transition
            print(json.dumps({"role": role, "state": cb.state.value}), flush=True)
        elif role == "watcher":
            deadline = time.monotonic() + 10
            while cb.state is not CircuitState.OPEN and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
            print(json.dumps({"role": role, "state": cb.state.value,
                              "seen_at": time.time()}), flush=True)
            deadline = time.monotonic() + 10
            while cb.state is not CircuitState.CLOSED and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
            print(json.dumps({"role": role, "state": cb.state.value}), flush=True)
            await cb.close()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.fixture
def child_script(tmp_path: Path) -> Path:
    path = tmp_path / "breaker_child.py"
    path.write_text(CHILD)
    return path


def spawn(script: Path, url: str, role: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTESN_")}
    return subprocess.Popen(
        [sys.executable, str(script), url, role],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"child ended early: {proc.stderr.read() if proc.stderr else ''}"
    result: dict[str, Any] = json.loads(line)
    return result


class TestTwoProcesses:
    async def test_state_shared_between_os_processes(
        self, redis_url: str, child_script: Path
    ) -> None:
        """Two OS processes: one opens the breaker, the other sees it; a third process
        starts open (shared state survives restarts); a reset here closes it there."""
        procs: list[subprocess.Popen[str]] = []

        def start(role: str) -> subprocess.Popen[str]:
            procs.append(spawn(child_script, redis_url, role))
            return procs[-1]

        try:
            watcher = start("watcher")
            assert (await asyncio.to_thread(read_line, watcher))["state"] == "closed"
            opener = start("opener")
            assert (await asyncio.to_thread(read_line, opener))["state"] == "closed"
            assert (await asyncio.to_thread(read_line, opener))["state"] == "open"
            seen = await asyncio.to_thread(read_line, watcher)
            assert seen["state"] == "open"
            assert (await asyncio.to_thread(opener.wait, 20)) == 0

            restarted = start("restarted")
            assert (await asyncio.to_thread(read_line, restarted))["state"] == "open"
            assert (await asyncio.to_thread(restarted.wait, 20)) == 0

            cb = CircuitBreaker("two-process-api", cfg(timeout=30.0), redis_url)
            await cb.initialize()
            assert cb.state is CircuitState.OPEN
            await cb.reset()
            await cb.close()
            assert (await asyncio.to_thread(read_line, watcher))["state"] == "closed"
            assert (await asyncio.to_thread(watcher.wait, 20)) == 0
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                await asyncio.to_thread(proc.communicate, timeout=20)
