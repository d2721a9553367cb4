"""Redis while it answers, memory while it does not — callers never see the difference.

:class:`FailoverStore` sends every operation to the *primary* store. While it answers, the
results are mirrored into a :class:`~.memory.MemoryStore`, so that during an outage reads
serve the last known view. When the primary fails (unreachable, timed out), the store
switches to memory: writes are applied there and noted in a :class:`~.journal.Journal`,
and a supervised task probes the primary with jittered exponential backoff. When it
answers again the journal is replayed — keys as :class:`~.protocol.PutIfNewer` (a newer
write in the primary is never overwritten by an older local one), events as
:class:`~.protocol.Append` with their ``dedupe_id`` (nothing is added twice, even when a
replay is interrupted and retried) — and only when it is empty does the store switch back.

Feed positions of the two backends never overlap (memory numbers its events from a large
per-outage base), so a reader whose position came from the other backend is told to
resync. Appends always carry a ``dedupe_id``, so an append whose reply was lost and which
is then journaled is not duplicated either. Counter increments and lease changes made
during an outage are local: increments are replayed (at least once), leases are not.

Configuration errors (wrong password, untrusted certificate) are raised by
:meth:`FailoverStore.initialize`, never silently turned into a fallback.
"""

from __future__ import annotations

import enum
import itertools
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from ..clock import Clock, resolve_clock
from ..errors import ConflictError, StoreConfigurationError
from ..log import get_logger
from ..tasks import Backoff, Supervisor
from .failover_support import Listeners, is_outage, mirror_commit, replay
from .journal import Incr, Journal
from .memory import MemoryStore
from .protocol import (
    JSON,
    Append,
    CommitResult,
    Delete,
    FeedBatch,
    Operation,
    Put,
    PutIfNewer,
    Record,
    SetAdd,
    SetRemove,
    Store,
    StoreStatus,
)
from .values import freeze

__all__ = ["FEED_EPOCH", "FailoverStore"]

_log = get_logger("store.failover")
T = TypeVar("T")


class _Down(enum.Enum):
    DOWN = "down"


DOWN = _Down.DOWN
"""What the primary "answered" when it could not be reached."""

FEED_EPOCH = 10**12
"""Memory feed positions during outage ``n`` start at ``n * FEED_EPOCH``."""


