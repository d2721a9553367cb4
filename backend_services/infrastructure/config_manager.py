"""Dynamic configuration: layered sources, validation, versions, fleet-wide hot reload.

**Precedence** (one rule, applied per leaf key; see :mod:`backend_services.config.layers`)::

    runtime (API calls; shared by the fleet through Redis)   highest
    environment (<SERVICE>__<KEY>, the spec's DTESN_* variables)
    file (JSON or YAML, watched)
    defaults                                                 lowest

A runtime change wins because it is explicit, validated, versioned, audited and
fleet-wide: a per-host variable must not silently cancel a change (or a rollback made to
stop an outage) on some hosts. :meth:`ConfigurationManager.explain` tells, for any key,
which layer supplies the value and which lower ones it overrides.

**Keys** are dotted names; nested objects in the file read as ``"circuit_breaker.
default_timeout"``, and ``get_config("circuit_breaker")`` returns the dict below it.

**Safety.** Every change is validated before anything is applied (structure and size
always; per-key validators and an optional schema unless ``validate=False``); a failure
raises :class:`~backend_services.errors.ConfigValidationError` naming the key, the value
and the reason, and nothing changes. ``bulk_update`` and ``import_configuration`` are all
or nothing. A write may name the version it expects (``expected_version=`` for a key,
``expected_config_version=`` for the whole configuration); a concurrent change makes it
raise :class:`~backend_services.errors.ConflictError`.

**Versions.** Every change of the runtime layer — set, delete, bulk, import, rollback,
snapshot — is a new version: monotonically increasing number, an id unique forever,
an audit record (when, source, kind, description, author). Versions are immutable and
shared by the fleet; ``rollback_to_version`` makes a new version whose content is exactly
the old one. History is bounded (``max_versions``). Changes of the file or environment are
per-process: they are validated the same way and recorded in the audit log
(:meth:`ConfigurationManager.get_audit_log`), but they are not fleet versions — each host
has its own file.

**Fleet.** With a Redis URL (argument, ``DTESN_SERVICE_REDIS_URL`` or the settings file)
every change is one atomic commit to the shared store plus a change-feed event; every
process applies it to its local cache (reads never touch Redis). While Redis is down,
changes apply locally and are merged newest-write-wins when it is back (see
:mod:`backend_services.infrastructure.config_fleet`).

**Last known good.** The runtime layer, its history and the last valid file contents
are kept on local disk (``last_known_good=``; default in the per-user state directory,
see :mod:`backend_services.infrastructure.config_files`), so a process starts with its
last valid configuration when Redis and the file are unavailable. An invalid new file is
rejected while the current configuration stays in force.

**Secrets.** Keys marked secret (``secret_keys=`` patterns, :meth:`mark_secret`, or
``set_config(..., secret=True)``) are stored sealed with AES-GCM (keys from
``DTESN_CONFIG_ENCRYPTION_KEYS``, rotation supported; see
:mod:`backend_services.config.secrets`) in Redis, in version records, in the
last-known-good file and in exports; they are redacted in logs, summaries and diffs.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from ..clock import Clock, resolve_clock
from ..config import documents as docs
from ..config.layers import MISSING, Candidate, Explanation, Layer, LayeredConfig
from ..config.model import (
    REDACTED,
    UNREADABLE,
    ChangeKind,
    ConfigChange,
    ConfigChangeEvent,
    ConfigEntry,
    ConfigSource,
    ConfigVersion,
    Entry,
    LocalChange,
    VersionRecord,
    copy_value,
)
from ..config.planning import removal, set_updates
from ..config.secrecy import SecretPolicy
from ..config.secrets import ENCRYPTION_KEYS_ENV, SecretBox, parse_keys
from ..config.sources import read_environment
from ..config.tree import SortedKeys, check_key, flatten
from ..config.validation import Limits, ValidatorRegistry, check_value, run_schema, run_validators
from ..config.versions import DEFAULT_MAX_VERSIONS, ConfigDiff, VersionHistory, new_version_id
from ..config.watch import FileWatch, WatchAction
from ..errors import (
    ConfigValidationError,
    ConflictError,
    LifecycleError,
    SettingsError,
    ValidationError,
)
from ..log import get_logger, mask_secrets
from ..settings import UNSET, Settings, Unset, load_settings, resolve_redis_url
from ..store.factory import open_store
from ..store.protocol import Store
from ..tasks import Supervisor
from .config_callbacks import ChangeCallback, ChangeDispatcher, Listener
from .config_files import (
    default_lkg_path,
    load_last_known_good,
    read_config_file,
    stat_file,
    write_atomic,
)
from .config_fleet import FleetSync

__all__ = [
    "ConfigChange",
    "ConfigChangeEvent",
    "ConfigDiff",
    "ConfigEntry",
    "ConfigLimits",
    "ConfigSource",
    "ConfigVersion",
    "ConfigurationManager",
    "Explanation",
    "get_config_manager",
]

_log = get_logger("config_manager")

_SCALARS: Final = frozenset({int, float, str, bool, type(None)})
_MAX_WRITE_ATTEMPTS: Final = 16


ConfigLimits = Limits
"""Size limits of a configuration (``limits=`` argument): key length, value size, keys."""


class ConfigurationManager:
    """One service's configuration (see the module docstring).

    ``redis_url``: not given → settings decide (``DTESN_SERVICE_REDIS_URL`` or the
    settings file), ``None`` → this process only. ``config_file``: JSON/YAML; missing is a
    warning and it is watched for. ``auto_reload``: watch the file (polling every
    ``watch_interval`` s, reloading once it has been unchanged for ``watch_debounce`` s).
    ``validation_enabled=False`` skips validators and schema (never structure and size).
    """

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
            SecretBox(parse_keys(keys_text, source)),  # type: ignore[arg-type]
            secret_keys,
            report_unreadable=self._report_unreadable,
        )

        self._history = VersionHistory(max_versions)
        self._layers = LayeredConfig(is_secret=self._policy.redacted)
        self._values = self._layers.values  # the hot path reads this dict directly
        self._index: SortedKeys | None = None
        self._index_stamp: tuple[int, str | None, int] | None = None
        self._validators = ValidatorRegistry()
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
        }

    # ------------------------------------------------------------------ lifecycle ----

    @property
    def initialized(self) -> bool:
        return self._state == "running"

    @property
    def closed(self) -> bool:
        return self._state == "closed"

    async def initialize(self) -> None:
        """Load env, last-known-good, file and the shared store; start watching.

        Raises :class:`SettingsError` for a malformed environment variable,
        :class:`ConfigValidationError` for an invalid file when there is no last-known-
        good copy of it, and the store's configuration errors (credentials, TLS)."""
        if self._state == "running":
            return
        if self._state == "closed":
            raise LifecycleError(f"configuration manager {self.service_name!r} was shut down")
        env, env_origin = read_environment(
            self.service_name, self._environ, self.limits, spec_variables=self._spec_env
        )
        self._layers.set_layer(
            Layer.DEFAULT, self._defaults, {k: "defaults" for k in self._defaults}
        )
        self._layers.set_layer(
            Layer.ENVIRONMENT, env, {k: f"environment variable {v}" for k, v in env_origin.items()}
        )
        self._load_lkg()
        self._layers.set_runtime(self._history.current, list(self._history.current))
        await self._load_file_at_start()
        self.redis_url = self._resolve_redis_url()
        supervisor = Supervisor(f"config:{self.service_name}", clock=self._clock)
        self._supervisor = supervisor
        if self._store_arg is not None:
            store = self._store_arg
        else:
            store = open_store(self.redis_url, clock=self._clock, namespace=self._namespace)
            self._own_store = True
        try:
            await store.initialize()
        except BaseException:
            await supervisor.close()
            raise
        self._store = store
        self._fleet = FleetSync(
            self,
            store,
            self.service_name,
            clock=self._clock,
            supervisor=supervisor,
            block=self._feed_block,
            private=self._own_store and self.redis_url is None,
        )
        self._fleet.local_only.update(self._lkg_local_only)
        self._state = "running"
        await self._fleet.start()
        await self._dispatch.drain()
        if self.config_file is not None and self.auto_reload:
            supervisor.spawn("watch-file", self._watch_loop)
        if self.last_known_good_path is not None:
            supervisor.spawn("last-known-good", self._lkg_loop)
            self._lkg_dirty.set()
        _log.info(
            "config_initialized",
            service=self.service_name,
            version=self._history.version,
            keys=len(self._values),
            store=store.status().backend,
            file=str(self.config_file) if self.config_file else None,
        )

    async def shutdown(self) -> None:
        """Stop watching and following, write the last-known-good file, close the store."""
        if self._state != "running":
            self._state = "closed"
            return
        self._state = "closing"
        self._lkg_dirty.set()  # wakes the writer loop, which ends on the state
        if self._store is not None and self._own_store:
            # closing the store first wakes a feed read blocked on the server, so the
            # follower ends promptly instead of being cancelled mid-command
            await self._store.close()
        await self._stop_background()
        if self.last_known_good_path is not None:
            await self._save_lkg()
        self._state = "closed"
        _log.info("config_shutdown", service=self.service_name, version=self._history.version)

    close = shutdown

    async def _stop_background(self) -> None:
        """Stop the follower and every background task. A cancellation lost inside a
        client library (an asyncio timeout race) is retried, so shutdown never hangs."""

        async def stop_all() -> None:
            if self._fleet is not None:
                await self._fleet.stop()
            if self._supervisor is not None:
                await self._supervisor.close()

        stopping = asyncio.ensure_future(stop_all())
        prefix = f"{self._supervisor.owner}:" if self._supervisor is not None else "\0"
        for _ in range(10):
            done, _pending = await asyncio.wait({stopping}, timeout=1.0)
            if done:
                return
            for task in asyncio.all_tasks():
                if task.get_name().startswith(prefix) and not task.done():
                    task.cancel()
        _log.warning("config_shutdown_tasks_still_running", service=self.service_name)

    async def __aenter__(self) -> ConfigurationManager:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def _require_running(self) -> None:
        if self._state != "running":
            what = "shut down" if self._state in ("closed", "closing") else "not initialized"
            raise LifecycleError(
                f"configuration manager {self.service_name!r} is {what}: "
                "call `await initialize()` before changing configuration"
            )

    def _resolve_redis_url(self) -> str | None:
        if not isinstance(self._redis_url_arg, Unset):
            return resolve_redis_url(self._redis_url_arg)
        settings: Settings | None = None
        if self.config_file is not None and self.config_file.exists():
            try:
                settings = load_settings(self.config_file, environ=self._environ)
            except SettingsError as exc:
                _log.warning("config_settings_from_file_ignored", error=str(exc))
        if settings is None:
            settings = load_settings(environ=self._environ)
        return resolve_redis_url(UNSET, settings)

    # ------------------------------------------------------------------ reading ------

    async def get_config(self, key: str, default: Any = None) -> Any:
        """The effective value of ``key`` (a leaf, or the dict of everything under it)."""
        value = self._values.get(key, MISSING)
        if value.__class__ in _SCALARS:
            return value
        return self._get_slow(key, value, default)

    def _get_slow(self, key: str, value: Any, default: Any) -> Any:
        if value is MISSING:
            return self._layers.lookup(key, default)
        if value is UNREADABLE:
            return default
        return copy_value(value)

    def get(self, key: str, default: Any = None) -> Any:
        """Synchronous :meth:`get_config` (for code that cannot await)."""
        value = self._values.get(key, MISSING)
        if value.__class__ in _SCALARS:
            return value
        return self._get_slow(key, value, default)

    async def get_config_entry(self, key: str) -> ConfigEntry | None:
        """The effective entry of ``key`` with its source and version (None if unset)."""
        layer = self._layers.origin.get(key)
        if layer is None:
            below = self._layers.index().under(key)
            if not below:
                return None
            value = self._layers.lookup(key)
            layers = {self._layers.origin[k] for k in below}
            top = max(layers)
            versions = [
                self._history.current[k].version for k in below if k in self._history.current
            ]
            return ConfigEntry(
                key,
                value,
                self._source_for(top, below[0]),
                max(versions, default=0),
                None,
                None,
                any(self._layers.is_secret(k) for k in below),
                top.label if len(layers) == 1 else "mixed",
            )
        value = self._get_slow(key, self._values[key], None)
        if layer is Layer.RUNTIME:
            entry = self._history.current[key]
            return ConfigEntry(
                key,
                value,
                entry.source,
                entry.version,
                entry.updated_at,
                entry.author,
                entry.secret,
                "runtime",
            )
        return ConfigEntry(
            key,
            value,
            self._source_for(layer, key),
            0,
            None,
            None,
            self._layers.is_secret(key),
            layer.label,
        )

    def _source_for(self, layer: Layer, key: str) -> ConfigSource:
        if layer is Layer.RUNTIME:
            entry = self._history.current.get(key)
            return entry.source if entry is not None else ConfigSource.API
        return {
            Layer.DEFAULT: ConfigSource.DEFAULT,
            Layer.FILE: ConfigSource.FILE,
            Layer.ENVIRONMENT: ConfigSource.ENVIRONMENT,
        }[layer]

    async def get_all_config(self) -> dict[str, Any]:
        """Every effective leaf key and its value (flat, dotted keys; secrets in plaintext
        — this is the application's own configuration; use :meth:`get_config_summary`
        for anything that is shown or logged)."""
        return {
            k: (None if v is UNREADABLE else copy_value(v)) for k, v in sorted(self._values.items())
        }

    def explain(self, key: str, *, reveal: bool = False) -> Explanation:
        """Which layer supplies ``key``, and which lower layers it overrides."""
        return self._layers.explain(key, reveal=reveal)

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

    # ------------------------------------------------------------------ writing ------

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
        if len(current) < 512:
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

    async def _validate(self, candidate: Candidate) -> None:
        try:
            await run_validators(
                self._validators, candidate.changed, candidate.value, self._layers.shown, MISSING
            )
            if self._schema is not None:
                run_schema(self._schema, candidate.document(), self._layers.shown)
        except ConfigValidationError as exc:
            self.metrics["validation_failures"] += 1
            _log.warning(
                "config_rejected", service=self.service_name, key=exc.field, reason=exc.expected
            )
            raise

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

    # ------------------------------------------------------------------ versions -----

    async def create_version_snapshot(
        self, description: str = "", *, author: str | None = None
    ) -> str:
        """Mark the current content as a named version; returns its id (never reused)."""
        record = await self._change(
            lambda: {},
            kind=ChangeKind.SNAPSHOT,
            source=ConfigSource.API,
            description=description,
            author=author,
            force=True,
        )
        assert record is not None
        return record.id

    async def list_versions(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Retained versions, oldest first (``limit``: the newest N)."""
        return [m.as_dict() for m in self._history.versions(limit)]

    def get_version(self, version_id: str | int) -> ConfigVersion:
        record = self._history.find(version_id)
        if record is None:
            raise ValidationError("version_id", version_id, "the id of a retained version")
        return record.meta

    async def get_version_config(
        self, version_id: str | int, *, reveal: bool = False
    ) -> dict[str, Any]:
        """The runtime layer as of ``version_id`` (secrets redacted unless ``reveal``)."""
        content = self._history.content_at(version_id)
        return {
            k: (e.value if reveal or not e.secret else REDACTED) for k, e in sorted(content.items())
        }

    async def diff_versions(
        self, a: str | int, b: str | int, *, reveal: bool = False
    ) -> ConfigDiff:
        """What changed from version ``a`` to version ``b``."""
        return self._history.diff(a, b, reveal=reveal)

    diff = diff_versions

    async def rollback_to_version(
        self,
        version_id: str | int,
        *,
        description: str = "",
        author: str | None = None,
        validate: bool = True,
        expected_config_version: int | None = None,
    ) -> bool:
        """Make the runtime layer exactly what it was at ``version_id`` (keys added since
        are removed), as a new version, for the whole fleet."""
        self._require_running()
        target = self._history.find(version_id)
        if target is None:
            raise ValidationError(
                "version_id",
                version_id,
                "the id of a retained version "
                f"(see list_versions(); {len(self._history.records())} kept)",
            )
        target_id = target.id
        await self._change(
            lambda: self._history.rollback_plan(target_id),
            kind=ChangeKind.ROLLBACK,
            source=ConfigSource.API,
            description=description or f"rollback to v{target.version} ({target_id})",
            author=author,
            validate=validate,
            expected_config_version=expected_config_version,
            restored_id=target_id,
            force=True,
        )
        return True

    async def rotate_encryption(self, *, author: str | None = None) -> int:
        """Re-seal every secret with the newest key (a new version); how many changed."""
        self._require_running()

        def plan() -> dict[str, Entry | None]:
            out: dict[str, Entry | None] = {}
            for key, entry in self._history.current.items():
                if entry.secret and entry.sealed and self._policy.box.needs_rotation(entry.sealed):
                    if entry.value is UNREADABLE:
                        continue
                    out[key] = Entry(
                        entry.value,
                        entry.source,
                        secret=True,
                        sealed=self._policy.box.seal(entry.value, context=key),
                    )
            return out

        record = await self._change(
            plan,
            kind=ChangeKind.ROTATE,
            source=ConfigSource.API,
            description="re-encrypted secrets with the newest key",
            author=author,
            validate=False,
            rewrite=True,
        )
        return 0 if record is None else len(record.changes)

    # ------------------------------------------------------------------ export -------

    async def export_configuration(
        self,
        format: str = "json",
        *,
        reveal_secrets: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """The runtime layer with its version and history, as JSON or YAML text.
        Secrets stay sealed unless ``reveal_secrets=True``."""
        doc = docs.encode_export(
            service=self.service_name,
            exported_at=self._clock.time(),
            head=self._history.head,
            entries=self._history.current,
            versions=self._history.versions(),
            reveal=reveal_secrets,
            metadata={"author": self.author, **dict(metadata or {})},
        )
        return docs.dump(doc, format)

    async def import_configuration(
        self,
        data: str | bytes | Mapping[str, Any],
        format: str = "json",
        *,
        replace: bool = False,
        description: str = "",
        author: str | None = None,
        validate: bool = True,
        expected_config_version: int | None = None,
    ) -> bool:
        """Apply an export (or a plain JSON/YAML document) as ONE version, after
        validating all of it. ``replace=True`` also removes runtime keys it lacks."""
        self._require_running()
        imported = docs.decode_export(docs.load(data, format))
        values: dict[str, Any] = {}
        for key, value in imported.values.items():
            check_key(key, self.limits.max_key_length)
            if key in imported.sealed:
                opened = self._policy.box.open(imported.sealed[key], context=key)
                values[key] = opened
            else:
                values[key] = value

        def plan() -> dict[str, Entry | None]:
            updates: dict[str, Entry | None] = {}
            if replace:
                updates.update({k: None for k in self._history.current if k not in values})
            for key, value in values.items():
                secret = True if key in imported.secret else None
                if isinstance(value, Mapping) and value:
                    updates.update(self._updates_for(key, value, ConfigSource.API, secret))
                else:
                    updates[key] = self._entry(key, value, ConfigSource.API, secret)
            return updates

        origin = ""
        if imported.version_id:
            origin = (
                f" of {imported.service or 'a service'} v{imported.version} ({imported.version_id})"
            )
        await self._change(
            plan,
            kind=ChangeKind.IMPORT,
            source=ConfigSource.API,
            description=description or f"import{origin}",
            author=author,
            validate=validate,
            expected_config_version=expected_config_version,
        )
        return True

    # ------------------------------------------------------------------ callbacks ----

    def add_change_callback(self, key: str, callback: ChangeCallback) -> Callable[[], None]:
        """``callback(key, new_value, old_value)`` (sync or async) for changes of ``key``
        or anything under it, once per change. Returns a function that removes it."""
        return self._dispatch.add(key, callback)

    def add_global_change_callback(self, callback: ChangeCallback) -> Callable[[], None]:
        """``callback(key, new_value, old_value)`` for every change of any key."""
        return self._dispatch.add_global(callback)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """``listener(ConfigChangeEvent)`` once per applied change (version, source,
        description and every effective change)."""
        return self._dispatch.add_listener(listener)

    def add_validator(self, key: str, validator: Callable[[Any], Any]) -> None:
        """``validator(value) -> bool`` (sync or async; may raise ValueError with the
        reason) for ``key``; see :mod:`backend_services.config.validation`."""
        self._validators.add(key, validator)

    async def drain(self) -> None:
        """Run the callbacks of every applied change, in order (each exactly once)."""
        await self._dispatch.drain()

    # ------------------------------------------------------------------ fleet host ---

    @property
    def history(self) -> VersionHistory:
        return self._history

    def ingest(self, record: VersionRecord) -> bool:
        """Apply a committed record (ours or another process's); False if it does not
        follow the local head. Callbacks are queued (run by :meth:`drain`)."""
        head = self._history.head
        if (head is not None and head.id == record.id) or self._history.find(record.id):
            return True
        try:
            self._history.apply(record)
        except Exception:
            return False
        changes = self._layers.set_runtime(self._history.current, list(record.changes))
        self.metrics["changes_applied"] += 1
        self._dispatch.enqueue(
            ConfigChangeEvent(
                tuple(changes), record.meta.source, record.meta, record.meta.description
            )
        )
        self._lkg_dirty.set()
        return True

    def adopt(
        self,
        current: Mapping[str, Entry],
        records: list[VersionRecord],
        head: ConfigVersion | None,
        reason: str,
    ) -> None:
        """Replace the runtime layer and history (after a resync or reconciliation)."""
        before = set(self._history.current)
        self._history.reset(current, records, head)
        changes = self._layers.set_runtime(
            self._history.current, sorted(before | set(self._history.current))
        )
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

    # ------------------------------------------------------------------ file ---------

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
        env, env_origin = read_environment(
            self.service_name, self._environ, self.limits, spec_variables=self._spec_env
        )
        if self.validation_enabled:
            await self._validate(Candidate(self._layers, layer=(Layer.ENVIRONMENT, env)))
        await self._reload_file(raise_errors=True)
        changes = self._layers.set_layer(
            Layer.ENVIRONMENT, env, {k: f"environment variable {v}" for k, v in env_origin.items()}
        )
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

    # ------------------------------------------------------------------ last known good

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

    # ------------------------------------------------------------------ reporting ----

    async def get_config_summary(self) -> dict[str, Any]:
        """Everything about the configuration fit to show or log (secrets redacted)."""
        sources: dict[str, int] = {}
        for key in self._values:
            src = self._layers.source_of(key)
            name = "unset" if src is None else src.value
            sources[name] = sources.get(name, 0) + 1
        head = self._history.head
        return {
            "service_name": self.service_name,
            "version": self._history.version,
            "version_id": None if head is None else head.id,
            "last_change": None if head is None else head.as_dict(),
            "total_keys": len(self._values),
            "sources": sources,
            "secret_keys": sum(1 for k in self._values if self._layers.is_secret(k)),
            "config": {
                k: mask_secrets(
                    REDACTED if self._layers.is_secret(k) else (None if v is UNREADABLE else v), k
                )
                for k, v in sorted(self._values.items())
            },
            "versions_retained": len(self._history.records()),
            "max_versions": self._history.max_versions,
            "file": {
                "path": None if self.config_file is None else str(self.config_file),
                "loaded_from": self._file_source,
                "sha256": self._file_sha,
                "watching": self.auto_reload and self.config_file is not None,
            },
            "last_known_good": None
            if self.last_known_good_path is None
            else str(self.last_known_good_path),
            "store": None if self._fleet is None else self._fleet.status(),
            "encryption_keys": self._policy.box.key_ids,
            "validators": self._validators.count(),
            "callbacks": len(self._dispatch),
            "metrics": dict(self.metrics),
            "state": self._state,
        }

    def get_metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.metrics)
        out.update(
            callback_errors=self._dispatch.errors,
            version=self._history.version,
            total_keys=len(self._values),
            versions_retained=len(self._history.records()),
        )
        if self._fleet is not None:
            out.update({f"store_{k}": v for k, v in self._fleet.status().items()})
        return out

    async def get_audit_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Fleet versions and local file/environment reloads, oldest first."""
        items: list[tuple[float, dict[str, Any]]] = [
            (m.created_at, m.as_dict()) for m in self._history.versions()
        ]
        items += [(c.at, c.as_dict()) for c in self._audit]
        items.sort(key=lambda pair: pair[0])
        out = [d for _, d in items]
        return out if limit is None else out[max(0, len(out) - limit) :]

    def __repr__(self) -> str:
        return (
            f"ConfigurationManager({self.service_name!r}, version={self._history.version}, "
            f"keys={len(self._values)}, state={self._state!r})"
        )


_shared: dict[str, ConfigurationManager] = {}


def get_config_manager(
    service_name: str = "backend-services", **kwargs: Any
) -> ConfigurationManager:
    """The shared manager of ``service_name`` (created on first use; a new one after the
    previous was shut down). Arguments other than those it was created with are an
    error, not silently ignored."""
    existing = _shared.get(service_name)
    if existing is not None and not existing.closed:
        if kwargs and kwargs != existing._creation_kwargs:
            raise ValidationError(
                "kwargs",
                sorted(kwargs),
                f"the arguments the shared manager {service_name!r} was created with (or none)",
            )
        return existing
    manager = ConfigurationManager(service_name, **kwargs)
    manager._creation_kwargs = dict(kwargs)
    _shared[service_name] = manager
    return manager
