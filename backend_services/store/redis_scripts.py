"""The Lua scripts of :class:`~backend_services.store.redis.RedisStore`.

Each script in ``lua/`` is sent as the shared helpers of ``lua/lib.lua`` followed by the
script's own text; its SHA-1 is computed here, so the first call can go straight to
``EVALSHA`` (a server that does not know it yet answers NOSCRIPT, and the store loads it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

__all__ = ["SCRIPT_NAMES", "LuaScript", "load_scripts"]

SCRIPT_NAMES = (
    "put",
    "delete",
    "commit",
    "append",
    "read",
    "lease_acquire",
    "lease_release",
)


@dataclass(frozen=True, slots=True)
class LuaScript:
    """One script: its name, full text and SHA-1 (what ``EVALSHA`` takes)."""

    name: str
    text: str
    sha: str


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text("utf-8")


def load_scripts() -> dict[str, LuaScript]:
    """Every script of the store, by name."""
    lib = _read("lib")
    out: dict[str, LuaScript] = {}
    for name in SCRIPT_NAMES:
        text = f"{lib}\n-- {name}.lua\n{_read(name)}"
        out[name] = LuaScript(
            name, text, hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        )
    return out
