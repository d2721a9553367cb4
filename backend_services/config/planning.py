"""Turning a requested write into runtime-layer updates (pure).

Setting a key replaces its whole subtree in the runtime layer: a dict value becomes its
leaves, runtime keys below the key that the new value lacks are removed, and a runtime
leaf *above* it (``"a"`` when setting ``"a.b"``) is removed so the layer stays a tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .model import Entry
from .tree import SortedKeys, check_key, flatten, is_under, parents

__all__ = ["SCAN_LIMIT", "keys_under", "removal", "set_updates"]

SCAN_LIMIT = 512
"""Below this many runtime keys a scan is cheaper than building a sorted index."""

MakeEntry = Callable[[str, Any], Entry]


def keys_under(
    current: Mapping[str, Entry], key: str, index: SortedKeys | None = None
) -> list[str]:
    """Runtime keys strictly below ``key`` (``index``: a sorted index of ``current``,
    so that planning many keys stays O(n log n))."""
    if index is not None:
        return index.under(key)
    if len(current) < SCAN_LIMIT:
        return [k for k in current if k != key and is_under(k, key)]
    return SortedKeys(current).under(key)


def set_updates(
    current: Mapping[str, Entry],
    key: str,
    value: Any,
    make: MakeEntry,
    max_key_length: int,
    index: SortedKeys | None = None,
) -> dict[str, Entry | None]:
    """Updates that set ``key`` to ``value`` (``make(leaf, item)`` builds each entry)."""
    check_key(key, max_key_length)
    updates: dict[str, Entry | None] = {}
    for parent in parents(key):
        if parent in current:
            updates[parent] = None
    leaves = flatten(value, key) if isinstance(value, Mapping) and value else {key: value}
    for existing in keys_under(current, key, index):
        if existing not in leaves:
            updates[existing] = None
    if key in current and key not in leaves:
        updates[key] = None
    for leaf, item in leaves.items():
        updates[leaf] = make(leaf, item)
    return updates


def removal(
    current: Mapping[str, Entry], keys: Iterable[str], index: SortedKeys | None = None
) -> dict[str, Entry | None]:
    """Updates that remove ``keys`` and everything under them from the runtime layer."""
    updates: dict[str, Entry | None] = {}
    for key in keys:
        updates.update(dict.fromkeys(keys_under(current, key, index)))
        if key in current:
            updates[key] = None
    return updates
