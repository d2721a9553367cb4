"""The last-known-good copy of the configuration manager's state on local disk.

Loaded before anything else at start (the runtime layer, its history, the last valid
file contents), so a process starts with its last valid configuration when the shared
store and the file are unavailable; written again, off the event loop, after every
applied change and at shutdown. The file format is in
:mod:`backend_services.config.documents`, reading and atomic writing in
:mod:`backend_services.infrastructure.config_files`.
"""

from __future__ import annotations

import asyncio

from ..config import documents as docs
from ..config.model import UNREADABLE
from ..log import get_logger
from .config_files import load_last_known_good, write_atomic
from .config_state import ConfigState

__all__ = ["ConfigLastKnownGood"]

_log = get_logger("config_manager")


class ConfigLastKnownGood(ConfigState):
    """Loading and saving the last-known-good copy."""

    def _load_lkg(self) -> None:
        path = self.last_known_good_path
        lkg = (
            None
            if path is None
            else load_last_known_good(path, self.service_name, self.open_secret)
        )
        if lkg is None:
            return
        self._history.reset(lkg.entries, lkg.records, lkg.head)
        self._lkg_local_only = set(lkg.local_only)
        if self.config_file is not None and lkg.file_path == str(self.config_file):
            self._lkg_file_values = {
                k: v for k, v in lkg.file_values.items() if v is not UNREADABLE
            }
            self._file_sha = lkg.file_sha256

    def _lkg_snapshot(self) -> docs.LastKnownGood:
        """The state to save (immutable parts, so it can be encoded off the loop)."""
        return docs.LastKnownGood(
            service=self.service_name,
            saved_at=self._clock.time(),
            head=self._history.head,
            entries=dict(self._history.current),
            records=self._history.records(),
            file_path=None if self.config_file is None else str(self.config_file),
            file_sha256=self._file_sha,
            file_values={
                k: v
                for k, v in self._lkg_file_values.items()
                if not (self._policy.marked(k) and not self._policy.box.enabled)
            },
            local_only=sorted(self._fleet.local_only) if self._fleet is not None else [],
        )

    async def _save_lkg(self) -> None:
        path = self.last_known_good_path
        if path is None:
            return
        lkg = self._lkg_snapshot()
        seal = self._policy.seal_file_value

        def write() -> None:  # encoding a large configuration must not stall the loop
            write_atomic(path, docs.dump(docs.encode_lkg(lkg, seal)))

        try:
            await asyncio.to_thread(write)
            self.metrics["lkg_writes"] += 1
        except Exception as exc:
            self.metrics["lkg_write_errors"] += 1
            _log.warning("config_last_known_good_write_failed", path=str(path), error=repr(exc))

    async def _lkg_loop(self) -> None:
        while self._state == "running":
            await self._lkg_dirty.wait()
            self._lkg_dirty.clear()
            if self._state != "running":
                return  # shutdown writes the final copy
            await self._save_lkg()
