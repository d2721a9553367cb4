"""Supervised background work (restarts driven by a fake clock) and Backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend_services.errors import ValidationError
from backend_services.tasks import Backoff, Supervisor, cancel_and_wait
from backend_services.testing import FakeClock


class FixedRandom(random.Random):
    """A Random whose random() always returns the same number."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


async def advance_to(clock: FakeClock, when: float) -> None:
    """Move the fake clock to ``when`` (never backwards)."""
    await clock.advance(max(0.0, when - clock.monotonic()))


def crash_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "bs_event", "") == "task_crashed"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=100.0)


# --- Backoff -------------------------------------------------------------------------


def test_backoff_delays_stay_within_half_to_full_base() -> None:
    """Each delay lies in [base/2, base] with base = initial * factor**n, capped."""
    low, high = Backoff(0.5, 10.0, rng=FixedRandom(0.0)), Backoff(0.5, 10.0, rng=FixedRandom(1.0))
    bases = [min(10.0, 0.5 * 2.0**n) for n in range(8)]
    assert [low.next_delay() for _ in bases] == [b / 2 for b in bases]
    assert [high.next_delay() for _ in bases] == bases
    seeded = Backoff(0.5, 10.0, rng=random.Random(3))
    for base in bases:
        assert base / 2 <= seeded.next_delay() <= base


def test_backoff_is_capped_at_maximum_and_never_overflows() -> None:
    """After the cap every delay is at most the maximum, even after thousands of steps
    (a loop backing off for hours must not die of an overflow)."""
    backoff = Backoff(0.1, 5.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(5000)]
    assert max(delays) <= 5.0
    assert min(delays[20:]) >= 2.5
    assert backoff.base == 5.0
    assert Backoff(0.1, 5.0, attempt=10**6).next_delay() <= 5.0


def test_backoff_reset_starts_over() -> None:
    """reset() brings the next delay back to the initial range."""
    backoff = Backoff(1.0, 60.0, rng=FixedRandom(1.0))
    for _ in range(4):
        backoff.next_delay()
    assert backoff.next_delay() == 16.0
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_backoff_call_rng_overrides_the_field() -> None:
    """An rng passed to next_delay() is used instead of the one set on the Backoff."""
    backoff = Backoff(2.0, 2.0, rng=FixedRandom(0.0))
    assert backoff.next_delay(FixedRandom(1.0)) == 2.0
    assert backoff.next_delay() == 1.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial": 0.0}, "Backoff.initial"),
        ({"initial": -1.0}, "Backoff.initial"),
        ({"initial": 2.0, "maximum": 1.0}, "Backoff.maximum"),
        ({"factor": 0.5}, "Backoff.factor"),
        ({"initial": float("nan")}, "Backoff.initial"),
        ({"maximum": float("inf")}, "Backoff.maximum"),
    ],
)
def test_backoff_rejects_nonsense(kwargs: dict[str, Any], field: str) -> None:
    """Non-positive, non-finite or inverted settings are a ValidationError naming them."""
    with pytest.raises(ValidationError, match=rf"^{field}="):
        Backoff(**kwargs)


@given(
    initial=st.floats(1e-3, 10.0),
    spread=st.floats(1.0, 1000.0),
    factor=st.floats(1.0, 10.0),
    steps=st.integers(1, 60),
    seed=st.integers(0, 2**32),
)
def test_backoff_property_bounds(
    initial: float, spread: float, factor: float, steps: int, seed: int
) -> None:
    """For any valid settings, every delay is in [base/2, base] and never above maximum."""
    backoff = Backoff(initial, initial * spread, factor, rng=random.Random(seed))
    for _ in range(steps):
        base = backoff.base
        delay = backoff.next_delay()
        assert base / 2 <= delay <= base <= backoff.maximum


# --- Supervisor: restarts ------------------------------------------------------------


async def test_crashing_loop_restarts_after_each_backoff_delay(clock: FakeClock) -> None:
    """A crash is followed by a restart exactly when the backoff delay has passed on the
    clock, not before; delays grow as the backoff says."""
    expected = Backoff(1.0, 8.0, rng=random.Random(7))
    delays = [expected.next_delay() for _ in range(3)]
    starts: list[float] = []
    forever = asyncio.Event()

    async def flaky() -> None:
        starts.append(clock.monotonic())
        if len(starts) <= 3:
            raise RuntimeError(f"boom {len(starts)}")
        await forever.wait()

    sup = Supervisor("svc", clock=clock)
    sup.spawn("flaky", flaky, backoff=Backoff(1.0, 8.0, rng=random.Random(7)))
    await clock.advance(0)
    t = 100.0
    assert starts == [t]
    for n, delay in enumerate(delays, start=2):
        await advance_to(clock, t + delay - 1e-3)
        assert len(starts) == n - 1, "restarted too early"
        await advance_to(clock, t + delay + 1e-3)
        assert len(starts) == n, "not restarted when due"
        t += delay
        assert starts[-1] == pytest.approx(t, abs=1e-9)
    assert sup.crashes == {"flaky": 3}
    assert sup.names == ["flaky"]
    await sup.close()


