"""Value checks shared by store implementations: keys, TTLs, and frozen JSON values.

:func:`freeze` validates a value as JSON and returns something immutable (the scalar
itself, or the JSON text of a container); :func:`thaw` turns it back into a fresh value,
so callers get JSON round-trip semantics and can never mutate what a store holds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ValidationError
from .protocol import (
    Append,
    Check,
    Delete,
    Operation,
    Put,
    PutIfNewer,
    SetAdd,
    SetRemove,
)

__all__ = [
    "FrozenJSON",
    "check_key",
    "check_members",
    "check_ttl",
    "dumps",
    "freeze",
    "prepare_op",
    "thaw",
]

_SCALARS = frozenset({str, int, bool, type(None)})
dumps = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode
"""Compact JSON text of a value (no NaN or infinities): what frozen values hold and what
the Redis store sends, so frozen text goes to Redis as it is."""
_loads = json.loads


class FrozenJSON(str):
    """JSON text of a container value (a ``str`` subclass, so it is immutable). Stores take
    it as the value it encodes: a value frozen once is not encoded again."""

    __slots__ = ()


def freeze(field: str, value: Any) -> Any:
    """Check ``value`` is JSON-serialisable (``field`` names it in the error); return an
    immutable form of it. An already frozen value is returned as it is (encoded once)."""
    kind = type(value)
    if kind in _SCALARS or kind is FrozenJSON:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
    else:
        try:
            return FrozenJSON(dumps(value))
        except (TypeError, ValueError, RecursionError):
            pass
    raise ValidationError(
        field, value, "a JSON-serialisable value (dict, list, str, finite number, bool, None)"
    )


def thaw(frozen: Any) -> Any:
    """A fresh, caller-owned copy of a frozen value."""
    if type(frozen) is FrozenJSON:
        return _loads(frozen)
    return frozen


def check_key(field: str, key: Any) -> None:
    """Keys, stream names, lease names and owners are non-empty strings."""
    if type(key) is not str or not key:
        raise ValidationError(field, key, "a non-empty string")


def check_ttl(field: str, ttl: Any) -> None:
    """A TTL is a positive, finite number of seconds."""
    if (
        isinstance(ttl, bool)
        or not isinstance(ttl, int | float)
        or not math.isfinite(ttl)
        or ttl <= 0
    ):
        raise ValidationError(field, ttl, "a positive number of seconds")


def check_members(members: Sequence[str]) -> None:
    """Set members are strings."""
    for m in members:
        if not isinstance(m, str):
            raise ValidationError("member", m, "a string")


def prepare_op(op: Operation) -> Any:
    """Validate one commit operation; return its frozen value or event (None for ops
    without one), so a store can check a whole commit before applying any of it."""
    if isinstance(op, Append):
        check_key("stream", op.stream)
        if not isinstance(op.event, Mapping):
            raise ValidationError(op.stream, op.event, "an event mapping (JSON object)")
        if op.maxlen is not None and (type(op.maxlen) is not int or op.maxlen < 1):
            raise ValidationError("maxlen", op.maxlen, "a positive integer or None")
        return freeze(op.stream, dict(op.event))
    if not isinstance(op, Put | Delete | Check | SetAdd | SetRemove | PutIfNewer):
        raise ValidationError("operation", op, "a store Operation (Put, Delete, Check, ...)")
    check_key("key", op.key)
    if isinstance(op, Put | Delete | Check) and op.expect_version is not None:
        ev = op.expect_version
        if type(ev) is not int or ev < 0:
            raise ValidationError("expect_version", ev, "None or an integer >= 0")
    if isinstance(op, SetAdd | SetRemove):
        check_members(op.members)
        return None
    if isinstance(op, Put | PutIfNewer):
        if op.ttl is not None:
            check_ttl("ttl", op.ttl)
        if isinstance(op, PutIfNewer) and op.deleted:
            return None
        return freeze(op.key, op.value)
    return None
