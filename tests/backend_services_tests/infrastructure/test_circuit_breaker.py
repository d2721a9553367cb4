"""The circuit breaker shell: the spec's usage, calls, timeouts, fallbacks, listeners,
registry and concurrency — driven by a FakeClock, never by sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import pickle
from collections.abc import Callable
from typing import Any

import pytest

from backend_services.errors import CircuitBreakerException, LifecycleError, ValidationError
from backend_services.infrastructure.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerEvent,
    CircuitBreakerRegistry,
    CircuitState,
    EventKind,
    Trigger,
    circuit_breaker,
    current_failure,
    get_circuit_breaker,
    get_default_registry,
)
from backend_services.settings import Settings
from backend_services.testing import FakeClock


def cfg(**kw: Any) -> CircuitBreakerConfig:
    base: dict[str, Any] = {
        "failure_threshold": 3,
        "timeout": 10.0,
        "request_timeout": 5.0,
        "slow_call_threshold": 2.0,
        "minimum_throughput": 100,
        "settings": Settings(),
    }
    base.update(kw)
    return CircuitBreakerConfig(**base)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(clock: FakeClock) -> Callable[..., CircuitBreaker]:
    def factory(name: str = "svc", **kw: Any) -> CircuitBreaker:
        fallback = kw.pop("fallback_function", None)
        return CircuitBreaker(name, cfg(**kw), None, fallback, clock=clock)

    return factory


async def ok(value: Any = "ok") -> Any:
    return value


async def boom(exc: BaseException | None = None) -> Any:
    raise exc if exc is not None else RuntimeError("boom")


async def trip(cb: CircuitBreaker) -> None:
    for _ in range(cb.config.failure_threshold):
        with pytest.raises(RuntimeError):
            await cb.call(boom)
    assert cb.state is CircuitState.OPEN


class TestSpecUsage:
    async def test_context_manager_example(self) -> None:
        """The spec's example: config, initialize, `async with cb:` around a call."""
        config = CircuitBreakerConfig(failure_threshold=5, timeout=60.0, request_timeout=30.0)
        cb = CircuitBreaker("external-api", config=config)
        await cb.initialize()
        async with cb:
            result = await ok(42)
        assert result == 42
        metrics = cb.get_metrics()
        assert metrics["total_calls"] == 1
        assert metrics["circuit_state"] == "closed"
        assert not cb.shared
        await cb.close()

    async def test_decorator_example(self) -> None:
        """The spec's decorator: `@circuit_breaker("dtesn-membrane")` on an async function."""

        @circuit_breaker("dtesn-membrane-example")
        async def process_membrane(data: int) -> int:
            return data * 2

        assert await process_membrane(21) == 42
        cb = get_default_registry().get("dtesn-membrane-example")
        assert cb is not None
        assert cb.get_metrics()["successful_calls"] == 1

    async def test_metrics_keys(self, make: Callable[..., CircuitBreaker]) -> None:
        """get_metrics() has the spec's keys and lower-case state values."""
        cb = make()
        await cb.call(ok)
        with pytest.raises(RuntimeError):
            await cb.call(boom)
        m = cb.get_metrics()
        for key in (
            "total_calls",
            "successful_calls",
            "failed_calls",
            "rejected_calls",
            "circuit_state",
            "failure_rate",
        ):
            assert key in m
        assert (m["total_calls"], m["successful_calls"], m["failed_calls"]) == (2, 1, 1)
        assert m["failure_rate"] == 0.5
        assert m["window"] == {
            "type": "count",
            "calls": 2,
            "failures": 1,
            "slow_calls": 0,
            "size": 100,
        }

    async def test_metrics_attribute(self, make: Callable[..., CircuitBreaker]) -> None:
        """`cb.metrics` exposes the counters as attributes."""
        cb = make()
        await cb.call(ok)
        m = cb.metrics
        assert (m.total_calls, m.successful_calls, m.failed_calls) == (1, 1, 0)
        assert (m.consecutive_successes, m.consecutive_failures, m.slow_calls) == (1, 0, 0)
        assert m.failure_rate == 0.0
        assert m.slow_call_rate == 0.0

    async def test_config_from_settings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a config, DTESN_CB_* variables decide."""
        monkeypatch.setenv("DTESN_CB_FAILURE_THRESHOLD", "2")
        monkeypatch.setenv("DTESN_CB_REQUEST_TIMEOUT", "7")
        cb = CircuitBreaker("from-env")
        assert cb.config.failure_threshold == 2
        assert cb.config.request_timeout == 7.0
        assert cb.redis_url is None


class TestCalls:
    async def test_sync_and_async_functions(self, make: Callable[..., CircuitBreaker]) -> None:
        """call() takes sync and async functions and passes arguments through."""
        cb = make()
        assert await cb.call(lambda a, b=0: a + b, 1, b=2) == 3
        assert await cb.call(ok, "x") == "x"
        assert await cb.call(functools.partial(ok, "p")) == "p"
        assert cb.metrics.total_calls == 3

    async def test_untimed_call(self, make: Callable[..., CircuitBreaker]) -> None:
        """With request_timeout=None call() still counts successes and failures."""
        cb = make(request_timeout=None)
        assert await cb.call(ok, 1) == 1
        assert await cb.call(lambda: 2) == 2
        with pytest.raises(RuntimeError):
            await cb.call(boom)
        assert (cb.metrics.successful_calls, cb.metrics.failed_calls) == (2, 1)

    async def test_opens_after_consecutive_failures(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """failure_threshold failures open it; the next call is rejected with the name,
        state and seconds until the next trial."""
        cb = make()
        await trip(cb)
        await clock.advance(4.0)
        with pytest.raises(CircuitBreakerException) as info:
            await cb.call(ok)
        exc = info.value
        assert exc.circuit_name == "svc"
        assert exc.state is CircuitState.OPEN
        assert exc.retry_after == pytest.approx(6.0)
        assert "'svc'" in str(exc)
        assert "open" in str(exc)
        assert "6.000s" in str(exc)
        assert cb.metrics.rejected_calls == 1
        assert cb.metrics.failed_calls == 3

    async def test_exception_pickles(self) -> None:
        """The rejection exception survives pickling with its fields."""
        exc = CircuitBreakerException("svc", CircuitState.OPEN, 1.5)
        copy = pickle.loads(pickle.dumps(exc))
        assert (copy.circuit_name, copy.retry_after, str(copy)) == ("svc", 1.5, str(exc))

    async def test_full_cycle(self, make: Callable[..., CircuitBreaker], clock: FakeClock) -> None:
        """Open -> (timeout) half-open -> success_threshold trials -> closed."""
        cb = make(success_threshold=2)
        await trip(cb)
        await clock.advance(10.0)
        assert cb.state is CircuitState.HALF_OPEN
        await cb.call(ok)
        assert cb.state is CircuitState.HALF_OPEN
        await cb.call(ok)
        assert cb.state is CircuitState.CLOSED
        assert cb.get_metrics()["window"]["calls"] == 0

    async def test_trial_failure_reopens(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """A failing trial reopens the breaker."""
        cb = make()
        await trip(cb)
        await clock.advance(10.0)
        with pytest.raises(RuntimeError):
            await cb.call(boom)
        assert cb.state is CircuitState.OPEN

    async def test_rate_based_opening(self, make: Callable[..., CircuitBreaker]) -> None:
        """Once minimum_throughput calls are in the window, a 50% failure rate opens it."""
        cb = make(failure_threshold=0, minimum_throughput=4)
        for fn in (ok, boom, ok, boom):
            with contextlib.suppress(RuntimeError):
                await cb.call(fn)
        assert cb.state is CircuitState.OPEN

    async def test_slow_calls_open(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """Calls slower than slow_call_threshold count as slow and can open it."""
        cb = make(minimum_throughput=2, slow_call_rate_threshold=0.5)

        async def slow() -> str:
            await clock.sleep(3.0)
            return "late"

        task = asyncio.create_task(cb.call(slow))
        await clock.advance(3.0)
        assert await task == "late"
        await cb.call(ok)
        assert cb.state is CircuitState.OPEN
        assert cb.metrics.slow_calls == 1

    async def test_ignored_exceptions(self, make: Callable[..., CircuitBreaker]) -> None:
        """ignore_exceptions propagate but are not counted."""
        cb = make(ignore_exceptions=(KeyError,))
        for _ in range(5):
            with pytest.raises(KeyError):
                await cb.call(boom, KeyError("k"))
        m = cb.get_metrics()
        assert m["ignored_calls"] == 5
        assert m["failed_calls"] == 0
        assert cb.state is CircuitState.CLOSED

    async def test_record_exceptions_and_predicates(
        self, make: Callable[..., CircuitBreaker]
    ) -> None:
        """record_exceptions limit what counts; is_failure/is_ignored decide when given."""
        cb = make(record_exceptions=(ConnectionError,))
        with pytest.raises(ValueError, match="not recorded"):
            await cb.call(boom, ValueError("not recorded"))
        with pytest.raises(ConnectionError):
            await cb.call(boom, ConnectionError())
        assert (cb.metrics.failed_calls, cb.get_metrics()["ignored_calls"]) == (1, 1)

        cb2 = make(
            "p", is_failure=lambda e: "fatal" in str(e), is_ignored=lambda e: "skip" in str(e)
        )
        for text in ("fatal", "mild", "skip fatal"):
            with pytest.raises(RuntimeError):
                await cb2.call(boom, RuntimeError(text))
        assert (cb2.metrics.failed_calls, cb2.get_metrics()["ignored_calls"]) == (1, 2)

    async def test_broken_predicate_counts_failure(
        self, make: Callable[..., CircuitBreaker]
    ) -> None:
        """A predicate that raises is logged and the exception counts as a failure."""
        cb = make(is_failure=lambda e: 1 / 0)
        with pytest.raises(RuntimeError):
            await cb.call(boom)
        assert cb.metrics.failed_calls == 1

    async def test_result_predicate(self, make: Callable[..., CircuitBreaker]) -> None:
        """failure_on_result counts a returned value as a failure; the value is returned."""
        cb = make(failure_on_result=lambda r: r == "bad")
        assert await cb.call(ok, "bad") == "bad"
        assert await cb.call(ok, "good") == "good"
        assert (cb.metrics.failed_calls, cb.metrics.successful_calls) == (1, 1)
        for _ in range(3):
            await cb.call(ok, "bad")
        assert cb.state is CircuitState.OPEN

    async def test_retry_after_hint(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """An exception with a Retry-After hint opens it at once for that long."""

        class Throttled(Exception):
            retry_after = 120.0

        cb = make(retry_after=lambda e: getattr(e, "retry_after", None))
        with pytest.raises(Throttled):
            await cb.call(boom, Throttled())
        assert cb.state is CircuitState.OPEN
        assert cb.get_metrics()["retry_after"] == 120.0
        await clock.advance(119.0)
        assert cb.state is CircuitState.OPEN

    async def test_open_for(self, make: Callable[..., CircuitBreaker], clock: FakeClock) -> None:
        """open_for(seconds) opens it by hand for that long."""
        cb = make()
        await cb.open_for(30.0)
        assert cb.retry_after(clock.monotonic()) == 30.0
        with pytest.raises(ValidationError):
            await cb.open_for(-1)

    async def test_exponential_open_duration(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """Repeated openings double the open time up to the cap."""
        cb = make(timeout=10.0, timeout_multiplier=2.0, max_timeout=25.0)
        await trip(cb)
        seen = [cb.get_metrics()["retry_after"]]
        for _ in range(2):
            await clock.advance(seen[-1])
            with pytest.raises(RuntimeError):
                await cb.call(boom)
            seen.append(cb.get_metrics()["retry_after"])
        assert seen == [10.0, 20.0, 25.0]


class TestRequestTimeout:
    async def test_timeout_is_a_failure(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """A call past request_timeout is cancelled, raises TimeoutError and is a failure."""
        cb = make()
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await clock.sleep(1000)

        task = asyncio.create_task(cb.call(hang))
        await started.wait()
        await clock.advance(4.9)
        assert not task.done()
        await clock.advance(0.1)
        with pytest.raises(TimeoutError, match=r"request_timeout=5\.0"):
            await task
        m = cb.get_metrics()
        assert (m["failed_calls"], m["timeouts"]) == (1, 1)

    async def test_decorator_and_context_manager_time_out(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """The decorator and `async with` enforce request_timeout too."""
        cb = make()

        @cb
        async def hang() -> None:
            await clock.sleep(1000)

        async def guarded() -> None:
            async with cb:
                await clock.sleep(1000)

        tasks = [asyncio.create_task(hang()), asyncio.create_task(guarded())]
        await clock.advance(5.0)
        for task in tasks:
            with pytest.raises(TimeoutError):
                await task
        assert cb.get_metrics()["timeouts"] == 2

    async def test_task_not_left_cancelling(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """After a timeout the task can go on (its cancel request was withdrawn)."""
        cb = make()

        async def caller() -> str:
            with pytest.raises(TimeoutError):
                await cb.call(clock.sleep, 100)
            task = asyncio.current_task()
            assert task is not None
            assert task.cancelling() == 0
            await clock.sleep(1)
            return "went on"

        task = asyncio.create_task(caller())
        await clock.advance(5.0)
        await clock.advance(1.0)
        assert await task == "went on"

    async def test_outside_cancellation_wins(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """Cancelling the caller is a cancellation (not counted), not a timeout."""
        cb = make()
        task = asyncio.create_task(cb.call(clock.sleep, 100))
        await clock.advance(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        m = cb.get_metrics()
        assert (m["failed_calls"], m["cancelled_calls"], m["timeouts"]) == (0, 1, 0)

    async def test_swallowed_timeout_still_counts(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """A call that swallows the cancellation returns its value but counts as timed out."""
        cb = make()

        async def stubborn() -> str:
            try:
                await clock.sleep(100)
            except asyncio.CancelledError:
                return "swallowed"
            return "normal"

        task = asyncio.create_task(cb.call(stubborn))
        await clock.advance(5.0)
        assert await task == "swallowed"
        assert cb.get_metrics()["timeouts"] == 1

    async def test_nested_breakers(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """An inner breaker with a shorter timeout fires first; both record a failure."""
        outer = make("outer", request_timeout=30.0)
        inner = make("inner", request_timeout=2.0)

        async def work() -> None:
            await inner.call(clock.sleep, 100)

        task = asyncio.create_task(outer.call(work))
        await clock.advance(2.0)
        with pytest.raises(TimeoutError, match="inner"):
            await task
        assert inner.get_metrics()["timeouts"] == 1
        assert outer.metrics.failed_calls == 1

    async def test_nested_same_timeout(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """Nested breakers sharing a timeout: the outer deadline fires and is reported."""
        outer = make("o2")
        inner = make("i2")

        @outer
        async def top() -> None:
            async with inner:
                await clock.sleep(100)

        task = asyncio.create_task(top())
        await clock.advance(5.0)
        with pytest.raises(TimeoutError, match="o2"):
            await task
        assert outer.get_metrics()["timeouts"] == 1
        assert inner.get_metrics()["cancelled_calls"] == 1

    async def test_many_concurrent_timeouts(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """Staggered calls each time out at their own deadline."""
        cb = make(failure_threshold=0)
        tasks = []
        for _ in range(5):
            tasks.append(asyncio.create_task(cb.call(clock.sleep, 100)))
            await clock.advance(1.0)
        # started at 0,1,2,3,4 -> deadlines 5..9; now at 5: the first is due
        await asyncio.sleep(0)
        assert tasks[0].done()
        assert not tasks[1].done()
        await clock.advance(2.0)
        assert sum(t.done() for t in tasks) == 3
        await clock.advance(2.0)
        for t in tasks:
            with pytest.raises(TimeoutError):
                await t

    async def test_sync_call_overrun_counts(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """A synchronous call cannot be interrupted; one that overran counts as failed."""
        cb = make()

        def slow_sync() -> str:
            clock._now += 6.0  # the call takes six seconds of clock time
            return "done"

        assert await cb.call(slow_sync) == "done"
        assert cb.get_metrics()["timeouts"] == 1

    def test_loop_change(self) -> None:
        """A breaker (and its timeout watchdog) works across successive event loops."""
        clock = FakeClock()
        cb = CircuitBreaker("loops", cfg(request_timeout=0.5), None, clock=clock)

        @cb
        async def quick(x: int) -> int:
            await asyncio.sleep(0)
            return x

        for i in range(2):
            assert asyncio.run(quick(i)) == i

        async def timed_out() -> None:
            task = asyncio.create_task(cb.call(clock.sleep, 100))
            await clock.advance(0.5)
            with pytest.raises(TimeoutError):
                await task

        asyncio.run(timed_out())
        assert cb.get_metrics()["timeouts"] == 1


class TestContextManager:
    async def test_counts_and_propagates(self, make: Callable[..., CircuitBreaker]) -> None:
        """`async with` records success and failure and lets the exception through."""
        cb = make()
        async with cb:
            pass
        with pytest.raises(RuntimeError):
            async with cb:
                raise RuntimeError("x")
        assert (cb.metrics.successful_calls, cb.metrics.failed_calls) == (1, 1)

    async def test_rejects_when_open(self, make: Callable[..., CircuitBreaker]) -> None:
        """Entering an open breaker raises CircuitBreakerException."""
        cb = make()
        await trip(cb)
        with pytest.raises(CircuitBreakerException):
            async with cb:
                pytest.fail("body must not run")

    async def test_fast_exit_awaitable_is_reusable(self) -> None:
        """On the system clock, the fast exit's awaitable gives None each time it is
        awaited (no exception suppressed) and every entry is counted."""
        cb = CircuitBreaker("ctx-reuse", cfg(request_timeout=None), None)
        for _ in range(3):
            async with cb:
                pass
        await cb.__aenter__()
        done = cb.__aexit__(None, None, None)
        assert await done is None
        assert await done is None
        with pytest.raises(KeyError):
            async with cb:
                raise KeyError("x")
        assert (cb.metrics.successful_calls, cb.metrics.failed_calls) == (4, 1)

    async def test_nested_same_breaker(self, make: Callable[..., CircuitBreaker]) -> None:
        """The same breaker nested in one task records both calls."""
        cb = make(request_timeout=None)
        async with cb, cb:
            pass
        async with cb:
            pass
        assert cb.metrics.successful_calls == 3

    @pytest.mark.parametrize("request_timeout", [None, 30.0])
    async def test_overlapping_entries_time_each_call(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock, request_timeout: float | None
    ) -> None:
        """Overlapping `async with` calls (many tasks, nested) each get their own duration."""
        cb = make(request_timeout=request_timeout, slow_call_threshold=2.0, failure_threshold=0)

        async def body(seconds: float, nested: bool) -> None:
            async with cb:
                if nested:
                    async with cb:
                        await clock.sleep(seconds)
                else:
                    await clock.sleep(seconds)

        durations = [float(i % 4) for i in range(40)]  # 0, 1, 2, 3 seconds
        tasks = [asyncio.create_task(body(d, nested=i % 5 == 0)) for i, d in enumerate(durations)]
        await clock.advance(0)
        for _ in range(4):
            await clock.advance(1.0)
        await asyncio.gather(*tasks)
        nested = sum(1 for i in range(40) if i % 5 == 0)
        slow = sum(1 + (i % 5 == 0) for i, d in enumerate(durations) if d >= 2.0)
        m = cb.get_metrics()
        assert m["total_calls"] == 40 + nested
        assert m["slow_calls"] == slow
        async with cb:  # and the fast path is back afterwards
            pass
        assert cb._ctx_slow_n == 0

    @pytest.mark.parametrize("request_timeout", [None, 30.0])
    async def test_system_clock_breaker(self, request_timeout: float | None) -> None:
        """On the system clock (its own `async with` fast path) entries nest, overlap,
        count once each and are rejected while open."""
        cb = CircuitBreaker("sysclock", cfg(request_timeout=request_timeout), None)
        assert isinstance(cb, CircuitBreaker)
        gate = asyncio.Event()

        async def body() -> None:
            async with cb, cb:  # nested entries of one breaker
                await gate.wait()

        tasks = [asyncio.create_task(body()) for _ in range(10)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(*tasks)
        with pytest.raises(RuntimeError):
            async with cb:
                raise RuntimeError
        assert (cb.metrics.successful_calls, cb.metrics.failed_calls) == (20, 1)
        await cb.open_for(60)
        with pytest.raises(CircuitBreakerException):
            async with cb:
                pytest.fail("body must not run")
        assert cb.metrics.rejected_calls == 1

    async def test_trial_via_context_manager(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """Half-open trials work through `async with`, and close the breaker."""
        cb = make(success_threshold=1, half_open_max_calls=1)
        await trip(cb)
        await clock.advance(10.0)
        async with cb:
            with pytest.raises(CircuitBreakerException):
                async with cb:  # the only permit is taken
                    pass
        assert cb.state is CircuitState.CLOSED

    async def test_ignored_and_cancelled_bodies(self, make: Callable[..., CircuitBreaker]) -> None:
        """An ignored exception and a cancellation inside `async with` are not failures."""
        cb = make(ignore_exceptions=(KeyError,))
        with pytest.raises(KeyError):
            async with cb:
                raise KeyError("k")

        async def body() -> None:
            async with cb:
                await asyncio.Event().wait()

        task = asyncio.create_task(body())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        m = cb.get_metrics()
        assert (m["failed_calls"], m["ignored_calls"], m["cancelled_calls"]) == (0, 1, 1)

    async def test_requires_a_task(self, make: Callable[..., CircuitBreaker]) -> None:
        """Entering outside the event loop's task context is a clear error."""
        cb = make()
        loop = asyncio.get_running_loop()

        def outside() -> None:
            coro = cb.__aenter__()
            with pytest.raises(LifecycleError):
                coro.send(None)

        loop.call_soon(outside)
        await asyncio.sleep(0)


