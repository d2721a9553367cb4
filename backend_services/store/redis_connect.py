"""Connecting :class:`~backend_services.store.redis.RedisStore` to Redis, and what its
errors mean.

URLs (what redis-py supports, through its asyncio clients):

* ``redis://[[user]:password@]host[:port][/db]`` — one server; ``rediss://`` for TLS
  (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` apply); ``unix:///path.sock``.
* ``redis+cluster://[[user]:password@]host:port[,host:port...]`` — Redis Cluster
  (``rediss+cluster://`` with TLS); the store's keys share one hash slot.
* ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]`` — the
  master of ``service`` as named by Sentinel (``rediss+sentinel://`` with TLS to the master
  and the sentinels). Credentials in the URL are for the master; pass
  ``sentinel_kwargs={"password": ...}`` when the sentinels require their own.

Explicit ``username`` / ``password`` arguments win over credentials in the URL.

:func:`classify` maps a redis-py (or socket) error to the store's hierarchy: unreachable
or timed out → :class:`~backend_services.errors.StoreUnavailableError` (retrying may
help); refused credentials, missing ACL permission, an untrusted or mismatched TLS
certificate → :class:`~backend_services.errors.StoreConfigurationError` (it will not).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from ..errors import StoreConfigurationError, StoreError, StoreUnavailableError
from ..log import mask_url
from .redis_packing import fast_packing
from .redis_pool import WaitingCluster, WaitingPool, WaitingSentinelPool

__all__ = ["RedisTarget", "build_client", "classify", "parse_target"]

_STANDALONE = {"redis": False, "rediss": True, "unix": False}
_CLUSTER = {"redis+cluster": False, "rediss+cluster": True}
_SENTINEL = {"redis+sentinel": False, "rediss+sentinel": True}
_SSL_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a store URL points at."""

    kind: str  # "standalone", "cluster" or "sentinel"
    url: str
    tls: bool
    nodes: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = None
    service: str | None = None
    db: int = 0

    @property
    def masked(self) -> str:
        """The URL fit for a log line or an error message."""
        return mask_url(self.url)


def _bad(url: str, expected: str) -> StoreConfigurationError:
    return StoreConfigurationError(f"redis_url={mask_url(url)!r}: expected {expected}")


def _nodes(url: str, netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts = netloc.rsplit("@", 1)[-1]
    nodes: list[tuple[str, int]] = []
    for part in hosts.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep:
            host, port = port, str(default_port)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _bad(url, "host:port[,host:port...] after the scheme")
        nodes.append((host.strip("[]"), int(port)))
    return tuple(nodes)


def _credentials(netloc: str) -> tuple[str | None, str | None]:
    if "@" not in netloc:
        return None, None
    userinfo = netloc.rsplit("@", 1)[0]
    user, sep, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if sep else None)


