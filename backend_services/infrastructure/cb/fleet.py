"""Sharing breaker *state* across processes through the store.

Counting stays per process; transitions are fleet-wide. For each store (one per Redis
URL, clock and event loop) a process keeps one :class:`FleetLink`, shared by all its
breakers. Nothing here runs on a call's path: a transition only marks the breaker
dirty (:meth:`FleetLink.publish`, no I/O) and a supervised writer task does the rest.

Store layout::

    cb:state:<name>         {"state", "until" (wall time or null), "openings", "trigger",
                             "origin", "at"} — versioned; written by compare-and-set
    cb:events               change feed: {"name", "version", ...the record}
    cb:names                set of every breaker name that joined the fleet (the index
                            operators list breakers from; never trimmed like the feed)
    cb:trial:<name>:<slot>  half-open trial permits (leases; expire after the trial
                            deadline, so a dead process cannot hold one)

Writing: the writer publishes the breaker's *current* state when it differs from the
last shared state it knows, as one atomic commit (CAS on the record's version + feed
event). When another process got there first (conflict), the shared state wins and is
adopted locally — so two processes opening at once end with one opening, not two —
except for manual changes (reset, forced states, ``open_for``), which are re-applied on
top. Reading: a :class:`~backend_services.store.feed.FeedFollower` applies newer
versions as they are appended (a blocking read: well under 100 ms); on a resync (events
lost, or the store switched between Redis and memory) every breaker reloads its
record. A breaker attaching (e.g. after a restart) starts from the shared record, and its
name is added to ``cb:names`` (once per link; again with its first state write if that
failed), so it is listed fleet-wide even if it never changes state.

While Redis is down the :class:`~backend_services.store.failover.FailoverStore` serves
from memory: every process decides locally, and the journal written meanwhile is
reconciled when Redis returns (then the follower resyncs). Half-open trial permits are
leases while Redis answers, and per process otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from ...breaker.state import CircuitState, Trigger
from ...clock import Clock
from ...errors import ConflictError
from ...log import get_logger
from ...store.factory import open_store
from ...store.feed import FeedFollower
from ...store.protocol import Append, FeedEvent, Operation, Put, Record, SetAdd, Store
from ...tasks import Backoff, Supervisor

if TYPE_CHECKING:
    from ..circuit_breaker import CircuitBreaker

__all__ = ["EVENTS_STREAM", "NAMES_KEY", "FleetLink", "attach", "state_key", "trial_lease"]

_log = get_logger("circuit_breaker")

EVENTS_STREAM: Final = "cb:events"
NAMES_KEY: Final = "cb:names"
"""Set of the names of every breaker that joined the fleet."""
PERMIT_TIMEOUT: Final = 1.0
"""Seconds to wait for the store to grant a trial permit before deciding locally."""
FLUSH_TIMEOUT: Final = 5.0
"""Seconds :meth:`FleetLink.flush` waits for a write before giving up (logged)."""
CLOSE_TIMEOUT: Final = 2.0
"""Seconds :meth:`FleetLink.close` waits for its background tasks to end."""
_MAX_ATTEMPTS: Final = 5


def state_key(name: str) -> str:
    return f"cb:state:{name}"


def trial_lease(name: str, slot: int) -> str:
    return f"cb:trial:{name}:{slot}"


class FleetLink:
    """One process's connection to the shared breaker state in one store."""

    def __init__(
        self, store: Store, clock: Clock, *, owns_store: bool, process_id: str, key: Any
    ) -> None:
        self.store = store
        self.clock = clock
        self.owns_store = owns_store
        self.process_id = process_id
        self.key = key
        self.supervisor = Supervisor("circuit_breaker.fleet", clock=clock)
        self.breakers: dict[str, weakref.WeakSet[CircuitBreaker]] = {}
        self.pending: dict[str, tuple[weakref.ref[CircuitBreaker], bool]] = {}
        self.syncing: set[str] = set()
        self.waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.trial_slots: dict[tuple[str, int], int] = {}
        self.registered: set[str] = set()
        self.users = 0
        self.writes = 0
        self.conflicts = 0
        self.applied = 0
        self.errors = 0
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.get_ident()
        self._follower: FeedFollower | None = None
        self._started: asyncio.Task[None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._closing = False

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
        self._closing = True
        await _cancel_until_done(self._own_tasks(), CLOSE_TIMEOUT)
        if self.owns_store:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.close(), CLOSE_TIMEOUT)
        closer = asyncio.ensure_future(self.supervisor.close())
        done, _ = await asyncio.wait({closer}, timeout=CLOSE_TIMEOUT)
        if not done:
            _log.warning("fleet_close_slow", waited=CLOSE_TIMEOUT, tasks=self.supervisor.names)

    def _own_tasks(self) -> list[asyncio.Task[Any]]:
        current = asyncio.current_task()
        tasks = [getattr(self._follower, "_task", None), self._writer_task]
        return [t for t in tasks if t is not None and t is not current and not t.done()]

    @property
    def connected(self) -> bool:
        """True while the preferred backend (Redis) answers."""
        try:
            return self.store.status().connected
        except Exception:
            return False

    # --- breakers --------------------------------------------------------------------

    async def add(self, breaker: CircuitBreaker) -> None:
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

    async def detach(self, breaker: CircuitBreaker) -> None:
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

    # --- writing ---------------------------------------------------------------------

    def publish(
        self, breaker: CircuitBreaker, old: CircuitState, new: CircuitState, trigger: Trigger
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

    async def flush(self, breaker: CircuitBreaker) -> None:
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

    async def _writer(self) -> None:
        try:
            await self._write_loop()
        except asyncio.CancelledError:
            # cancelled without close(): the loop is shutting down (a program that never
            # closed its breakers) — end the follower too and release the connections
            if not self._closing:
                self._closing = True
                await _cancel_until_done(self._own_tasks(), CLOSE_TIMEOUT)
                if self.owns_store:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self.store.close(), CLOSE_TIMEOUT)
            raise

    async def _write_loop(self) -> None:
        assert self._wake is not None
        backoff = Backoff(initial=0.05, maximum=2.0)
        me = asyncio.current_task()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                if me is not None and me.cancelling():
                    # a cancellation swallowed further down (asyncio.wait_for on 3.11)
                    raise asyncio.CancelledError
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
                    self.errors += 1
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

    async def _sync(self, breaker: CircuitBreaker, manual: bool) -> None:
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
                self.conflicts += 1
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
            self.writes += 1
            return
        _log.warning("shared_state_contended", name=breaker.name, attempts=_MAX_ATTEMPTS)

    def _value(self, breaker: CircuitBreaker) -> dict[str, Any]:
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

    # --- reading ---------------------------------------------------------------------

    def _apply(self, breaker: CircuitBreaker, record: Record, *, force: bool = False) -> bool:
        """Adopt a shared record newer than what ``breaker`` knows (any, with ``force``).
        False if the record is malformed (it is then overwritten by the next write)."""
        if not force and record.version <= breaker._fleet_version:
            return True
        value = record.value
        try:
            if not isinstance(value, Mapping):
                raise TypeError("not an object")
            state = CircuitState(value["state"])
            until = value.get("until")
            openings = int(value.get("openings") or 0)
            if until is not None and not (isinstance(until, (int, float)) and math.isfinite(until)):
                raise TypeError("until is not a time")
        except (KeyError, TypeError, ValueError) as exc:
            _log.warning(
                "shared_state_corrupt", name=breaker.name, value=repr(value), error=str(exc)
            )
            return False
        if breaker.name in self.pending and not force:
            # our own decision is about to be written: its CAS (against the version we
            # know) fails and adopts this record then, unless it was a manual change
            return True
        breaker._fleet_version = record.version
        breaker._fleet_base = state
        now = self.clock.monotonic()
        open_until = now if until is None else now + (float(until) - self.clock.time())
        if breaker.apply_remote(state, now, open_until=open_until, openings=openings):
            self.applied += 1
        return True

    def _on_events(self, events: list[FeedEvent]) -> None:
        for event in events:
            data = event.data
            name = data.get("name")
            group = self.breakers.get(name) if isinstance(name, str) else None
            if not group:
                continue
            version = data.get("version")
            if not isinstance(version, int):
                continue
            record = Record(data, version, float(data.get("at") or 0.0))
            for breaker in list(group):
                if data.get("origin") == self.process_id and version <= breaker._fleet_version:
                    continue
                self._apply(breaker, record)

    async def _on_resync(self) -> None:
        names = list(self.breakers)
        if not names:
            return
        records = await self.store.get_many([state_key(n) for n in names])
        for name in names:
            record = records.get(state_key(name))
            if record is None:
                continue
            for breaker in list(self.breakers.get(name, ())):
                self._apply(breaker, record, force=True)

    # --- half-open permits -----------------------------------------------------------

    async def acquire_trial(self, breaker: CircuitBreaker, token: int) -> bool:
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

    def release_trial(self, breaker: CircuitBreaker, token: int) -> None:
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
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)


async def _cancel_until_done(tasks: list[asyncio.Task[Any]], within: float) -> bool:
    """Cancel ``tasks`` and wait for them to end, cancelling again while they do not: a
    cancellation can be swallowed inside a client library (``asyncio.wait_for`` on 3.11
    returns a result that arrives together with the cancellation), and one cancel is
    then not enough. False if some task was still running after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pending = [t for t in tasks if not t.done()]
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            _log.warning("fleet_task_not_stopping", tasks=[t.get_name() for t in pending])
            return False
        _, still = await asyncio.wait(pending, timeout=min(0.1, remaining))
        pending = list(still)
    return True


_LINKS: dict[Any, FleetLink] = {}
_SEQ = itertools.count(1)
_BACKGROUND: set[asyncio.Task[Any]] = set()


async def attach(
    breaker: CircuitBreaker,
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
