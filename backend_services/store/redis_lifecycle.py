"""Starting and closing a :class:`~backend_services.store.redis.RedisStore`.

**Start-up checks** (:meth:`RedisLifecycle.initialize`): PING (HELLO where the server
knows it), server name and version, the key layout version of the namespace, and the
``maxmemory-policy``: any policy but ``noeviction`` is reported with a warning —
``allkeys-*`` may evict any of our keys, ``volatile-*`` may evict leases and expiring
records before their time. :meth:`RedisLifecycle.close` ends blocked feed reads and
closes both clients.
"""

from __future__ import annotations

from typing import Any, Self

import redis.exceptions as rex

from ..errors import LifecycleError, StoreConfigurationError, StoreError, StoreUnavailableError
from ..log import get_logger
from .keys import SCHEMA_VERSION
from .redis_codec import as_text
from .redis_connect import classify
from .redis_state import REDIS_ERRORS, RedisState

__all__ = ["RedisLifecycle"]

_log = get_logger("store.redis")
_SAFE_POLICY = "noeviction"


def _older_than(version: str, minimum: tuple[int, int]) -> bool:
    parts = version.split(".")
    try:
        return (int(parts[0]), int(parts[1])) < minimum
    except (ValueError, IndexError):
        return False


def _one_node(reply: Any) -> dict[str, Any]:
    """A map reply as a dict with str keys (RESP2 gives a flat list; a cluster may give
    one dict per node: the first node's is taken)."""
    if isinstance(reply, list | tuple):
        reply = dict(zip(reply[::2], reply[1::2], strict=False))
    if isinstance(reply, dict) and reply and all(isinstance(v, dict) for v in reply.values()):
        reply = next(iter(reply.values()))
    return {as_text(k): v for k, v in reply.items()} if isinstance(reply, dict) else {}


class RedisLifecycle(RedisState):
    """Start-up checks and closing of a :class:`~backend_services.store.redis.RedisStore`
    (see the module docstring)."""

    async def initialize(self) -> None:
        """Connect and check the server (see the module docstring). Raises
        StoreUnavailableError when it cannot be reached, StoreConfigurationError when it
        refuses us or holds another key layout."""
        if self._closed:
            raise LifecycleError(f"RedisStore for {self._where} is closed; make a new one")
        try:
            hello = await self._hello()
            await self._check_schema()
            await self._load_scripts()
        except StoreError:
            raise
        except REDIS_ERRORS as exc:
            raise self._fail(exc) from exc
        self.server_name = as_text(hello.get("server", "redis"))
        self.server_version = as_text(hello.get("version", "unknown"))
        if _older_than(self.server_version, (6, 2)):
            _log.warning(
                "server_version_untested",
                url=self._where,
                version=self.server_version,
                expected="Redis 6.2 or later, or Valkey",
            )
        await self._check_eviction()
        self._up()
        _log.info(
            "connected",
            url=self._where,
            kind=self._target.kind,
            server=self.server_name,
            version=self.server_version,
            namespace=self.namespace,
        )

    async def _hello(self) -> dict[str, Any]:
        """Who the server is (HELLO, allowed to every ACL user); PING where HELLO is unknown."""
        try:
            return _one_node(await self._client.execute_command("HELLO", **self._anywhere))
        except rex.ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise
        await self._client.execute_command("PING", **self._anywhere)
        return {}

    async def _check_schema(self) -> None:
        key = self._keys.schema
        await self._client.execute_command("SET", key, SCHEMA_VERSION, "NX")
        found = as_text(await self._client.execute_command("GET", key))
        if found != str(SCHEMA_VERSION):
            raise StoreConfigurationError(
                f"namespace {self.namespace!r} at {self._where} uses key layout version "
                f"{found!r}; expected {SCHEMA_VERSION} (migrate it, or use another namespace)"
            )

    async def _check_eviction(self) -> None:
        try:
            reply = _one_node(await self._client.config_get("maxmemory-policy"))
        except REDIS_ERRORS as exc:
            err = classify(exc, self._where)
            if isinstance(err, StoreUnavailableError):
                raise self._fail(exc) from exc
            _log.info("eviction_policy_unknown", url=self._where, reason=str(exc))
            return
        policy = as_text(reply.get("maxmemory-policy", "")) or None
        self.maxmemory_policy = policy
        if policy is None or policy == _SAFE_POLICY:
            return
        what = (
            "leases and expiring records before their time"
            if policy.startswith("volatile-")
            else "any of the store's keys"
        )
        _log.warning(
            "eviction_policy_unsafe",
            url=self._where,
            policy=policy,
            expected=_SAFE_POLICY,
            risk=f"under memory pressure Redis may evict {what}",
        )

    async def close(self) -> None:
        """Close connections; a reader blocked in :meth:`read` returns what it has."""
        self._closed = True
        for xread in list(self._xreads):
            xread.cancel()
        clients = [c for c in (self._blocking, self._client) if c is not None]
        for client in clients:
            try:
                await client.aclose()
            except REDIS_ERRORS as exc:  # pragma: no cover - closing a broken connection
                _log.debug("close_failed", url=self._where, error=str(exc))
        self._connected = False

    shutdown = close

    async def __aenter__(self) -> Self:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