async def test_crash_is_logged_with_owner_task_and_traceback(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Each crash is an ERROR event naming owner and task, with the error, the count, the
    retry delay and the traceback."""
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError(f"bad input {calls}")

    sup = Supervisor("discovery", clock=clock)
    with caplog.at_level(logging.ERROR, logger="backend_services.tasks"):
        sup.spawn("health-checks", broken, backoff=Backoff(2.0, 2.0, rng=FixedRandom(0.5)))
        await clock.advance(0)
        await clock.advance(1.5)
    records = crash_records(caplog)
    assert len(records) == 2
    fields = records[0].bs_fields  # type: ignore[attr-defined]
    assert fields["owner"] == "discovery"
    assert fields["task"] == "health-checks"
    assert fields["error"] == "ValueError('bad input 1')"
    assert fields["crashes"] == 1
    assert fields["restart"] is True
    assert fields["retry_in"] == 1.5
    assert records[1].bs_fields["crashes"] == 2  # type: ignore[attr-defined]
    assert records[0].levelno == logging.ERROR
    assert records[0].exc_info is not None
    assert records[0].exc_info[0] is ValueError
    await sup.close()


async def test_backoff_starts_over_after_a_long_healthy_run(clock: FakeClock) -> None:
    """A loop that ran longer than the maximum delay before crashing is restarted after
    the initial delay again, not the grown one."""
    starts: list[float] = []

    async def loop() -> None:
        starts.append(clock.monotonic())
        if len(starts) == 4:
            await clock.sleep(10.0)  # a long healthy run (> maximum of 4 s)
        if len(starts) <= 4:
            raise RuntimeError("crash")
        await asyncio.Event().wait()

    sup = Supervisor("svc", clock=clock)
    sup.spawn("loop", loop, backoff=Backoff(1.0, 4.0, rng=FixedRandom(0.5)))
    await clock.advance(0)
    await clock.advance(0.75 + 1.5 + 3.0)  # three quick crashes: bases 1, 2, 4
    assert starts == [100.0, 100.75, 102.25, 105.25]
    await clock.advance(10.0)  # fourth run crashes at 115.25
    await clock.advance(0.75)
    assert starts[-1] == 116.0  # restarted after 0.75 (base 1), not 3.0 (base 4)
    await sup.close()


async def test_task_that_returns_is_not_restarted(clock: FakeClock) -> None:
    """Returning normally ends the task for good: no restart, no crash counted."""
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    sup = Supervisor("svc", clock=clock)
    task = sup.spawn("once", once)
    await clock.advance(0)
    await clock.advance(3600)
    assert runs == 1
    assert task.done()
    assert task.exception() is None
    assert sup.names == []
    assert sup.crashes == {}
    await sup.close()


async def test_restart_false_logs_the_crash_and_stops(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With restart=False a crash is logged (no retry delay) and the task ends."""
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1
        raise OSError("gone")

    sup = Supervisor("svc", clock=clock)
    with caplog.at_level(logging.ERROR, logger="backend_services.tasks"):
        task = sup.spawn("keeper", once, restart=False)
        await clock.advance(0)
        await clock.advance(100)
    assert runs == 1
    assert task.done()
    assert not task.cancelled()
    (record,) = crash_records(caplog)
    fields = record.bs_fields  # type: ignore[attr-defined]
    assert (fields["task"], fields["restart"], fields["retry_in"]) == ("keeper", False, None)
    assert sup.crashes == {"keeper": 1}


async def test_cancelling_a_task_is_not_a_crash(clock: FakeClock) -> None:
    """A task cancelled from outside ends cancelled: no crash counted, no restart."""
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        await clock.sleep(1e9)

    sup = Supervisor("svc", clock=clock)
    task = sup.spawn("loop", loop)
    await clock.advance(0)
    task.cancel()
    await clock.advance(0)
    await clock.advance(60)
    assert task.cancelled()
    assert runs == 1
    assert sup.crashes == {}
    await sup.close()


async def test_cancellation_turned_into_an_error_still_stops_the_task(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A loop whose client turns the cancellation into another error is stopped by
    close(), not restarted as a crash (close() would otherwise wait forever)."""
    runs = 0

    async def wrapped_client() -> None:
        nonlocal runs
        runs += 1
        try:
            await clock.sleep(1e9)
        except asyncio.CancelledError:
            raise ConnectionError("connection closed by client") from None

    sup = Supervisor("svc", clock=clock)
    task = sup.spawn("reader", wrapped_client)
    await clock.advance(0)
    with caplog.at_level(logging.ERROR, logger="backend_services.tasks"):
        async with asyncio.timeout(5):  # bound on a hang, not a time-based behaviour
            await sup.close()
    assert task.cancelled()
    assert runs == 1
    assert sup.crashes == {}
    assert crash_records(caplog) == []


# --- Supervisor: names and close -----------------------------------------------------


async def test_task_is_named_owner_colon_name(clock: FakeClock) -> None:
    """The asyncio task carries the name "<owner>:<name>" (visible in debuggers)."""
    sup = Supervisor("breaker", clock=clock)
    task = sup.spawn("writer", asyncio.Event().wait)
    assert task.get_name() == "breaker:writer"
    await sup.close()


async def test_duplicate_running_name_is_refused(clock: FakeClock) -> None:
    """A second task under a running name raises; after the first ended the name is free."""
    sup = Supervisor("svc", clock=clock)
    sup.spawn("loop", asyncio.Event().wait)
    with pytest.raises(RuntimeError, match=r"'svc:loop' is already running"):
        sup.spawn("loop", asyncio.Event().wait)

    async def quick() -> None:
        return None

    sup.spawn("quick", quick)
    await clock.advance(0)
    again = sup.spawn("quick", quick)
    await clock.advance(0)
    assert again.done()
    await sup.close()


async def test_close_cancels_everything_and_leaves_no_task(clock: FakeClock) -> None:
    """close() cancels running, sleeping and backing-off tasks and waits for them: no
    asyncio task and no clock sleeper is left behind."""
    before = asyncio.all_tasks()

    async def crash() -> None:
        raise RuntimeError("always")

    async def sleeper() -> None:
        await clock.sleep(1e9)

    sup = Supervisor("svc", clock=clock)
    tasks = [
        sup.spawn("waiting", asyncio.Event().wait),
        sup.spawn("sleeping", sleeper),
        sup.spawn("crashing", crash),  # ends up asleep in its backoff delay
    ]
    await clock.advance(0)
    assert sorted(sup.names) == ["crashing", "sleeping", "waiting"]
    assert clock.sleepers == 2
    await sup.close()
    assert all(t.cancelled() for t in tasks)
    assert asyncio.all_tasks() == before
    assert sup.names == []
    assert clock.sleepers == 0
    assert sup.closed


async def test_spawn_after_close_raises(clock: FakeClock) -> None:
    """A closed supervisor refuses new work, naming its owner; close() is idempotent."""
    sup = Supervisor("config", clock=clock)
    await sup.close()
    await sup.close()
    with pytest.raises(RuntimeError, match=r"supervisor 'config' is closed"):
        sup.spawn("late", asyncio.Event().wait)


async def test_close_from_inside_an_own_task(clock: FakeClock) -> None:
    """A supervised loop may close its own supervisor: the others are cancelled and
    awaited, close() returns to it, then it is cancelled too; nothing is left behind."""
    before = asyncio.all_tasks()
    reached: list[str] = []
    sup = Supervisor("svc", clock=clock)
    other = sup.spawn("other", asyncio.Event().wait)

    async def stopper() -> None:
        await clock.sleep(1.0)
        await sup.close()
        reached.append("after close")
        await asyncio.sleep(0)
        reached.append("after next await")  # pragma: no cover - cancelled before

    own = sup.spawn("stopper", stopper)
    await clock.advance(0)
    await clock.advance(1.0)
    await asyncio.gather(own, return_exceptions=True)
    assert reached == ["after close"]
    assert other.cancelled()
    assert own.cancelled()
    assert asyncio.all_tasks() == before
    assert sup.crashes == {}


async def test_many_supervised_tasks_restart_independently(clock: FakeClock) -> None:
    """One crashing task does not disturb its siblings; each keeps its own backoff."""
    ticks: dict[str, int] = {"a": 0, "b": 0}

    def ticker(name: str, crash_every: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            while True:
                await clock.sleep(1.0)
                ticks[name] += 1
                if crash_every and ticks[name] % crash_every == 0:
                    raise RuntimeError(name)

        return run

    sup = Supervisor("svc", clock=clock)
    sup.spawn("a", ticker("a", 0))
    sup.spawn("b", ticker("b", 2), backoff=Backoff(0.5, 0.5, rng=FixedRandom(0.0)))
    await clock.advance(0)
    for _ in range(10):
        await clock.advance(1.0)
    assert ticks["a"] == 10
    # b: ticks at 1, 2 (crash, back at 2.25), 3.25, 4.25 (crash, 4.5), 5.5, 6.5 (crash,
    # 6.75), 7.75, 8.75 (crash, 9.0), 10.0
    assert ticks["b"] == 9
    assert sup.crashes == {"b": 4}
    await sup.close()


async def test_close_ends_a_task_that_swallows_its_first_cancellation() -> None:
    """close() repeats the cancel, so a loop that lost one cancellation still ends."""
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    sup = Supervisor("owner")
    task = sup.spawn("stubborn", stubborn)
    await asyncio.wait_for(sup.close(), timeout=10)
    assert task.cancelled()
    assert swallowed == 1


async def test_cancel_and_wait_reports_nothing_left_running() -> None:
    """cancel_and_wait returns only when every task has ended."""
    tasks = [asyncio.create_task(asyncio.Event().wait()) for _ in range(3)]
    await cancel_and_wait(tasks)
    assert all(t.cancelled() for t in tasks)
