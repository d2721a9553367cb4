"""The :class:`CircuitBreaker` class: its call paths.

``call()``, ``async with`` and ``call_sync()`` are written out here; the decorator's
wrappers, near-copies of ``call()`` specialised when they are made, are in
:mod:`~backend_services.infrastructure.cb.wrappers`. While the breaker is closed a call
stays on its fast path: a flag test, two clock reads, an integer increment and two
comparisons (plus one dict store and delete when a request timeout is set). Anything
else goes to the general paths of :mod:`~backend_services.infrastructure.cb.recording`.
The fast paths deliberately repeat themselves instead of calling shared helpers: every
function call and attribute lookup saved there is measured by
``benchmarks/bench_circuit_breaker.py``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
import threading
import time
from collections.abc import Awaitable, Callable
from types import CoroutineType, TracebackType
from typing import Any, Final, ParamSpec, TypeVar, cast

from ...breaker.config import CircuitBreakerConfig
from ...breaker.core import ADMIT, REJECT
from ...clock import Clock, SystemClock
from ...errors import LifecycleError, ValidationError
from ...settings import UNSET, Unset
from ...store.protocol import Store
from .awaitables import DONE, completed
from .notify import run_fallback
from .recording import BreakerRecording
from .watchdog import current_task_of
from .wrappers import async_wrapper, async_wrapper_timed, sync_wrapper

__all__ = ["CircuitBreaker"]

P = ParamSpec("P")
R = TypeVar("R")

_CANCELLED: Final = asyncio.CancelledError
_isawaitable: Final = inspect.isawaitable
_get_ident: Final = threading.get_ident


class CircuitBreaker(BreakerRecording):
    """A circuit breaker named ``name`` (see
    :mod:`backend_services.infrastructure.circuit_breaker`).

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

    __slots__ = ()

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
        super().__init__(
            name, config, redis_url, fallback_function, clock=clock, rng=rng, store=store
        )
        if type(self) is CircuitBreaker and isinstance(self._clock, SystemClock):
            # same layout, `async with` reading time.monotonic as a global (see below)
            self.__class__ = _SystemClockCircuitBreaker

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
