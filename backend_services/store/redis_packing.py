"""Command packing in C for the asyncio client (what its synchronous client already does).

The asyncio connections of redis-py pack every command in Python, one argument at a time;
a commit with a few dozen arguments spends more time there than the server spends running
it. :func:`fast_packing` gives a connection class whose ``pack_command`` lets ``hiredis``
build the request when every argument is a ``str``, ``bytes`` or a plain ``int`` (the same
bytes on the wire) and keeps the client's own packing for anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["fast_packing"]

_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - hiredis comes with redis[hiredis]
    _pack = None
_made: dict[type[Any], type[Any]] = {}


def fast_packing(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` with C packing of plain commands (itself without hiredis)."""
    if _pack is None:  # pragma: no cover
        return connection_class
    made = _made.get(connection_class)
    if made is None:
        made = _made[connection_class] = _subclass(connection_class, _pack)
    return made


def _subclass(connection_class: type[Any], pack: Callable[[tuple[Any, ...]], bytes]) -> type[Any]:
    base_pack = connection_class.pack_command

    def pack_command(self: Any, *args: Any) -> list[bytes]:
        first = args[0] if args else None
        encoder = self.encoder
        if (
            type(first) is str
            and " " not in first  # "CONFIG GET" is split by the client's own packing
            and encoder.encoding == "utf-8"
            and encoder.encoding_errors == "strict"
            and all(type(a) is int or isinstance(a, str | bytes) for a in args)
        ):
            return [pack(args)]
        return list(base_pack(self, *args))

    return type(connection_class.__name__, (connection_class,), {"pack_command": pack_command})