class TestFallback:
    async def test_on_rejection_with_call_args(self, clock: FakeClock) -> None:
        """A rejected call returns the fallback's result, computed from the call's args."""
        seen: list[Any] = []

        def fallback(x: int, *, scale: int = 1) -> int:
            seen.append(current_failure())
            return -x * scale

        cb = CircuitBreaker("fb", cfg(), None, fallback, clock=clock)
        await cb.open_for(10)
        assert await cb.call(ok, 4, scale=2) == -8
        assert isinstance(seen[0], CircuitBreakerException)
        assert current_failure() is None

    async def test_on_failure_async_fallback(self, clock: FakeClock) -> None:
        """A failing call returns the (async) fallback's result; the reason is the error."""

        async def fallback(*args: Any) -> str:
            return f"fallback for {args} after {current_failure()!r}"

        cb = CircuitBreaker("fb2", cfg(), None, fallback, clock=clock)
        result = await cb.call(boom, RuntimeError("down"))
        assert result.startswith("fallback for (RuntimeError('down'),)")
        assert "RuntimeError('down')" in result
        assert cb.metrics.failed_calls == 1

    async def test_decorator_fallback_per_function(self, clock: FakeClock) -> None:
        """Decorators sharing a breaker each use their own fallback."""
        reg = CircuitBreakerRegistry(redis_url=None, clock=clock)

        @circuit_breaker("shared", cfg(), fallback_function=lambda: "a-fallback", registry=reg)
        async def a() -> str:
            raise RuntimeError

        @circuit_breaker("shared", fallback_function=lambda: "b-fallback", registry=reg)
        async def b() -> str:
            raise RuntimeError

        assert (await a(), await b()) == ("a-fallback", "b-fallback")

    async def test_timeout_reason(self, clock: FakeClock) -> None:
        """A timed-out call's fallback sees a TimeoutError."""
        reasons: list[Any] = []

        def fallback(*args: Any) -> str:
            reasons.append(current_failure())
            return "cached"

        cb = CircuitBreaker("fb3", cfg(), None, fallback, clock=clock)
        task = asyncio.create_task(cb.call(clock.sleep, 100))
        await clock.advance(5.0)
        assert await task == "cached"
        assert isinstance(reasons[0], TimeoutError)

    async def test_cancellation_never_falls_back(self, clock: FakeClock) -> None:
        """A cancelled call is not turned into a fallback result."""
        cb = CircuitBreaker("fb4", cfg(), None, lambda *a: "nope", clock=clock)
        task = asyncio.create_task(cb.call(clock.sleep, 100))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


