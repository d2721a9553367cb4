"""The circuit breaker shell's own state: construction, shared-state lifecycle, reading.

:class:`BreakerShell` extends the pure :class:`~backend_services.breaker.core.BreakerCore`
with what every path of the async shell shares: the clock, the event loop the breaker
is bound to (its task table and request-timeout watchdog), the connection to the shared
state (connected by :meth:`~BreakerShell.initialize`, or in the background on first
use), reading (state, metrics) and manual control. Events and outcome recording are in
:mod:`~backend_services.infrastructure.cb.recording`, the call paths in
:mod:`~backend_services.infrastructure.cb.breaker`.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ...breaker.config import CircuitBreakerConfig, WindowType
from ...breaker.core import BreakerCore
from ...breaker.state import CircuitState
from ...clock import Clock, SystemClock, resolve_clock
from ...errors import LifecycleError, ValidationError
from ...log import get_logger
from ...settings import UNSET, Unset, resolve_redis_url
from ...store.protocol import Store
from .detached import keep_until_done
from .notify import Listeners
from .watchdog import current_task_of, watchdog_for

if TYPE_CHECKING:
    from .breaker import CircuitBreaker
    from .fleet import FleetLink

__all__ = ["BreakerShell", "CircuitBreakerMetrics"]

_log = get_logger("circuit_breaker")

_NO_EXPIRED: Final[dict[asyncio.Task[object], tuple[float, int]]] = {}
_get_ident: Final = threading.get_ident


@dataclass(frozen=True, slots=True)
class CircuitBreakerMetrics:
    """A snapshot of a breaker's counters (lifetime totals; rates over the window)."""

    total_calls: int
    successful_calls: int
    failed_calls: int
    rejected_calls: int
    consecutive_failures: int
    consecutive_successes: int
    slow_calls: int
    slow_call_rate: float
    failure_rate: float


