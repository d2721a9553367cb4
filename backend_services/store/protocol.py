"""The shared-state store protocol: what every component may ask of shared state.

Values are JSON-compatible (dicts, lists, str, int, float, bool, None). Every key holds a
*record*: the value plus a per-key ``version`` (1 on creation, +1 on each write) and the
writer's wall time ``updated_at`` (used to reconcile after an outage: a newer write is
never overwritten by an older one).

Operations (all async):

* documents — :meth:`Store.get`, :meth:`Store.get_many`, :meth:`Store.put` (optional
  compare-and-set on ``expect_version``; ``expect_version=0`` means "must not exist";
  optional ``ttl`` measured on the *server's* clock), :meth:`Store.delete`;
* sets as indexes — :meth:`Store.members` (changed with :class:`SetAdd`/:class:`SetRemove`
  inside :meth:`Store.commit`, or :meth:`Store.set_add`/:meth:`Store.set_remove`);
* counters — :meth:`Store.incr`;
* leases — :meth:`Store.acquire_lease` (acquire or renew), :meth:`Store.release_lease`,
  :meth:`Store.lease_owner`; expiry on the server's clock;
* atomic multi-key changes — :meth:`Store.commit` applies a list of operations all or
  nothing; any failed condition raises :class:`~backend_services.errors.ConflictError`
  and changes nothing;
* change feeds — :meth:`Store.append` adds an event to a named stream and returns its
  sequence number (1, 2, 3, … per stream); :meth:`Store.read` returns events after a
  position, optionally blocking; when the reader's position is no longer retained
  (trimmed, or the stream was reset) the batch says ``resync=True``: reload the full
  state, then continue from ``batch.position``.

Keys and stream names are plain strings chosen by components (``"cb:state:payments"``);
the store adds its own namespace and schema version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

__all__ = [
    "JSON",
    "Append",
    "Check",
    "CommitResult",
    "Delete",
    "FeedBatch",
    "FeedEvent",
    "Operation",
    "Put",
    "PutIfNewer",
    "Record",
    "SetAdd",
    "SetRemove",
    "Store",
    "StoreStatus",
]

JSON: TypeAlias = Any
"""A JSON-compatible value."""


@dataclass(frozen=True, slots=True)
class Record:
    """A stored value with its per-key version and the wall time of its last write."""

    value: JSON
    version: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class Put:
    """Write ``value`` at ``key``. ``expect_version``: None = unconditional, 0 = must not
    exist, n = must currently be at version n. ``ttl`` seconds (server clock) or None."""

    key: str
    value: JSON
    expect_version: int | None = None
    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete ``key`` (conditional on ``expect_version`` like :class:`Put`)."""

    key: str
    expect_version: int | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """A condition only: ``key`` must be at ``expect_version`` (0 = absent)."""

    key: str
    expect_version: int


@dataclass(frozen=True, slots=True)
class SetAdd:
    """Add ``members`` to the set at ``key``."""

    key: str
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SetRemove:
    """Remove ``members`` from the set at ``key``."""

    key: str
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Append:
    """Append ``event`` to ``stream``, keeping at most about ``maxlen`` events.

    ``dedupe_id``: when given, an append with an id the stream has already taken (recently)
    is skipped, so replaying a journal after an interrupted reconciliation adds nothing twice.
    """

    stream: str
    event: Mapping[str, JSON]
    maxlen: int | None = 10_000
    dedupe_id: str | None = None


@dataclass(frozen=True, slots=True)
class PutIfNewer:
    """Reconciliation write: applied only when the key is absent or its record's
    ``updated_at`` is older than this one's (last writer wins, by the writers' clocks).
    ``deleted=True`` deletes instead (a tombstone from an outage). Never raises ConflictError;
    a skipped entry is reported as version -1 in :class:`CommitResult`."""

    key: str
    value: JSON
    updated_at: float
    ttl: float | None = None
    deleted: bool = False


Operation: TypeAlias = Put | Delete | Check | SetAdd | SetRemove | Append | PutIfNewer


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What a commit did: new versions of written keys (0 for deleted keys) and the
    sequence numbers of appended events, by stream."""

    versions: dict[str, int] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One change-feed event: its sequence number in the stream and its data."""

    position: int
    data: dict[str, JSON]


@dataclass(frozen=True, slots=True)
class FeedBatch:
    """The result of :meth:`Store.read`.

    ``position`` is where to read from next. ``resync`` is True when events between the
    reader's position and ``events`` were lost (trimmed, or the stream was reset): the
    reader must reload its full view, then continue from ``position``.
    """

    events: list[FeedEvent]
    position: int
    resync: bool = False


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """Observable connection state of a store."""

    backend: str  # "memory" or "redis"
    connected: bool  # True while the preferred backend answers
    outages: int = 0  # how many times the preferred backend was lost
    pending_writes: int = 0  # writes made during an outage, not yet reconciled
    last_error: str | None = None


@runtime_checkable
class Store(Protocol):
    """Async shared-state store (see the module docstring for the semantics)."""

    async def initialize(self) -> None: ...
    async def close(self) -> None: ...
    def status(self) -> StoreStatus: ...

    async def server_time(self) -> float:
        """Wall time on the store's server (seconds since the epoch)."""
        ...

    async def get(self, key: str) -> Record | None: ...
    async def get_many(self, keys: Sequence[str]) -> dict[str, Record]: ...
    async def put(
        self, key: str, value: JSON, *, expect_version: int | None = None, ttl: float | None = None
    ) -> int:
        """Write and return the new version; raises ConflictError on a failed CAS."""
        ...

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        """True if the key existed; raises ConflictError on a failed CAS."""
        ...

    async def commit(self, ops: Sequence[Operation]) -> CommitResult: ...

    async def members(self, key: str) -> set[str]: ...
    async def set_add(self, key: str, *members: str) -> int: ...
    async def set_remove(self, key: str, *members: str) -> int: ...

    async def incr(self, key: str, amount: int = 1) -> int: ...

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Take the lease, or renew it if ``owner`` holds it; False if another holds it."""
        ...

    async def release_lease(self, name: str, owner: str) -> bool: ...
    async def lease_owner(self, name: str) -> str | None: ...

    async def append(
        self, stream: str, event: Mapping[str, JSON], *, maxlen: int | None = 10_000
    ) -> int: ...
    async def read(
        self, stream: str, after: int, *, count: int = 500, block: float | None = None
    ) -> FeedBatch:
        """Events with position > ``after`` (at most ``count``); with ``block`` seconds,
        wait that long for one to arrive when there is none."""
        ...

    async def feed_position(self, stream: str) -> int:
        """The position of the newest event in ``stream`` (0 when empty)."""
        ...
