"""Where the fleet's shared breaker state lives in the store.

Store layout::

    cb:state:<name>         {"state", "until" (wall time or null), "openings", "trigger",
                             "origin", "at"} — versioned; written by compare-and-set
    cb:events               change feed: {"name", "version", ...the record}
    cb:names                set of every breaker name that joined the fleet (the index
                            operators list breakers from; never trimmed like the feed)
    cb:trial:<name>:<slot>  half-open trial permits (leases; expire after the trial
                            deadline, so a dead process cannot hold one)
"""

from __future__ import annotations

from typing import Final

__all__ = ["EVENTS_STREAM", "NAMES_KEY", "state_key", "trial_lease"]

EVENTS_STREAM: Final = "cb:events"
NAMES_KEY: Final = "cb:names"
"""Set of the names of every breaker that joined the fleet."""


def state_key(name: str) -> str:
    return f"cb:state:{name}"


def trial_lease(name: str, slot: int) -> str:
    return f"cb:trial:{name}:{slot}"