class BreakerShell(BreakerCore):
    """The state shared by every path of a
    :class:`~backend_services.infrastructure.circuit_breaker.CircuitBreaker` (see the
    module docstring); breakers are made as :class:`CircuitBreaker`, which documents
    the arguments."""

    __slots__ = (
        "__weakref__",
        "_auto_connect",
        "_clock",
        "_closed",
        "_ctx_single",
        "_ctx_slow",
        "_ctx_slow_n",
        "_ctx_t0",
        "_entered",
        "_expired",
        "_fleet",
        "_fleet_base",
        "_fleet_version",
        "_inflight",
        "_initialized",
        "_listeners",
        "_loop",
        "_mono",
        "_redis_url",
        "_rt",
        "_store",
        "_thread",
        "fallback_function",
    )

    def __init__(
        self,
        name: str,
        config: CircuitBreakerConfig | None = None,
        redis_url: str | Unset | None = UNSET,
        fallback_function: Callable[..., Any] | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        store: Store | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValidationError("name", name, "a non-empty circuit breaker name")
        if config is None:
            config = CircuitBreakerConfig()
        elif not isinstance(config, CircuitBreakerConfig):
            raise ValidationError("config", config, "a CircuitBreakerConfig or None")
        if fallback_function is not None and not callable(fallback_function):
            raise ValidationError("fallback_function", fallback_function, "a callable or None")
        clock = resolve_clock(clock)
        self._rt = config.request_timeout
        self._ctx_slow_n = 0
        self._ctx_single = False
        super().__init__(name, config, now=clock.monotonic(), rng=rng)
        self._clock = clock
        self._mono = _fresh_reader(clock)
        self._redis_url = resolve_redis_url(redis_url)
        self._store = store
        self.fallback_function = fallback_function
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0  # the thread whose loop the breaker is bound to
        self._inflight: dict[asyncio.Task[object], float] = {}
        self._expired = _NO_EXPIRED
        self._ctx_slow: dict[asyncio.Task[object], list[tuple[int, float, bool]]] | None = None
        self._ctx_t0: float | None = None
        self._entered: Awaitable[CircuitBreaker] | None = None
        self._listeners: Listeners | None = None
        self._fleet: FleetLink | None = None
        self._fleet_version = 0
        self._fleet_base = CircuitState.CLOSED
        self._initialized = False
        self._closed = False
        self._auto_connect = self._redis_url is not None or store is not None
        if config.failure_on_result is not None:
            self._set_attention(True, clock.monotonic())
        if self._auto_connect:
            self._set_fast_ok(False)

    # --- lifecycle -------------------------------------------------------------------

    @property
    def redis_url(self) -> str | None:
        """The Redis URL this breaker shares state through (None: this process only)."""
        return self._redis_url

    @property
    def store(self) -> Store | None:
        """The store of the shared state, once connected."""
        return self._fleet.store if self._fleet is not None else None

    @property
    def shared(self) -> bool:
        """True once connected to shared state."""
        return self._fleet is not None

    async def initialize(self) -> None:
        """Connect to the shared state (no-op in memory, or when already connected).
        A configuration error (wrong password, untrusted certificate) is raised; an
        unreachable Redis is not: the breaker decides locally and syncs when it answers."""
        if self._closed:
            raise LifecycleError(f"circuit breaker {self.name!r} is closed")
        if self._initialized:
            return
        self._initialized = True
        self._auto_connect = False
        try:
            if self._redis_url is not None or self._store is not None:
                # read at attach time from the public module, where it may be replaced
                from ..circuit_breaker import PROCESS_ID
                from .fleet import attach

                self._fleet = await attach(
                    self,
                    self._redis_url,
                    self._clock,
                    store=self._store,
                    process_id=PROCESS_ID,
                )
        except BaseException:
            self._initialized = False
            raise
        finally:
            self._set_fast_ok(True)

    async def _connect_if_needed(self) -> None:
        wanted = self._redis_url is not None or self._store is not None
        if wanted and not self._initialized and not self._closed:
            await self.initialize()

    async def close(self) -> None:
        """Disconnect from the shared state (the breaker keeps working in memory)."""
        self._closed = True
        self._auto_connect = False
        self._set_fast_ok(True)
        fleet, self._fleet = self._fleet, None
        if fleet is not None:
            await fleet.detach(self)
        if self._listeners is not None:
            await self._listeners.drain()

    shutdown = close

    def _start_auto_connect(self) -> None:
        self._auto_connect = False
        self._set_fast_ok(True)
        if self._initialized or self._closed:
            return

        async def connect() -> None:
            try:
                await self.initialize()
            except Exception as exc:
                _log.error("shared_state_unavailable", name=self.name, error=repr(exc))

        task = asyncio.get_running_loop().create_task(connect(), name=f"cb:{self.name}:connect")
        keep_until_done(task)

    def _update_fast(self) -> None:
        super()._update_fast()
        # `async with` without a request timeout: one start-time slot, no task lookup
        self._ctx_single = self._fast and self._rt is None and not self._ctx_slow_n

    def _bind(self) -> asyncio.Task[object] | None:
        """Bind to the running loop (its task table and request-timeout watchdog)."""
        loop = asyncio.get_running_loop()
        self._thread = _get_ident()
        if loop is not self._loop:
            self._loop = loop
            rt = self._rt
            if rt is not None:
                dog = watchdog_for(loop, self._clock, rt)
                self._inflight = dog.inflight
                self._expired = dog.expired
            else:
                self._inflight = {}
                self._expired = _NO_EXPIRED
            if self._ctx_slow:  # entries of tasks that ended with their loop
                for task in [t for t in self._ctx_slow if t.done()]:
                    self._ctx_slow_n -= len(self._ctx_slow.pop(task))
            self._update_fast()
        return current_task_of(loop)

    def _task_here(self) -> asyncio.Task[object] | None:
        """The running task, the breaker bound to its loop (rebinding if needed)."""
        if self._thread == _get_ident():
            task = current_task_of(self._loop)
            if task is not None:
                return task
        return self._bind()

    # --- reading ---------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state (an elapsed open period reads as ``half_open``)."""
        return self.current_state(self._mono())

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def metrics(self) -> CircuitBreakerMetrics:
        """Counters of :class:`CircuitBreakerMetrics`, as of now."""
        c = self.counters(self._mono())
        return CircuitBreakerMetrics(
            total_calls=c["total_calls"],
            successful_calls=c["successful_calls"],
            failed_calls=c["failed_calls"],
            rejected_calls=c["rejected_calls"],
            consecutive_failures=c["consecutive_failures"],
            consecutive_successes=c["consecutive_successes"],
            slow_calls=c["slow_calls"],
            slow_call_rate=c["slow_call_rate"],
            failure_rate=c["failure_rate"],
        )

    def get_metrics(self) -> dict[str, Any]:
        """The spec's metrics (``total_calls``, ``successful_calls``, ``failed_calls``,
        ``rejected_calls``, ``circuit_state``, ``failure_rate``) plus window figures,
        timing and sharing details. Rates are over the window, totals over the lifetime;
        rejected calls are not failures."""
        now = self._mono()
        state = self.current_state(now)
        metrics = self.counters(now)
        retry = self.retry_after(now)
        wall = self._clock.time()
        metrics.update(
            name=self.name,
            circuit_state=state.value,
            retry_after=retry if state in (CircuitState.OPEN, CircuitState.HALF_OPEN) else None,
            half_open_trials=self.trials_in_flight,
            openings=self._openings,
            state_transitions=self._transitions,
            state_changed_at=wall - (now - self._since),
            shared=self._fleet is not None,
            fleet_version=self._fleet_version if self._fleet is not None else None,
        )
        metrics["window"]["size"] = (
            self.config.window_size
            if self.config.window_type is WindowType.COUNT
            else self.config.window_duration
        )
        return metrics

    # --- manual control --------------------------------------------------------------

    async def reset(self) -> None:
        """Back to ``CLOSED`` with empty windows — fleet-wide when shared."""
        self.reset_state(self._mono())
        await self._flush()

    async def force_state(self, state: CircuitState | str, duration: float | None = None) -> None:
        """Move to ``state`` by hand (``open`` for ``duration`` seconds, default the
        configured timeout) — fleet-wide when shared."""
        self.transition_to(state, self._mono(), duration=duration)
        await self._flush()

    async def open_for(self, seconds: float) -> None:
        """Open now for ``seconds`` (e.g. a server's Retry-After) — fleet-wide when shared."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValidationError("seconds", seconds, "a number of seconds >= 0")
        self.trip(self._mono(), float(seconds))
        await self._flush()

    async def _flush(self) -> None:
        if self._fleet is not None:
            await self._fleet.flush(self)


def _fresh_reader(clock: Clock) -> Callable[[], float]:
    """``clock.monotonic``, returning a new float object on every call.

    A call's start time doubles as its identity in the watchdog tables (compared with
    ``is``); the system clock always returns fresh objects, a test clock standing still
    may return the same one, so its readings are copied."""
    if isinstance(clock, SystemClock):
        return clock.monotonic
    read = clock.monotonic

    def fresh() -> float:
        return read() + 0.0

    return fresh
