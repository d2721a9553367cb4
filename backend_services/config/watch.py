"""The file watcher's decisions, debounced by time passed in.

The shell polls the file's stamp (modification time in ns, size, inode) every
``interval`` seconds of its clock and asks :meth:`FileWatch.observe` what to do. A change
is reloaded once the file has stayed the same for ``debounce`` seconds — an editor that
writes in several steps, or a deploy that rewrites many files, causes one reload, not
many. A missing file is reported once per disappearance and watched until it appears.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..errors import ValidationError

__all__ = ["FileStamp", "FileWatch", "WatchAction"]


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What a poll sees of a file (any difference means "changed")."""

    mtime_ns: int
    size: int
    inode: int = 0


class WatchAction(StrEnum):
    NONE = "none"
    RELOAD = "reload"
    MISSING = "missing"


class FileWatch:
    """Debounce state of one watched path."""

    def __init__(self, debounce: float = 0.5) -> None:
        if not isinstance(debounce, (int, float)) or isinstance(debounce, bool) or debounce < 0:
            raise ValidationError("watch_debounce", debounce, "a number of seconds >= 0")
        self.debounce = float(debounce)
        self._seen: FileStamp | None = None
        self._loaded: FileStamp | None = None
        self._changed_at: float | None = None
        self._missing_reported = False

    @property
    def pending(self) -> bool:
        """Whether a change was seen and is waiting for the file to settle."""
        return self._changed_at is not None

    def mark_loaded(self, stamp: FileStamp | None) -> None:
        """The shell (re)loaded the file as it was at ``stamp``."""
        self._loaded = stamp
        self._seen = stamp
        self._changed_at = None
        self._missing_reported = stamp is None  # the shell reports a missing file itself

    def observe(self, stamp: FileStamp | None, now: float) -> WatchAction:
        """One poll: ``stamp`` is ``None`` when the file does not exist."""
        if stamp is None:
            self._seen = None
            self._changed_at = None
            if self._missing_reported:
                return WatchAction.NONE
            self._missing_reported = True
            return WatchAction.MISSING
        self._missing_reported = False
        if stamp != self._seen:
            self._seen = stamp
            self._changed_at = now
        if self._changed_at is None or now - self._changed_at < self.debounce:
            return WatchAction.NONE
        self._changed_at = None
        return WatchAction.NONE if stamp == self._loaded else WatchAction.RELOAD
