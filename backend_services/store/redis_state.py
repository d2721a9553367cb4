"""What every part of :class:`~backend_services.store.redis.RedisStore` shares.

:class:`RedisState` holds the construction (the parsed URL, the clients, the key layout,
the Lua scripts), the connection state (connected, outages, the last error: a failed
command is classified by :func:`~backend_services.store.redis_connect.classify` and
counted here) and running a script with ``EVALSHA`` (loaded again when a restarted
server answers NOSCRIPT). The start-up checks and closing are in
:mod:`~backend_services.store.redis_lifecycle`, the feeds in
:mod:`~backend_services.store.redis_feeds`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.exceptions as rex

from ..clock import Clock, resolve_clock
from ..errors import StoreError, StoreUnavailableError, ValidationError
from ..log import get_logger
from .keys import KeyLayout
from .protocol import StoreStatus
from .redis_codec import as_text
from .redis_connect import build_client, classify, parse_target
from .redis_scripts import LuaScript, load_scripts

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "DEFAULT_SOCKET_TIMEOUT", "REDIS_ERRORS", "RedisState"]

DEFAULT_SOCKET_TIMEOUT = 2.0
"""Seconds to wait for a reply before the server counts as unavailable."""
DEFAULT_CONNECT_TIMEOUT = 1.0
"""Seconds to wait for a connection (and its TLS handshake and AUTH)."""

REDIS_ERRORS = (rex.RedisError, rex.RedisClusterException, OSError)
"""What a failed command raises (mapped to the store's errors by ``_fail``)."""

_log = get_logger("store.redis")


class RedisState:
    """Construction, connection state and script calls of a
    :class:`~backend_services.store.redis.RedisStore` (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "dtesn",
        clock: Clock | None = None,
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        username: str | None = None,
        password: str | None = None,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        **kw: Any,
    ) -> None:
        for name, value in (
            ("socket_timeout", socket_timeout),
            ("connect_timeout", connect_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValidationError(name, value, "a positive number of seconds")
        self._target = parse_target(url)
        self._where = self._target.masked
        self._keys = KeyLayout.for_namespace(namespace)
        self._doc = self._keys.doc
        self._clock = resolve_clock(clock)
        self._time = self._clock.time
        self._socket_timeout = float(socket_timeout)
        self._client_options: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "username": username,
            "password": password,
            "ssl_options": {
                "ssl_ca_certs": ssl_ca_certs,
                "ssl_certfile": ssl_certfile,
                "ssl_keyfile": ssl_keyfile,
            },
            "extra": kw,
        }
        self._client: Any = build_client(
            self._target, socket_timeout=self._socket_timeout, **self._client_options
        )
        self._blocking: Any = None  # a second client for XREAD BLOCK, made when first needed
        # keyless commands: any node of a cluster will do
        self._anywhere: dict[str, Any] = (
            {"target_nodes": "random"} if self._target.kind == "cluster" else {}
        )
        scripts = load_scripts()
        self._scripts = scripts
        self._put = scripts["put"]
        self._delete = scripts["delete"]
        self._commit = scripts["commit"]
        self._append = scripts["append"]
        self._read = scripts["read"]
        self._acquire = scripts["lease_acquire"]
        self._release = scripts["lease_release"]
        self._connected = False
        self._closed = False
        self._xreads: set[asyncio.Future[Any]] = set()  # blocked reads, cancelled by close()
        # stream -> the position its last read ended at, found consistent with the stream
        # (a read from there may wait for new events directly)
        self._followed: dict[str, int] = {}
        self._outages = 0
        self._last_error: str | None = None
        self.server_name: str | None = None
        """``"redis"`` or ``"valkey"`` once initialized."""
        self.server_version: str | None = None
        """The server's version (``"8.1.8"``) once initialized."""
        self.maxmemory_policy: str | None = None
        """The server's eviction policy once initialized (None when it may not be read)."""

    @property
    def namespace(self) -> str:
        return self._keys.namespace

    @property
    def keys(self) -> KeyLayout:
        """The key layout of this store."""
        return self._keys

    # -- errors and connection state ---------------------------------------------------
    def _fail(self, exc: BaseException) -> StoreError:
        err = classify(exc, self._where)
        self._last_error = str(err)
        if isinstance(err, StoreUnavailableError):
            self._followed.clear()  # the server may come back with other streams
            if self._connected:
                self._outages += 1
                _log.warning("connection_lost", url=self._where, error=str(err))
            self._connected = False
        return err

    def _up(self) -> None:
        if not self._connected:
            self._connected = True
            _log.info("connection_up", url=self._where)

    def status(self) -> StoreStatus:
        return StoreStatus(
            backend="redis",
            connected=self._connected,
            outages=self._outages,
            last_error=self._last_error,
        )

    async def server_time(self) -> float:
        seconds, micros = await self._command("TIME")
        return int(seconds) + int(micros) / 1_000_000

    async def _command(self, *args: Any) -> Any:
        """One plain command: a failure becomes the store's error, a reply means the
        server is reachable again."""
        try:
            reply = await self._client.execute_command(*args)
        except REDIS_ERRORS as exc:
            raise self._fail(exc) from exc
        if not self._connected:
            self._up()
        return reply

    # -- scripts -----------------------------------------------------------------------
    async def _eval(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            reply = await self._client.execute_command(
                "EVALSHA", script.sha, len(keys), *keys, *args
            )
        except rex.NoScriptError:
            reply = await self._eval_loaded(script, keys, args)
        except REDIS_ERRORS as exc:
            raise self._fail(exc) from exc
        if not self._connected:
            self._up()
        return reply

    async def _eval_loaded(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Load ``script`` (the server forgot it, e.g. after a restart), then run it."""
        try:
            await self._load_scripts()
            return await self._client.execute_command(
                "EVALSHA", script.sha, len(keys), *keys, *args
            )
        except REDIS_ERRORS as exc:
            raise self._fail(exc) from exc

    async def _load_scripts(self) -> None:
        for script in self._scripts.values():
            sha = as_text(await self._client.script_load(script.text))
            if sha != script.sha:  # pragma: no cover - a server that hashes differently
                raise StoreError(f"Redis at {self._where} hashed script {script.name} as {sha}")
        _log.debug("scripts_loaded", url=self._where, count=len(self._scripts))