class TestDecorator:
    async def test_wraps_async(self, make: Callable[..., CircuitBreaker]) -> None:
        """The async wrapper keeps name, doc and signature, and counts calls."""
        cb = make()

        @cb
        async def fetch(x: int) -> int:
            """Fetch x."""
            return x + 1

        assert fetch.__name__ == "fetch"
        assert fetch.__doc__ == "Fetch x."
        assert fetch.__wrapped__ is not None  # type: ignore[attr-defined]
        assert asyncio.iscoroutinefunction(fetch)
        assert await fetch(1) == 2
        assert fetch.circuit_breaker is cb  # type: ignore[attr-defined]

    async def test_untimed_async(self, make: Callable[..., CircuitBreaker]) -> None:
        """The decorator without request_timeout counts and rejects."""
        cb = make(request_timeout=None)

        @cb
        async def flaky(fail: bool) -> str:
            if fail:
                raise RuntimeError
            return "ok"

        assert await flaky(False) == "ok"
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await flaky(True)
        with pytest.raises(CircuitBreakerException):
            await flaky(False)

    def test_sync_function(self, clock: FakeClock) -> None:
        """A sync function stays sync, counts, rejects and falls back without a loop."""
        reg = CircuitBreakerRegistry(redis_url=None, clock=clock)

        @circuit_breaker("sync", cfg(), registry=reg)
        def div(a: int, b: int) -> float:
            """Divide."""
            return a / b

        @circuit_breaker("sync", fallback_function=lambda a, b: float("inf"), registry=reg)
        def div2(a: int, b: int) -> float:
            return a / b

        assert div.__doc__ == "Divide."
        assert not asyncio.iscoroutinefunction(div)
        assert div(1, 2) == 0.5
        for _ in range(3):
            with pytest.raises(ZeroDivisionError):
                div(1, 0)
        with pytest.raises(CircuitBreakerException):
            div(1, 1)
        assert div2(1, 1) == float("inf")
        cb = reg.get("sync")
        assert cb is not None
        assert cb.metrics.rejected_calls == 2

    def test_sync_overrun(self, clock: FakeClock) -> None:
        """A sync call longer than request_timeout returns but counts as failed."""
        cb = CircuitBreaker("so", cfg(), None, clock=clock)

        @cb
        def slow() -> int:
            clock._now += 6.0
            return 1

        assert slow() == 1
        assert cb.get_metrics()["timeouts"] == 1
        assert cb.call_sync(lambda: 2) == 2

    def test_generators_refused(self, make: Callable[..., CircuitBreaker]) -> None:
        """Generator functions are refused with a clear error."""
        cb = make()

        def gen() -> Any:
            yield 1

        with pytest.raises(ValidationError, match="generators"):
            cb.decorate(gen)


