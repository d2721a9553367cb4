"""The wrappers :meth:`CircuitBreaker.decorate` puts around a function.

Each is a closure specialised when it is made — async with a request timeout
(registered with the watchdog), async without one, and sync — so that every constant
of the fast path is a cell, not an attribute. They are near-copies of
:meth:`~backend_services.infrastructure.cb.breaker.CircuitBreaker.call`'s fast paths,
kept apart on purpose: a shared helper would cost a call per call (measured by
``benchmarks/bench_circuit_breaker.py``). Anything off the fast path goes to the
breaker's general paths.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from ...breaker.core import ADMIT
from .notify import run_fallback, run_fallback_sync
from .watchdog import current_task_of

if TYPE_CHECKING:
    from .breaker import CircuitBreaker

__all__ = ["async_wrapper", "async_wrapper_timed", "sync_wrapper"]

_INF: Final = float("inf")
_get_ident: Final = threading.get_ident


def async_wrapper_timed(
    b: CircuitBreaker, func: Callable[..., Awaitable[Any]], fallback: Callable[..., Any] | None
) -> Callable[..., Awaitable[Any]]:
    mono = b._mono
    slow_thr = b._slow_thr
    failed = b._failed
    guarded = b._guarded
    attention = b._success_attention
    get_ident = _get_ident

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if b._fast:
            # the task, if this thread runs the loop the breaker is bound to
            task = current_task_of(b._loop) if b._thread == get_ident() else None
            if task is not None:
                t0 = mono()
                inflight = b._inflight
                if inflight.setdefault(task, t0) is t0:
                    try:
                        result = await func(*args, **kwargs)
                    except BaseException as exc:
                        return await failed(exc, ADMIT, t0, task, fallback, args, kwargs)
                    t1 = mono()
                    try:
                        del inflight[task]
                    except KeyError:  # the watchdog fired but the call returned anyway
                        b._settle_timeout(task, t0)
                        b._record_error(ADMIT, b._timeout_error(), t1, t1 - t0, True)
                        return result
                    b._n += 1
                    if t1 - t0 >= slow_thr or t1 >= b._roll_at:
                        attention(result, t1, t1 - t0)
                    return result
        else:
            now = mono()
            if now < b._reject_until:  # open and not yet due: reject without asking
                if fallback is None:  # raised unbound: no frame -> exception cycle
                    raise b._reject_now(now)
                return await run_fallback(fallback, b._reject_now(now), args, kwargs)
        return await guarded(func, args, kwargs, fallback)

    return wrapper


def async_wrapper(
    b: CircuitBreaker, func: Callable[..., Awaitable[Any]], fallback: Callable[..., Any] | None
) -> Callable[..., Awaitable[Any]]:
    mono = b._mono
    slow_thr = b._slow_thr
    failed = b._failed
    guarded = b._guarded
    attention = b._success_attention

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if b._fast:
            t0 = mono()
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                return await failed(exc, ADMIT, t0, None, fallback, args, kwargs)
            t1 = mono()
            b._n += 1
            if t1 - t0 >= slow_thr or t1 >= b._roll_at:
                attention(result, t1, t1 - t0)
            return result
        now = mono()
        if now < b._reject_until:  # open and not yet due: reject without asking
            if fallback is None:  # raised unbound: no frame -> exception cycle
                raise b._reject_now(now)
            return await run_fallback(fallback, b._reject_now(now), args, kwargs)
        return await guarded(func, args, kwargs, fallback)

    return wrapper


def sync_wrapper(
    b: CircuitBreaker, func: Callable[..., Any], fallback: Callable[..., Any] | None
) -> Callable[..., Any]:
    mono = b._mono
    # synchronous calls cannot be interrupted: one longer than request_timeout is a failure
    limit = min(b._slow_thr, _INF if b._rt is None else b._rt)
    guarded = b._guarded_sync
    attention = b._success_attention

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if b._fast:
            t0 = mono()
            try:
                result = func(*args, **kwargs)
            except Exception as exc:
                t1 = mono()
                b._record_error(ADMIT, exc, t1, t1 - t0, False)
                if fallback is not None:
                    return run_fallback_sync(fallback, exc, args, kwargs)
                raise
            t1 = mono()
            if t1 - t0 >= limit or t1 >= b._roll_at:
                if b._rt is not None and t1 - t0 > b._rt:
                    b._record_error(ADMIT, b._timeout_error(), t1, t1 - t0, True)
                    return result
                b._n += 1
                attention(result, t1, t1 - t0)
                return result
            b._n += 1
            return result
        now = mono()
        if now < b._reject_until:  # open and not yet due: reject without asking
            if fallback is None:  # raised unbound: no frame -> exception cycle
                raise b._reject_now(now)
            return run_fallback_sync(fallback, b._reject_now(now), args, kwargs)
        return guarded(func, args, kwargs, fallback)

    return wrapper
