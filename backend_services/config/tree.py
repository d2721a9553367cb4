"""Dotted keys: one flat mapping per layer, nested documents in and out.

A configuration is a flat mapping of *leaf keys* (``"circuit_breaker.default_timeout"``)
to JSON values. Nested objects are flattened on the way in (an empty object stays a leaf
``{}``; lists are leaves) and rebuilt on the way out, so ``"circuit_breaker"`` reads as the
dict of everything under it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from ..errors import ConfigValidationError

__all__ = [
    "DEFAULT_MAX_KEY_LENGTH",
    "SortedKeys",
    "check_key",
    "flatten",
    "is_under",
    "nest",
    "parents",
]

DEFAULT_MAX_KEY_LENGTH: Final = 256
_SPACE: Final = re.compile(r"\s")


def check_key(key: Any, max_length: int = DEFAULT_MAX_KEY_LENGTH) -> str:
    """``key`` if it is a valid dotted key, else :class:`ConfigValidationError`."""
    if not isinstance(key, str):
        raise ConfigValidationError("key", key, "a string")
    if not key or len(key) > max_length:
        raise ConfigValidationError("key", key, f"1 to {max_length} characters")
    if key[0] == "." or key[-1] == "." or ".." in key:
        raise ConfigValidationError(
            "key", key, "dot-separated non-empty names (no leading, trailing or double dots)"
        )
    if not key.isprintable() or _SPACE.search(key) is not None:
        raise ConfigValidationError("key", key, "no whitespace or control characters")
    return key


def parents(key: str) -> Iterator[str]:
    """``"a.b.c"`` → ``"a.b"``, ``"a"`` (nearest first)."""
    end = key.rfind(".")
    while end > 0:
        yield key[:end]
        end = key.rfind(".", 0, end)


def is_under(key: str, prefix: str) -> bool:
    """Whether ``key`` is ``prefix`` itself or lies below it."""
    return key == prefix or (key.startswith(prefix) and key[len(prefix) : len(prefix) + 1] == ".")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts → ``{dotted key: leaf}``; a non-dict (or empty dict) is one leaf."""
    out: dict[str, Any] = {}
    if not prefix and isinstance(value, Mapping) and not value:
        return out
    _flatten_into(out, value, prefix)
    return out


def _flatten_into(out: dict[str, Any], value: Any, prefix: str) -> None:
    if isinstance(value, Mapping) and value:
        for name, item in value.items():
            if not isinstance(name, str):
                raise ConfigValidationError(
                    f"{prefix}.{name!r}" if prefix else repr(name), item, "string object keys"
                )
            _flatten_into(out, item, f"{prefix}.{name}" if prefix else name)
        return
    if not prefix:
        raise ConfigValidationError("key", "", "a non-empty key for a non-object value")
    out[prefix] = dict(value) if isinstance(value, Mapping) else value


def nest(items: Iterable[tuple[str, Any]], prefix: str = "") -> dict[str, Any]:
    """Rebuild the nested dict of ``(key, value)`` pairs below ``prefix`` (``""`` = all).

    A leaf that would sit where another key needs an object (the layers disagree about
    a shape) is kept under its full dotted name instead of being lost.
    """
    root: dict[str, Any] = {}
    cut = len(prefix) + 1 if prefix else 0
    for key, value in items:
        rest = key[cut:]
        parts = rest.split(".")
        node = root
        ok = True
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                ok = False
                break
            node = nxt
        if ok and not (parts[-1] in node and isinstance(node[parts[-1]], dict) and node[parts[-1]]):
            node[parts[-1]] = value
        else:
            root[rest] = value
    return root


class SortedKeys:
    """A sorted index of keys, for prefix (subtree) lookups in O(log n + m)."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = sorted(keys)

    def under(self, prefix: str) -> list[str]:
        """Keys strictly below ``prefix`` (``prefix.…``), in order."""
        start = prefix + "."
        i = bisect.bisect_left(self._keys, start)
        out: list[str] = []
        keys = self._keys
        while i < len(keys) and keys[i].startswith(start):
            out.append(keys[i])
            i += 1
        return out

    def __len__(self) -> int:
        return len(self._keys)
