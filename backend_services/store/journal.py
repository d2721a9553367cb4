"""The outage journal of a :class:`~backend_services.store.failover.FailoverStore` (pure).

While the primary store is unreachable, writes go to memory and are noted here, in order:

* a written or deleted *key* is noted once, at its first change (the value replayed is
  whatever memory holds at replay time, as a :class:`~.protocol.PutIfNewer`, so a newer
  write already in the primary is never overwritten); an explicit delete remembers its
  wall time for the tombstone;
* set changes and appended events are kept as operations (appends carry a ``dedupe_id``,
  so a replay that is interrupted and retried adds nothing twice);
* counter increments are kept as amounts.

Replay takes a batch from the front (:meth:`Journal.batch`) and, once the primary has
applied it, :meth:`Journal.done` removes it — except keys written again meanwhile, which
stay to be replayed with their newer value. Replaying keys before the events that followed
them means every replayed event reaches readers after the state it announces.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass

from .protocol import Append, SetAdd, SetRemove

__all__ = ["Incr", "Journal", "KeyWrite"]


@dataclass(slots=True)
class KeyWrite:
    """A key changed during the outage; ``stamp`` counts its changes."""

    key: str
    stamp: int = 0


@dataclass(frozen=True, slots=True)
class Incr:
    """A counter increment made during the outage."""

    key: str
    amount: int


Entry = KeyWrite | Incr | SetAdd | SetRemove | Append


class Journal:
    """Ordered, bounded record of outage writes (see module docstring)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._keys: dict[str, int] = {}  # key -> id of its KeyWrite
        self._appends: dict[str, deque[int]] = {}  # stream -> ids of its pending appends
        self._ids = itertools.count()
        self.tombstones: dict[str, float] = {}  # key -> wall time of its delete
        self.dropped = 0  # appends dropped because their stream's maxlen was exceeded

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def key_written(self, key: str) -> None:
        ident = self._keys.get(key)
        if ident is not None:
            entry = self._entries[ident]
            assert isinstance(entry, KeyWrite)
            entry.stamp += 1
            return
        ident = next(self._ids)
        self._entries[ident] = KeyWrite(key)
        self._keys[key] = ident

    def key_deleted(self, key: str, at: float) -> None:
        self.tombstones[key] = at
        self.key_written(key)

    def operation(self, op: SetAdd | SetRemove | Append | Incr) -> None:
        ident = next(self._ids)
        self._entries[ident] = op
        if isinstance(op, Append):
            pending = self._appends.setdefault(op.stream, deque())
            pending.append(ident)
            if op.maxlen is not None:
                while len(pending) > op.maxlen:  # the stream would trim them anyway
                    self._entries.pop(pending.popleft(), None)
                    self.dropped += 1

    def batch(self, limit: int = 100) -> list[tuple[int, int, Entry]]:
        """Up to ``limit`` entries from the front as ``(id, stamp, entry)``; an
        :class:`Incr` is always alone in its batch (it is not idempotent)."""
        out: list[tuple[int, int, Entry]] = []
        for ident, entry in self._entries.items():
            if isinstance(entry, Incr):
                if not out:
                    out.append((ident, 0, entry))
                break
            out.append((ident, entry.stamp if isinstance(entry, KeyWrite) else 0, entry))
            if len(out) >= limit:
                break
        return out

    def done(self, batch: list[tuple[int, int, Entry]]) -> None:
        """Forget a replayed batch (keys changed since it was taken stay journaled)."""
        for ident, stamp, entry in batch:
            if isinstance(entry, KeyWrite):
                current = self._entries.get(ident)
                if isinstance(current, KeyWrite) and current.stamp != stamp:
                    continue
                self._keys.pop(entry.key, None)
                self.tombstones.pop(entry.key, None)
            elif isinstance(entry, Append):
                pending = self._appends.get(entry.stream)
                if pending and pending[0] == ident:
                    pending.popleft()
                elif pending and ident in pending:
                    pending.remove(ident)
                if not pending:
                    self._appends.pop(entry.stream, None)
            self._entries.pop(ident, None)
