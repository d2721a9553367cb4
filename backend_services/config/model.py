"""The nouns of configuration: sources, entries, versions, changes.

Everything here is immutable. Values are JSON-compatible; a secret entry carries its
ciphertext (``sealed``) beside the plaintext so that anything written out — the shared
store, snapshots, the last-known-good file, exports — holds only the ciphertext.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "REDACTED",
    "UNREADABLE",
    "ChangeKind",
    "ConfigChange",
    "ConfigChangeEvent",
    "ConfigEntry",
    "ConfigSource",
    "ConfigVersion",
    "Entry",
    "LocalChange",
    "VersionRecord",
    "copy_value",
]

REDACTED: Final = "***"
"""What a secret value looks like in logs, summaries and diffs."""


class _Unreadable:
    """Marker value of a secret this process holds no key for."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unreadable secret>"


UNREADABLE: Final = _Unreadable()


class ConfigSource(StrEnum):
    """Where a configuration value came from.

    ``DEFAULT`` < ``FILE`` < ``ENVIRONMENT`` < runtime (``API`` / ``REDIS``) in precedence
    (see :mod:`backend_services.config.layers`).
    """

    FILE = "file"
    REDIS = "redis"
    ENVIRONMENT = "environment"
    API = "api"
    DEFAULT = "default"


class ChangeKind(StrEnum):
    """What kind of operation created a version."""

    SET = "set"
    DELETE = "delete"
    BULK = "bulk"
    IMPORT = "import"
    ROLLBACK = "rollback"
    SNAPSHOT = "snapshot"
    RECONCILE = "reconcile"
    ROTATE = "rotate"


_SCALARS: Final = frozenset({int, float, str, bool, type(None)})


def copy_value(value: Any) -> Any:
    """``value`` itself when immutable, else a deep copy (callers never share state)."""
    return value if value.__class__ in _SCALARS else copy.deepcopy(value)


@dataclass(frozen=True, slots=True)
class Entry:
    """One key of the runtime (fleet-shared) layer as of some version.

    ``version`` is the configuration version that last wrote the key (so it doubles as the
    key's compare-and-set token); ``updated_at`` the writer's wall time. For secrets,
    ``sealed`` holds the ciphertext and ``value`` the plaintext (or :data:`UNREADABLE`).
    """

    value: Any
    source: ConfigSource = ConfigSource.API
    version: int = 0
    updated_at: float = 0.0
    author: str | None = None
    secret: bool = False
    sealed: str | None = None

    def same_content(self, other: Entry | None) -> bool:
        """Whether ``other`` holds the same value and secrecy (metadata aside)."""
        if other is None or other.secret != self.secret:
            return False
        if self.secret and self.sealed is not None and self.sealed == other.sealed:
            return True
        return bool(self.value.__class__ is other.value.__class__ and self.value == other.value)

    def restamped(self, version: int, updated_at: float, author: str | None) -> Entry:
        """This content written again at ``version``."""
        return Entry(self.value, self.source, version, updated_at, author, self.secret, self.sealed)

    def shown(self) -> Any:
        """The value fit for logs and summaries (secrets redacted)."""
        return REDACTED if self.secret else self.value


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """The audit record of one version: when, by what, by whom, what changed."""

    version: int
    id: str
    created_at: float
    source: ConfigSource
    kind: ChangeKind
    description: str = ""
    author: str | None = None
    keys: tuple[str, ...] = ()
    size: int = 0
    parent_id: str | None = None
    restored_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``version_id`` and ``timestamp`` for the first system's users)."""
        return {
            "version_id": self.id,
            "id": self.id,
            "version": self.version,
            "timestamp": self.created_at,
            "created_at": self.created_at,
            "source": self.source.value,
            "kind": self.kind.value,
            "description": self.description,
            "author": self.author,
            "changed_keys": list(self.keys),
            "config_count": self.size,
            "parent_id": self.parent_id,
            "restored_id": self.restored_id,
        }


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """A version's audit record plus its changes: key -> (old entry, new entry).

    ``None`` as the new entry means the key was removed; as the old one, that it was
    added. Old entries make the record reversible, so any retained version can be rebuilt
    from the current content.
    """

    meta: ConfigVersion
    changes: Mapping[str, tuple[Entry | None, Entry | None]] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return self.meta.version

    @property
    def id(self) -> str:
        return self.meta.id


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One effective value that changed (what change callbacks receive, as a record)."""

    key: str
    old_value: Any
    new_value: Any
    source: ConfigSource | None
    secret: bool = False


@dataclass(frozen=True, slots=True)
class ConfigChangeEvent:
    """What listeners receive for every applied change: the version (``None`` for a
    change of a per-process layer: file or environment) and the effective changes."""

    changes: tuple[ConfigChange, ...]
    source: ConfigSource
    version: ConfigVersion | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """The effective value of one key, as ``get_config_entry`` returns it.

    ``version`` is the configuration version that last wrote the key in the runtime layer
    (0 for values from the file, the environment or the defaults); pass it as
    ``expected_version=`` to make a compare-and-set write.
    """

    key: str
    value: Any
    source: ConfigSource
    version: int = 0
    updated_at: float | None = None
    author: str | None = None
    secret: bool = False
    layer: str = "runtime"

    @property
    def timestamp(self) -> float | None:
        """Alias of ``updated_at`` (the first system's name)."""
        return self.updated_at

    def as_dict(self, *, reveal: bool = False) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": REDACTED if self.secret and not reveal else copy_value(self.value),
            "source": self.source.value,
            "version": self.version,
            "updated_at": self.updated_at,
            "author": self.author,
            "secret": self.secret,
            "layer": self.layer,
        }


@dataclass(frozen=True, slots=True)
class LocalChange:
    """Audit record of a change to a per-process layer (the file or the environment)."""

    at: float
    source: ConfigSource
    description: str
    keys: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "timestamp": self.at,
            "source": self.source.value,
            "kind": "reload",
            "description": self.description,
            "changed_keys": list(self.keys),
            "version": None,
        }
