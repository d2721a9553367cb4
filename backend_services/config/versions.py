"""Immutable version history of the runtime layer: apply, diff, rollback plans, trimming.

The history holds the current content (key -> :class:`Entry`) and the last
``max_versions`` :class:`VersionRecord` s, oldest first. Records are reversible (each
change keeps the old entry), so the content as of any retained version is rebuilt by
undoing the newer records from the current content — memory grows with the size of the
changes, not with ``versions * keys``.

Version numbers only grow; ids (:func:`new_version_id`) carry the number, the wall time
in milliseconds and random bits, so an id is never reused — not after a restart, a trim,
nor after the shared store was flushed and versions were numbered again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..errors import ValidationError
from .model import REDACTED, ConfigVersion, Entry, VersionRecord

__all__ = [
    "DEFAULT_MAX_VERSIONS",
    "ConfigDiff",
    "HistoryGapError",
    "VersionHistory",
    "diff_contents",
    "new_version_id",
]

DEFAULT_MAX_VERSIONS = 100


def new_version_id(version: int, wall_time: float, random_bits: bytes) -> str:
    """``v<number>-<ms since epoch, base 36>-<random hex>``: unique forever."""
    ms = max(0, int(wall_time * 1000))
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        ms, rem = divmod(ms, 36)
        text = digits[rem] + text
        if ms == 0:
            break
    return f"v{version}-{text}-{random_bits.hex()}"


class HistoryGapError(Exception):
    """A record does not follow the head (versions were missed, or histories forked)."""

    def __init__(self, head: int, got: int, reason: str) -> None:
        self.head = head
        self.got = got
        super().__init__(f"version {got} cannot follow {head}: {reason}")


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    """What changed between two contents (``a`` → ``b``); secrets shown redacted."""

    added: Mapping[str, Any]
    removed: Mapping[str, Any]
    changed: Mapping[str, tuple[Any, Any]]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": dict(self.added),
            "removed": dict(self.removed),
            "changed": {k: {"old": o, "new": n} for k, (o, n) in self.changed.items()},
        }


def _shown(entry: Entry, reveal: bool) -> Any:
    return entry.value if reveal or not entry.secret else REDACTED


def diff_contents(
    a: Mapping[str, Entry], b: Mapping[str, Entry], *, reveal: bool = False
) -> ConfigDiff:
    """Keys added, removed and changed from ``a`` to ``b`` (by value and secrecy)."""
    added = {k: _shown(e, reveal) for k, e in b.items() if k not in a}
    removed = {k: _shown(e, reveal) for k, e in a.items() if k not in b}
    changed: dict[str, tuple[Any, Any]] = {}
    for key, old in a.items():
        new = b.get(key)
        if new is not None and not old.same_content(new):
            changed[key] = (_shown(old, reveal), _shown(new, reveal))
    return ConfigDiff(
        MappingProxyType(dict(sorted(added.items()))),
        MappingProxyType(dict(sorted(removed.items()))),
        MappingProxyType(dict(sorted(changed.items()))),
    )


class VersionHistory:
    """Current content plus the bounded, reversible record of how it got there."""

    def __init__(self, max_versions: int = DEFAULT_MAX_VERSIONS) -> None:
        if not isinstance(max_versions, int) or isinstance(max_versions, bool) or max_versions < 1:
            raise ValidationError("max_versions", max_versions, "an integer >= 1")
        self.max_versions = max_versions
        self._current: dict[str, Entry] = {}
        self._records: deque[VersionRecord] = deque()
        self._by_id: dict[str, VersionRecord] = {}
        self._head: ConfigVersion | None = None

    # --- reading -------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The newest version number (0 before the first change)."""
        return 0 if self._head is None else self._head.version

    @property
    def head(self) -> ConfigVersion | None:
        return self._head

    @property
    def current(self) -> Mapping[str, Entry]:
        """The current content (read-only view)."""
        return MappingProxyType(self._current)

    def records(self) -> list[VersionRecord]:
        """Retained records, oldest first."""
        return list(self._records)

    def versions(self, limit: int | None = None) -> list[ConfigVersion]:
        """Retained audit records, oldest first; ``limit`` keeps the newest N."""
        metas = [r.meta for r in self._records]
        return metas if limit is None else metas[max(0, len(metas) - limit) :]

    def find(self, ref: str | int) -> VersionRecord | None:
        """The retained record with this id (or version number)."""
        if isinstance(ref, str):
            return self._by_id.get(ref)
        if isinstance(ref, int) and not isinstance(ref, bool):
            for record in self._records:
                if record.version == ref:
                    return record
        return None

    def content_at(self, ref: str | int) -> dict[str, Entry]:
        """The content right after version ``ref`` (a fresh dict)."""
        record = self.find(ref)
        if record is None:
            raise ValidationError("version_id", ref, "the id of a retained version")
        content = dict(self._current)
        for newer in reversed(self._records):
            if newer.version <= record.version:
                break
            for key, (old, _new) in newer.changes.items():
                if old is None:
                    content.pop(key, None)
                else:
                    content[key] = old
        return content

    def diff(self, a: str | int, b: str | int, *, reveal: bool = False) -> ConfigDiff:
        """What changed from version ``a`` to version ``b``."""
        return diff_contents(self.content_at(a), self.content_at(b), reveal=reveal)

    # --- planning ------------------------------------------------------------------

    def plan(
        self, updates: Mapping[str, Entry | None]
    ) -> dict[str, tuple[Entry | None, Entry | None]]:
        """The real changes ``updates`` would make (no-ops dropped): key -> (old, new)."""
        out: dict[str, tuple[Entry | None, Entry | None]] = {}
        current = self._current
        for key, new in updates.items():
            old = current.get(key)
            if new is None:
                if old is not None:
                    out[key] = (old, None)
            elif old is None or not old.same_content(new):
                out[key] = (old, new)
        return out

    def rollback_plan(self, ref: str | int) -> dict[str, Entry | None]:
        """Updates that make the current content exactly that of version ``ref``
        (keys added since are removed). Entries still need restamping."""
        target = self.content_at(ref)
        updates: dict[str, Entry | None] = {k: None for k in self._current if k not in target}
        for key, entry in target.items():
            cur = self._current.get(key)
            if cur is None or not cur.same_content(entry):
                updates[key] = entry
        return updates

    # --- changing ------------------------------------------------------------------

    def apply(self, record: VersionRecord) -> None:
        """Append ``record`` (it must follow the head and match the current content)."""
        head = self.version
        if record.version != head + 1:
            raise HistoryGapError(head, record.version, "expected the next version number")
        if self._head is not None and record.meta.parent_id not in (None, self._head.id):
            raise HistoryGapError(head, record.version, "it was made on another history")
        for key, (old, _new) in record.changes.items():
            cur = self._current.get(key)
            if (cur is None) != (old is None) or (
                cur is not None and old is not None and cur.version != old.version
            ):
                raise HistoryGapError(head, record.version, f"key {key!r} differs from its base")
        for key, (_old, new) in record.changes.items():
            if new is None:
                self._current.pop(key, None)
            else:
                self._current[key] = new
        self._records.append(record)
        self._by_id[record.id] = record
        self._head = record.meta
        self._trim()

    def reset(
        self,
        current: Mapping[str, Entry],
        records: Iterable[VersionRecord],
        head: ConfigVersion | None,
    ) -> None:
        """Replace everything (a full reload): ``records`` oldest first, ending at ``head``."""
        self._current = dict(current)
        self._records = deque(sorted(records, key=lambda r: r.version))
        self._by_id = {r.id: r for r in self._records}
        self._head = (
            head if head is not None else (self._records[-1].meta if self._records else None)
        )
        self._trim()

    def _trim(self) -> None:
        while len(self._records) > self.max_versions:
            dropped = self._records.popleft()
            self._by_id.pop(dropped.id, None)
