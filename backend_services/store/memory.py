"""The embedded default store: everything in this process, driven by the clock.

Same semantics as every other :class:`~backend_services.store.protocol.Store`: TTLs and
lease expiry follow ``clock.monotonic()``, ``updated_at`` and :meth:`server_time` follow
``clock.time()``. Values are kept as JSON text (containers) or immutable scalars, so a
caller mutating a value it wrote or read never changes the store, and what comes back is
exactly what a JSON round trip gives (tuples become lists, keys become strings).

In :meth:`MemoryStore.commit` every condition is checked against the state *before* the
commit; only when all hold are the operations applied, in order.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..clock import Clock, resolve_clock
from ..errors import ConflictError, ValidationError
from .memory_feed import MemoryFeeds
from .protocol import (
    JSON,
    Append,
    Check,
    CommitResult,
    Delete,
    FeedBatch,
    Operation,
    Put,
    PutIfNewer,
    Record,
    SetAdd,
    SetRemove,
    StoreStatus,
)
from .values import check_key, check_members, check_ttl, freeze, prepare_op, thaw

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Entry:
    value: Any  # frozen: an immutable scalar or JSON text
    version: int
    updated_at: float
    expires: float | None  # clock.monotonic() deadline


class MemoryStore:
    """An in-process :class:`~backend_services.store.protocol.Store` (see module docstring)."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = resolve_clock(clock)
        self._records: dict[str, _Entry] = {}
        self._expiry: list[tuple[float, int, str]] = []  # (deadline, seq, key) — lazy heap
        self._seq = itertools.count()
        self._sets: dict[str, set[str]] = {}
        self._counters: dict[str, int] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self.feeds = MemoryFeeds(self._clock)

    # -- lifecycle ---------------------------------------------------------------------
    async def initialize(self) -> None:
        """Nothing to connect to; present for the common lifecycle."""

    async def close(self) -> None:
        """Wake blocked feed readers (they return what they have)."""
        self.feeds.wake_all()

    shutdown = close

    async def __aenter__(self) -> MemoryStore:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def status(self) -> StoreStatus:
        return StoreStatus(backend="memory", connected=True)

    async def server_time(self) -> float:
        return self._clock.time()

    # -- documents ---------------------------------------------------------------------
    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._records.get(key)
        if entry is not None and entry.expires is not None and entry.expires <= now:
            del self._records[key]
            return None
        return entry

    def _purge(self, now: float) -> None:
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, _, key = heapq.heappop(heap)
            self._live(key, now)

    def _version(self, key: str, now: float) -> int:
        entry = self._live(key, now)
        return 0 if entry is None else entry.version

    def _write(self, key: str, frozen: Any, ttl: float | None, now: float, at: float) -> int:
        entry = self._live(key, now)
        version = 1 if entry is None else entry.version + 1
        expires = None if ttl is None else now + ttl
        self._records[key] = _Entry(frozen, version, at, expires)
        if expires is not None:
            heapq.heappush(self._expiry, (expires, next(self._seq), key))
        return version

    async def get(self, key: str) -> Record | None:
        entry = self._live(key, self._clock.monotonic())
        if entry is None:
            return None
        return Record(thaw(entry.value), entry.version, entry.updated_at)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        now = self._clock.monotonic()
        out: dict[str, Record] = {}
        for key in keys:
            entry = self._live(key, now)
            if entry is not None:
                out[key] = Record(thaw(entry.value), entry.version, entry.updated_at)
        return out

    async def put(
        self, key: str, value: JSON, *, expect_version: int | None = None, ttl: float | None = None
    ) -> int:
        frozen = prepare_op(Put(key, value, expect_version, ttl))
        now = self._clock.monotonic()
        self._purge(now)
        if expect_version is not None:
            actual = self._version(key, now)
            if actual != expect_version:
                raise ConflictError(key, expect_version, actual)
        return self._write(key, frozen, ttl, now, self._clock.time())

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        now = self._clock.monotonic()
        existed = self._live(key, now) is not None
        await self.commit([Delete(key, expect_version)])
        return existed

    # -- sets, counters ----------------------------------------------------------------
    async def members(self, key: str) -> set[str]:
        return set(self._sets.get(key, ()))

    async def set_add(self, key: str, *members: str) -> int:
        check_key("key", key)
        check_members(members)
        return self.change_set(key, members, add=True)

    async def set_remove(self, key: str, *members: str) -> int:
        check_key("key", key)
        check_members(members)
        return self.change_set(key, members, add=False)

    def change_set(self, key: str, members: Sequence[str], *, add: bool) -> int:
        """Add or remove ``members`` (already validated); how many changed."""
        current = self._sets.get(key)
        if current is None:
            if not add or not members:
                return 0
            current = self._sets[key] = set()
        before = len(current)
        if add:
            current.update(members)
        else:
            current.difference_update(members)
            if not current:
                del self._sets[key]
        return abs(len(current) - before)

    async def incr(self, key: str, amount: int = 1) -> int:
        check_key("key", key)
        if type(amount) is not int:
            raise ValidationError("amount", amount, "an integer")
        value = self._counters.get(key, 0) + amount
        self._counters[key] = value
        return value

    # -- leases ------------------------------------------------------------------------
    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        check_key("name", name)
        check_key("owner", owner)
        check_ttl("ttl", ttl)
        now = self._clock.monotonic()
        held = self._leases.get(name)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self._leases[name] = (owner, now + ttl)
        return True

    async def release_lease(self, name: str, owner: str) -> bool:
        held = self._leases.get(name)
        if held is None or held[0] != owner or held[1] <= self._clock.monotonic():
            return False
        del self._leases[name]
        return True

    async def lease_owner(self, name: str) -> str | None:
        held = self._leases.get(name)
        if held is None:
            return None
        if held[1] <= self._clock.monotonic():
            del self._leases[name]
            return None
        return held[0]

    # -- feeds -------------------------------------------------------------------------
    async def append(
        self, stream: str, event: Mapping[str, JSON], *, maxlen: int | None = 10_000
    ) -> int:
        result = await self.commit([Append(stream, event, maxlen)])
        return result.positions[stream]

    async def read(
        self, stream: str, after: int, *, count: int = 500, block: float | None = None
    ) -> FeedBatch:
        return await self.feeds.read(stream, after, count=count, block=block)

    async def feed_position(self, stream: str) -> int:
        return self.feeds.position(stream)

    # -- atomic commit -----------------------------------------------------------------
    async def commit(self, ops: Sequence[Operation]) -> CommitResult:
        frozen = [prepare_op(op) for op in ops]
        now = self._clock.monotonic()
        self._purge(now)
        for op in ops:
            if isinstance(op, Put | Delete | Check) and op.expect_version is not None:
                actual = self._version(op.key, now)
                if actual != op.expect_version:
                    raise ConflictError(op.key, op.expect_version, actual)
        at = self._clock.time()
        versions: dict[str, int] = {}
        positions: dict[str, int] = {}
        for op, value in zip(ops, frozen, strict=True):
            if isinstance(op, Put):
                versions[op.key] = self._write(op.key, value, op.ttl, now, at)
            elif isinstance(op, Delete):
                self._records.pop(op.key, None)
                versions[op.key] = 0
            elif isinstance(op, PutIfNewer):
                versions[op.key] = self._put_if_newer(op, value, now)
            elif isinstance(op, SetAdd | SetRemove):
                self.change_set(op.key, op.members, add=isinstance(op, SetAdd))
            elif isinstance(op, Append):
                positions[op.stream] = self.feeds.append(op.stream, value, op.maxlen, op.dedupe_id)
        return CommitResult(versions, positions)

    def _put_if_newer(self, op: PutIfNewer, value: Any, now: float) -> int:
        entry = self._live(op.key, now)
        if entry is not None and entry.updated_at >= op.updated_at:
            return -1
        if op.deleted:
            self._records.pop(op.key, None)
            return 0
        return self._write(op.key, value, op.ttl, now, op.updated_at)

    # -- replica view (used by FailoverStore to keep a last known copy of the primary) ----
    def mirror_record(
        self, key: str, record: Record | None, *, ttl: float | None = None, seen: bool = False
    ) -> None:
        """Make ``key`` hold exactly ``record`` (its version and ``updated_at``), or be
        absent, expiring after ``ttl`` seconds when given. ``seen=True`` (a record that was
        read, its TTL unknown): a record already held at the same version is the same
        write, so it keeps its value and expiry and only takes the primary's ``updated_at``."""
        now = self._clock.monotonic()
        entry = self._live(key, now)
        if record is None:
            if entry is not None:
                del self._records[key]
            return
        if seen and entry is not None and entry.version == record.version:
            entry.updated_at = record.updated_at  # the same write: value and expiry stand
            return
        expires = None if ttl is None else now + ttl
        self._records[key] = _Entry(
            freeze(key, record.value), record.version, record.updated_at, expires
        )
        if expires is not None:
            heapq.heappush(self._expiry, (expires, next(self._seq), key))

    def mirror_members(self, key: str, members: set[str]) -> None:
        """Make the set at ``key`` hold exactly ``members``."""
        if members:
            self._sets[key] = set(members)
        else:
            self._sets.pop(key, None)

    def mirror_counter(self, key: str, value: int) -> None:
        """Make the counter at ``key`` hold ``value``."""
        self._counters[key] = value

    def mirror_lease(self, name: str, owner: str | None, ttl: float = 0.0) -> None:
        """Record that ``owner`` holds lease ``name`` for ``ttl`` seconds (None: free)."""
        if owner is None:
            self._leases.pop(name, None)
        else:
            self._leases[name] = (owner, self._clock.monotonic() + ttl)

    def remaining_ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires (None: no expiry or no such key)."""
        now = self._clock.monotonic()
        entry = self._live(key, now)
        if entry is None or entry.expires is None:
            return None
        return entry.expires - now
