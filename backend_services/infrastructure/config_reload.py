"""The per-process layers of the configuration manager: the configuration file and the
environment, loaded at start and reloaded.

The file is read at start (an invalid or missing one falls back to its last-known-good
copy when there is one), watched by polling (reloaded once it has been unchanged for
the debounce time) and re-read by ``reload_configuration``, which also re-reads the
environment and catches up with the shared store. A new file or environment is
validated like any change; an invalid one is rejected and the current configuration
stays in force. Accepted reloads go to the local audit log (they are not fleet
versions). File reading itself is in :mod:`backend_services.infrastructure.config_files`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config.layers import Candidate, Layer
from ..config.model import ConfigChange, ConfigChangeEvent, ConfigSource, LocalChange
from ..config.watch import WatchAction
from ..errors import ConfigValidationError
from ..log import get_logger
from .config_files import read_config_file, stat_file
from .config_state import ConfigState

__all__ = ["ConfigReload"]

_log = get_logger("config_manager")


class ConfigReload(ConfigState):
    """Loading, watching and reloading the file; re-reading the environment; resync."""

    async def _load_file_at_start(self) -> None:
        path = self.config_file
        if path is None:
            return
        try:
            got = read_config_file(path, self.limits)
            if got is not None and self.validation_enabled:
                await self._validate(Candidate(self._layers, layer=(Layer.FILE, got[0])))
        except ConfigValidationError as exc:
            self.metrics["file_rejections"] += 1
            if not self._lkg_file_values:
                raise
            _log.error("config_file_rejected_using_last_known_good", path=str(path), error=str(exc))
            self._set_file_layer(self._lkg_file_values, "last_known_good")
            self._watch.mark_loaded(stat_file(path))
            return
        if got is None:
            if self._lkg_file_values:
                self._set_file_layer(self._lkg_file_values, "last_known_good")
                _log.warning("config_file_missing_using_last_known_good", path=str(path))
            else:
                _log.warning(
                    "config_file_missing",
                    path=str(path),
                    detail="watching for it to appear" if self.auto_reload else "",
                )
            self._watch.mark_loaded(None)
            return
        flat, sha = got
        self._file_sha = sha
        self._set_file_layer(flat, "file")
        self._watch.mark_loaded(stat_file(path))

    def _set_file_layer(self, values: Mapping[str, Any], origin: str) -> list[ConfigChange]:
        self._file_source = origin
        self._lkg_file_values = dict(values)
        label = f"file {self.config_file}" + (
            " (last-known-good copy)" if origin == "last_known_good" else ""
        )
        return self._layers.set_layer(Layer.FILE, values, {k: label for k in values})

    async def _reload_file(self, *, raise_errors: bool) -> bool:
        path = self.config_file
        if path is None:
            return True
        stamp = stat_file(path)
        try:
            got = read_config_file(path, self.limits)
            if got is None:
                _log.warning("config_file_missing", path=str(path))
                self._watch.mark_loaded(None)
                return True
            flat, sha = got
            if sha == self._file_sha and self._file_source == "file":
                self._watch.mark_loaded(stamp)
                return True
            if self.validation_enabled:
                await self._validate(Candidate(self._layers, layer=(Layer.FILE, flat)))
        except ConfigValidationError as exc:
            self.metrics["file_rejections"] += 1
            _log.error(
                "config_file_rejected",
                service=self.service_name,
                path=str(path),
                error=str(exc),
                detail="the current configuration stays in force",
            )
            if raise_errors:
                raise
            return False
        self._file_sha = sha
        self._watch.mark_loaded(stamp)
        changes = self._set_file_layer(flat, "file")
        self.metrics["file_reloads"] += 1
        self._record_local(ConfigSource.FILE, f"reloaded {path} (sha256 {sha[:12]})", changes)
        return True

    def _record_local(
        self, source: ConfigSource, description: str, changes: list[ConfigChange]
    ) -> None:
        self._audit.append(
            LocalChange(self._clock.time(), source, description, tuple(c.key for c in changes))
        )
        _log.info(
            "config_layer_reloaded",
            service=self.service_name,
            source=source.value,
            description=description,
            changed=len(changes),
        )
        self._dispatch.enqueue(ConfigChangeEvent(tuple(changes), source, None, description))
        self._lkg_dirty.set()

    async def _watch_loop(self) -> None:
        assert self.config_file is not None
        while self._state == "running":
            await self._clock.sleep(self._watch_interval)
            if self._state != "running":
                return
            action = self._watch.observe(stat_file(self.config_file), self._clock.monotonic())
            if action is WatchAction.MISSING:
                _log.warning(
                    "config_file_missing",
                    path=str(self.config_file),
                    detail="keeping the current values; watching for it",
                )
            elif action is WatchAction.RELOAD:
                await self._reload_file(raise_errors=False)
                await self._dispatch.drain()

    async def reload_configuration(self) -> bool:
        """Re-read the environment and the file and resync with the shared store.
        An invalid file or variable raises and changes nothing."""
        self._require_running()
        env, env_labels = self._read_environment()
        if self.validation_enabled:
            await self._validate(Candidate(self._layers, layer=(Layer.ENVIRONMENT, env)))
        await self._reload_file(raise_errors=True)
        changes = self._layers.set_layer(Layer.ENVIRONMENT, env, env_labels)
        if changes:
            self._record_local(ConfigSource.ENVIRONMENT, "environment re-read", changes)
        if self._fleet is not None:
            try:
                await self._fleet.catch_up()
            except Exception as exc:
                _log.warning("config_reload_store_unavailable", error=str(exc))
        await self._dispatch.drain()
        return True

    async def resync(self) -> None:
        """Reload the shared state from the store now (normally automatic: after a lost
        feed position, a gap, a reconnection). Callbacks fire only for real changes."""
        self._require_running()
        assert self._fleet is not None
        await self._fleet.resync()
        await self._dispatch.drain()
