"""The write path of the configuration manager: plan, validate, commit, apply.

Every change of the runtime layer goes through :meth:`ConfigWrites._change`: the plan
(the entries to set or remove) is made on the current head, checked against the
expected versions and the size limits, validated as a whole candidate configuration,
stamped as a new :class:`~backend_services.config.model.VersionRecord` and committed
through :class:`~backend_services.infrastructure.config_fleet.FleetSync`; when another
writer moved the head first it is planned (and validated) again, up to a bound.
``set_config``, ``delete_config`` and ``bulk_update`` are the plans built here; the
versions and export modules add theirs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from ..config.layers import Candidate
from ..config.model import ChangeKind, ConfigSource, ConfigVersion, Entry, VersionRecord
from ..config.planning import SCAN_LIMIT, removal, set_updates
from ..config.tree import SortedKeys, check_key
from ..config.versions import new_version_id
from ..errors import ConfigValidationError, ConflictError
from ..log import get_logger
from .config_state import ConfigState

__all__ = ["ConfigWrites"]

_log = get_logger("config_manager")

_MAX_WRITE_ATTEMPTS: Final = 16


class ConfigWrites(ConfigState):
    """Setting, deleting and bulk-updating keys, each change as one version."""

    def _entry(self, key: str, value: Any, source: ConfigSource, secret: bool | None) -> Entry:
        return self._policy.entry(
            key,
            value,
            source,
            self.limits,
            secret=secret,
            current=self._history.current.get(key),
        )

    def _updates_for(
        self, key: str, value: Any, source: ConfigSource, secret: bool | None
    ) -> dict[str, Entry | None]:
        """Setting ``key`` replaces its whole subtree in the runtime layer."""
        return set_updates(
            self._history.current,
            key,
            value,
            lambda leaf, item: self._entry(leaf, item, source, secret),
            self.limits.max_key_length,
            self._runtime_index(),
        )

    def _runtime_index(self) -> SortedKeys | None:
        """A sorted index of the runtime keys, rebuilt once per version (None while the
        layer is small enough to scan)."""
        current = self._history.current
        if len(current) < SCAN_LIMIT:
            return None
        head = self._history.head
        stamp = (self._history.version, None if head is None else head.id, len(current))
        if self._index_stamp != stamp or self._index is None:
            self._index = SortedKeys(current)
            self._index_stamp = stamp
        return self._index

    async def _change(
        self,
        plan: Callable[[], Mapping[str, Entry | None]],
        *,
        kind: ChangeKind,
        source: ConfigSource,
        description: str,
        author: str | None,
        validate: bool = True,
        expected_config_version: int | None = None,
        expected_versions: Mapping[str, int] | None = None,
        restored_id: str | None = None,
        force: bool = False,
        rewrite: bool = False,
    ) -> VersionRecord | None:
        """Plan, validate, commit and apply one change (re-planned on contention)."""
        self._require_running()
        assert self._fleet is not None
        source = ConfigSource(source)
        for _ in range(_MAX_WRITE_ATTEMPTS):
            history = self._history
            head = history.head
            self._check_expectations(expected_config_version, expected_versions)
            updates = plan()
            if rewrite:  # same content, new form (re-sealed secrets): keep every entry
                changes = {k: (history.current.get(k), e) for k, e in updates.items()}
            else:
                changes = history.plan(updates)
            if not changes and not force:
                return None
            self._check_size(changes)
            if validate and self.validation_enabled and changes:
                candidate = Candidate(
                    self._layers, runtime={k: new for k, (_old, new) in changes.items()}
                )
                await self._validate(candidate)
                if history.head is not head:
                    continue
            record = self._record(changes, kind, source, description, author, restored_id)
            if await self._fleet.commit(record):
                self.metrics["changes_committed"] += 1
                _log.info(
                    "config_changed",
                    service=self.service_name,
                    version=record.version,
                    id=record.id,
                    kind=kind.value,
                    source=source.value,
                    keys=list(record.meta.keys[:20]),
                    key_count=len(record.meta.keys),
                    description=description,
                    author=record.meta.author,
                )
                await self._dispatch.drain()
                return record
            self.metrics["conflicts"] += 1
        raise ConflictError(f"config:{self.service_name}", None, self._history.version)

    def _check_expectations(
        self, expected_config_version: int | None, expected_versions: Mapping[str, int] | None
    ) -> None:
        if expected_config_version is not None and expected_config_version != self.version:
            raise ConflictError(
                f"config:{self.service_name}", expected_config_version, self.version
            )
        for key, expected in (expected_versions or {}).items():
            entry = self._history.current.get(key)
            actual = 0 if entry is None else entry.version
            if actual != expected:
                raise ConflictError(key, expected, actual)

    def _check_size(self, changes: Mapping[str, tuple[Entry | None, Entry | None]]) -> None:
        added = sum(1 for old, new in changes.values() if old is None and new is not None)
        total = len(self._history.current) + added
        if total > self.limits.max_keys:
            raise ConfigValidationError(
                "config", f"{total} keys", f"at most {self.limits.max_keys} keys (Limits)"
            )

    def _record(
        self,
        changes: Mapping[str, tuple[Entry | None, Entry | None]],
        kind: ChangeKind,
        source: ConfigSource,
        description: str,
        author: str | None,
        restored_id: str | None,
    ) -> VersionRecord:
        head = self._history.head
        version = self._history.version + 1
        now = self._clock.time()
        who = author or self.author
        stamped = {
            k: (old, None if new is None else new.restamped(version, now, who))
            for k, (old, new) in sorted(changes.items())
        }
        size = len(self._history.current) + sum(
            (old is None) - (new is None) for old, new in changes.values()
        )
        meta = ConfigVersion(
            version=version,
            id=self.new_version_id(version),
            created_at=now,
            source=source,
            kind=kind,
            description=description or "",
            author=who,
            keys=tuple(stamped),
            size=size,
            parent_id=None if head is None else head.id,
            restored_id=restored_id,
        )
        return VersionRecord(meta, stamped)

    def new_version_id(self, version: int) -> str:
        return new_version_id(version, self._clock.time(), os.urandom(4))

    async def set_config(
        self,
        key: str,
        value: Any,
        source: ConfigSource = ConfigSource.API,
        description: str = "",
        validate: bool = True,
        *,
        secret: bool | None = None,
        author: str | None = None,
        expected_version: int | None = None,
        expected_config_version: int | None = None,
    ) -> bool:
        """Set ``key`` (a dict value replaces the subtree) as a new version.

        ``expected_version``: the key's version you read (``get_config_entry(key).version``;
        0 = must not be set). Raises ConfigValidationError / ConflictError; True otherwise
        (also when the value was already so — no version is made then)."""
        self._require_running()
        await self._change(
            lambda: self._updates_for(key, value, ConfigSource(source), secret),
            kind=ChangeKind.SET,
            source=source,
            description=description,
            author=author,
            validate=validate,
            expected_config_version=expected_config_version,
            expected_versions=None if expected_version is None else {key: expected_version},
        )
        return True

    async def delete_config(
        self,
        key: str,
        *,
        description: str = "",
        author: str | None = None,
        validate: bool = True,
        expected_version: int | None = None,
        expected_config_version: int | None = None,
    ) -> bool:
        """Remove ``key`` (and anything under it) from the runtime layer. False when the
        runtime layer does not hold it (values from the file, the environment or the
        defaults cannot be deleted here — :meth:`explain` shows where they come from)."""
        self._require_running()
        check_key(key, self.limits.max_key_length)

        def plan() -> dict[str, Entry | None]:
            return removal(self._history.current, [key], self._runtime_index())

        if not plan():
            return False
        record = await self._change(
            plan,
            kind=ChangeKind.DELETE,
            source=ConfigSource.API,
            description=description,
            author=author,
            validate=validate,
            expected_config_version=expected_config_version,
            expected_versions=None if expected_version is None else {key: expected_version},
        )
        return record is not None

    async def bulk_update(
        self,
        mapping: Mapping[str, Any],
        source: ConfigSource = ConfigSource.API,
        description: str = "",
        *,
        delete: Iterable[str] = (),
        validate: bool = True,
        secret: bool | None = None,
        author: str | None = None,
        expected_config_version: int | None = None,
    ) -> dict[str, bool]:
        """Set many keys (and remove ``delete``) as ONE version: all or nothing."""
        self._require_running()
        if not isinstance(mapping, Mapping):
            raise ConfigValidationError("mapping", type(mapping).__name__, "a mapping")
        removals = [check_key(k, self.limits.max_key_length) for k in delete]
        src = ConfigSource(source)

        def plan() -> dict[str, Entry | None]:
            updates = removal(self._history.current, removals, self._runtime_index())
            for key, value in mapping.items():
                updates.update(self._updates_for(key, value, src, secret))
            return updates

        await self._change(
            plan,
            kind=ChangeKind.BULK,
            source=src,
            description=description,
            author=author,
            validate=validate,
            expected_config_version=expected_config_version,
        )
        result = {key: True for key in mapping}
        result.update({key: True for key in removals})
        return result
