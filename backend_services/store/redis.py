"""The Redis store: the shared-state protocol on Redis (6.2+) or Valkey, via ``redis.asyncio``.

Same semantics as :class:`~backend_services.store.memory.MemoryStore` (see
:mod:`backend_services.store.protocol`). How it maps onto Redis:

* **Keys** follow :class:`~backend_services.store.keys.KeyLayout`: every key starts with the
  hash tag ``{<namespace>}`` (one Cluster slot for the whole store) and carries the layout's
  schema version (``{dtesn}:v1:doc:<key>``). Nothing uses ``KEYS`` or ``SCAN``.
* **Records** are one string ``"<version>:<updated_at>:<value JSON>"``: a read is one ``GET``
  (``MGET`` for many). Every write that must be atomic — put with compare-and-set and TTL,
  conditional delete, :meth:`RedisStore.commit`, appends, leases — is a Lua script from
  ``store/lua/`` sent with ``EVALSHA`` (loaded again when a restarted server answers
  NOSCRIPT). TTLs and lease expiry are ``PX`` on the server's clock.
* **Feeds** are Redis Streams with explicit ids ``<seq>-0`` taken from a per-stream counter
  inside the append script, trimmed with ``MAXLEN`` (exactly below 1000 events, by whole
  nodes — ``MAXLEN ~`` — above). Blocking reads use ``XREAD BLOCK`` on a connection pool of
  their own, so a waiting reader never holds up other commands.
* **Errors**: unreachable, reset or timed out → :class:`StoreUnavailableError`; refused
  credentials, missing ACL permissions, untrusted TLS certificates, malformed URLs →
  :class:`StoreConfigurationError` (never retried). Passwords never reach a log line.
* **Start-up checks** (:meth:`RedisStore.initialize`): PING, server name and version, the
  key layout version of the namespace, and the ``maxmemory-policy``: any policy but
  ``noeviction`` is reported with a warning — ``allkeys-*`` may evict any of our keys,
  ``volatile-*`` may evict leases and expiring records before their time.

URLs: ``redis://``, ``rediss://`` (TLS; ``ssl_ca_certs``/``ssl_certfile``/``ssl_keyfile``),
``unix://``, ``redis+cluster://`` and ``redis+sentinel://`` — see
:mod:`backend_services.store.redis_connect`.

**Where the pieces live.** :class:`RedisStore` is built in layers, one module each:
:mod:`~backend_services.store.redis_state` (construction, the clients, connection state
and errors, running scripts; :data:`DEFAULT_SOCKET_TIMEOUT` and
:data:`DEFAULT_CONNECT_TIMEOUT`), :mod:`~backend_services.store.redis_lifecycle` (the
start-up checks and closing), :mod:`~backend_services.store.redis_feeds` (appending to
and reading feeds) and this module (records, :meth:`RedisStore.commit`, sets, counters,
leases). Arguments are checked and encoded by :mod:`~backend_services.store.redis_codec`;
the scripts are loaded by :mod:`~backend_services.store.redis_scripts`, clients built and
errors classified by :mod:`~backend_services.store.redis_connect`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from json.scanner import make_scanner
from typing import Any

import redis.exceptions as rex

from ..errors import ConflictError, ValidationError
from ..log import get_logger
from .protocol import (
    JSON,
    Append,
    Check,
    CommitResult,
    Delete,
    Operation,
    Put,
    PutIfNewer,
    Record,
    SetAdd,
    SetRemove,
)
from .redis_codec import dumps, encode_json, event_arg, expect_arg, maxlen_arg, ttl_arg
from .redis_feeds import RedisFeeds
from .redis_lifecycle import RedisLifecycle
from .redis_state import DEFAULT_CONNECT_TIMEOUT, DEFAULT_SOCKET_TIMEOUT, REDIS_ERRORS
from .values import FrozenJSON, check_key, check_members, check_ttl

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "DEFAULT_SOCKET_TIMEOUT", "RedisStore"]

_log = get_logger("store.redis")
_scan = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
"""Parses one JSON value at an offset (what json.loads does, minus its whitespace checks:
records hold compact JSON written by this module)."""


class RedisStore(RedisFeeds, RedisLifecycle):
    """A :class:`~backend_services.store.protocol.Store` on Redis (see the module docstring).

    ``url`` — ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://`` or
    ``redis+sentinel://``; ``namespace`` — the hash tag of every key; ``username`` /
    ``password`` override the URL's; ``ssl_*`` — TLS files (``rediss://`` only);
    ``socket_timeout`` / ``connect_timeout`` — seconds; other keywords go to redis-py.
    ``clock`` gives ``updated_at`` of written records (expiry is the server's).
    """

    # -- documents ---------------------------------------------------------------------
    def _record(self, key: str, raw: bytes) -> Record | None:
        try:
            version, updated_at, body = raw.split(b":", 2)
            text = body.decode()
            value, end = _scan(text, 0)
            if end == len(text):
                return Record(value, int(version), float(updated_at))
        except (ValueError, StopIteration):
            pass
        _log.warning("corrupt_record", key=key, expected="<version>:<updated_at>:<JSON>")
        return None

    async def get(self, key: str) -> Record | None:
        if type(key) is not str or not key:
            check_key("key", key)
        try:
            raw = await self._client.execute_command("GET", self._doc + key)
        except REDIS_ERRORS as exc:
            raise self._fail(exc) from exc
        if not self._connected:
            self._up()
        if raw is None:
            return None
        # the hot path: parse inline (see _record for the checks spelled out)
        try:
            version, updated_at, body = raw.split(b":", 2)
            text = body.decode()
            value, end = _scan(text, 0)
            if end == len(text):
                return Record(value, int(version), float(updated_at))
        except (ValueError, StopIteration):
            pass
        return self._record(key, raw)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Record]:
        keys = list(keys)
        for key in keys:
            check_key("key", key)
        if not keys:
            return {}
        doc = self._doc
        raws = await self._command("MGET", *[doc + k for k in keys])
        out: dict[str, Record] = {}
        for key, raw in zip(keys, raws, strict=True):
            if raw is not None:
                record = self._record(key, raw)
                if record is not None:
                    out[key] = record
        return out

    async def put(
        self, key: str, value: JSON, *, expect_version: int | None = None, ttl: float | None = None
    ) -> int:
        if type(key) is not str or not key:
            check_key("key", key)
        try:
            body = value if type(value) is FrozenJSON else dumps(value)
        except (TypeError, ValueError, RecursionError):
            body = encode_json(key, value)  # raises the ValidationError
        expect = "" if expect_version is None else expect_arg(expect_version)
        ttl_ms = "" if ttl is None else ttl_arg(ttl)
        rkey = self._doc + key
        at = repr(self._time())
        try:
            version = await self._client.execute_command(
                "EVALSHA", self._put.sha, 1, rkey, expect, at, ttl_ms, body
            )
        except rex.NoScriptError:
            version = await self._eval_loaded(self._put, (rkey,), (expect, at, ttl_ms, body))
        except REDIS_ERRORS as exc:
            raise self._fail(exc) from exc
        if not self._connected:
            self._up()
        if version < 0:
            raise ConflictError(key, expect_version, -1 - version)
        return int(version)

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        check_key("key", key)
        if expect_version is None:
            return bool(await self._command("DEL", self._doc + key))
        reply = await self._eval(self._delete, (self._doc + key,), (expect_arg(expect_version),))
        if reply < 0:
            raise ConflictError(key, expect_version, -1 - reply)
        return bool(reply)

    # -- atomic commit -----------------------------------------------------------------
    async def commit(self, ops: Sequence[Operation]) -> CommitResult:
        ops = list(ops)
        if not ops:
            return CommitResult()
        single = ops[0]
        if len(ops) == 1 and type(single) is Put:  # one write: the lighter put script
            version = await self.put(
                single.key, single.value, expect_version=single.expect_version, ttl=single.ttl
            )
            return CommitResult({single.key: version})
        k = self._keys
        keys: list[str] = []
        args: list[Any] = [repr(self._time())]
        for op in ops:
            index = len(keys) + 1
            if isinstance(op, Append):
                data = event_arg(op.stream, op.event)
                dedupe = op.dedupe_id
                if dedupe is not None:
                    check_key("dedupe_id", dedupe)
                keys += (k.feed + op.stream, k.feed_seq + op.stream, k.feed_dedupe + op.stream)
                args += ("E", index, maxlen_arg(op.maxlen), dedupe or "", data)
                continue
            if not isinstance(op, Put | Delete | Check | SetAdd | SetRemove | PutIfNewer):
                raise ValidationError(
                    "operation", op, "a store Operation (Put, Delete, Check, ...)"
                )
            check_key("key", op.key)
            if isinstance(op, Put):
                expect, ttl_ms = expect_arg(op.expect_version), ttl_arg(op.ttl)
                keys.append(k.doc + op.key)
                args += ("P", index, expect, ttl_ms, encode_json(op.key, op.value))
            elif isinstance(op, Delete):
                keys.append(k.doc + op.key)
                args += ("D", index, expect_arg(op.expect_version))
            elif isinstance(op, Check):
                expect = expect_arg(op.expect_version)
                if expect == "":
                    raise ValidationError("expect_version", None, "an integer >= 0 in a Check")
                keys.append(k.doc + op.key)
                args += ("C", index, expect)
            elif isinstance(op, SetAdd | SetRemove):
                check_members(op.members)
                keys.append(k.set + op.key)
                args += ("A" if isinstance(op, SetAdd) else "R", index, len(op.members))
                args += op.members
            else:
                at = op.updated_at
                if isinstance(at, bool) or not isinstance(at, int | float) or at != at:
                    raise ValidationError("updated_at", at, "a wall time in seconds")
                ttl_ms = ttl_arg(op.ttl)
                body = "" if op.deleted else encode_json(op.key, op.value)
                keys.append(k.doc + op.key)
                args += ("N", index, repr(float(at)), ttl_ms, "1" if op.deleted else "", body)
        reply = await self._eval(self._commit, keys, args)
        if reply[0] == 0:
            failed = ops[int(reply[1]) - 1]
            assert isinstance(failed, Put | Delete | Check)
            raise ConflictError(failed.key, failed.expect_version, int(reply[2]))
        versions: dict[str, int] = {}
        positions: dict[str, int] = {}
        for op, result in zip(ops, reply[1:], strict=True):
            if isinstance(op, Append):
                positions[op.stream] = int(result)
            elif isinstance(op, Put | Delete | PutIfNewer):
                versions[op.key] = int(result)
        return CommitResult(versions, positions)

    # -- sets, counters ----------------------------------------------------------------
    async def members(self, key: str) -> set[str]:
        check_key("key", key)
        raw = await self._command("SMEMBERS", self._keys.set + key)
        return {m.decode() for m in raw}

    async def set_add(self, key: str, *members: str) -> int:
        return await self._set_change("SADD", key, members)

    async def set_remove(self, key: str, *members: str) -> int:
        return await self._set_change("SREM", key, members)

    async def _set_change(self, command: str, key: str, members: tuple[str, ...]) -> int:
        check_key("key", key)
        check_members(members)
        if not members:
            return 0
        return int(await self._command(command, self._keys.set + key, *members))

    async def incr(self, key: str, amount: int = 1) -> int:
        check_key("key", key)
        if type(amount) is not int:
            raise ValidationError("amount", amount, "an integer")
        return int(await self._command("INCRBY", self._keys.counter + key, amount))

    # -- leases ------------------------------------------------------------------------
    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        check_key("name", name)
        check_key("owner", owner)
        check_ttl("ttl", ttl)
        ttl_ms = max(1, round(ttl * 1000))
        return bool(await self._eval(self._acquire, (self._keys.lease + name,), (owner, ttl_ms)))

    async def release_lease(self, name: str, owner: str) -> bool:
        check_key("name", name)
        check_key("owner", owner)
        return bool(await self._eval(self._release, (self._keys.lease + name,), (owner,)))

    async def lease_owner(self, name: str) -> str | None:
        check_key("name", name)
        raw = await self._command("GET", self._keys.lease + name)
        return None if raw is None else raw.decode()

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r}, namespace={self.namespace!r})"
