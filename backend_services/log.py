"""Structured logging: key-value events, JSON when asked, never a secret.

Components log through :func:`get_logger`::

    log = get_logger("circuit_breaker")
    log.warning("state_change", name="payments", old="closed", new="open", reason="...")

The library only attaches a :class:`logging.NullHandler`; applications choose output with
:func:`configure_logging` (``json=True`` for one JSON object per line).

Secrets never reach a line: fields whose name says secret (``password``, ``token``,
``api_key``, ...) show ``***`` at any depth of nested dicts and lists, and the password of
any ``scheme://user:password@host`` URL (and secret-named query parameters) is masked in
field values, messages and exception text alike.

Key-value lines are ``<time> <LEVEL> <component> <event> key=value ...``; values with
spaces, quotes, ``=`` or line breaks are JSON-quoted, so every event is one line (an
exception's traceback follows on its own lines). JSON lines hold ``ts``, ``level``,
``component``, ``event``, the fields and ``exception``; a field whose name collides with
one of those keys is written as ``field_<name>``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from typing import Any

from .errors import ValidationError

__all__ = [
    "StructuredLogger",
    "configure_logging",
    "get_logger",
    "looks_secret",
    "mask_secrets",
    "mask_url",
]

_ROOT = "backend_services"
logging.getLogger(_ROOT).addHandler(logging.NullHandler())

# scheme://user:password@ - the password runs to the LAST "@" before the host (as URL
# parsers read it), so an unencoded "@" or "/" in a password does not leak its tail.
_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/?#\s'\"]*):"
    r"(?P<pw>[^?#\s'\"]*)@"
)
_SECRET_WORDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "credential",
    "private_key",
    "hmac_key",
    "encryption_key",
    "authorization",
    "cookie",
)


_QUERY_SECRET = re.compile(
    r"(?P<key>[?&][^=&#\s'\"]*(?:" + "|".join(_SECRET_WORDS) + r")[^=&#\s'\"]*=)"
    r"(?P<value>[^&#\s'\"]*)",
    re.IGNORECASE,
)


def mask_url(url: str) -> str:
    """``redis://user:pw@host`` → ``redis://user:***@host``; also masks secret-named query
    parameters (``?password=...``). Works on any text containing URLs; the rest is kept."""
    if "://" not in url:
        return url
    masked = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)
    if "=" in masked:
        masked = _QUERY_SECRET.sub(lambda m: f"{m['key']}***", masked)
    return masked


def looks_secret(name: str) -> bool:
    """Whether a field or key name suggests a secret (password, token, cookie, ...); the
    logs mask such values and the configuration treats such keys as secret."""
    low = name.lower()
    return any(word in low for word in _SECRET_WORDS)


def mask_secrets(value: Any, name: str = "") -> Any:
    """A copy of ``value`` fit for a log line: the values of secret-named fields (at any
    depth of dicts) → ``***``, passwords in URLs masked. ``None``, ``""`` and booleans
    under a secret name are kept (they reveal nothing)."""
    if (
        name
        and looks_secret(name)
        and value is not None
        and not isinstance(value, bool)
        and not (isinstance(value, str) and value == "")
    ):
        return "***"
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [mask_secrets(v) for v in value]
    return value


class _MaskExceptionText(logging.Filter):
    """Pre-formats a record's traceback with URL passwords masked (``exc_text``), so any
    formatter - ours, ``logging.basicConfig``'s, a test's - shows the masked text."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = mask_url(self._formatter.formatException(record.exc_info))
        return True


_MASK_EXCEPTIONS = _MaskExceptionText()


