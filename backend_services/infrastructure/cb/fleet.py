"""Sharing breaker *state* across processes through the store.

Counting stays per process; transitions are fleet-wide. For each store (one per Redis
URL, clock and event loop) a process keeps one :class:`FleetLink`, shared by all its
breakers. Nothing here runs on a call's path: a transition only marks the breaker
dirty (:meth:`FleetLink.publish`, no I/O) and a supervised writer task does the rest.

A breaker attaching (e.g. after a restart) starts from the shared record, and its name
is added to ``cb:names`` (once per link; again with its first state write if that
failed), so it is listed fleet-wide even if it never changes state.

While Redis is down the :class:`~backend_services.store.failover.FailoverStore` serves
from memory: every process decides locally, and the journal written meanwhile is
reconciled when Redis returns (then the follower resyncs). Half-open trial permits are
leases while Redis answers, and per process otherwise.

**Where the pieces live.** This module holds :class:`FleetLink` itself (its lifecycle,
the breakers joining and leaving it, half-open trial permits) and :func:`attach` (one
link per store, clock, loop and process); the link is built in layers:
:mod:`~backend_services.infrastructure.cb.fleet_reading` (the link's state; adopting
shared records from the change feed and on resyncs),
:mod:`~backend_services.infrastructure.cb.fleet_writing` (the background writer:
compare-and-set transitions, conflicts) and
:mod:`~backend_services.infrastructure.cb.fleet_layout` (the store layout: keys, the
change feed, the ``cb:names`` index; its names are re-exported here).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import weakref
from typing import TYPE_CHECKING, Any, Final

from ...breaker.state import CircuitState, Trigger
from ...clock import Clock
from ...log import get_logger
from ...store.factory import open_store
from ...store.feed import FeedFollower
from ...store.protocol import Store
from ...tasks import Backoff, cancel_and_wait
from .detached import keep_until_done
from .fleet_layout import EVENTS_STREAM, NAMES_KEY, state_key, trial_lease
from .fleet_writing import FLUSH_TIMEOUT as FLUSH_TIMEOUT
from .fleet_writing import FleetWriting

if TYPE_CHECKING:
    from .shell import BreakerShell

__all__ = ["EVENTS_STREAM", "NAMES_KEY", "FleetLink", "attach", "state_key", "trial_lease"]

_log = get_logger("circuit_breaker")

PERMIT_TIMEOUT: Final = 1.0
"""Seconds to wait for the store to grant a trial permit before deciding locally."""
CLOSE_TIMEOUT: Final = 2.0
"""Seconds :meth:`FleetLink.close` waits for its background tasks to end."""


class FleetLink(FleetWriting):
    """One process's connection to the shared breaker state in one store."""

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._wake = asyncio.Event()
        if self.owns_store:
            await self.store.initialize()
        try:
            position = await self.store.feed_position(EVENTS_STREAM)
        except Exception as exc:  # fail open: follow from wherever the follower starts
            _log.warning("feed_position_failed", error=repr(exc))
            position = None
        self._follower = FeedFollower(
            self.store,
            EVENTS_STREAM,
            on_events=self._on_events,
            on_resync=self._on_resync,
            clock=self.clock,
            start=position,
            supervisor=self.supervisor,
            block=1.0,
        )
        self._follower.start()
        self._writer_task = self.supervisor.spawn(
            "writer", self._writer, backoff=Backoff(0.05, 2.0)
        )

    async def ready(self) -> None:
        assert self._started is not None
        await asyncio.shield(self._started)

    async def close(self) -> None:
        for name in list(self.pending):
            await self._wait_written(name)
        await self._stop_tasks()
        closer = asyncio.ensure_future(self.supervisor.close())
        done, _ = await asyncio.wait({closer}, timeout=CLOSE_TIMEOUT)
        if not done:
            _log.warning("fleet_close_slow", waited=CLOSE_TIMEOUT, tasks=self.supervisor.names)

    async def _stop_tasks(self) -> None:
        """End the follower and the writer, then close the store if the link owns it."""
        self._closing = True
        await cancel_and_wait(self._own_tasks(), every=0.1, attempts=int(CLOSE_TIMEOUT / 0.1))
        if self.owns_store:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.close(), CLOSE_TIMEOUT)

    def _own_tasks(self) -> list[asyncio.Task[Any]]:
        current = asyncio.current_task()
        tasks = [getattr(self._follower, "_task", None), self._writer_task]
        return [t for t in tasks if t is not None and t is not current and not t.done()]

    async def _writer(self) -> None:
        try:
            await self._write_loop()
        except asyncio.CancelledError:
            # cancelled without close(): the loop is shutting down (a program that never
            # closed its breakers) — end the follower too and release the connections
            if not self._closing:
                await self._stop_tasks()
            raise

    @property
    def connected(self) -> bool:
        """True while the preferred backend (Redis) answers."""
        try:
            return self.store.status().connected
        except Exception:
            return False

    # --- breakers --------------------------------------------------------------------

    async def add(self, breaker: BreakerShell) -> None:
        """Follow ``breaker``'s name and start from the shared record."""
        self.breakers.setdefault(breaker.name, weakref.WeakSet()).add(breaker)
        self.users += 1
        await self._register(breaker.name)
        try:
            record = await self.store.get(state_key(breaker.name))
        except Exception as exc:  # fail open: decide locally until the store answers
            _log.warning("shared_state_read_failed", name=breaker.name, error=repr(exc))
            return
        if record is not None:
            self._apply(breaker, record, force=True)
        elif breaker._state is not CircuitState.CLOSED:
            self.publish(breaker, CircuitState.CLOSED, breaker._state, Trigger.MANUAL)

    async def _register(self, name: str) -> None:
        """Add ``name`` to the fleet's index of breakers (once per link)."""
        if name in self.registered:
            return
        try:
            await self.store.set_add(NAMES_KEY, name)
        except Exception as exc:  # fail open: the first state write registers it
            _log.warning("breaker_register_failed", name=name, error=repr(exc))
            return
        self.registered.add(name)

    async def detach(self, breaker: BreakerShell) -> None:
        """Stop sharing ``breaker`` (its pending write is finished first)."""
        await self._wait_written(breaker.name)
        group = self.breakers.get(breaker.name)
        if group is not None:
            group.discard(breaker)
            if not group:
                del self.breakers[breaker.name]
        self.users -= 1
        if self.users <= 0:
            if _LINKS.get(self.key) is self:
                del _LINKS[self.key]
            await self.close()

    # --- half-open permits -----------------------------------------------------------

    async def acquire_trial(self, breaker: BreakerShell, token: int) -> bool:
        """Take one of the fleet's ``half_open_max_calls`` trial permits (a lease that
        expires after the trial deadline). Per process while Redis does not answer."""
        if not self.connected:
            return True
        owner = f"{self.process_id}:{token}"
        ttl = breaker.config.effective_trial_timeout
        for slot in range(breaker.config.half_open_max_calls):
            granted = await asyncio.wait_for(
                self.store.acquire_lease(trial_lease(breaker.name, slot), owner, ttl),
                PERMIT_TIMEOUT,
            )
            if granted:
                self.trial_slots[(breaker.name, token)] = slot
                return True
        return False

    def release_trial(self, breaker: BreakerShell, token: int) -> None:
        """Give the trial permit back (in the background)."""
        slot = self.trial_slots.pop((breaker.name, token), None)
        if slot is None or self._loop is None:
            return
        owner = f"{self.process_id}:{token}"
        name = trial_lease(breaker.name, slot)

        async def release() -> None:
            try:
                await self.store.release_lease(name, owner)
            except Exception as exc:  # it expires on its own
                _log.debug("trial_release_failed", lease=name, error=repr(exc))

        try:
            task = self._loop.create_task(release())
        except RuntimeError:
            return
        keep_until_done(task)


_LINKS: dict[Any, FleetLink] = {}
_SEQ = itertools.count(1)


async def attach(
    breaker: BreakerShell,
    redis_url: str | None,
    clock: Clock,
    *,
    store: Store | None = None,
    process_id: str,
) -> FleetLink:
    """Connect ``breaker`` to the shared state of ``store`` (or of ``redis_url``)."""
    loop = asyncio.get_running_loop()
    key = (id(store) if store is not None else redis_url, id(clock), id(loop), process_id)
    link = _LINKS.get(key)
    if link is None:
        owns = store is None
        link = FleetLink(
            store if store is not None else open_store(redis_url, clock=clock),
            clock,
            owns_store=owns,
            process_id=f"{process_id}/{next(_SEQ)}",
            key=key,
        )
        _LINKS[key] = link
        link._started = loop.create_task(link.start(), name="circuit_breaker.fleet:start")
    try:
        await link.ready()
    except BaseException:
        if _LINKS.get(key) is link and link.users == 0:
            del _LINKS[key]
            await link.supervisor.close()
        raise
    await link.add(breaker)
    return link
