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
:mod:`backend_services.infrastructure.config_fleet`). A value from the shared store (another
process's version, a reload, the last-known-good copy at start) meets this process's own
validators and schema before it applies; a refused key is held back — the process keeps
the value it had and reports it — until a later version replaces it (see
:mod:`backend_services.config.quarantine`).

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

**Where the pieces live.** :class:`ConfigurationManager` (this module) holds the
lifecycle and the read path; it combines parts, each in its own module:
:mod:`~backend_services.infrastructure.config_state` (the state and what the parts
share: validation, secret keys, applying committed versions),
:mod:`~backend_services.infrastructure.config_writes` (set, delete, bulk update: plan,
validate, commit), :mod:`~backend_services.infrastructure.config_versions` (snapshots,
history, rollback, key rotation), :mod:`~backend_services.infrastructure.config_export`
(export and import), :mod:`~backend_services.infrastructure.config_reload` (the file and
the environment), :mod:`~backend_services.infrastructure.config_last_known_good` (the
local copy) and :mod:`~backend_services.infrastructure.config_report` (summary, metrics,
audit log). The fleet synchroniser is
:mod:`~backend_services.infrastructure.config_fleet`, the callbacks
:mod:`~backend_services.infrastructure.config_callbacks`, file I/O
:mod:`~backend_services.infrastructure.config_files`; the pure core is
:mod:`backend_services.config`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any, Final

from ..config.layers import MISSING, Explanation, Layer
from ..config.model import (
    UNREADABLE,
    ConfigChange,
    ConfigChangeEvent,
    ConfigEntry,
    ConfigSource,
    ConfigVersion,
    copy_value,
)
from ..config.validation import Limits
from ..config.versions import ConfigDiff
from ..errors import LifecycleError, SettingsError, ValidationError
from ..log import get_logger
from ..settings import UNSET, Settings, Unset, load_settings, resolve_redis_url
from ..store.factory import open_store
from ..tasks import Supervisor
from .config_callbacks import ChangeCallback, Listener
from .config_export import ConfigExport
from .config_fleet import FleetSync
from .config_last_known_good import ConfigLastKnownGood
from .config_reload import ConfigReload
from .config_report import ConfigReport
from .config_versions import ConfigVersions

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


ConfigLimits = Limits
"""Size limits of a configuration (``limits=`` argument): key length, value size, keys."""


class ConfigurationManager(
    ConfigVersions, ConfigExport, ConfigReload, ConfigLastKnownGood, ConfigReport
):
    """One service's configuration (see the module docstring).

    ``redis_url``: not given → settings decide (``DTESN_SERVICE_REDIS_URL`` or the
    settings file), ``None`` → this process only. ``config_file``: JSON/YAML; missing is a
    warning and it is watched for. ``auto_reload``: watch the file (polling every
    ``watch_interval`` s, reloading once it has been unchanged for ``watch_debounce`` s).
    ``validation_enabled=False`` skips validators and schema (never structure and size).
    """

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
        env, env_labels = self._read_environment()
        self._layers.set_layer(
            Layer.DEFAULT, self._defaults, {k: "defaults" for k in self._defaults}
        )
        self._layers.set_layer(Layer.ENVIRONMENT, env, env_labels)
        self._load_lkg()
        saved = dict(self._history.current)
        refused = await self._screen(saved) if saved and self._screens() else {}
        self._serve(list(saved), refused, {}, self._history.version)
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
        """Which layer supplies ``key``, and which lower layers it overrides (and, for a
        key held back here, which fleet version was refused and why)."""
        explanation = self._layers.explain(key, reveal=reveal)
        held = self._quarantine.get(key)
        if held is None:
            return explanation
        note = f"held back: the fleet's version {held.version} was refused here ({held.reason})"
        detail = f"{explanation.detail}; {note}" if explanation.detail else note
        return dataclasses.replace(explanation, detail=detail)

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
