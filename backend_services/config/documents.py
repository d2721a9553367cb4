"""JSON forms of entries and versions, exports, and the last-known-good file.

Secrets are only ever written sealed (``{"sealed": "enc:v1:…"}``); an export may carry
plaintext when explicitly asked for (``{"value": …, "secret": true}``). Everything read
back is checked: a malformed document raises
:class:`~backend_services.errors.ConfigValidationError` naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import ConfigValidationError
from .model import UNREADABLE, ChangeKind, ConfigSource, ConfigVersion, Entry, VersionRecord
from .tree import flatten

__all__ = [
    "EXPORT_FORMAT",
    "LKG_FORMAT",
    "ImportedConfig",
    "LastKnownGood",
    "Opener",
    "decode_entry",
    "decode_export",
    "decode_lkg",
    "decode_meta",
    "decode_record",
    "dump",
    "encode_entry",
    "encode_export",
    "encode_lkg",
    "encode_meta",
    "encode_record",
    "load",
]

EXPORT_FORMAT: Final = "backend_services.config"
LKG_FORMAT: Final = "backend_services.config.last_known_good"
FORMAT_VERSION: Final = 1

Opener = Callable[[str, str], Any]
"""``open(key, sealed) -> plaintext`` (or :data:`~.model.UNREADABLE`)."""


def _bad(field: str, value: Any, expected: str) -> ConfigValidationError:
    return ConfigValidationError(field, value, expected)


# --- entries and versions --------------------------------------------------------------


_SOURCE_TEXT: Final = {s: s.value for s in ConfigSource}


def encode_entry(entry: Entry, *, reveal: bool = False) -> dict[str, Any]:
    source = _SOURCE_TEXT[entry.source]
    if entry.secret:
        out: dict[str, Any] = (
            {"value": None if entry.value is UNREADABLE else entry.value}
            if reveal
            else {"sealed": entry.sealed}
        )
        out["secret"] = True
        out["source"] = source
        out["version"] = entry.version
        out["updated_at"] = entry.updated_at
    else:
        out = {
            "value": entry.value,
            "source": source,
            "version": entry.version,
            "updated_at": entry.updated_at,
        }
    if entry.author is not None:
        out["author"] = entry.author
    return out


def _source(raw: Any, where: str) -> ConfigSource:
    try:
        return ConfigSource(raw)
    except ValueError:
        raise _bad(where, raw, f"one of {', '.join(s.value for s in ConfigSource)}") from None


def _number(raw: Any, where: str, kind: type = float) -> Any:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise _bad(where, raw, "a number")
    if kind is int and not float(raw).is_integer():
        raise _bad(where, raw, "an integer")
    return kind(raw)


def decode_entry(key: str, raw: Any, opener: Opener) -> Entry:
    """An entry from its JSON form (``opener`` decrypts a sealed value)."""
    where = f"entry {key!r}"
    if not isinstance(raw, Mapping):
        raise _bad(where, raw, "an object")
    secret = bool(raw.get("secret", False)) or "sealed" in raw
    sealed = raw.get("sealed")
    if sealed is not None:
        if not isinstance(sealed, str):
            raise _bad(f"{where}.sealed", "***", "a sealed string")
        value = opener(key, sealed)
    elif "value" in raw:
        value = raw["value"]
    else:
        raise _bad(where, raw, 'a "value" or a "sealed" field')
    author = raw.get("author")
    return Entry(
        value=value,
        source=_source(raw.get("source", "api"), f"{where}.source"),
        version=_number(raw.get("version", 0), f"{where}.version", int),
        updated_at=_number(raw.get("updated_at", 0.0), f"{where}.updated_at"),
        author=author if isinstance(author, str) else None,
        secret=secret,
        sealed=sealed,
    )


def encode_meta(meta: ConfigVersion) -> dict[str, Any]:
    return {
        "version": meta.version,
        "id": meta.id,
        "created_at": meta.created_at,
        "source": meta.source.value,
        "kind": meta.kind.value,
        "description": meta.description,
        "author": meta.author,
        "keys": list(meta.keys),
        "size": meta.size,
        "parent_id": meta.parent_id,
        "restored_id": meta.restored_id,
    }


def decode_meta(raw: Any) -> ConfigVersion:
    if not isinstance(raw, Mapping):
        raise _bad("version", raw, "an object")
    ident = raw.get("id")
    if not isinstance(ident, str) or not ident:
        raise _bad("version.id", ident, "a non-empty string")
    try:
        kind = ChangeKind(raw.get("kind", "set"))
    except ValueError:
        raise _bad("version.kind", raw.get("kind"), "a change kind") from None
    keys = raw.get("keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _bad("version.keys", keys, "a list of keys")

    def opt_str(name: str) -> str | None:
        value = raw.get(name)
        return value if isinstance(value, str) else None

    return ConfigVersion(
        version=_number(raw.get("version"), "version.version", int),
        id=ident,
        created_at=_number(raw.get("created_at", 0.0), "version.created_at"),
        source=_source(raw.get("source", "api"), "version.source"),
        kind=kind,
        description=str(raw.get("description") or ""),
        author=opt_str("author"),
        keys=tuple(keys),
        size=_number(raw.get("size", 0), "version.size", int),
        parent_id=opt_str("parent_id"),
        restored_id=opt_str("restored_id"),
    )


def encode_record(record: VersionRecord) -> dict[str, Any]:
    return {
        "meta": encode_meta(record.meta),
        "changes": {
            key: [
                None if old is None else encode_entry(old),
                None if new is None else encode_entry(new),
            ]
            for key, (old, new) in record.changes.items()
        },
    }


def decode_record(raw: Any, opener: Opener) -> VersionRecord:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("changes"), Mapping):
        raise _bad("record", type(raw).__name__, 'an object with "meta" and "changes"')
    meta = decode_meta(raw.get("meta"))
    changes: dict[str, tuple[Entry | None, Entry | None]] = {}
    for key, pair in raw["changes"].items():
        if not isinstance(pair, list) or len(pair) != 2:
            raise _bad(f"record.changes.{key}", pair, "[old, new]")
        old = None if pair[0] is None else decode_entry(key, pair[0], opener)
        new = None if pair[1] is None else decode_entry(key, pair[1], opener)
        changes[key] = (old, new)
    return VersionRecord(meta, changes)


# --- text ------------------------------------------------------------------------------


def dump(doc: Mapping[str, Any], fmt: str = "json") -> str:
    """``doc`` as JSON (indented) or YAML text."""
    kind = fmt.lower() if isinstance(fmt, str) else fmt
    if kind == "json":
        return json.dumps(doc, indent=2, sort_keys=False, allow_nan=False)
    if kind in ("yaml", "yml"):
        import yaml

        return str(yaml.safe_dump(dict(doc), sort_keys=False, allow_unicode=True))
    raise ConfigValidationError("format", fmt, '"json" or "yaml"')


def load(data: str | bytes | Mapping[str, Any], fmt: str = "json") -> dict[str, Any]:
    """Parse JSON/YAML text (or take a mapping as it is); the top level is an object."""
    if isinstance(data, Mapping):
        return dict(data)
    kind = fmt.lower() if isinstance(fmt, str) else fmt
    if kind not in ("json", "yaml", "yml"):
        raise ConfigValidationError("format", fmt, '"json" or "yaml"')
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if not isinstance(text, str):
        raise ConfigValidationError("data", type(data).__name__, "JSON/YAML text or a mapping")
    try:
        if kind == "json":
            doc = json.loads(text)
        else:
            import yaml

            doc = yaml.safe_load(text)
    except Exception as exc:
        raise ConfigValidationError(
            "data", "<document>", f"valid {kind.upper()} ({' '.join(str(exc).split())})"
        ) from None
    if not isinstance(doc, dict):
        raise ConfigValidationError("data", type(doc).__name__, "an object at the top level")
    return doc


# --- export / import -------------------------------------------------------------------


def encode_export(
    *,
    service: str,
    exported_at: float,
    head: ConfigVersion | None,
    entries: Mapping[str, Entry],
    versions: list[ConfigVersion],
    reveal: bool,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "format": EXPORT_FORMAT,
        "format_version": FORMAT_VERSION,
        "service": service,
        "exported_at": exported_at,
        "version": 0 if head is None else head.version,
        "version_id": None if head is None else head.id,
        "secrets": "plaintext" if reveal else "sealed",
        "metadata": dict(metadata or {}),
        "entries": {k: encode_entry(entries[k], reveal=reveal) for k in sorted(entries)},
        "versions": [encode_meta(v) for v in versions],
    }


@dataclass(frozen=True, slots=True)
class ImportedConfig:
    """What an import document holds: values (secrets as plaintext or sealed) + origin."""

    values: dict[str, Any]
    secret: frozenset[str] = frozenset()
    sealed: Mapping[str, str] = field(default_factory=dict)
    service: str | None = None
    version: int | None = None
    version_id: str | None = None


def decode_export(doc: Mapping[str, Any]) -> ImportedConfig:
    """Our export format; also ``{"config": {key: {"value": …}}}`` and a plain document."""
    if doc.get("format") == EXPORT_FORMAT:
        entries = doc.get("entries")
        if not isinstance(entries, Mapping):
            raise _bad("entries", type(entries).__name__, "an object of key -> entry")
        values: dict[str, Any] = {}
        secret: set[str] = set()
        sealed: dict[str, str] = {}
        for key, raw in entries.items():
            if not isinstance(raw, Mapping):
                raise _bad(f"entries.{key}", raw, "an object")
            if raw.get("secret") or "sealed" in raw:
                secret.add(key)
            if "sealed" in raw:
                if not isinstance(raw["sealed"], str):
                    raise _bad(f"entries.{key}.sealed", "***", "a sealed string")
                sealed[key] = raw["sealed"]
                values[key] = None
            elif "value" in raw:
                values[key] = raw["value"]
            else:
                raise _bad(f"entries.{key}", raw, 'a "value" or a "sealed" field')
        version = doc.get("version")
        vid = doc.get("version_id")
        service = doc.get("service")
        return ImportedConfig(
            values,
            frozenset(secret),
            sealed,
            service if isinstance(service, str) else None,
            version if isinstance(version, int) else None,
            vid if isinstance(vid, str) else None,
        )
    if isinstance(doc.get("config"), Mapping) and set(doc) <= {
        "config",
        "service_name",
        "export_timestamp",
        "versions",
        "version",
        "metadata",
    }:
        values = {}
        for key, raw in doc["config"].items():
            if isinstance(raw, Mapping) and "value" in raw:
                values[str(key)] = raw["value"]
            else:
                values.update(flatten(raw, str(key)))
        return ImportedConfig(values)
    return ImportedConfig(flatten(dict(doc)))


# --- last known good -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LastKnownGood:
    """What a process needs to start when the store and the file are unavailable."""

    service: str
    saved_at: float
    head: ConfigVersion | None
    entries: dict[str, Entry]
    records: list[VersionRecord]
    file_path: str | None = None
    file_sha256: str | None = None
    file_values: dict[str, Any] = field(default_factory=dict)
    local_only: list[str] = field(default_factory=list)
    """Ids of versions made while the shared store was unreachable (not yet merged)."""


def encode_lkg(lkg: LastKnownGood, seal: Callable[[str, Any], str | None]) -> dict[str, Any]:
    """``seal(key, value)`` returns the ciphertext for a secret file value, else None."""
    plain: dict[str, Any] = {}
    sealed: dict[str, str] = {}
    for key, value in lkg.file_values.items():
        token = seal(key, value)
        if token is None:
            plain[key] = value
        else:
            sealed[key] = token
    return {
        "format": LKG_FORMAT,
        "format_version": FORMAT_VERSION,
        "service": lkg.service,
        "saved_at": lkg.saved_at,
        "head": None if lkg.head is None else encode_meta(lkg.head),
        "entries": {k: encode_entry(e) for k, e in lkg.entries.items()},
        "records": [encode_record(r) for r in lkg.records],
        "local_only": list(lkg.local_only),
        "file": {
            "path": lkg.file_path,
            "sha256": lkg.file_sha256,
            "values": plain,
            "sealed": sealed,
        },
    }


def decode_lkg(doc: Mapping[str, Any], opener: Opener) -> LastKnownGood:
    if doc.get("format") != LKG_FORMAT:
        raise _bad("format", doc.get("format"), repr(LKG_FORMAT))
    entries_raw = doc.get("entries")
    if not isinstance(entries_raw, Mapping):
        raise _bad("entries", type(entries_raw).__name__, "an object")
    records_raw = doc.get("records", [])
    if not isinstance(records_raw, list):
        raise _bad("records", type(records_raw).__name__, "a list")
    file = doc.get("file") or {}
    if not isinstance(file, Mapping):
        raise _bad("file", type(file).__name__, "an object")
    values = dict(file.get("values") or {})
    for key, token in (file.get("sealed") or {}).items():
        values[key] = opener(key, token)
    head_raw = doc.get("head")
    return LastKnownGood(
        service=str(doc.get("service", "")),
        saved_at=_number(doc.get("saved_at", 0.0), "saved_at"),
        head=None if head_raw is None else decode_meta(head_raw),
        entries={k: decode_entry(k, e, opener) for k, e in entries_raw.items()},
        records=[decode_record(r, opener) for r in records_raw],
        file_path=file.get("path") if isinstance(file.get("path"), str) else None,
        file_sha256=file.get("sha256") if isinstance(file.get("sha256"), str) else None,
        file_values=values,
        local_only=[i for i in doc.get("local_only", []) or [] if isinstance(i, str)],
    )