class TestListeners:
    async def test_events(self, make: Callable[..., CircuitBreaker], clock: FakeClock) -> None:
        """Listeners see transitions, successes, failures and rejections."""
        cb = make()
        events: list[CircuitBreakerEvent] = []
        cb.add_listener(events.append)
        await cb.call(ok)
        await trip(cb)
        with pytest.raises(CircuitBreakerException):
            await cb.call(ok)
        kinds = [e.kind for e in events]
        assert kinds[:2] == [EventKind.SUCCESS, EventKind.FAILURE]
        transition = next(e for e in events if e.kind is EventKind.STATE_TRANSITION)
        assert (transition.previous_state, transition.state) == (
            CircuitState.CLOSED,
            CircuitState.OPEN,
        )
        assert transition.trigger is Trigger.FAILURE_THRESHOLD
        rejected = events[-1]
        assert rejected.kind is EventKind.REJECTED
        assert rejected.retry_after == 10.0
        assert rejected.at == clock.time()

    async def test_filtered_and_async_listener(self, make: Callable[..., CircuitBreaker]) -> None:
        """A listener for some kinds only gets those; async listeners run as tasks."""
        cb = make()
        seen: list[EventKind] = []

        async def on_transition(event: CircuitBreakerEvent) -> None:
            seen.append(event.kind)

        cb.add_listener(on_transition, EventKind.STATE_TRANSITION)
        await cb.call(ok)
        await trip(cb)
        await asyncio.sleep(0)
        assert seen == [EventKind.STATE_TRANSITION]
        assert cb.remove_listener(on_transition)
        assert not cb.remove_listener(on_transition)

    async def test_failing_listener_is_isolated(
        self, make: Callable[..., CircuitBreaker], caplog: pytest.LogCaptureFixture
    ) -> None:
        """A listener that raises (sync or async) never breaks the call."""
        cb = make()

        def bad(event: CircuitBreakerEvent) -> None:
            raise RuntimeError("listener bug")

        async def bad_async(event: CircuitBreakerEvent) -> None:
            raise RuntimeError("async listener bug")

        cb.add_listener(bad)
        cb.add_listener(bad_async)
        assert await cb.call(ok, 5) == 5
        await trip(cb)
        await asyncio.sleep(0)
        assert cb.state is CircuitState.OPEN
        assert "listener_failed" in caplog.text

    async def test_state_change_logged(
        self, make: Callable[..., CircuitBreaker], caplog: pytest.LogCaptureFixture
    ) -> None:
        """Opening is logged at WARNING with the breaker's name."""
        cb = make()
        with caplog.at_level("INFO", logger="backend_services"):
            await trip(cb)
        record = next(r for r in caplog.records if r.getMessage() == "state_change")
        assert record.levelname == "WARNING"
        assert record.bs_fields["name"] == "svc"  # type: ignore[attr-defined]


