"""Structured logging: key-value events, JSON when asked, never a secret.

Components log through :func:`get_logger`::

    log = get_logger("circuit_breaker")
    log.warning("state_change", name="payments", old="closed", new="open", reason="...")

The library only attaches a :class:`logging.NullHandler`; applications choose output with
:func:`configure_logging` (``json=True`` for one JSON object per line).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

__all__ = ["StructuredLogger", "configure_logging", "get_logger", "mask_secrets", "mask_url"]

_ROOT = "backend_services"
logging.getLogger(_ROOT).addHandler(logging.NullHandler())

_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@/\s]+)@"
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
)


def mask_url(url: str) -> str:
    """``redis://user:pw@host`` → ``redis://user:***@host`` (anything else unchanged)."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def _is_secret_name(name: str) -> bool:
    low = name.lower()
    return any(word in low for word in _SECRET_WORDS)


def mask_secrets(value: Any, name: str = "") -> Any:
    """A copy of ``value`` fit for a log line: secret-named fields → ``***``, URLs masked."""
    if name and _is_secret_name(name) and value not in (None, ""):
        return "***"
    if isinstance(value, str):
        return mask_url(value) if "://" in value else value
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v) for v in value]
    return value


class StructuredLogger:
    """A thin wrapper over a stdlib logger whose calls take an event name and fields."""

    __slots__ = ("_logger", "component")

    def __init__(self, component: str) -> None:
        self.component = component
        self._logger = logging.getLogger(f"{_ROOT}.{component}")

    def _log(self, level: int, event: str, fields: dict[str, Any], exc_info: bool) -> None:
        if not self._logger.isEnabledFor(level):
            return
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


class KeyValueFormatter(logging.Formatter):
    """``2026-01-01T00:00:00 WARNING circuit_breaker state_change name=x old=closed``."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            record.levelname,
            getattr(record, "bs_component", record.name),
            record.getMessage(),
        ]
        parts += [
            f"{k}={v!r}" if isinstance(v, str) and " " in v else f"{k}={v}"
            for k, v in _fields(record).items()
        ]
        line = " ".join(str(p) for p in parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, component, event and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "component": getattr(record, "bs_component", record.name),
            "event": record.getMessage(),
        }
        doc.update(_fields(record))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(
    level: int | str = logging.INFO, *, json: bool = False, stream: Any = None
) -> logging.Handler:
    """Send backend_services logs to ``stream`` (stderr) as key-value or JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json else KeyValueFormatter())
    root = logging.getLogger(_ROOT)
    for old in [h for h in root.handlers if getattr(h, "_bs_configured", False)]:
        root.removeHandler(old)
    handler._bs_configured = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    return handler
