"""Following the fleet: periodic snapshots, the transitions between them, subscribers.

:func:`transitions_between` is the pure core: given two snapshots it lists what changed
state (a service's health, a circuit's state, a service's degradation level, the config
version). :class:`FleetWatcher` is the shell: it takes a snapshot every ``interval``
seconds of its clock (and on demand after a change), keeps the recent transitions, and
hands each new snapshot to its subscribers (bounded queues: a slow reader loses older
snapshots, never blocks the watcher).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..clock import Clock, resolve_clock
from ..log import get_logger
from ..tasks import Supervisor

__all__ = ["FleetWatcher", "Subscription", "Transition", "transitions_between"]

_log = get_logger("control")

Snapshot = Mapping[str, Any]
SnapshotSource = Callable[[], Awaitable[dict[str, Any]]]

# snapshot section -> (transition kind, id field, state field)
_TRACKED: tuple[tuple[str, str, str, str], ...] = (
    ("services", "service", "service_id", "status"),
    ("circuits", "circuit", "name", "state"),
    ("degradation", "degradation", "service", "level"),
)


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change seen between two snapshots."""

    seq: int
    time: float
    kind: str
    name: str
    old: str | None
    new: str
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _states(items: Iterable[Mapping[str, Any]], id_field: str, state_field: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        ident = item.get(id_field)
        if ident is not None:
            out[str(ident)] = item
    return out


def transitions_between(
    old: Snapshot | None, new: Snapshot, now: float, seq: Iterable[int]
) -> list[Transition]:
    """What changed state from ``old`` to ``new`` (every item is new when ``old`` is
    None); ``seq`` numbers the transitions."""
    numbers = iter(seq)
    out: list[Transition] = []
    for section, kind, id_field, state_field in _TRACKED:
        before = _states((old or {}).get(section) or (), id_field, state_field)
        after = _states(new.get(section) or (), id_field, state_field)
        for ident, item in after.items():
            state = str(item.get(state_field))
            previous = before.get(ident)
            prev_state = None if previous is None else str(previous.get(state_field))
            if prev_state != state:
                reason = str(item.get("reason") or "") if kind == "degradation" else ""
                out.append(Transition(next(numbers), now, kind, ident, prev_state, state, reason))
        for ident, item in before.items():
            if ident not in after:
                out.append(
                    Transition(
                        next(numbers),
                        now,
                        kind,
                        ident,
                        str(item.get(state_field)),
                        "removed",
                    )
                )
    old_cfg = (old or {}).get("config") or {}
    new_cfg = new.get("config") or {}
    if new_cfg.get("version") != old_cfg.get("version") and new_cfg.get("version") is not None:
        out.append(
            Transition(
                next(numbers),
                now,
                "config",
                str(new_cfg.get("service", "")),
                old_cfg.get("version"),
                str(new_cfg["version"]),
            )
        )
    return out


class Subscription:
    """A subscriber's queue of events (``(event, data)``), newest kept when full."""

    def __init__(self, maxsize: int = 16) -> None:
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, event: str, data: dict[str, Any]) -> None:
        while True:
            try:
                self.queue.put_nowait((event, data))
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.queue.get_nowait()
                    self.dropped += 1

    async def get(self) -> tuple[str, dict[str, Any]]:
        return await self.queue.get()


class FleetWatcher:
    """Snapshots the fleet every ``interval`` s and publishes changes."""

    def __init__(
        self,
        source: SnapshotSource,
        *,
        interval: float = 1.0,
        history: int = 500,
        clock: Clock | None = None,
    ) -> None:
        self._source = source
        self.interval = interval
        self._clock = resolve_clock(clock)
        self._seq = itertools.count(1)
        self.transitions: deque[Transition] = deque(maxlen=history)
        self._last: dict[str, Any] | None = None
        self._subscribers: set[Subscription] = set()
        self._supervisor: Supervisor | None = None
        self._lock = asyncio.Lock()
        self.errors = 0

    async def start(self) -> None:
        """Take a first snapshot and start the periodic loop."""
        await self.refresh()
        self._supervisor = Supervisor("control-watcher", clock=self._clock)
        self._supervisor.spawn("poll", self._loop)

    async def close(self) -> None:
        if self._supervisor is not None:
            await self._supervisor.close()
            self._supervisor = None
        self._subscribers.clear()

    async def _loop(self) -> None:
        while True:
            await self._clock.sleep(self.interval)
            await self.refresh()

    async def refresh(self) -> dict[str, Any]:
        """Take a snapshot now; record and publish what changed. Returns the snapshot
        (the last good one when the source fails)."""
        async with self._lock:
            try:
                snap = await self._source()
            except Exception as exc:
                self.errors += 1
                _log.warning("snapshot_failed", error=repr(exc))
                if self._last is None:
                    raise
                return self.overview()
            now = self._clock.time()
            found = transitions_between(self._last, snap, now, self._seq)
            changed = self._last is None or _comparable(snap) != _comparable(self._last)
            self._last = snap
            self.transitions.extend(found)
            for tr in found:
                _log.info(
                    "fleet_transition",
                    kind=tr.kind,
                    name=tr.name,
                    old=tr.old,
                    new=tr.new,
                    reason=tr.reason,
                )
            if changed:
                overview = self.overview()
                for sub in list(self._subscribers):
                    sub.offer("snapshot", overview)
            return self.overview()

    def overview(self, transitions: int = 200) -> dict[str, Any]:
        """The last snapshot with the time and the newest ``transitions`` transitions."""
        snap = dict(self._last or {})
        snap.setdefault("services", [])
        snap.setdefault("circuits", [])
        snap.setdefault("degradation", [])
        snap.setdefault("config", None)
        snap["time"] = self._clock.time()
        recent = list(self.transitions)[-transitions:] if transitions > 0 else []
        snap["transitions"] = [t.as_dict() for t in recent]
        return snap

    def recent(self, limit: int | None = None) -> list[Transition]:
        """Transitions oldest first; ``limit`` gives the newest N."""
        items = list(self.transitions)
        return items[-limit:] if limit else items

    def subscribe(self, maxsize: int = 16) -> Subscription:
        sub = Subscription(maxsize)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


def _comparable(snapshot: Mapping[str, Any]) -> Any:
    return {k: v for k, v in snapshot.items() if k != "time"}