class TestManualStates:
    async def test_force_states(self, make: Callable[..., CircuitBreaker]) -> None:
        """force_state moves to the special states; reset() closes with clear windows."""
        cb = make()
        await cb.force_state("forced_open")
        with pytest.raises(CircuitBreakerException) as info:
            await cb.call(ok)
        assert info.value.retry_after is None
        await cb.force_state(CircuitState.DISABLED)
        for _ in range(5):
            with pytest.raises(RuntimeError):
                await cb.call(boom)
        assert cb.state is CircuitState.DISABLED
        assert cb.metrics.total_calls == 0
        await cb.force_state("metrics_only")
        for _ in range(5):
            with pytest.raises(RuntimeError):
                await cb.call(boom)
        assert cb.state is CircuitState.METRICS_ONLY
        assert cb.metrics.failed_calls == 5
        await cb.reset()
        assert cb.state is CircuitState.CLOSED
        assert cb.get_metrics()["window"]["calls"] == 0

    async def test_close_then_initialize(self, make: Callable[..., CircuitBreaker]) -> None:
        """After close() the breaker still works locally but cannot be initialized."""
        cb = make()
        await cb.close()
        assert await cb.call(ok, 1) == 1
        with pytest.raises(LifecycleError):
            await cb.initialize()


class TestRegistry:
    async def test_same_name_same_breaker(self, clock: FakeClock) -> None:
        """The registry returns one breaker per name."""
        reg = CircuitBreakerRegistry(redis_url=None, clock=clock)
        a = await reg.get_or_create_circuit_breaker("x", cfg())
        b = await reg.get_or_create_circuit_breaker("x")
        assert a is b
        assert "x" in reg
        assert len(reg) == 1
        assert dict(reg.breakers) == {"x": a}

    async def test_conflicting_config_is_an_error(self, clock: FakeClock) -> None:
        """A second, different config for a name is a clear error."""
        reg = CircuitBreakerRegistry(redis_url=None, clock=clock)
        reg.get_or_create("x", cfg())
        reg.get_or_create("x", cfg())  # equal: fine
        with pytest.raises(ValidationError, match="one name, one config"):
            reg.get_or_create("x", cfg(timeout=99.0))
        with pytest.raises(ValidationError, match="fallback"):
            reg.get_or_create("x", None, lambda: 1)
        with pytest.raises(ValidationError, match="Redis URL"):
            reg.get_or_create("x", redis_url="redis://127.0.0.1:1/0")

    async def test_all_metrics_and_reset_all(self, clock: FakeClock) -> None:
        """get_all_metrics covers every breaker; reset_all closes them all."""
        reg = CircuitBreakerRegistry(redis_url=None, clock=clock)
        for name in ("a", "b"):
            cb = await reg.get_or_create_circuit_breaker(name, cfg())
            await trip(cb)
        assert {m["circuit_state"] for m in reg.get_all_metrics().values()} == {"open"}
        await reg.reset_all()
        assert {m["circuit_state"] for m in reg.get_all_metrics().values()} == {"closed"}
        await reg.close()

    async def test_get_circuit_breaker(self) -> None:
        """get_circuit_breaker shares breakers of the default registry."""
        a = await get_circuit_breaker("default-registry-test", redis_url=None)
        b = await get_circuit_breaker("default-registry-test")
        assert a is b

    def test_bad_arguments(self) -> None:
        """Bad names, configs and fallbacks are clear errors."""
        with pytest.raises(ValidationError):
            CircuitBreaker("", None, None)
        with pytest.raises(ValidationError):
            CircuitBreaker("x", {"timeout": 1}, None)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            CircuitBreaker("x", None, None, fallback_function=3)  # type: ignore[arg-type]


