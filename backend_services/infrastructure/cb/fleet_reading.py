"""A fleet link's state, and reading the shared breaker state into its breakers.

:class:`FleetReading` holds what a :class:`~backend_services.infrastructure.cb.fleet.FleetLink`
knows (its store and clock, the breakers it follows, what is pending, its counters) and
adopts shared records: a :class:`~backend_services.store.feed.FeedFollower` applies newer
versions as they are appended (a blocking read: well under 100 ms); on a resync (events
lost, or the store switched between Redis and memory) every breaker reloads its record.
A malformed record is logged and left to be overwritten by the next write. Writing is
in :mod:`~backend_services.infrastructure.cb.fleet_writing`.
"""

from __future__ import annotations

import asyncio
import math
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...breaker.state import CircuitState
from ...clock import Clock
from ...log import get_logger
from ...store.feed import FeedFollower
from ...store.protocol import FeedEvent, Record, Store
from ...tasks import Supervisor
from .fleet_layout import state_key

if TYPE_CHECKING:
    from .shell import BreakerShell

__all__ = ["FleetReading"]

_log = get_logger("circuit_breaker")


class FleetReading:
    """One process's connection to the shared breaker state in one store: its state
    and the reading side (see the module docstring)."""

    def __init__(
        self, store: Store, clock: Clock, *, owns_store: bool, process_id: str, key: Any
    ) -> None:
        self.store = store
        self.clock = clock
        self.owns_store = owns_store
        self.process_id = process_id
        self.key = key
        self.supervisor = Supervisor("circuit_breaker.fleet", clock=clock)
        self.breakers: dict[str, weakref.WeakSet[BreakerShell]] = {}
        self.pending: dict[str, tuple[weakref.ref[BreakerShell], bool]] = {}
        self.syncing: set[str] = set()
        self.waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.trial_slots: dict[tuple[str, int], int] = {}
        self.registered: set[str] = set()
        self.users = 0
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.get_ident()
        self._follower: FeedFollower | None = None
        self._started: asyncio.Task[None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._closing = False

    def _apply(self, breaker: BreakerShell, record: Record, *, force: bool = False) -> bool:
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
        breaker.apply_remote(state, now, open_until=open_until, openings=openings)
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
