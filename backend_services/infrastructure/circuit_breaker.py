"""Circuit breakers: stop calling what is failing, try again carefully, share it fleet-wide.

Usage (the spec's examples)::

    from backend_services.infrastructure.circuit_breaker import (
        CircuitBreaker, CircuitBreakerConfig, circuit_breaker
    )

    cb = CircuitBreaker("external-api", config=CircuitBreakerConfig(failure_threshold=5))
    await cb.initialize()
    async with cb:
        result = await external_service_call()

    @circuit_breaker("dtesn-membrane")
    async def process_membrane(data): ...

The state machine is the pure core in :mod:`backend_services.breaker`; this module is
its async shell: it reads the clock, enforces request timeouts (one shared watchdog per
event loop instead of a timer per call), runs fallbacks and listeners, and shares state
transitions through the store when a Redis URL is configured.

Fallbacks are called with the protected call's own ``*args, **kwargs``; inside one,
:func:`current_failure` returns why (the :class:`CircuitBreakerException` of a call that
was not permitted, the exception the call raised, or :class:`TimeoutError`). A fallback
is used when the call is not permitted or raises an :class:`Exception`; a returned value
that ``failure_on_result`` counts as a failure is still returned.

Hot path: while the breaker is closed, a call costs a flag test, two clock reads, an
integer increment and two comparisons (plus one dict store and delete when a request
timeout is set). Everything else — opening, half-open trials, listeners, fallbacks,
sharing — happens on slower paths that the flags divert to. The decorator's wrappers
are in :mod:`~backend_services.infrastructure.cb.wrappers`, the finished awaitables the
``async with`` fast paths return in :mod:`~backend_services.infrastructure.cb.awaitables`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import CoroutineType, TracebackType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, cast

from ..breaker.config import CircuitBreakerConfig, WindowType
from ..breaker.core import ADMIT, ADMIT_UNRECORDED, REJECT, BreakerCore
from ..breaker.events import CircuitBreakerEvent, EventKind
from ..breaker.state import CircuitState, Trigger
from ..clock import Clock, SystemClock, resolve_clock
from ..errors import CircuitBreakerException, LifecycleError, ValidationError
from ..log import get_logger
from ..settings import UNSET, Unset, resolve_redis_url
from ..store.protocol import Store
from .cb.awaitables import DONE, completed
from .cb.notify import Listener, Listeners, current_failure, run_fallback, run_fallback_sync
from .cb.watchdog import current_task_of, watchdog_for
from .cb.wrappers import async_wrapper, async_wrapper_timed, sync_wrapper

if TYPE_CHECKING:
    from .cb.fleet import FleetLink

__all__ = [
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerEvent",
    "CircuitBreakerException",
    "CircuitBreakerMetrics",
    "CircuitBreakerRegistry",
    "CircuitState",
    "EventKind",
    "Trigger",
    "WindowType",
    "circuit_breaker",
    "current_failure",
    "get_circuit_breaker",
    "get_default_registry",
]

_log = get_logger("circuit_breaker")

P = ParamSpec("P")
R = TypeVar("R")

_CANCELLED: Final = asyncio.CancelledError
_TRANSITION: Final = EventKind.STATE_TRANSITION
_isawaitable: Final = inspect.isawaitable
_NO_EXPIRED: Final[dict[asyncio.Task[object], tuple[float, int]]] = {}
_new_exception: Final = CircuitBreakerException.__new__
_get_ident: Final = threading.get_ident

PROCESS_ID: str = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
"""How this process names itself to the fleet (host, pid, random suffix)."""


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


class CircuitBreaker(BreakerCore):
    """A circuit breaker named ``name`` (see the module docstring).

    ``config`` defaults to :class:`CircuitBreakerConfig` built from the settings.
    ``redis_url``: omitted — settings decide (``DTESN_SERVICE_REDIS_URL`` or the settings
    file); ``None`` — this process only; a URL — state shared through that Redis.
    ``store``: share through this :class:`~backend_services.store.protocol.Store`
    instead (e.g. an embedded :class:`~backend_services.store.memory.MemoryStore`).
    The breaker works at once, in memory; :meth:`initialize` connects it to the shared
    state (a breaker used without it connects itself in the background on first use).
    ``rng`` draws the open-duration jitter.

    Counters are not locked (no lock on the call path): a breaker is meant for the
    event loop of one thread at a time. Used from several threads at once it stays
    safe (request timeouts only ever cancel tasks of the calling thread's loop) but a
    count may occasionally be lost.
    """

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
        if type(self) is CircuitBreaker and isinstance(clock, SystemClock):
            # same layout, `async with` reading time.monotonic as a global (see below)
            self.__class__ = _SystemClockCircuitBreaker

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
                from .cb.fleet import attach

                self._fleet = await attach(
                    self, self._redis_url, self._clock, store=self._store, process_id=PROCESS_ID
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
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

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

    # --- listeners -------------------------------------------------------------------

    def add_listener(self, listener: Listener, *kinds: EventKind | str) -> None:
        """Call ``listener(event)`` (sync or async) for events of ``kinds`` (all when
        none are named). A listener that raises is logged; the call goes on."""
        if not callable(listener):
            raise ValidationError("listener", listener, "a callable taking an event")
        if self._listeners is None:
            self._listeners = Listeners()
        self._listeners.add(listener, kinds or None)
        self._update_attention()

    def remove_listener(self, listener: Listener) -> bool:
        """Stop calling ``listener``; False if it was not added."""
        if self._listeners is None:
            return False
        removed = self._listeners.remove(listener)
        self._update_attention()
        return removed

    def _update_attention(self) -> None:
        wants_success = self._listeners is not None and EventKind.SUCCESS in self._listeners.kinds
        self._set_attention(
            wants_success or self.config.failure_on_result is not None, self._mono()
        )

    def _emit(
        self,
        kind: EventKind,
        *,
        duration: float | None = None,
        exception: BaseException | None = None,
        timed_out: bool = False,
        retry_after: float | None = None,
    ) -> None:
        listeners = self._listeners
        if listeners is not None and kind in listeners.kinds:
            listeners.emit(
                CircuitBreakerEvent(
                    kind,
                    self.name,
                    self._state,
                    self._clock.time(),
                    duration=duration,
                    exception=exception,
                    timed_out=timed_out,
                    retry_after=retry_after,
                )
            )

    def _on_transition(
        self, old: CircuitState, new: CircuitState, trigger: Trigger, now: float
    ) -> None:
        remote = trigger is Trigger.REMOTE
        fields: dict[str, Any] = {
            "name": self.name,
            "old": old.value,
            "new": new.value,
            "reason": trigger.value,
        }
        if new is CircuitState.OPEN:
            fields["open_for"] = round(self._open_until - now, 3)
        if remote:
            fields["fleet_version"] = self._fleet_version
        if new in (CircuitState.OPEN, CircuitState.FORCED_OPEN):
            _log.warning("state_change", **fields)
        else:
            _log.info("state_change", **fields)
        listeners = self._listeners
        if listeners is not None and _TRANSITION in listeners.kinds:
            listeners.emit(
                CircuitBreakerEvent(
                    _TRANSITION,
                    self.name,
                    new,
                    self._clock.time(),
                    previous_state=old,
                    trigger=trigger,
                    remote=remote,
                )
            )
        if self._fleet is not None and not remote:
            self._fleet.publish(self, old, new, trigger)

    # --- recording helpers (shared by every path) ----------------------------------

    def _classify(self, exc: BaseException) -> bool:
        """True if ``exc`` counts as a failure, False if the call is ignored."""
        config = self.config
        try:
            if config.is_ignored is not None and config.is_ignored(exc):
                return False
            if config.ignore_exceptions and isinstance(exc, config.ignore_exceptions):
                return False
            if config.is_failure is not None:
                return bool(config.is_failure(exc))
        except Exception as err:
            _log.exception("predicate_failed", name=self.name, error=repr(err))
            return True
        return isinstance(exc, config.record_exceptions)

    def _hint(self, exc: BaseException) -> float | None:
        extract = self.config.retry_after
        if extract is None:
            return None
        try:
            seconds = extract(exc)
        except Exception as err:
            _log.exception("retry_after_failed", name=self.name, error=repr(err))
            return None
        if seconds is None or isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            return None
        return float(seconds) if seconds >= 0 else None

    def _success_attention(self, result: Any, now: float, duration: float) -> None:
        """The slow part of recording an admitted success (``_n`` already counted)."""
        predicate = self.config.failure_on_result
        if predicate is not None:
            try:
                failed = bool(predicate(result))
            except Exception as err:
                _log.exception("predicate_failed", name=self.name, error=repr(err))
                failed = False
            if failed:
                self._tally_failure(now, duration)
                self._emit(EventKind.FAILURE, duration=duration)
                return
        self._tally_success(now, duration)
        self._emit(EventKind.SUCCESS, duration=duration)

    def _record_success(self, token: int, result: Any, now: float, duration: float) -> None:
        if token == ADMIT:
            self._n += 1
            if duration >= self._slow_thr or now >= self._roll_at:
                self._success_attention(result, now, duration)
            return
        if token > 0 and self.config.failure_on_result is not None:
            try:
                failed = bool(self.config.failure_on_result(result))
            except Exception:
                failed = False
            if failed:
                self.on_failure(token, now, duration)
                self._emit(EventKind.FAILURE, duration=duration)
                return
        self.on_success(token, now, duration)
        if token != ADMIT_UNRECORDED:
            self._emit(EventKind.SUCCESS, duration=duration)

    def _record_error(
        self, token: int, exc: BaseException, now: float, duration: float, timed_out: bool
    ) -> None:
        if timed_out:
            self.on_failure(token, now, duration, timed_out=True)
            self._emit(EventKind.FAILURE, duration=duration, exception=exc, timed_out=True)
        elif self._classify(exc):
            self.on_failure(token, now, duration, open_for=self._hint(exc))
            self._emit(EventKind.FAILURE, duration=duration, exception=exc)
        else:
            self.on_ignored(token)
            self._emit(EventKind.IGNORED, duration=duration, exception=exc)

    def _rejection(self, now: float) -> CircuitBreakerException:
        retry = self.retry_after(now)
        exc = CircuitBreakerException(self.name, self._state, retry)
        if self._listeners is not None:
            self._emit(EventKind.REJECTED, exception=exc, retry_after=retry)
        return exc

    def _reject_now(self, now: float) -> CircuitBreakerException:
        """The rejection of a call while ``now < _reject_until`` (no admission needed)."""
        # core.reject(), inlined; BaseException.__new__ fills ``args`` without running
        # the Python __init__ (the cheapest way to make the exception)
        self._rejected += 1
        state = self._state
        exc: CircuitBreakerException = _new_exception(
            CircuitBreakerException,
            self.name,
            state,
            None if state is CircuitState.FORCED_OPEN else self._open_until - now,
            None,
        )
        if self._listeners is not None:
            self._emit(EventKind.REJECTED, exception=exc, retry_after=exc.retry_after)
        return exc

    def _timeout_error(self) -> TimeoutError:
        return TimeoutError(
            f"call through circuit {self.name!r} exceeded request_timeout={self._rt}s"
        )

    def _settle_timeout(self, task: asyncio.Task[object] | None, t0: float) -> bool | None:
        """After a registered call ended: was it cancelled by our watchdog? Returns True
        (ours, and no other cancellation pending), False (ours, but another one is
        pending), None (not ours)."""
        if task is None:
            return None
        expired = self._expired.get(task)
        if expired is None or expired[0] is not t0:
            return None
        del self._expired[task]
        return task.uncancel() <= expired[1]

    async def _failed(
        self,
        exc: BaseException,
        token: int,
        t0: float,
        task: asyncio.Task[object] | None,
        fallback: Callable[..., Any] | None,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """An admitted async call raised ``exc``: record, then fallback or re-raise.
        ``task`` is given when the call is registered with the watchdog."""
        t1 = self._mono()
        timed_out = False
        if task is not None:
            inflight = self._inflight
            if inflight.get(task) is t0:
                del inflight[task]
            else:  # the watchdog fired for this call
                ours = self._settle_timeout(task, t0)
                if ours is not None:
                    timed_out = True
                    if ours and isinstance(exc, _CANCELLED):
                        err = self._timeout_error()
                        err.__cause__ = exc
                        exc = err
        if not timed_out and isinstance(exc, _CANCELLED):
            self.on_cancelled(token, t1, t1 - t0)
            self._release_trial(token)
            raise exc
        self._record_error(token, exc, t1, t1 - t0, timed_out)
        self._release_trial(token)
        if fallback is not None and isinstance(exc, Exception):
            return await run_fallback(fallback, exc, args, kwargs)
        raise exc

    def _release_trial(self, token: int) -> None:
        if token > 0 and self._fleet is not None:
            self._fleet.release_trial(self, token)

    async def _admit(self, now: float) -> int:
        """Admission outside the fast path (half-open trials take a fleet permit)."""
        token = self.acquire(now)
        if token > 0 and self._fleet is not None:
            try:
                granted = await self._fleet.acquire_trial(self, token)
            except Exception as exc:  # fail open: the local permit stands
                _log.warning("trial_permit_unavailable", name=self.name, error=repr(exc))
                granted = True
            if not granted:
                self.release(token)
                self._rejected += 1
                return REJECT
        return token

    # --- the general (slow) async path ----------------------------------------------

    async def _guarded(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        fallback: Callable[..., Any] | None,
    ) -> Any:
        task = self._task_here()
        if self._auto_connect:
            self._start_auto_connect()
        now = self._mono()
        token = await self._admit(now)
        if token == REJECT:
            exc = self._rejection(now)
            if fallback is not None:
                return await run_fallback(fallback, exc, args, kwargs)
            raise exc
        registered = False
        t0 = self._mono()
        if self._rt is not None and task is not None:
            registered = self._inflight.setdefault(task, t0) is t0
        awaited = False
        try:
            result = func(*args, **kwargs)
            if type(result) is CoroutineType or _isawaitable(result):
                awaited = True
                result = await result
        except BaseException as exc:
            return await self._failed(
                exc, token, t0, task if registered else None, fallback, args, kwargs
            )
        t1 = self._mono()
        timed_out = False
        if registered and task is not None:
            inflight = self._inflight
            if inflight.get(task) is t0:
                del inflight[task]
            else:  # the watchdog fired, but the call swallowed the cancellation
                timed_out = self._settle_timeout(task, t0) is not None
        if not awaited and self._rt is not None and t1 - t0 > self._rt:
            timed_out = True  # a synchronous call cannot be interrupted: count it late
        if timed_out:
            self._record_error(token, self._timeout_error(), t1, t1 - t0, True)
        else:
            self._record_success(token, result, t1, t1 - t0)
        self._release_trial(token)
        return result

    # --- call() and async with ---------------------------------------------------------

    async def call(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Call ``func(*args, **kwargs)`` (sync or async) through the breaker; raises
        :class:`CircuitBreakerException` when not permitted (or returns the fallback's
        result when a ``fallback_function`` is set)."""
        if self._fast:
            mono = self._mono
            if self._rt is None:
                t0 = mono()
                try:
                    result = func(*args, **kwargs)
                    if type(result) is CoroutineType or _isawaitable(result):
                        result = await result
                except BaseException as exc:
                    return await self._failed(
                        exc, ADMIT, t0, None, self.fallback_function, args, kwargs
                    )
                t1 = mono()
                self._n += 1
                if t1 - t0 >= self._slow_thr or t1 >= self._roll_at:
                    self._success_attention(result, t1, t1 - t0)
                return result
            # the task, if this thread runs the loop the breaker is bound to
            task = current_task_of(self._loop) if self._thread == _get_ident() else None
            if task is not None:
                t0 = mono()
                inflight = self._inflight
                if inflight.setdefault(task, t0) is t0:
                    try:
                        result = func(*args, **kwargs)
                        if type(result) is CoroutineType or _isawaitable(result):
                            result = await result
                    except BaseException as exc:
                        return await self._failed(
                            exc, ADMIT, t0, task, self.fallback_function, args, kwargs
                        )
                    t1 = mono()
                    try:
                        del inflight[task]
                    except KeyError:  # the watchdog fired but the call returned anyway
                        self._settle_timeout(task, t0)
                        self._record_error(ADMIT, self._timeout_error(), t1, t1 - t0, True)
                        return result
                    if t1 - t0 > self._rt:  # a synchronous call that overran
                        self._record_error(ADMIT, self._timeout_error(), t1, t1 - t0, True)
                        return result
                    self._n += 1
                    if t1 - t0 >= self._slow_thr or t1 >= self._roll_at:
                        self._success_attention(result, t1, t1 - t0)
                    return result
        else:
            now = self._mono()
            if now < self._reject_until:  # open and not yet due: reject without asking
                fallback = self.fallback_function
                if fallback is None:  # raised unbound: no frame -> exception cycle
                    raise self._reject_now(now)
                return await run_fallback(fallback, self._reject_now(now), args, kwargs)
        return await self._guarded(func, args, kwargs, self.fallback_function)

    def __aenter__(self) -> Awaitable[CircuitBreaker]:
        # A plain method returning an already-completed future: no coroutine per entry.
        if self._ctx_single:  # closed, no request timeout, no slow entries open
            if self._ctx_t0 is None:  # and no overlapping entry: use the one slot
                self._ctx_t0 = self._mono()
                return self._entered or self._make_entered()
        elif self._fast:
            if not self._ctx_slow_n and self._rt is not None:
                task = current_task_of(self._loop) if self._thread == _get_ident() else None
                if task is not None:
                    t0 = self._mono()
                    if self._inflight.setdefault(task, t0) is t0:
                        return self._entered or self._make_entered()
        else:
            now = self._mono()
            if now < self._reject_until:
                raise self._reject_now(now)
        return self._enter_slow()

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        if exc_type is None and not self._ctx_slow_n:
            t0 = self._ctx_t0  # only ever set without a request timeout
            if t0 is not None:
                self._ctx_t0 = None
                t1 = self._mono()
                self._n += 1
                if t1 - t0 >= self._slow_thr or t1 >= self._roll_at:
                    self._success_attention(None, t1, t1 - t0)
                return DONE
            if self._rt is not None and self._thread == _get_ident():
                t0 = self._inflight.pop(current_task_of(self._loop), None)  # type: ignore[arg-type]
                if t0 is not None:
                    t1 = self._mono()
                    self._n += 1
                    if t1 - t0 >= self._slow_thr or t1 >= self._roll_at:
                        self._success_attention(None, t1, t1 - t0)
                    return DONE
        return self._exit_slow(exc)

    def _make_entered(self) -> Awaitable[CircuitBreaker]:
        self._entered = completed(self)
        return self._entered

    async def _enter_slow(self) -> CircuitBreaker:
        """Entering ``async with`` off the fast path. Entries that do not fit the fast
        path's single slot (or the task's watchdog registration) go on a per-task stack;
        while any is open, every exit checks the stack first (entries nest per task)."""
        task = self._task_here()
        if task is None:
            raise LifecycleError("async with circuit_breaker: must run inside an asyncio task")
        if self._auto_connect:
            self._start_auto_connect()
        now = self._mono()
        token = await self._admit(now)
        if token == REJECT:
            raise self._rejection(now)
        t0 = self._mono()
        registered = False
        if token == ADMIT and not self._ctx_slow_n:  # an ordinary entry after all
            if self._rt is None:
                if self._ctx_t0 is None:
                    self._ctx_t0 = t0
                    return self
            elif self._inflight.setdefault(task, t0) is t0:
                return self
        elif self._rt is not None:
            registered = self._inflight.setdefault(task, t0) is t0
        if self._ctx_slow is None:
            self._ctx_slow = {}
        self._ctx_slow.setdefault(task, []).append((token, t0, registered))
        self._ctx_slow_n += 1
        self._update_fast()
        return self

    async def _exit_slow(self, exc: BaseException | None) -> None:
        task = self._task_here()
        stack = self._ctx_slow.get(task) if self._ctx_slow and task is not None else None
        if stack:
            token, t0, registered = stack.pop()
            if not stack:
                del self._ctx_slow[task]  # type: ignore[union-attr, arg-type]
            self._ctx_slow_n -= 1
            self._update_fast()
            if registered and task is not None:
                if self._inflight.get(task) is t0:
                    del self._inflight[task]
                else:
                    await self._exit_error(token, t0, task, exc, expired=True)
                    return
            if exc is None:
                t1 = self._mono()
                self._record_success(token, None, t1, t1 - t0)
                self._release_trial(token)
                return
            await self._exit_error(token, t0, task, exc, registered=registered)
            return
        # the task's ordinary entry (single slot, or its watchdog registration)
        if self._rt is None:
            start = self._ctx_t0
            if start is None:
                return  # an entry made before a loop change: nothing to record
            self._ctx_t0 = None
            if exc is None:
                t1 = self._mono()
                self._record_success(ADMIT, None, t1, t1 - start)
            else:
                await self._exit_error(ADMIT, start, task, exc, registered=False)
            return
        if task is None:
            return
        t0_reg = self._inflight.pop(task, None)
        if t0_reg is not None:
            if exc is None:
                t1 = self._mono()
                self._record_success(ADMIT, None, t1, t1 - t0_reg)
            else:
                await self._exit_error(ADMIT, t0_reg, task, exc)
            return
        entry = self._expired.get(task)
        if entry is not None:  # the watchdog removed the entry
            await self._exit_error(ADMIT, entry[0], task, exc, expired=True)

    async def _exit_error(
        self,
        token: int,
        t0: float,
        task: asyncio.Task[object] | None,
        exc: BaseException | None,
        *,
        expired: bool = False,
        registered: bool = True,
    ) -> None:
        """An ``async with`` body ended with ``exc``, or its watchdog entry expired.
        ``registered``: the entry had its own watchdog registration (a nested entry
        sharing its task's registration leaves a timeout to the outer one)."""
        t1 = self._mono()
        if expired or isinstance(exc, _CANCELLED):
            if task is None:
                task = self._task_here()
            ours = self._settle_timeout(task, t0) if registered or expired else None
            if ours is not None:  # our watchdog fired for this entry
                err = self._timeout_error()
                self._record_error(token, err, t1, t1 - t0, True)
                self._release_trial(token)
                if ours and isinstance(exc, _CANCELLED):
                    raise err from exc
                return  # another cancellation is pending, or the body swallowed ours
            if isinstance(exc, _CANCELLED):
                self.on_cancelled(token, t1, t1 - t0)
                self._release_trial(token)
                return
        if exc is None:
            return
        self._record_error(token, exc, t1, t1 - t0, False)
        self._release_trial(token)

    # --- synchronous path ---------------------------------------------------------------

    def _guarded_sync(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        fallback: Callable[..., Any] | None,
    ) -> Any:
        now = self._mono()
        if self._auto_connect:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                self._start_auto_connect()
        token = self.acquire(now)  # sync calls: half-open permits are per process
        if token == REJECT:
            exc = self._rejection(now)
            if fallback is not None:
                return run_fallback_sync(fallback, exc, args, kwargs)
            raise exc
        t0 = self._mono()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            t1 = self._mono()
            if isinstance(exc, Exception):
                self._record_error(token, exc, t1, t1 - t0, False)
                if fallback is not None:
                    return run_fallback_sync(fallback, exc, args, kwargs)
            else:
                self.on_cancelled(token, t1, t1 - t0)
            raise
        t1 = self._mono()
        if self._rt is not None and t1 - t0 > self._rt:
            self._record_error(token, self._timeout_error(), t1, t1 - t0, True)
        else:
            self._record_success(token, result, t1, t1 - t0)
        return result

    def call_sync(self, func: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Call a synchronous ``func`` through the breaker (no request-timeout
        interruption: a call longer than ``request_timeout`` counts as failed)."""
        return cast(R, self._guarded_sync(func, args, kwargs, self.fallback_function))

    # --- decorator ---------------------------------------------------------------------

    def decorate(
        self, func: Callable[P, R], fallback: Callable[..., Any] | None = None
    ) -> Callable[P, R]:
        """Wrap ``func`` (async or sync) so every call goes through this breaker;
        ``fallback`` (default: the breaker's ``fallback_function``)."""
        if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
            raise ValidationError(
                "func", func, "a function or coroutine function (generators are not supported)"
            )
        if fallback is None:
            fallback = self.fallback_function
        if inspect.iscoroutinefunction(func):
            wrapper: Callable[..., Any] = (
                async_wrapper_timed(self, func, fallback)
                if self._rt is not None
                else async_wrapper(self, func, fallback)
            )
        else:
            wrapper = sync_wrapper(self, func, fallback)
        wrapped = functools.wraps(func)(wrapper)
        wrapped.circuit_breaker = self  # type: ignore[attr-defined]
        return cast(Callable[P, R], wrapped)

    __call__ = decorate

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, state={self._state.value!r}, "
            f"shared={self._fleet is not None})"
        )


class _SystemClockCircuitBreaker(CircuitBreaker):
    """A :class:`CircuitBreaker` on the system clock (the usual case): the same object
    layout, with the ``async with`` fast paths reading :func:`time.monotonic` as a
    global instead of through the instance — the one place where that saving is what
    separates the protocol's own cost from the target. Behaviour is identical."""

    __slots__ = ()

    def __aenter__(self) -> Awaitable[CircuitBreaker]:
        if self._ctx_single:
            if self._ctx_t0 is None:
                self._ctx_t0 = _monotonic()
                return self._entered or self._make_entered()
        elif self._fast and self._rt is not None and not self._ctx_slow_n:
            task = current_task_of(self._loop) if self._thread == _get_ident() else None
            if task is not None:
                t0 = _monotonic()
                if self._inflight.setdefault(task, t0) is t0:
                    return self._entered or self._make_entered()
        return CircuitBreaker.__aenter__(self)

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        if exc_type is None and not self._ctx_slow_n:
            t0 = self._ctx_t0
            if t0 is not None:
                self._ctx_t0 = None
            elif self._rt is not None and self._thread == _get_ident():
                t0 = self._inflight.pop(current_task_of(self._loop), None)  # type: ignore[arg-type]
                if t0 is None:
                    return CircuitBreaker.__aexit__(self, exc_type, exc, tb)
            else:
                return CircuitBreaker.__aexit__(self, exc_type, exc, tb)
            t1 = _monotonic()
            self._n += 1
            if t1 - t0 >= self._slow_thr or t1 >= self._roll_at:
                self._success_attention(None, t1, t1 - t0)
            return DONE
        return CircuitBreaker.__aexit__(self, exc_type, exc, tb)


_SystemClockCircuitBreaker.__name__ = "CircuitBreaker"
_SystemClockCircuitBreaker.__qualname__ = "CircuitBreaker"
_monotonic: Final = time.monotonic

_BACKGROUND: set[asyncio.Task[Any]] = set()


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


# --- registry --------------------------------------------------------------------------


class CircuitBreakerRegistry:
    """Breakers shared by name. Asking again for a name returns the same breaker; asking
    with a different config (or fallback, or Redis URL) is an error, never ignored."""

    def __init__(self, redis_url: str | Unset | None = UNSET, *, clock: Clock | None = None):
        self._redis_url = redis_url
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    @property
    def breakers(self) -> Mapping[str, CircuitBreaker]:
        """Name -> breaker (read-only view)."""
        from types import MappingProxyType

        return MappingProxyType(self._breakers)

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __len__(self) -> int:
        return len(self._breakers)

    def get(self, name: str) -> CircuitBreaker | None:
        """The breaker called ``name``, or None."""
        return self._breakers.get(name)

    def get_or_create(
        self,
        name: str,
        config: CircuitBreakerConfig | None = None,
        fallback_function: Callable[..., Any] | None = None,
        *,
        redis_url: str | Unset | None = UNSET,
    ) -> CircuitBreaker:
        """The breaker called ``name``, created (not yet connected) if new."""
        existing = self._breakers.get(name)
        if existing is None:
            url = self._redis_url if isinstance(redis_url, Unset) else redis_url
            cb = CircuitBreaker(name, config, url, fallback_function, clock=self._clock)
            self._breakers[name] = cb
            return cb
        if config is not None and config != existing.config:
            raise ValidationError(
                "config",
                config,
                f"the config circuit breaker {name!r} already has ({existing.config!r}); "
                "one name, one config",
            )
        if fallback_function is not None and fallback_function is not existing.fallback_function:
            raise ValidationError(
                "fallback_function",
                fallback_function,
                f"the fallback circuit breaker {name!r} already has "
                f"({existing.fallback_function!r})",
            )
        if not isinstance(redis_url, Unset) and resolve_redis_url(redis_url) != existing.redis_url:
            raise ValidationError(
                "redis_url", redis_url, f"the Redis URL circuit breaker {name!r} already uses"
            )
        return existing

    async def get_or_create_circuit_breaker(
        self,
        name: str,
        config: CircuitBreakerConfig | None = None,
        fallback_function: Callable[..., Any] | None = None,
    ) -> CircuitBreaker:
        """Like :meth:`get_or_create`, and connected to the shared state."""
        cb = self.get_or_create(name, config, fallback_function)
        await cb._connect_if_needed()
        return cb

    def get_all_metrics(self) -> dict[str, dict[str, Any]]:
        """Name -> ``get_metrics()`` of every breaker."""
        return {name: cb.get_metrics() for name, cb in self._breakers.items()}

    async def reset_all(self) -> None:
        """Reset every breaker (fleet-wide for shared ones)."""
        for cb in list(self._breakers.values()):
            await cb.reset()

    async def close(self) -> None:
        """Disconnect every breaker from the shared state."""
        for cb in list(self._breakers.values()):
            await cb.close()

    shutdown = close


_DEFAULT_REGISTRY: CircuitBreakerRegistry | None = None


def get_default_registry() -> CircuitBreakerRegistry:
    """The process-wide registry behind :func:`get_circuit_breaker` and the decorator."""
    global _DEFAULT_REGISTRY
    if _DEFAULT_REGISTRY is None:
        _DEFAULT_REGISTRY = CircuitBreakerRegistry()
    return _DEFAULT_REGISTRY


async def get_circuit_breaker(
    name: str,
    config: CircuitBreakerConfig | None = None,
    fallback_function: Callable[..., Any] | None = None,
    redis_url: str | Unset | None = UNSET,
) -> CircuitBreaker:
    """The default registry's breaker called ``name``, connected to shared state."""
    cb = get_default_registry().get_or_create(name, config, fallback_function, redis_url=redis_url)
    await cb._connect_if_needed()
    return cb


def circuit_breaker(
    name: str,
    config: CircuitBreakerConfig | None = None,
    fallback_function: Callable[..., Any] | None = None,
    redis_url: str | Unset | None = UNSET,
    *,
    registry: CircuitBreakerRegistry | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: calls of the decorated function (async or sync) go through the breaker
    ``name`` of the default registry (or ``registry``). ``fallback_function`` applies to
    this function's calls (it gets their arguments). The breaker connects to shared
    state in the background on first use."""
    reg = registry if registry is not None else get_default_registry()
    cb = reg.get_or_create(name, config, redis_url=redis_url)

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        return cb.decorate(func, fallback_function)

    return decorate