class FailoverStore:
    """A :class:`~.protocol.Store` over ``primary`` that falls back to memory (see module)."""

    def __init__(
        self,
        primary: Store,
        fallback: MemoryStore | None = None,
        *,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        replay_batch: int = 100,
    ) -> None:
        self.primary = primary
        self._clock = resolve_clock(clock)
        self.memory = fallback if fallback is not None else MemoryStore(clock=self._clock)
        self._backoff = backoff or Backoff(initial=0.1, maximum=5.0)
        self._replay_batch = replay_batch
        self._supervisor = Supervisor("store.failover", clock=self._clock)
        self._journal = Journal()
        self._listeners = Listeners(_log)
        self._healthy = False
        self._primary_ready = False
        self._epoch = 0  # changes on every switch; mirrors from an older epoch are dropped
        self._outage_no = 0
        self.outages = 0
        self._last_error: str | None = None
        self._closed = False
        # dedupe ids: a random prefix per store and a counter (unique without a uuid each)
        self._dedupe_prefix = uuid.uuid4().hex + "-"
        self._dedupe_seq = itertools.count(1)

    # -- lifecycle and status -------------------------------------------------------------
    async def initialize(self) -> None:
        """Connect to the primary; if it is unreachable, start on memory and keep trying.
        A configuration error (credentials, TLS) is raised."""
        if self._healthy or self._primary_ready or self._supervisor.names:
            return
        try:
            await self.primary.initialize()
        except StoreConfigurationError:
            raise
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._lost(exc, counted=False)
            return
        self._primary_ready = True
        self._healthy = True

    async def close(self) -> None:
        self._closed = True
        await self._supervisor.close()
        try:
            await self.primary.close()
        except Exception as exc:
            _log.warning("primary_close_failed", error=repr(exc))
        await self.memory.close()

    shutdown = close

    async def __aenter__(self) -> FailoverStore:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def status(self) -> StoreStatus:
        backend = self.primary.status().backend if self._healthy else "memory"
        return StoreStatus(
            backend=backend,
            connected=self._healthy,
            outages=self.outages,
            pending_writes=len(self._journal),
            last_error=self._last_error,
        )

    def add_listener(self, listener: Callable[[StoreStatus], Any]) -> Callable[[], None]:
        """Call ``listener(status)`` (sync or async) on every switch; returns a remover."""
        return self._listeners.add(listener)

    # -- switching --------------------------------------------------------------------------
    def _lost(self, exc: BaseException, *, counted: bool = True) -> None:
        self._last_error = repr(exc)
        if not self._healthy and (self._supervisor.names or self._closed):
            return
        self._healthy = False
        self._epoch += 1
        self._outage_no += 1
        if counted:
            self.outages += 1
        self.memory.feeds.reset(self._outage_no * FEED_EPOCH)
        _log.warning("store_primary_lost", error=repr(exc), outages=self.outages)
        if not self._closed:
            self._supervisor.spawn("reconnect", self._reconnect)
        self._listeners.notify(self.status())

    async def _reconnect(self) -> None:
        while not self._healthy:
            await self._clock.sleep(self._backoff.next_delay())
            try:
                if not self._primary_ready:
                    await self.primary.initialize()
                    self._primary_ready = True
                else:
                    await self.primary.server_time()
                await replay(self._journal, self.memory, self.primary, self._replay_batch)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self._last_error = repr(exc)
                if isinstance(exc, StoreConfigurationError):
                    _log.error("store_primary_refused", error=repr(exc))
                continue
            # the journal is empty and nothing awaited since: no write can slip in between
            self._healthy = True
            self._epoch += 1
        self._backoff.reset()
        _log.info("store_primary_restored", outages=self.outages)
        self._listeners.notify(self.status())

    # -- routing ------------------------------------------------------------------------------
    async def _call(
        self, on_primary: Callable[[], Awaitable[T]], mirror: Callable[[T], object] | None = None
    ) -> T | Literal[_Down.DOWN]:
        """The primary's answer (mirrored into memory), or DOWN when it is (now) unreachable."""
        if not self._healthy:
            return DOWN
        epoch = self._epoch
        try:
            result = await on_primary()
        except ConflictError:
            raise
        except Exception as exc:
            if not is_outage(exc):
                raise
            if epoch == self._epoch:
                self._lost(exc)
            return DOWN
        if mirror is not None and epoch == self._epoch:
            mirror(result)
        return result

    async def server_time(self) -> float:
        t = await self._call(self.primary.server_time)
        return t if t is not DOWN else await self.memory.server_time()

    async def get(self, key: str) -> Record | None:
        m = self.memory
        rec = await self._call(
            lambda: self.primary.get(key), lambda r: m.mirror_record(key, r, seen=True)
        )
        return rec if rec is not DOWN else await m.get(key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        def mirror(found: dict[str, Record]) -> None:
            for key in keys:
                self.memory.mirror_record(key, found.get(key), seen=True)

        recs = await self._call(lambda: self.primary.get_many(keys), mirror)
        return recs if recs is not DOWN else await self.memory.get_many(keys)

    async def put(
        self, key: str, value: JSON, *, expect_version: int | None = None, ttl: float | None = None
    ) -> int:
        if type(key) is str and key:
            value = freeze(key, value)  # encoded once, for the primary and the mirror

        def mirror(version: int) -> None:
            self.memory.mirror_record(key, Record(value, version, self._clock.time()), ttl=ttl)

        version = await self._call(
            lambda: self.primary.put(key, value, expect_version=expect_version, ttl=ttl), mirror
        )
        if version is not DOWN:
            return version
        version = await self.memory.put(key, value, expect_version=expect_version, ttl=ttl)
        self._journal.key_written(key)
        return version

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        existed = await self._call(
            lambda: self.primary.delete(key, expect_version=expect_version),
            lambda _: self.memory.mirror_record(key, None),
        )
        if existed is not DOWN:
            return existed
        existed = await self.memory.delete(key, expect_version=expect_version)
        self._journal.key_deleted(key, self._clock.time())
        return existed

    async def commit(self, ops: Sequence[Operation]) -> CommitResult:
        ops = [self._prepared(op) for op in ops]
        result = await self._call(
            lambda: self.primary.commit(ops),
            lambda r: mirror_commit(self.memory, ops, r, self._clock.time()),
        )
        if result is not DOWN:
            return result
        result = await self.memory.commit(ops)
        at = self._clock.time()
        for op in ops:
            if isinstance(op, Put) or (isinstance(op, PutIfNewer) and not op.deleted):
                self._journal.key_written(op.key)
            elif isinstance(op, PutIfNewer):
                self._journal.key_deleted(op.key, op.updated_at)
            elif isinstance(op, Delete):
                self._journal.key_deleted(op.key, at)
            elif isinstance(op, SetAdd | SetRemove | Append):
                self._journal.operation(op)
        return result

    def _prepared(self, op: Operation) -> Operation:
        """``op`` with its value encoded once (for the primary and the mirror) and, for an
        append, a dedupe id (so a retried or replayed append is never added twice)."""
        if type(op) is Put:
            if type(op.key) is str and op.key:
                frozen = freeze(op.key, op.value)
                if frozen is not op.value:
                    return Put(op.key, frozen, op.expect_version, op.ttl)
        elif isinstance(op, Append) and op.dedupe_id is None:
            dedupe = f"{self._dedupe_prefix}{next(self._dedupe_seq)}"
            return Append(op.stream, op.event, op.maxlen, dedupe)
        return op

    async def members(self, key: str) -> set[str]:
        m = self.memory
        found = await self._call(
            lambda: self.primary.members(key), lambda s: m.mirror_members(key, s)
        )
        return found if found is not DOWN else await m.members(key)

    async def set_add(self, key: str, *members: str) -> int:
        return await self._set_change(SetAdd(key, tuple(members)))

    async def set_remove(self, key: str, *members: str) -> int:
        return await self._set_change(SetRemove(key, tuple(members)))

    async def _set_change(self, op: SetAdd | SetRemove) -> int:
        add = isinstance(op, SetAdd)
        call = self.primary.set_add if add else self.primary.set_remove
        n = await self._call(
            lambda: call(op.key, *op.members),
            lambda _: self.memory.change_set(op.key, op.members, add=add),
        )
        if n is not DOWN:
            return n
        n = await (self.memory.set_add if add else self.memory.set_remove)(op.key, *op.members)
        self._journal.operation(op)
        return n

    async def incr(self, key: str, amount: int = 1) -> int:
        m = self.memory
        value = await self._call(
            lambda: self.primary.incr(key, amount), lambda v: m.mirror_counter(key, v)
        )
        if value is not DOWN:
            return value
        value = await m.incr(key, amount)
        self._journal.operation(Incr(key, amount))
        return value

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        def mirror(taken: bool) -> None:
            if taken:
                self.memory.mirror_lease(name, owner, ttl)

        taken = await self._call(lambda: self.primary.acquire_lease(name, owner, ttl), mirror)
        return taken if taken is not DOWN else await self.memory.acquire_lease(name, owner, ttl)

    async def release_lease(self, name: str, owner: str) -> bool:
        def mirror(released: bool) -> None:
            if released:
                self.memory.mirror_lease(name, None)

        done = await self._call(lambda: self.primary.release_lease(name, owner), mirror)
        return done if done is not DOWN else await self.memory.release_lease(name, owner)

    async def lease_owner(self, name: str) -> str | None:
        owner = await self._call(lambda: self.primary.lease_owner(name))
        return owner if owner is not DOWN else await self.memory.lease_owner(name)

    async def append(
        self, stream: str, event: Mapping[str, JSON], *, maxlen: int | None = 10_000
    ) -> int:
        result = await self.commit([Append(stream, event, maxlen)])
        return result.positions[stream]

    async def read(
        self, stream: str, after: int, *, count: int = 500, block: float | None = None
    ) -> FeedBatch:
        batch = await self._call(lambda: self.primary.read(stream, after, count=count, block=block))
        if batch is not DOWN:
            return batch
        return await self.memory.read(stream, after, count=count, block=block)

    async def feed_position(self, stream: str) -> int:
        pos = await self._call(lambda: self.primary.feed_position(stream))
        return pos if pos is not DOWN else await self.memory.feed_position(stream)
