"""How configuration versions live in the shared store (pure: names, values, operations).

Per service (``config:<service>:…``, the store adds its own namespace):

* ``head`` — ``{"version", "id", "at", "history": [[version, id], …]}``; every change is
  one atomic ``commit`` that writes the head *conditionally on the head's record version*
  (compare-and-set), so two writers can never both make version N+1;
* ``entry:<key>`` — one record per runtime key (its JSON entry, secrets sealed); a removed
  key leaves a *tombstone* (``{"deleted": true, …}``, expiring after ``tombstone_ttl``) so
  an older write replayed after an outage cannot bring it back;
* ``keys`` — the set of keys that have entries (only grows in a change; pruned of keys
  whose tombstones expired);
* ``version:<id>`` — each retained version's record (audit + reversible changes);
* the stream ``config:<service>:changes`` — one event per version, carrying the record
  itself when it is small (else followers fetch ``version:<id>``).

Entries are written with the store's last-writer-wins reconciliation in mind: after an
outage, per-key values converge to the newest write, and the configuration manager then
commits a ``reconcile`` version that makes the history describe that content again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..errors import ConfigValidationError
from ..store.protocol import Append, Delete, Operation, Put, PutIfNewer, SetAdd
from .documents import encode_entry, encode_record
from .model import Entry, VersionRecord

__all__ = [
    "DEFAULT_EMBED_LIMIT",
    "DEFAULT_TOMBSTONE_TTL",
    "FleetKeys",
    "Head",
    "Tombstone",
    "commit_ops",
    "head_value",
    "is_tombstone",
    "parse_head",
    "tombstone_value",
]

DEFAULT_TOMBSTONE_TTL: Final = 7 * 24 * 3600.0
DEFAULT_EMBED_LIMIT: Final = 256
STREAM_MAXLEN: Final = 10_000


class FleetKeys:
    """Store key names of one service's configuration."""

    __slots__ = ("_entry", "_version", "head", "keys", "prefix", "service", "stream")

    def __init__(self, service: str) -> None:
        self.service = service
        self.prefix = f"config:{service}:"
        self.head = self.prefix + "head"
        self.keys = self.prefix + "keys"
        self.stream = self.prefix + "changes"
        self._entry = self.prefix + "entry:"
        self._version = self.prefix + "version:"

    def entry(self, key: str) -> str:
        return self._entry + key

    def version(self, version_id: str) -> str:
        return self._version + version_id

    def __repr__(self) -> str:
        return f"FleetKeys({self.service!r})"


@dataclass(frozen=True, slots=True)
class Head:
    """The shared head: newest version and the retained history, oldest first."""

    version: int
    id: str
    at: float
    history: tuple[tuple[int, str], ...]

    def ids(self) -> list[str]:
        return [i for _, i in self.history]


@dataclass(frozen=True, slots=True)
class Tombstone:
    version: int
    updated_at: float


def head_value(
    version: int, version_id: str, at: float, history: Sequence[tuple[int, str]]
) -> dict[str, Any]:
    return {"version": version, "id": version_id, "at": at, "history": [list(h) for h in history]}


def parse_head(value: Any) -> Head:
    """The head from its stored value (malformed data is a clear error)."""
    if not isinstance(value, Mapping):
        raise ConfigValidationError("head", type(value).__name__, "an object")
    version, ident, at, history = (
        value.get("version"),
        value.get("id"),
        value.get("at", 0.0),
        value.get("history", []),
    )
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ConfigValidationError("head.version", version, "an integer >= 0")
    if not isinstance(ident, str) or not ident:
        raise ConfigValidationError("head.id", ident, "a non-empty string")
    if not isinstance(history, list):
        raise ConfigValidationError("head.history", history, "a list of [version, id]")
    pairs: list[tuple[int, str]] = []
    for item in history:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], int)
            or not isinstance(item[1], str)
        ):
            raise ConfigValidationError("head.history", item, "[version, id] pairs")
        pairs.append((item[0], item[1]))
    return Head(version, ident, float(at) if isinstance(at, (int, float)) else 0.0, tuple(pairs))