def parse_target(url: str) -> RedisTarget:
    """Parse a store URL (see the module docstring); StoreConfigurationError if malformed."""
    if not isinstance(url, str) or "://" not in url:
        raise _bad(
            str(url), "a redis://, rediss://, unix://, redis+cluster:// or redis+sentinel:// URL"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme in _STANDALONE:
        try:
            parse_url(url)
        except (ValueError, TypeError) as exc:
            raise _bad(url, f"a valid Redis URL ({exc})") from None
        return RedisTarget("standalone", url, _STANDALONE[scheme])
    parts = urlsplit(url)
    user, password = _credentials(parts.netloc)
    if scheme in _CLUSTER:
        if parts.path not in ("", "/", "/0"):
            raise _bad(url, "no database number (a cluster has only database 0)")
        return RedisTarget(
            "cluster", url, _CLUSTER[scheme], _nodes(url, parts.netloc, 6379), user, password
        )
    if scheme in _SENTINEL:
        path = [p for p in parts.path.split("/") if p]
        if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise _bad(url, "redis+sentinel://host:port[,host:port]/<service>[/<db>]")
        return RedisTarget(
            "sentinel",
            url,
            _SENTINEL[scheme],
            _nodes(url, parts.netloc, 26379),
            user,
            password,
            service=unquote(path[0]),
            db=int(path[1]) if len(path) == 2 else 0,
        )
    raise _bad(url, "a redis://, rediss://, unix://, redis+cluster:// or redis+sentinel:// URL")


def build_client(
    target: RedisTarget,
    *,
    socket_timeout: float | None,
    connect_timeout: float,
    username: str | None = None,
    password: str | None = None,
    ssl_options: Mapping[str, str | None] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Any:
    """A redis-py asyncio client for ``target`` (nothing is connected yet).

    Connection errors are retried once, at once (a pooled connection may be stale after a
    server restart); anything longer is the caller's business. Commands beyond the pool's
    size wait for a connection (see :mod:`~backend_services.store.redis_pool`).
    """
    ssl_given = {k: v for k, v in (ssl_options or {}).items() if v is not None}
    if ssl_given and not target.tls:
        names = ", ".join(sorted(ssl_given))
        raise _bad(target.url, f"a rediss:// URL when TLS options are given ({names})")
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(rex.ConnectionError,)),
        "health_check_interval": 0,
        **ssl_given,
    }
    if username is not None:
        options["username"] = username
    if password is not None:
        options["password"] = password
    options.update(extra or {})
    try:
        if target.kind == "standalone":
            kwargs: dict[str, Any] = dict(parse_url(target.url))
            kwargs.update(options)
            pool = WaitingPool(wait_timeout=socket_timeout, **kwargs)
            pool.connection_class = fast_packing(pool.connection_class)
            return aioredis.Redis.from_pool(pool)
        creds = {"username": target.username, "password": target.password}
        creds = {k: v for k, v in creds.items() if v is not None}
        if target.kind == "cluster":
            cluster_options = {**creds, **options, "ssl": target.tls}
            return WaitingCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],
                wait_timeout=socket_timeout,
                **cluster_options,
            )
        sentinel_options = {**creds, **options, "db": target.db}
        sentinel_kwargs = dict(sentinel_options.pop("sentinel_kwargs", None) or {})
        sentinel_kwargs.setdefault("socket_timeout", socket_timeout)
        sentinel_kwargs.setdefault("socket_connect_timeout", connect_timeout)
        if target.tls:
            sentinel_options["connection_class"] = SSLConnection
            sentinel_kwargs.setdefault("ssl", True)
            for name, value in ssl_given.items():
                sentinel_kwargs.setdefault(name, value)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes), sentinel_kwargs=sentinel_kwargs
        )
        assert target.service is not None
        return sentinel.master_for(
            target.service,
            connection_pool_class=WaitingSentinelPool,
            wait_timeout=socket_timeout,
            **sentinel_options,
        )
    except (TypeError, ValueError, rex.RedisClusterException) as exc:
        raise _bad(target.url, f"valid connection options ({exc})") from None


_CONFIG_REPLIES = ("NOAUTH", "WRONGPASS", "NOPERM", "AUTH")
_UNAVAILABLE_REPLIES = (
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "READONLY",
    "OOM",
    "NOREPLICAS",
)


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``exc`` (walking causes and contexts), if any."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLError):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def classify(exc: BaseException, where: str) -> StoreError:
    """The store error for ``exc``, raised while talking to ``where`` (a masked URL)."""
    if isinstance(exc, StoreError):
        return exc
    text = str(exc)
    if len(text) > 300:
        text = text[:297] + "..."
    if isinstance(
        exc,
        rex.AuthenticationError | rex.AuthorizationError | rex.AuthenticationWrongNumberOfArgsError,
    ) or (isinstance(exc, rex.ResponseError) and text.startswith(_CONFIG_REPLIES)):
        return StoreConfigurationError(
            f"Redis at {where} refused our credentials: {text} "
            "(expected a valid username/password for an ACL user allowed on the store's keys)"
        )
    if isinstance(exc, rex.NoPermissionError):
        return StoreConfigurationError(
            f"Redis at {where} denied a command: {text} (expected an ACL user allowed "
            "on the store's key pattern, with @read, @write, @scripting, @stream)"
        )
    tls = _tls_failure(exc)
    if tls is not None:
        reason = getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or tls
        return StoreConfigurationError(
            f"TLS connection to {where} failed: {reason} (expected a server certificate "
            "trusted by ssl_ca_certs and matching the host, and a rediss:// server)"
        )
    if isinstance(exc, rex.ConnectionError | rex.TimeoutError | OSError | asyncio.TimeoutError):
        return StoreUnavailableError(
            f"Redis at {where} is unavailable: {text or type(exc).__name__}"
        )
    if isinstance(
        exc, rex.ClusterError | rex.SlotNotCoveredError | rex.OutOfMemoryError | rex.ReadOnlyError
    ) or (isinstance(exc, rex.ResponseError) and text.startswith(_UNAVAILABLE_REPLIES)):
        return StoreUnavailableError(f"Redis at {where} cannot serve requests now: {text}")
    return StoreError(f"Redis at {where} failed: {type(exc).__name__}: {text}")
