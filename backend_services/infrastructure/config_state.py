"""The state behind :class:`~backend_services.infrastructure.config_manager.ConfigurationManager`
and what its parts share.

:class:`ConfigState` holds the constructor (layers, version history, secret policy, file
and last-known-good bookkeeping, metrics), the secret-key API, validation of a candidate
configuration, and how a committed version — this process's or another's — is applied
to the runtime layer (the host side of
:class:`~backend_services.infrastructure.config_fleet.FleetSync`).

The parts built on it: :mod:`~backend_services.infrastructure.config_writes` (the write
path), :mod:`~backend_services.infrastructure.config_versions` (snapshots, rollback,
re-encryption), :mod:`~backend_services.infrastructure.config_export` (export and
import), :mod:`~backend_services.infrastructure.config_reload` (the file and the
environment), :mod:`~backend_services.infrastructure.config_last_known_good` (the local
copy) and :mod:`~backend_services.infrastructure.config_report` (summary, metrics, audit
log); the public class combines them.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..clock import Clock, resolve_clock
from ..config.layers import MISSING, Candidate, LayeredConfig
from ..config.model import (
    ConfigChangeEvent,
    ConfigSource,
    ConfigVersion,
    Entry,
    LocalChange,
    VersionRecord,
)
from ..config.quarantine import Quarantine
from ..config.secrecy import SecretPolicy
from ..config.secrets import ENCRYPTION_KEYS_ENV, SecretBox, parse_keys
from ..config.sources import read_environment
from ..config.tree import SortedKeys, flatten, is_under
from ..config.validation import Limits, ValidatorRegistry, check_value, run_schema, run_validators
from ..config.versions import DEFAULT_MAX_VERSIONS, VersionHistory
from ..config.watch import FileWatch
from ..errors import ConfigValidationError, LifecycleError, ValidationError
from ..log import get_logger
from ..settings import UNSET, Unset
from ..store.protocol import Store
from ..tasks import Supervisor
from .config_callbacks import ChangeDispatcher
from .config_files import default_lkg_path
from .config_fleet import FleetSync

__all__ = ["ConfigState"]

_log = get_logger("config_manager")


class ConfigState:
    """Everything one configuration manager holds (see the module docstring)."""

    def __init__(
        self,
        service_name: str,
        redis_url: str | Unset | None = UNSET,
        config_file: str | os.PathLike[str] | None = None,
        auto_reload: bool = True,
        validation_enabled: bool = True,
        *,
        clock: Clock | None = None,
        defaults: Mapping[str, Any] | None = None,
        schema: Any = None,
        secret_keys: Iterable[str] = (),
        encryption_keys: str | Iterable[str | bytes] | None = None,
        last_known_good: str | os.PathLike[str] | Unset | None = UNSET,
        max_versions: int = DEFAULT_MAX_VERSIONS,
        limits: Limits | None = None,
        watch_interval: float = 1.0,
        watch_debounce: float = 0.5,
        author: str | None = None,
        environ: Mapping[str, str] | None = None,
        store: Store | None = None,
        namespace: str = "dtesn",
        spec_environment: bool = True,
        feed_block: float = 1.0,
    ) -> None:
        if not isinstance(service_name, str) or not service_name.strip():
            raise ValidationError("service_name", service_name, "a non-empty string")
        for name, value, low in (
            ("watch_interval", watch_interval, 0.0),
            ("watch_debounce", watch_debounce, -1e-12),
            ("feed_block", feed_block, 0.0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= low:
                raise ValidationError(name, value, "a positive number of seconds")
        self.service_name = service_name
        self.auto_reload = bool(auto_reload)
        self.validation_enabled = bool(validation_enabled)
        self._clock = resolve_clock(clock)
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._redis_url_arg = redis_url
        self.redis_url: str | None = None
        self.config_file = Path(config_file) if config_file is not None else None
        self._store_arg = store
        self._namespace = namespace
        self._spec_env = spec_environment
        self._feed_block = float(feed_block)
        self.limits = limits or Limits()
        self.author = author or f"{socket.gethostname()}:{os.getpid()}"
        self._schema = schema
        keys_text = (
            encryption_keys
            if encryption_keys is not None
            else self._environ.get(ENCRYPTION_KEYS_ENV)
        )
        source = "encryption_keys" if encryption_keys is not None else ENCRYPTION_KEYS_ENV
        self._policy = SecretPolicy(
            SecretBox(parse_keys(keys_text, source)),
            secret_keys,
            report_unreadable=self._report_unreadable,
        )

        self._history = VersionHistory(max_versions)
        self._layers = LayeredConfig(is_secret=self._policy.redacted)
        self._values = self._layers.values  # the hot path reads this dict directly
        self._index: SortedKeys | None = None
        self._index_stamp: tuple[int, str | None, int] | None = None
        self._validators = ValidatorRegistry()
        self._quarantine = Quarantine()  # fleet values this process's validation refuses
        self._defaults = {
            k: check_value(k, v, self.limits) for k, v in flatten(dict(defaults or {})).items()
        }

        self._dispatch = ChangeDispatcher(service_name)
        self._audit: deque[LocalChange] = deque(maxlen=max(100, max_versions))

        if isinstance(last_known_good, Unset):
            self.last_known_good_path: Path | None = default_lkg_path(service_name, self._environ)
        else:
            self.last_known_good_path = None if last_known_good is None else Path(last_known_good)
        self._lkg_dirty = asyncio.Event()
        self._lkg_file_values: dict[str, Any] = {}
        self._lkg_local_only: set[str] = set()
        self._file_sha: str | None = None
        self._file_source = "none"  # "file", "last_known_good" or "none"
        self._watch = FileWatch(watch_debounce)
        self._watch_interval = float(watch_interval)

        self._store: Store | None = None
        self._own_store = False
        self._fleet: FleetSync | None = None
        self._supervisor: Supervisor | None = None
        self._state = "new"
        self._creation_kwargs: dict[str, Any] | None = None
        self.metrics: dict[str, int] = {
            "changes_committed": 0,
            "changes_applied": 0,
            "validation_failures": 0,
            "conflicts": 0,
            "file_reloads": 0,
            "file_rejections": 0,
            "lkg_writes": 0,
            "lkg_write_errors": 0,
            "remote_rejections": 0,
        }

    def _require_running(self) -> None:
        if self._state != "running":
            what = "shut down" if self._state in ("closed", "closing") else "not initialized"
            raise LifecycleError(
                f"configuration manager {self.service_name!r} is {what}: "
                "call `await initialize()` before changing configuration"
            )

    def _read_environment(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The environment layer: its values and, per key, the variable it came from."""
        env, env_origin = read_environment(
            self.service_name, self._environ, self.limits, spec_variables=self._spec_env
        )
        return env, {k: f"environment variable {v}" for k, v in env_origin.items()}

    @property
    def version(self) -> int:
        """The current configuration version (0 before the first change)."""
        return self._history.version

    @property
    def version_id(self) -> str | None:
        head = self._history.head
        return None if head is None else head.id

    # ------------------------------------------------------------------ secrets ------

    def mark_secret(self, *keys: str) -> None:
        """Treat ``keys`` (exact keys or glob patterns such as ``"*.password"``) as
        secret from now on: encrypted at rest, redacted when shown."""
        for pattern in keys:
            self._policy.mark(pattern)

    def open_secret(self, key: str, token: str) -> Any:
        """Decrypt a sealed value (UNREADABLE, reported once, when no key fits)."""
        return self._policy.open(key, token)

    def _report_unreadable(self, key: str, reason: str) -> None:
        _log.error("config_secret_unreadable", service=self.service_name, key=key, reason=reason)

    # ------------------------------------------------------------------ validation ---

    async def _check(self, candidate: Candidate) -> None:
        """Run the validators and the schema on ``candidate`` (ConfigValidationError)."""
        await run_validators(
            self._validators, candidate.changed, candidate.value, self._layers.shown, MISSING
        )
        if self._schema is not None:
            run_schema(self._schema, candidate.document(), self._layers.shown)

    async def _validate(self, candidate: Candidate) -> None:
        try:
            await self._check(candidate)
        except ConfigValidationError as exc:
            self.metrics["validation_failures"] += 1
            _log.warning(
                "config_rejected", service=self.service_name, key=exc.field, reason=exc.expected
            )
            raise

    # ------------------------------------------------------------------ fleet host ---

    @property
    def history(self) -> VersionHistory:
        return self._history

    def _screens(self) -> bool:
        """Whether values from the shared store are validated here before they apply."""
        return self.validation_enabled and (
            self._schema is not None or self._validators.count() > 0
        )

    async def _screen(self, changes: Mapping[str, Entry | None]) -> dict[str, str]:
        """The keys of a change from the shared store that this process's validators or
        schema refuse, with the reason; the rest of the change is valid without them."""
        pending = dict(changes)
        refused: dict[str, str] = {}
        while pending:
            try:
                await self._check(Candidate(self._layers, runtime=pending))
                break
            except ConfigValidationError as exc:
                at = exc.field
                hit = [k for k in pending if is_under(k, at) or is_under(at, k)]
                if not hit:  # not caused by this change: nothing to hold back
                    break
                for key in hit:
                    refused[key] = str(exc)
                    del pending[key]
        return refused

    def _runtime_keys(self, current: Mapping[str, Entry]) -> list[str]:
        """Every key a replacement of the runtime content by ``current`` may change."""
        return sorted(set(self._history.current) | set(current) | set(self._layers.runtime))

    def _served(self, keys: Iterable[str]) -> dict[str, Entry]:
        """The runtime entries of ``keys`` as served now (taken before a change)."""
        runtime = self._layers.runtime
        return {k: e for k in keys if (e := runtime.get(k)) is not None}

    def _serve(
        self,
        keys: list[str],
        refused: Mapping[str, str],
        served: Mapping[str, Entry],
        version: int,
    ) -> list[Any]:
        """Point the runtime layer at the history's content, minus what is held back
        (a refused key keeps the entry ``served`` before the change)."""
        self._quarantine.update(keys, refused, served, version)
        for key, reason in refused.items():
            self.metrics["remote_rejections"] += 1
            _log.error(
                "config_remote_value_refused",
                service=self.service_name,
                key=key,
                version=version,
                reason=reason,
                detail="the value this process had stays in force",
            )
        runtime = self._quarantine.effective(self._history.current)
        return self._layers.set_runtime(runtime, keys)

    async def ingest(self, record: VersionRecord, *, remote: bool = False) -> bool:
        """Apply a committed record (ours, or another process's when ``remote``); False
        if it does not follow the local head. A remote record's values are validated
        here first; refused keys are held back (see
        :mod:`~backend_services.config.quarantine`). Callbacks are queued (run by
        :meth:`drain`)."""
        if self._applied(record):
            return True
        refused: dict[str, str] = {}
        if remote and self._screens():
            refused = await self._screen({k: new for k, (_, new) in record.changes.items()})
            if self._applied(record):  # applied meanwhile
                return True
        keys = list(record.changes)
        served = self._served(keys)
        try:
            self._history.apply(record)
        except Exception:
            return False
        changes = self._serve(keys, refused, served, record.version)
        self.metrics["changes_applied"] += 1
        self._dispatch.enqueue(
            ConfigChangeEvent(
                tuple(changes), record.meta.source, record.meta, record.meta.description
            )
        )
        self._lkg_dirty.set()
        return True

    def _applied(self, record: VersionRecord) -> bool:
        head = self._history.head
        if head is not None and head.id == record.id:
            return True
        return self._history.find(record.id) is not None

    async def adopt(
        self,
        current: Mapping[str, Entry],
        records: list[VersionRecord],
        head: ConfigVersion | None,
        reason: str,
    ) -> None:
        """Replace the runtime layer and history (after a resync or reconciliation); the
        values that differ from what this process serves are validated first."""
        refused: dict[str, str] = {}
        if self._screens():
            served = self._served(self._runtime_keys(current))
            changed = {k: current.get(k) for k, e in served.items() if current.get(k) != e}
            changed.update({k: e for k, e in current.items() if k not in served})
            refused = await self._screen(changed)
        keys = self._runtime_keys(current)  # after the wait: a write may have come meanwhile
        served = self._served(keys)
        self._history.reset(current, records, head)
        changes = self._serve(keys, refused, served, self._history.version)
        self._dispatch.enqueue(
            ConfigChangeEvent(
                tuple(changes), ConfigSource.REDIS, head, f"{reason} from the shared store"
            )
        )
        self._lkg_dirty.set()
        _log.info(
            "config_adopted",
            service=self.service_name,
            reason=reason,
            version=self._history.version,
            changed=len(changes),
        )
