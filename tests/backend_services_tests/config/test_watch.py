"""The file watcher's debounce decisions (time passed in)."""

from __future__ import annotations

import pytest

from backend_services.config.watch import FileStamp, FileWatch, WatchAction
from backend_services.errors import ValidationError

A = FileStamp(1, 10, 1)
B = FileStamp(2, 11, 1)
C = FileStamp(3, 12, 1)


def test_change_reloads_once_after_it_settles() -> None:
    """A change is reloaded only once the file stayed the same for `debounce` s."""
    w = FileWatch(debounce=0.5)
    w.mark_loaded(A)
    assert w.observe(B, 10.0) is WatchAction.NONE
    assert w.pending
    assert w.observe(B, 10.3) is WatchAction.NONE
    assert w.observe(B, 10.5) is WatchAction.RELOAD
    assert w.observe(B, 11.0) is WatchAction.NONE


def test_burst_of_writes_restarts_the_timer() -> None:
    """Writes in quick succession give one reload, after the last."""
    w = FileWatch(debounce=0.5)
    w.mark_loaded(A)
    w.observe(B, 10.0)
    assert w.observe(C, 10.4) is WatchAction.NONE
    assert w.observe(C, 10.8) is WatchAction.NONE
    assert w.observe(C, 10.9) is WatchAction.RELOAD


def test_change_back_to_the_loaded_file_does_nothing() -> None:
    """A change that is undone before settling does not reload."""
    w = FileWatch(debounce=0.5)
    w.mark_loaded(A)
    w.observe(B, 1.0)
    w.observe(A, 1.1)
    assert w.observe(A, 2.0) is WatchAction.NONE


def test_missing_file_is_reported_once_until_it_appears() -> None:
    """Disappearing is reported once; re-appearing reloads after the debounce."""
    w = FileWatch(debounce=0.0)
    w.mark_loaded(A)
    assert w.observe(None, 1.0) is WatchAction.MISSING
    assert w.observe(None, 2.0) is WatchAction.NONE
    assert w.observe(B, 3.0) is WatchAction.RELOAD
    assert w.observe(None, 4.0) is WatchAction.MISSING


def test_missing_at_start_is_not_reported_again() -> None:
    """The shell warns about a missing file at start; the watch does not repeat it."""
    w = FileWatch(debounce=0.0)
    w.mark_loaded(None)
    assert w.observe(None, 1.0) is WatchAction.NONE
    assert w.observe(A, 2.0) is WatchAction.RELOAD


def test_negative_debounce_is_refused() -> None:
    """A negative debounce is a clear error."""
    with pytest.raises(ValidationError, match="watch_debounce"):
        FileWatch(debounce=-1)
