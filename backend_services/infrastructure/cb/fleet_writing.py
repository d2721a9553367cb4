"""Writing a breaker's transitions to the shared state, in the background.

Nothing here runs on a call's path: a transition only marks the breaker dirty
(:meth:`FleetWriting.publish`, no I/O) and a supervised writer task does the rest. The
writer publishes the breaker's *current* state when it differs from the last shared
state it knows, as one atomic commit (CAS on the record's version + feed event). When
another process got there first (conflict), the shared state wins and is adopted
locally — so two processes opening at once end with one opening, not two — except for
manual changes (reset, forced states, ``open_for``), which are re-applied on top. A
breaker's first state write also adds its name to ``cb:names`` if registering it when
it attached failed.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import TYPE_CHECKING, Any, Final

from ...breaker.state import CircuitState, Trigger
from ...errors import ConflictError
from ...log import get_logger
from ...store.protocol import Append, Operation, Put, SetAdd
from ...tasks import Backoff, raise_if_cancelling
from .fleet_layout import EVENTS_STREAM, NAMES_KEY, state_key
from .fleet_reading import FleetReading

if TYPE_CHECKING:
    from .shell import BreakerShell

__all__ = ["FLUSH_TIMEOUT", "FleetWriting"]

_log = get_logger("circuit_breaker")

FLUSH_TIMEOUT: Final = 5.0
"""Seconds :meth:`FleetWriting.flush` waits for a write before giving up (logged)."""
_MAX_ATTEMPTS: Final = 5


class FleetWriting(FleetReading):
    """The writing side of a fleet link (see the module docstring)."""

    def publish(
        self, breaker: BreakerShell, old: CircuitState, new: CircuitState, trigger: Trigger
    ) -> None:
        """``breaker`` changed state locally: share it (in the background)."""
        previous = self.pending.get(breaker.name)
        manual = trigger is Trigger.MANUAL or (previous is not None and previous[1])
        self.pending[breaker.name] = (weakref.ref(breaker), manual)
        self._poke()

    def _poke(self) -> None:
        wake = self._wake
        if wake is None:
            return
        if threading.get_ident() == self._thread:
            wake.set()
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(wake.set)

    async def flush(self, breaker: BreakerShell) -> None:
        """Wait (bounded) until ``breaker``'s latest transition is written."""
        await self._wait_written(breaker.name)

    async def _wait_written(self, name: str) -> None:
        if name not in self.pending and name not in self.syncing:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(name, []).append(future)
        self._poke()
        try:
            await asyncio.wait_for(asyncio.shield(future), FLUSH_TIMEOUT)
        except TimeoutError:
            _log.warning("shared_state_write_slow", name=name, waited=FLUSH_TIMEOUT)

    async def _write_loop(self) -> None:
        assert self._wake is not None
        backoff = Backoff(initial=0.05, maximum=2.0)
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                raise_if_cancelling()  # one swallowed further down (wait_for on 3.11)
                name = next(iter(self.pending))
                ref, manual = self.pending.pop(name)
                breaker = ref()
                if breaker is None:
                    self._resolve(name)
                    continue
                self.syncing.add(name)
                try:
                    await self._sync(breaker, manual)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    delay = backoff.next_delay()
                    _log.warning(
                        "shared_state_write_failed",
                        name=name,
                        error=repr(exc),
                        retry_in=round(delay, 3),
                    )
                    if name not in self.pending:
                        self.pending[name] = (ref, manual)
                    self.syncing.discard(name)
                    await self.clock.sleep(delay)
                    continue
                backoff.reset()
                self.syncing.discard(name)
                if name not in self.pending:
                    self._resolve(name)

    def _resolve(self, name: str) -> None:
        for future in self.waiters.pop(name, ()):
            if not future.done():
                future.set_result(None)

    async def _sync(self, breaker: BreakerShell, manual: bool) -> None:
        key = state_key(breaker.name)
        for _ in range(_MAX_ATTEMPTS):
            state = breaker._state
            if state is breaker._fleet_base and not manual and state is not CircuitState.OPEN:
                return  # already what the fleet knows
            value = self._value(breaker)
            expect = breaker._fleet_version
            event = {"name": breaker.name, "version": expect + 1, **value}
            ops: list[Operation] = [
                Put(key, value, expect_version=expect),
                Append(EVENTS_STREAM, event),
            ]
            if breaker.name not in self.registered:
                ops.append(SetAdd(NAMES_KEY, (breaker.name,)))
            try:
                result = await self.store.commit(ops)
            except ConflictError:
                record = await self.store.get(key)
                if record is None:
                    breaker._fleet_version = 0
                    continue
                if manual or not self._apply(breaker, record, force=True):
                    breaker._fleet_version = record.version  # write on top of it
                    continue
                return
            breaker._fleet_version = result.versions.get(key, expect + 1)
            breaker._fleet_base = state
            self.registered.add(breaker.name)
            return
        _log.warning("shared_state_contended", name=breaker.name, attempts=_MAX_ATTEMPTS)

    def _value(self, breaker: BreakerShell) -> dict[str, Any]:
        state = breaker._state
        until: float | None = None
        if state is CircuitState.OPEN:
            until = self.clock.time() + (breaker._open_until - self.clock.monotonic())
        return {
            "state": state.value,
            "until": until,
            "openings": breaker._openings,
            "origin": self.process_id,
            "at": self.clock.time(),
        }
