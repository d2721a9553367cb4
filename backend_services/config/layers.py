"""The precedence rule, applied per leaf key, and ``explain``.

    runtime (API calls, shared by the fleet through the store)  — highest
    environment (``<SERVICE>__<KEY>`` and the spec's ``DTESN_*`` variables)
    file (JSON or YAML, watched)
    defaults (given to the constructor)                          — lowest

Why runtime wins: a runtime change is explicit, validated, versioned, audited and
fleet-wide; if a per-host environment variable could shadow it, a change (or a rollback
made to stop an outage) would silently not apply on some hosts. The environment beats the
file because it is the per-deployment override of a file that ships with the code.
``explain(key)`` shows which layer supplies a value and which lower ones it overrides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

from ..log import mask_url
from .model import REDACTED, ConfigChange, ConfigSource, Entry, copy_value
from .tree import SortedKeys, nest

__all__ = ["MISSING", "PRECEDENCE", "Candidate", "Explanation", "Layer", "LayeredConfig"]


class Layer(IntEnum):
    """Layers in increasing precedence."""

    DEFAULT = 0
    FILE = 1
    ENVIRONMENT = 2
    RUNTIME = 3

    @property
    def label(self) -> str:
        return self.name.lower()


PRECEDENCE: Final = (Layer.RUNTIME, Layer.ENVIRONMENT, Layer.FILE, Layer.DEFAULT)
"""Highest first."""

_LAYER_SOURCE: Final = {
    Layer.DEFAULT: ConfigSource.DEFAULT,
    Layer.FILE: ConfigSource.FILE,
    Layer.ENVIRONMENT: ConfigSource.ENVIRONMENT,
}

_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class Explanation:
    """Where ``key``'s value comes from, and what it overrides (secrets redacted)."""

    key: str
    value: Any
    source: ConfigSource | None
    layer: str | None
    detail: str = ""
    version: int | None = None
    secret: bool = False
    overrides: tuple[tuple[str, Any, str], ...] = ()
    children: tuple[Explanation, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "value": self.value,
            "source": None if self.source is None else self.source.value,
            "layer": self.layer,
            "detail": self.detail,
            "version": self.version,
            "secret": self.secret,
            "overrides": [
                {"layer": layer, "value": value, "detail": detail}
                for layer, value, detail in self.overrides
            ],
        }
        if self.children:
            out["children"] = [c.as_dict() for c in self.children]
        return out