class StructuredLogger:
    """A thin wrapper over a stdlib logger whose calls take an event name and fields.

    The stdlib record's message is the event name; the component, event and (masked)
    fields are on the record as ``bs_component``, ``bs_event`` and ``bs_fields``.
    """

    __slots__ = ("_logger", "component")

    def __init__(self, component: str) -> None:
        self.component = component
        self._logger = logging.getLogger(f"{_ROOT}.{component}")
        self._logger.addFilter(_MASK_EXCEPTIONS)  # no-op when already there

    def _log(self, level: int, event: str, fields: dict[str, Any], exc_info: bool) -> None:
        if not self._logger.isEnabledFor(level):
            return
        if exc_info and sys.exc_info()[0] is None:
            exc_info = False  # exception() outside an except block: no empty traceback
        safe = {k: mask_secrets(v, k) for k, v in fields.items()}
        self._logger.log(
            level,
            event,
            exc_info=exc_info,
            extra={"bs_event": event, "bs_component": self.component, "bs_fields": safe},
            stacklevel=3,
        )

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields, False)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields, False)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields, False)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields, False)

    def exception(self, event: str, **fields: Any) -> None:
        """Log at ERROR with the current exception's traceback."""
        self._log(logging.ERROR, event, fields, True)

    def is_enabled_for(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)


def get_logger(component: str) -> StructuredLogger:
    """The structured logger of one component (``backend_services.<component>``)."""
    return StructuredLogger(component)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return dict(getattr(record, "bs_fields", {}) or {})


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """The record's traceback (masked), or None when it has no exception."""
    if record.exc_text:
        return mask_url(record.exc_text)
    if not record.exc_info or record.exc_info[0] is None:
        return None
    return mask_url(formatter.formatException(record.exc_info))


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: string keys, finite numbers, lists; other objects as
    their (masked) ``str``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return mask_url(str(value))


_PLAIN = re.compile(r"[^\s\"'=\\]+")


def _kv_value(value: Any) -> str:
    """One value of a key-value line: bare when unambiguous, else JSON-quoted."""
    if value is None or isinstance(value, (bool, int, float)):
        return str(value)
    if isinstance(value, str):
        return value if _PLAIN.fullmatch(value) else json.dumps(value, ensure_ascii=False)
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        return json.dumps(_jsonable(value), ensure_ascii=False, separators=(",", ":"))
    return _kv_value(mask_url(str(value)))


class KeyValueFormatter(logging.Formatter):
    """``2026-01-01T00:00:00 WARNING circuit_breaker state_change name=x old=closed``."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            record.levelname,
            str(getattr(record, "bs_component", record.name)),
            _kv_value(mask_url(record.getMessage())),
        ]
        parts += [f"{k}={_kv_value(v)}" for k, v in _fields(record).items()]
        line = " ".join(parts)
        exception = _exception_text(self, record)
        if exception is not None:
            line += "\n" + exception
        return line


_RESERVED = frozenset({"ts", "level", "component", "event", "exception"})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, component, event and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "component": getattr(record, "bs_component", record.name),
            "event": mask_url(record.getMessage()),
        }
        for key, value in _fields(record).items():
            doc[f"field_{key}" if key in _RESERVED else key] = value
        exception = _exception_text(self, record)
        if exception is not None:
            doc["exception"] = exception
        return json.dumps(_jsonable(doc), ensure_ascii=False, allow_nan=False)


def _level(level: int | str) -> int:
    if isinstance(level, bool) or not isinstance(level, (int, str)):
        raise ValidationError("level", level, "a logging level name or number")
    if isinstance(level, int):
        return level
    known = logging.getLevelNamesMapping()
    name = level.strip().upper()
    if name.isdigit():
        return int(name)
    if name not in known:
        names = "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        raise ValidationError("level", level, f"a logging level, one of {names}")
    return known[name]


def configure_logging(
    level: int | str = logging.INFO, *, json: bool = False, stream: Any = None
) -> logging.Handler:
    """Send backend_services logs to ``stream`` (stderr) as key-value or JSON lines.

    ``level`` is a number or a level name in any case (``"info"``, ``"WARNING"``); an
    unknown name is a :class:`~backend_services.errors.ValidationError`. Calling it again
    replaces the handler it added before (never two handlers, never duplicate lines).
    """
    number = _level(level)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json else KeyValueFormatter())
    root = logging.getLogger(_ROOT)
    for old in [h for h in root.handlers if getattr(h, "_bs_configured", False)]:
        root.removeHandler(old)
        old.close()
    handler._bs_configured = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(number)
    return handler
