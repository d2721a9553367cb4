"""What a circuit breaker does off its fast paths: events, outcomes, admission.

:class:`BreakerRecording` adds to the shell's state
(:mod:`~backend_services.infrastructure.cb.shell`) what every call path shares:
listeners and events (a state transition is logged, sent to the listeners and
published to the fleet), classifying and recording a call's outcome (failure
predicates, ``retry_after`` hints, request timeouts fired by the watchdog, fallbacks),
admission off the fast path (half-open trials take a fleet permit) and the general
guarded paths, async and sync, that the fast paths of
:mod:`~backend_services.infrastructure.cb.breaker` divert to.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from types import CoroutineType
from typing import Any, Final

from ...breaker.core import ADMIT, ADMIT_UNRECORDED, REJECT
from ...breaker.events import CircuitBreakerEvent, EventKind
from ...breaker.state import CircuitState, Trigger
from ...errors import CircuitBreakerException, ValidationError
from ...log import get_logger
from .notify import Listener, Listeners, run_fallback, run_fallback_sync
from .shell import BreakerShell

__all__ = ["BreakerRecording"]

_log = get_logger("circuit_breaker")

_CANCELLED: Final = asyncio.CancelledError
_TRANSITION: Final = EventKind.STATE_TRANSITION
_isawaitable: Final = inspect.isawaitable
_new_exception: Final = CircuitBreakerException.__new__


class BreakerRecording(BreakerShell):
    """Events, outcome recording, admission and the general guarded paths of a
    :class:`~backend_services.infrastructure.circuit_breaker.CircuitBreaker` (see the
    module docstring)."""

    __slots__ = ()

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
        # counted here, not through the core (no call on this path); BaseException.__new__
        # fills ``args`` without running the Python __init__ (the cheapest way to make it)
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

    # --- the general synchronous path ------------------------------------------------

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