def tombstone_value(version: int, updated_at: float, author: str | None) -> dict[str, Any]:
    return {"deleted": True, "version": version, "updated_at": updated_at, "author": author}


def is_tombstone(value: Any) -> Tombstone | None:
    if isinstance(value, Mapping) and value.get("deleted") is True:
        version = value.get("version", 0)
        at = value.get("updated_at", 0.0)
        return Tombstone(
            version if isinstance(version, int) else 0,
            float(at) if isinstance(at, (int, float)) else 0.0,
        )
    return None


def commit_ops(
    keys: FleetKeys,
    record: VersionRecord,
    *,
    head_revision: int,
    history: Sequence[tuple[int, str]],
    dropped: Iterable[str] = (),
    entry_revisions: Mapping[str, int] | None = None,
    extra_records: Iterable[VersionRecord] = (),
    also_write: Mapping[str, Entry] | None = None,
    also_delete: Iterable[str] = (),
    newest_wins: Mapping[str, float] | None = None,
    tombstone_ttl: float = DEFAULT_TOMBSTONE_TTL,
    embed_limit: int = DEFAULT_EMBED_LIMIT,
) -> list[Operation]:
    """The atomic commit of ``record``: head (compare-and-set on ``head_revision``;
    0 = must not exist), entries, key index, the record, trimmed records, the event.

    ``entry_revisions`` (key -> record version, 0 = absent) makes entry writes
    conditional too (used when reconciling, where entries may change under us);
    ``also_write`` writes entries the record does not change (re-seeding a store),
    ``also_delete`` leaves tombstones for keys the record does not change, and
    ``extra_records`` stores older records (the retained history) beside it.

    ``newest_wins`` (key -> deletion time) makes every entry write a reconciliation write
    (:class:`PutIfNewer` at the entry's own write time, tombstones at their deletion
    time), so a newer write still arriving from an outage is never overwritten."""
    meta = record.meta
    ops: list[Operation] = [
        Put(
            keys.head,
            head_value(meta.version, meta.id, meta.created_at, history),
            expect_version=head_revision,
        )
    ]
    added: list[str] = []
    encoded = encode_record(record)
    new_json = encoded["changes"]  # key -> [old, new] JSON: new entries reused below

    def write(key: str, entry: Entry | None) -> None:
        expect = None if entry_revisions is None else entry_revisions.get(key)
        if entry is None:
            tomb = tombstone_value(meta.version, meta.created_at, meta.author)
            if newest_wins is not None:
                at = newest_wins.get(key, meta.created_at)
                tomb["updated_at"] = at
                ops.append(PutIfNewer(keys.entry(key), tomb, at, ttl=tombstone_ttl))
            else:
                ops.append(Put(keys.entry(key), tomb, expect_version=expect, ttl=tombstone_ttl))
            return
        pair = new_json.get(key)
        value = pair[1] if pair is not None and pair[1] is not None else encode_entry(entry)
        if newest_wins is not None:
            ops.append(PutIfNewer(keys.entry(key), value, entry.updated_at))
        else:
            ops.append(Put(keys.entry(key), value, expect_version=expect))
        added.append(key)

    for key, (_old, new) in record.changes.items():
        write(key, new)
    for key, entry in (also_write or {}).items():
        if key not in record.changes:
            write(key, entry)
    for key in also_delete:
        if key not in record.changes:
            write(key, None)
    if added:
        ops.append(SetAdd(keys.keys, tuple(added)))
    for extra in extra_records:
        ops.append(Put(keys.version(extra.id), encode_record(extra)))
    ops.append(Put(keys.version(meta.id), encoded))
    ops.extend(Delete(keys.version(i)) for i in dropped if i != meta.id)
    event: dict[str, Any] = {
        "version": meta.version,
        "id": meta.id,
        "parent_id": meta.parent_id,
        "head_revision": head_revision + 1,
    }
    if len(record.changes) <= embed_limit:
        event["record"] = encoded
    ops.append(Append(keys.stream, event, maxlen=STREAM_MAXLEN, dedupe_id=meta.id))
    return ops
