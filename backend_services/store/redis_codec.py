"""What :class:`~backend_services.store.redis.RedisStore` sends to Redis, checked and encoded.

Values and events go out as compact JSON (frozen JSON from
:func:`~backend_services.store.values.freeze` as it is); versions, TTLs and stream
lengths go to the Lua scripts as their arguments, where ``""`` means "none". Pure
functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ValidationError
from .values import FrozenJSON, check_key, check_ttl, dumps

__all__ = ["as_text", "dumps", "encode_json", "event_arg", "expect_arg", "maxlen_arg", "ttl_arg"]


def encode_json(field: str, value: Any) -> str:
    """``value`` as JSON text (``field`` names it in the error)."""
    if type(value) is FrozenJSON:  # already compact JSON text (see values.freeze)
        return value
    try:
        return dumps(value)
    except (TypeError, ValueError, RecursionError):
        raise ValidationError(
            field, value, "a JSON-serialisable value (dict, list, str, finite number, bool, None)"
        ) from None


def expect_arg(ev: int | None) -> int | str:
    """An expected version as a script argument."""
    if ev is None:
        return ""
    if type(ev) is not int or ev < 0:
        raise ValidationError("expect_version", ev, "None or an integer >= 0")
    return ev


def ttl_arg(ttl: float | None) -> int | str:
    """A TTL in seconds as a script argument in milliseconds (at least 1)."""
    if ttl is None:
        return ""
    check_ttl("ttl", ttl)
    return max(1, round(ttl * 1000))


def maxlen_arg(maxlen: int | None) -> int | str:
    """A feed's length limit as a script argument."""
    if maxlen is None:
        return ""
    if type(maxlen) is not int or maxlen < 1:
        raise ValidationError("maxlen", maxlen, "a positive integer or None")
    return maxlen


def event_arg(stream: str, event: Any) -> str:
    """A feed event (a JSON object) as JSON text."""
    check_key("stream", stream)
    if not isinstance(event, Mapping):
        raise ValidationError(stream, event, "an event mapping (JSON object)")
    return encode_json(stream, dict(event))


def as_text(raw: Any) -> str:
    """A reply as ``str`` (bytes decoded)."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)