class LayeredConfig:
    """Four layers and the effective flat view of them (what ``get_config`` reads)."""

    def __init__(self, is_secret: Callable[[str], bool] | None = None) -> None:
        self._is_secret = is_secret or (lambda _key: False)
        self.layers: dict[Layer, Mapping[str, Any]] = {
            Layer.DEFAULT: {},
            Layer.FILE: {},
            Layer.ENVIRONMENT: {},
        }
        self.runtime: Mapping[str, Entry] = {}
        self.details: dict[Layer, Mapping[str, str]] = {}
        self.values: dict[str, Any] = {}
        """Effective leaf values (plaintext): the hot path reads this dict directly."""
        self.origin: dict[str, Layer] = {}
        self._index: SortedKeys | None = None

    # --- resolution ----------------------------------------------------------------

    def _resolve(self, key: str) -> tuple[Layer, Any] | None:
        entry = self.runtime.get(key)
        if entry is not None:
            return Layer.RUNTIME, entry.value
        for layer in (Layer.ENVIRONMENT, Layer.FILE, Layer.DEFAULT):
            value = self.layers[layer].get(key, _MISSING)
            if value is not _MISSING:
                return layer, value
        return None

    def is_secret(self, key: str) -> bool:
        entry = self.runtime.get(key)
        return (entry is not None and entry.secret) or self._is_secret(key)

    def source_of(self, key: str) -> ConfigSource | None:
        layer = self.origin.get(key)
        if layer is None:
            return None
        if layer is Layer.RUNTIME:
            return self.runtime[key].source
        return _LAYER_SOURCE[layer]

    def refresh(self, keys: Iterable[str]) -> list[ConfigChange]:
        """Recompute the effective value of ``keys``; the ones that changed, in order."""
        changes: list[ConfigChange] = []
        values, origin = self.values, self.origin
        for key in keys:
            old = values.get(key, _MISSING)
            resolved = self._resolve(key)
            if resolved is None:
                if old is _MISSING:
                    continue
                del values[key]
                del origin[key]
                self._index = None
                changes.append(ConfigChange(key, old, None, None, self.is_secret(key)))
                continue
            layer, new = resolved
            origin[key] = layer
            if old is _MISSING:
                self._index = None
            elif old.__class__ is new.__class__ and old == new:
                values[key] = new
                continue
            values[key] = new
            changes.append(
                ConfigChange(
                    key,
                    None if old is _MISSING else old,
                    new,
                    self.source_of(key),
                    self.is_secret(key),
                )
            )
        return changes

    def set_layer(
        self, layer: Layer, values: Mapping[str, Any], details: Mapping[str, str] | None = None
    ) -> list[ConfigChange]:
        """Replace a per-process layer; the effective changes it made."""
        old = self.layers[layer]
        self.layers[layer] = dict(values)
        self.details[layer] = dict(details or {})
        return self.refresh(sorted(set(old) | set(values)))

    def set_runtime(self, runtime: Mapping[str, Entry], keys: Iterable[str]) -> list[ConfigChange]:
        """Point at the (new) runtime content and recompute ``keys``."""
        self.runtime = runtime
        return self.refresh(keys)

    def all_keys(self) -> set[str]:
        keys: set[str] = set(self.runtime)
        for mapping in self.layers.values():
            keys.update(mapping)
        return keys

    # --- reading -------------------------------------------------------------------

    def index(self) -> SortedKeys:
        if self._index is None:
            self._index = SortedKeys(self.values)
        return self._index

    def lookup(self, key: str, default: Any = None, *, copy: bool = True) -> Any:
        """A leaf's value, else the dict of everything under ``key``, else ``default``."""
        value = self.values.get(key, _MISSING)
        if value is not _MISSING:
            return copy_value(value) if copy else value
        below = self.index().under(key)
        if not below:
            return default
        values = self.values
        tree = nest(((k, values[k]) for k in below), key)
        return copy_value(tree) if copy else tree

    def shown(self, key: str, value: Any) -> Any:
        return REDACTED if self.is_secret(key) else value

    def explain(self, key: str, *, reveal: bool = False) -> Explanation:
        """Which layer supplies ``key`` and which lower layers it overrides."""
        present: list[tuple[Layer, Any, str, int | None]] = []
        entry = self.runtime.get(key)
        if entry is not None:
            detail = f"version {entry.version}"
            if entry.author:
                detail += f" by {entry.author}"
            present.append((Layer.RUNTIME, entry.value, detail, entry.version))
        for layer in (Layer.ENVIRONMENT, Layer.FILE, Layer.DEFAULT):
            value = self.layers[layer].get(key, _MISSING)
            if value is not _MISSING:
                present.append((layer, value, self.details.get(layer, {}).get(key, ""), None))
        secret = self.is_secret(key)

        def show(v: Any) -> Any:
            if reveal:
                return copy_value(v)
            if secret:
                return REDACTED
            return mask_url(v) if isinstance(v, str) and "://" in v else copy_value(v)

        if not present:
            below = self.index().under(key)
            children = tuple(self.explain(k, reveal=reveal) for k in below)
            value = nest(((c.key, c.value) for c in children), key) if children else None
            return Explanation(
                key, value, None, None, "not set" if not children else "", None, False, (), children
            )
        layer, value, detail, version = present[0]
        return Explanation(
            key=key,
            value=show(value),
            source=entry.source
            if layer is Layer.RUNTIME and entry is not None
            else _LAYER_SOURCE[layer],
            layer=layer.label,
            detail=detail,
            version=version,
            secret=secret,
            overrides=tuple((lyr.label, show(v), d) for lyr, v, d, _ in present[1:]),
        )


class Candidate:
    """The configuration as it would be after a change (nothing applied): runtime
    changes and/or one per-process layer replaced. Used to validate before applying."""

    def __init__(
        self,
        base: LayeredConfig,
        runtime: Mapping[str, Entry | None] | None = None,
        layer: tuple[Layer, Mapping[str, Any]] | None = None,
    ) -> None:
        self.base = base
        self.runtime = runtime or {}
        self.layer = layer
        changed = set(self.runtime)
        if layer is not None:
            changed |= set(layer[1]) | set(base.layers[layer[0]])
        self.changed = sorted(changed)

    def leaf(self, key: str) -> Any:
        """The effective leaf value of ``key`` after the change (or the sentinel)."""
        if key in self.runtime:
            new = self.runtime[key]
            if new is not None:
                return new.value
        else:
            entry = self.base.runtime.get(key)
            if entry is not None:
                return entry.value
        for layer in (Layer.ENVIRONMENT, Layer.FILE, Layer.DEFAULT):
            mapping = (
                self.layer[1]
                if self.layer is not None and self.layer[0] is layer
                else self.base.layers[layer]
            )
            value = mapping.get(key, _MISSING)
            if value is not _MISSING:
                return value
        return _MISSING

    def value(self, key: str) -> Any:
        """What ``get_config(key)`` would return after the change (or the sentinel)."""
        value = self.leaf(key)
        if value is not _MISSING:
            return value
        below = set(self.base.index().under(key))
        below.update(k for k in self.changed if k.startswith(key + "."))
        items = [(k, v) for k in sorted(below) if (v := self.leaf(k)) is not _MISSING]
        return nest(items, key) if items else _MISSING

    def document(self) -> dict[str, Any]:
        """The whole configuration after the change, nested."""
        keys = self.base.all_keys() | set(self.changed)
        return nest((k, v) for k in sorted(keys) if (v := self.leaf(k)) is not _MISSING)


MISSING: Final = _MISSING
"""The sentinel :meth:`Candidate.leaf` and :meth:`Candidate.value` return for "unset"."""
