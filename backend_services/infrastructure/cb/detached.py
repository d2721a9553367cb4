"""Fire-and-forget tasks of circuit breakers (connecting to the shared state in the
background, giving a half-open trial permit back).

The event loop keeps only weak references to its tasks: :func:`keep_until_done` holds
one until it ends, so it is not collected while it runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["keep_until_done"]

_RUNNING: set[asyncio.Task[Any]] = set()


def keep_until_done(task: asyncio.Task[Any]) -> None:
    """Hold a reference to ``task`` until it is done."""
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
