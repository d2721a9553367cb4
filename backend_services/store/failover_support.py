"""Helpers of :class:`~backend_services.store.failover.FailoverStore`: what counts as an
outage, mirroring a primary's commit into memory, and connection-change listeners."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ConflictError, StoreError
from ..log import StructuredLogger
from .journal import Incr, Journal
from .memory import MemoryStore
from .protocol import (
    Append,
    CommitResult,
    Delete,
    Operation,
    Put,
    PutIfNewer,
    Record,
    SetAdd,
    SetRemove,
    Store,
    StoreStatus,
)

__all__ = ["Listeners", "is_outage", "mirror_commit", "replay"]

try:  # the Redis client's own connection errors, in case one escapes unwrapped
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import TimeoutError as _RedisTimeoutError

    _CLIENT_ERRORS: tuple[type[BaseException], ...] = (_RedisConnectionError, _RedisTimeoutError)
except ImportError:  # pragma: no cover - redis is a core dependency
    _CLIENT_ERRORS = ()
_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (StoreError, OSError, *_CLIENT_ERRORS)


def is_outage(exc: BaseException) -> bool:
    """True for failures of the store's *infrastructure* (fail open: use memory);
    False for answers about the data (conflicts) and for bad input or bugs."""
    if isinstance(exc, ConflictError):
        return False
    return isinstance(exc, _OUTAGE_ERRORS)


def mirror_commit(
    memory: MemoryStore, ops: Sequence[Operation], result: CommitResult, now: float
) -> None:
    """Make ``memory`` reflect a commit the primary applied (appends are not mirrored)."""
    last: dict[str, Put | Delete | PutIfNewer] = {}
    for op in ops:
        if isinstance(op, Put | Delete | PutIfNewer):
            last[op.key] = op
        elif isinstance(op, SetAdd | SetRemove):
            memory.change_set(op.key, op.members, add=isinstance(op, SetAdd))
    for key, op in last.items():
        version = result.versions.get(key, -1)
        if isinstance(op, Delete) or version == 0:
            memory.mirror_record(key, None)
        elif version > 0:
            at = op.updated_at if isinstance(op, PutIfNewer) else now
            memory.mirror_record(key, Record(op.value, version, at), ttl=op.ttl)


async def replay(journal: Journal, memory: MemoryStore, primary: Store, limit: int) -> None:
    """Apply the journal to ``primary``, front to back, until it is empty (see
    :mod:`~backend_services.store.journal`); a failure leaves the rest for the next try."""
    while journal:
        batch = journal.batch(limit)
        first = batch[0][2]
        if isinstance(first, Incr):
            await primary.incr(first.key, first.amount)
        else:
            ops: list[Operation] = []
            for _, _, entry in batch:
                if isinstance(entry, SetAdd | SetRemove | Append):
                    ops.append(entry)
                elif not isinstance(entry, Incr):
                    key = entry.key
                    rec = await memory.get(key)
                    if rec is not None:
                        ttl = memory.remaining_ttl(key)
                        ops.append(PutIfNewer(key, rec.value, rec.updated_at, ttl))
                    elif key in journal.tombstones:
                        ops.append(PutIfNewer(key, None, journal.tombstones[key], deleted=True))
            if ops:
                await primary.commit(ops)
        journal.done(batch)


class Listeners:
    """Connection-change listeners: each is called with the new status (sync or async);
    a failing one is logged and the others still run."""

    def __init__(self, log: StructuredLogger) -> None:
        self._log = log
        self._listeners: list[Callable[[StoreStatus], Any]] = []
        self._pending: set[asyncio.Task[None]] = set()

    def add(self, listener: Callable[[StoreStatus], Any]) -> Callable[[], None]:
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def notify(self, status: StoreStatus) -> None:
        for listener in list(self._listeners):
            try:
                result = listener(status)
            except Exception as exc:
                self._log.exception("store_listener_failed", error=repr(exc))
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(self._await(result))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def _await(self, result: Any) -> None:
        try:
            await result
        except Exception as exc:
            self._log.exception("store_listener_failed", error=repr(exc))
