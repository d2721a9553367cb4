"""Local files of the configuration manager: the watched file and the last-known-good.

The last-known-good (LKG) file holds the runtime layer (secrets sealed), its retained
history and the last valid contents of the configuration file, written atomically
(temporary file, ``fsync``, rename; mode 0600) after every applied change. Its default
place is ``$DTESN_CONFIG_STATE_DIR``, else ``$XDG_STATE_HOME/backend_services``, else
``~/.local/state/backend_services``, then ``config/<service>.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ..config.documents import LastKnownGood, Opener, decode_lkg, load
from ..config.sources import parse_document
from ..config.validation import Limits, check_value
from ..config.watch import FileStamp
from ..errors import ConfigValidationError
from ..log import get_logger

__all__ = [
    "MAX_FILE_BYTES",
    "STATE_DIR_ENV",
    "default_lkg_path",
    "default_state_dir",
    "load_last_known_good",
    "read_config_file",
    "read_text",
    "stat_file",
    "write_atomic",
]

_log = get_logger("config_manager")

STATE_DIR_ENV: Final = "DTESN_CONFIG_STATE_DIR"
MAX_FILE_BYTES: Final = 16 << 20
MAX_LKG_BYTES: Final = 1 << 30
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """Where per-user state lives (see the module docstring)."""
    explicit = environ.get(STATE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = environ.get("XDG_STATE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "backend_services"
    return Path.home() / ".local" / "state" / "backend_services"


def default_lkg_path(service_name: str, environ: Mapping[str, str]) -> Path:
    return default_state_dir(environ) / "config" / f"{_SAFE.sub('_', service_name)}.json"


def stat_file(path: Path) -> FileStamp | None:
    """The file's stamp, or None when it does not exist (or is not a regular file)."""
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return None
    if not path.is_file():
        return None
    return FileStamp(st.st_mtime_ns, st.st_size, st.st_ino)


def read_text(path: Path, max_bytes: int) -> tuple[str, str] | None:
    """``(text, sha256 hex)``, or None when the file does not exist."""
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as exc:
        raise ConfigValidationError(
            str(path), "<file>", f"a readable file ({exc.strerror or exc})"
        ) from None
    if len(data) > max_bytes:
        raise ConfigValidationError(str(path), "<file>", f"at most {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigValidationError(str(path), "<file>", f"UTF-8 text ({exc})") from None
    return text, hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (readable by the owner only)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_config_file(path: Path, limits: Limits) -> tuple[dict[str, Any], str] | None:
    """The file's flat, checked values and its SHA-256; None when it does not exist.
    A file that cannot be read or parsed raises ConfigValidationError naming it."""
    got = read_text(path, MAX_FILE_BYTES)
    if got is None:
        return None
    text, sha = got
    flat = parse_document(text, str(path))
    return {k: check_value(k, v, limits) for k, v in flat.items()}, sha


def load_last_known_good(path: Path, service: str, opener: Opener) -> LastKnownGood | None:
    """The last-known-good state saved at ``path`` (None, with a warning, when it is
    missing, unreadable or another service's)."""
    try:
        got = read_text(path, MAX_LKG_BYTES)
        if got is None:
            return None
        lkg = decode_lkg(load(got[0]), opener)
    except (ConfigValidationError, ValueError) as exc:
        _log.warning("config_last_known_good_unreadable", path=str(path), error=str(exc))
        return None
    if lkg.service and lkg.service != service:
        _log.warning("config_last_known_good_other_service", path=str(path), service=lkg.service)
        return None
    _log.info(
        "config_last_known_good_loaded", path=str(path), version=lkg.head and lkg.head.version
    )
    return lkg