class TestConcurrency:
    async def test_half_open_limits_concurrent_trials(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """Of 200 concurrent callers in half-open, at most half_open_max_calls run at once."""
        cb = make(half_open_max_calls=3, success_threshold=3, request_timeout=None)
        await trip(cb)
        await clock.advance(10.0)
        running = 0
        peak = 0
        gate = asyncio.Event()

        async def probe() -> str:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await gate.wait()
            running -= 1
            return "ok"

        tasks = [asyncio.create_task(cb.call(probe)) for _ in range(200)]
        for _ in range(5):
            await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert peak == 3
        assert sum(1 for r in results if r == "ok") == 3
        assert sum(isinstance(r, CircuitBreakerException) for r in results) == 197
        assert cb.state is CircuitState.CLOSED

    async def test_cancelled_trial_releases_slot(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """Cancelling a trial frees its permit for the next caller."""
        cb = make(half_open_max_calls=1, success_threshold=1)
        await trip(cb)
        await clock.advance(10.0)
        task = asyncio.create_task(cb.call(clock.sleep, 100))
        await asyncio.sleep(0)
        with pytest.raises(CircuitBreakerException):
            await cb.call(ok)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cb.state is CircuitState.HALF_OPEN
        assert await cb.call(ok) == "ok"
        assert cb.state is CircuitState.CLOSED

    async def test_hung_trial_cannot_wedge(
        self, make: Callable[..., CircuitBreaker], clock: FakeClock
    ) -> None:
        """A trial that never finishes (no request timeout) expires and reopens the breaker."""
        cb = make(half_open_max_calls=1, request_timeout=None, trial_timeout=3.0)
        await trip(cb)
        await clock.advance(10.0)
        hung = asyncio.create_task(cb.call(asyncio.Event().wait))
        await asyncio.sleep(0)
        await clock.advance(3.0)
        assert cb.state is CircuitState.OPEN
        await clock.advance(10.0)
        assert await cb.call(ok) == "ok"
        hung.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hung

    async def test_many_tasks_closed(self, make: Callable[..., CircuitBreaker]) -> None:
        """1,000 concurrent successful calls are all admitted and counted once."""
        cb = make(request_timeout=5.0)

        async def work(i: int) -> int:
            await asyncio.sleep(0)
            return i

        results = await asyncio.gather(*(cb.call(work, i) for i in range(1000)))
        assert results == list(range(1000))
        m = cb.get_metrics()
        assert (m["total_calls"], m["successful_calls"], m["rejected_calls"]) == (1000, 1000, 0)

    async def test_mixed_outcomes_add_up(self, make: Callable[..., CircuitBreaker]) -> None:
        """Concurrent mixed calls: every call is exactly one of success, failure or rejection."""
        cb = make(failure_threshold=0, minimum_throughput=20, failure_rate_threshold=0.6)

        async def work(i: int) -> int:
            await asyncio.sleep(0)
            if i % 2:
                raise RuntimeError
            return i

        results = await asyncio.gather(
            *(cb.call(work, i) for i in range(500)), return_exceptions=True
        )
        m = cb.get_metrics()
        ok_count = sum(not isinstance(r, BaseException) for r in results)
        assert m["successful_calls"] == ok_count
        assert m["failed_calls"] == sum(isinstance(r, RuntimeError) for r in results)
        assert m["rejected_calls"] == sum(isinstance(r, CircuitBreakerException) for r in results)
        assert m["successful_calls"] + m["failed_calls"] + m["rejected_calls"] == 500


class TestMemory:
    def test_breakers_are_collectable(self) -> None:
        """A dropped breaker is garbage-collected (no hidden references)."""
        import weakref

        cb = CircuitBreaker("gc", cfg(), None)
        ref = weakref.ref(cb)
        del cb
        gc.collect()
        assert ref() is None
