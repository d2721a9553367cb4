"""Values from the shared store that this process's own validation rejects.

The fleet shares one history of versions, but a process never applies a value its own
validators or schema reject (a process with a stricter validator, or a value written
to the store by something that skipped validation). Such a key is *held*: the version
history records the fleet's value, while this process keeps serving the entry it had
before (or none, at start). The hold ends when a later version changes or removes the
key. Pure bookkeeping: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .model import Entry

__all__ = ["Held", "Quarantine"]


@dataclass(frozen=True, slots=True)
class Held:
    """A held key: the entry still served (``None``: the key stays unset in the runtime
    layer), the fleet version that was refused, and why."""

    kept: Entry | None
    version: int
    reason: str


class Quarantine:
    """The held keys of one configuration manager."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[str, Held] = {}

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: object) -> bool:
        return key in self._held

    def update(
        self,
        keys: Iterable[str],
        rejected: Mapping[str, str],
        served: Mapping[str, Entry],
        version: int,
    ) -> None:
        """A version changed ``keys``: hold the ``rejected`` ones (key -> reason) with the
        entry ``served`` before it, and release the others."""
        for key in keys:
            reason = rejected.get(key)
            if reason is None:
                self._held.pop(key, None)
            else:
                self._held[key] = Held(served.get(key), version, reason)

    def get(self, key: str) -> Held | None:
        return self._held.get(key)

    def effective(self, current: Mapping[str, Entry]) -> Mapping[str, Entry]:
        """What to serve: the fleet's ``current`` content with the held keys kept back
        (``current`` itself when nothing is held)."""
        if not self._held:
            return current
        merged = dict(current)
        for key, held in self._held.items():
            if held.kept is None:
                merged.pop(key, None)
            else:
                merged[key] = held.kept
        return merged

    def report(self) -> dict[str, dict[str, Any]]:
        """Held keys with the refused version and the reason (no values)."""
        return {
            key: {"version": held.version, "reason": held.reason}
            for key, held in sorted(self._held.items())
        }
