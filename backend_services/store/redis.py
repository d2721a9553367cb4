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
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from json.scanner import make_scanner
from typing import Any

import redis.exceptions as rex

from ..clock import Clock, resolve_clock
from ..errors import (
    ConflictError,
    LifecycleError,
    StoreConfigurationError,
    StoreError,
    StoreUnavailableError,
    ValidationError,
)
from ..log import get_logger
from .keys import SCHEMA_VERSION, KeyLayout
from .protocol import (
    JSON,
    Append,
    Check,
    CommitResult,
    Delete,
    FeedBatch,
    FeedEvent,
    Operation,
    Put,
    PutIfNewer,
    Record,
    SetAdd,
    SetRemove,
    StoreStatus,
)
from .redis_connect import build_client, classify, parse_target
from .redis_scripts import LuaScript, load_scripts
from .values import FrozenJSON, check_key, check_ttl

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "DEFAULT_SOCKET_TIMEOUT", "RedisStore"]

DEFAULT_SOCKET_TIMEOUT = 2.0
"""Seconds to wait for a reply before the server counts as unavailable."""
DEFAULT_CONNECT_TIMEOUT = 1.0
"""Seconds to wait for a connection (and its TLS handshake and AUTH)."""

_log = get_logger("store.redis")
_dumps = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode
_loads = json.loads
_scan = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
"""Parses one JSON value at an offset (what json.loads does, minus its whitespace checks:
records hold compact JSON written by this module)."""
_ERRORS = (rex.RedisError, rex.RedisClusterException, OSError)
_SAFE_POLICY = "noeviction"


def _encode(field: str, value: Any) -> str:
    if type(value) is FrozenJSON:  # already compact JSON text (see values.freeze)
        return value
    try:
        return _dumps(value)
    except (TypeError, ValueError, RecursionError):
        raise ValidationError(
            field, value, "a JSON-serialisable value (dict, list, str, finite number, bool, None)"
        ) from None


def _expect(ev: int | None) -> int | str:
    if ev is None:
        return ""
    if type(ev) is not int or ev < 0:
        raise ValidationError("expect_version", ev, "None or an integer >= 0")
    return ev


def _ttl_ms(ttl: float | None) -> int | str:
    if ttl is None:
        return ""
    check_ttl("ttl", ttl)
    return max(1, round(ttl * 1000))


def _maxlen(maxlen: int | None) -> int | str:
    if maxlen is None:
        return ""
    if type(maxlen) is not int or maxlen < 1:
        raise ValidationError("maxlen", maxlen, "a positive integer or None")
    return maxlen


def _event(stream: str, event: Any) -> str:
    check_key("stream", stream)
    if not isinstance(event, Mapping):
        raise ValidationError(stream, event, "an event mapping (JSON object)")
    return _encode(stream, dict(event))


def _batch(entries: Sequence[Any]) -> FeedBatch:
    """A batch from stream entries (at least one): ``(b"<seq>-0", [b"d", json])`` from the
    read script, ``(b"<seq>-0", {b"d": json})`` from XREAD."""
    events = [
        FeedEvent(
            int(entry_id.partition(b"-")[0]),
            _loads(fields[b"d"] if type(fields) is dict else fields[1]),
        )
        for entry_id, fields in entries
    ]
    return FeedBatch(events, events[-1].position)


def _members(members: Sequence[str]) -> None:
    for m in members:
        if not isinstance(m, str):
            raise ValidationError("member", m, "a string")


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


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
    return {_text(k): v for k, v in reply.items()} if isinstance(reply, dict) else {}


class RedisStore:
    """A :class:`~backend_services.store.protocol.Store` on Redis (see the module docstring).

    ``url`` — ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://`` or
    ``redis+sentinel://``; ``namespace`` — the hash tag of every key; ``username`` /
    ``password`` override the URL's; ``ssl_*`` — TLS files (``rediss://`` only);
    ``socket_timeout`` / ``connect_timeout`` — seconds; other keywords go to redis-py.
    ``clock`` gives ``updated_at`` of written records (expiry is the server's).
    """

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

    async def _eval(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            reply = await self._client.execute_command(
                "EVALSHA", script.sha, len(keys), *keys, *args
            )
        except rex.NoScriptError:
            reply = await self._eval_loaded(script, keys, args)
        except _ERRORS as exc:
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
        except _ERRORS as exc:
            raise self._fail(exc) from exc

    async def _load_scripts(self) -> None:
        for script in self._scripts.values():
            sha = _text(await self._client.script_load(script.text))
            if sha != script.sha:  # pragma: no cover - a server that hashes differently
                raise StoreError(f"Redis at {self._where} hashed script {script.name} as {sha}")
        _log.debug("scripts_loaded", url=self._where, count=len(self._scripts))

    # -- lifecycle ---------------------------------------------------------------------
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
        except _ERRORS as exc:
            raise self._fail(exc) from exc
        self.server_name = _text(hello.get("server", "redis"))
        self.server_version = _text(hello.get("version", "unknown"))
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
        found = _text(await self._client.execute_command("GET", key))
        if found != str(SCHEMA_VERSION):
            raise StoreConfigurationError(
                f"namespace {self.namespace!r} at {self._where} uses key layout version "
                f"{found!r}; expected {SCHEMA_VERSION} (migrate it, or use another namespace)"
            )

    async def _check_eviction(self) -> None:
        try:
            reply = _one_node(await self._client.config_get("maxmemory-policy"))
        except _ERRORS as exc:
            err = classify(exc, self._where)
            if isinstance(err, StoreUnavailableError):
                raise self._fail(exc) from exc
            _log.info("eviction_policy_unknown", url=self._where, reason=str(exc))
            return
        policy = _text(reply.get("maxmemory-policy", "")) or None
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
            except _ERRORS as exc:  # pragma: no cover - closing a broken connection
                _log.debug("close_failed", url=self._where, error=str(exc))
        self._connected = False

    shutdown = close

    async def __aenter__(self) -> RedisStore:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def server_time(self) -> float:
        try:
            seconds, micros = await self._client.time()
        except _ERRORS as exc:
            raise self._fail(exc) from exc
        return int(seconds) + int(micros) / 1_000_000

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
        except _ERRORS as exc:
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
        try:
            raws = await self._client.execute_command("MGET", *[doc + k for k in keys])
        except _ERRORS as exc:
            raise self._fail(exc) from exc
        if not self._connected:
            self._up()
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
            body = value if type(value) is FrozenJSON else _dumps(value)
        except (TypeError, ValueError, RecursionError):
            body = _encode(key, value)  # raises the ValidationError
        expect = "" if expect_version is None else _expect(expect_version)
        ttl_ms = "" if ttl is None else _ttl_ms(ttl)
        rkey = self._doc + key
        at = repr(self._time())
        try:
            version = await self._client.execute_command(
                "EVALSHA", self._put.sha, 1, rkey, expect, at, ttl_ms, body
            )
        except rex.NoScriptError:
            version = await self._eval_loaded(self._put, (rkey,), (expect, at, ttl_ms, body))
        except _ERRORS as exc:
            raise self._fail(exc) from exc
        if not self._connected:
            self._up()
        if version < 0:
            raise ConflictError(key, expect_version, -1 - version)
        return int(version)

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        check_key("key", key)
        if expect_version is None:
            try:
                removed = await self._client.execute_command("DEL", self._doc + key)
            except _ERRORS as exc:
                raise self._fail(exc) from exc
            return bool(removed)
        reply = await self._eval(self._delete, (self._doc + key,), (_expect(expect_version),))
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
                data = _event(op.stream, op.event)
                dedupe = op.dedupe_id
                if dedupe is not None:
                    check_key("dedupe_id", dedupe)
                keys += (k.feed + op.stream, k.feed_seq + op.stream, k.feed_dedupe + op.stream)
                args += ("E", index, _maxlen(op.maxlen), dedupe or "", data)
                continue
            if not isinstance(op, Put | Delete | Check | SetAdd | SetRemove | PutIfNewer):
                raise ValidationError(
                    "operation", op, "a store Operation (Put, Delete, Check, ...)"
                )
            check_key("key", op.key)
            if isinstance(op, Put):
                expect, ttl_ms = _expect(op.expect_version), _ttl_ms(op.ttl)
                keys.append(k.doc + op.key)
                args += ("P", index, expect, ttl_ms, _encode(op.key, op.value))
            elif isinstance(op, Delete):
                keys.append(k.doc + op.key)
                args += ("D", index, _expect(op.expect_version))
            elif isinstance(op, Check):
                expect = _expect(op.expect_version)
                if expect == "":
                    raise ValidationError("expect_version", None, "an integer >= 0 in a Check")
                keys.append(k.doc + op.key)
                args += ("C", index, expect)
            elif isinstance(op, SetAdd | SetRemove):
                _members(op.members)
                keys.append(k.set + op.key)
                args += ("A" if isinstance(op, SetAdd) else "R", index, len(op.members))
                args += op.members
            else:
                at = op.updated_at
                if isinstance(at, bool) or not isinstance(at, int | float) or at != at:
                    raise ValidationError("updated_at", at, "a wall time in seconds")
                ttl_ms = _ttl_ms(op.ttl)
                body = "" if op.deleted else _encode(op.key, op.value)
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
        try:
            raw = await self._client.execute_command("SMEMBERS", self._keys.set + key)
        except _ERRORS as exc:
            raise self._fail(exc) from exc
        return {m.decode() for m in raw}

    async def set_add(self, key: str, *members: str) -> int:
        return await self._set_change("SADD", key, members)

    async def set_remove(self, key: str, *members: str) -> int:
        return await self._set_change("SREM", key, members)

    async def _set_change(self, command: str, key: str, members: tuple[str, ...]) -> int:
        check_key("key", key)
        _members(members)
        if not members:
            return 0
        try:
            return int(await self._client.execute_command(command, self._keys.set + key, *members))
        except _ERRORS as exc:
            raise self._fail(exc) from exc

    async def incr(self, key: str, amount: int = 1) -> int:
        check_key("key", key)
        if type(amount) is not int:
            raise ValidationError("amount", amount, "an integer")
        try:
            return int(
                await self._client.execute_command("INCRBY", self._keys.counter + key, amount)
            )
        except _ERRORS as exc:
            raise self._fail(exc) from exc

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
        try:
            raw = await self._client.execute_command("GET", self._keys.lease + name)
        except _ERRORS as exc:
            raise self._fail(exc) from exc
        return None if raw is None else raw.decode()

    # -- feeds -------------------------------------------------------------------------
    async def append(
        self, stream: str, event: Mapping[str, JSON], *, maxlen: int | None = 10_000
    ) -> int:
        data = _event(stream, event)
        k = self._keys
        keys = (k.feed + stream, k.feed_seq + stream, k.feed_dedupe + stream)
        return int(await self._eval(self._append, keys, (_maxlen(maxlen), "", data)))

    async def feed_position(self, stream: str) -> int:
        check_key("stream", stream)
        try:
            raw = await self._client.execute_command("GET", self._keys.feed_seq + stream)
        except _ERRORS as exc:
            raise self._fail(exc) from exc
        return 0 if raw is None else int(raw)

    async def _collect(self, stream: str, after: int, count: int) -> FeedBatch:
        """Events after ``after`` by the read script, which also says when they are gone."""
        keys = (self._keys.feed + stream, self._keys.feed_seq + stream)
        reply = await self._eval(self._read, keys, (after, count))
        last = int(reply[1])
        if reply[0]:
            return FeedBatch([], last, resync=True)
        entries = reply[2] if len(reply) > 2 else []
        if not entries:
            return FeedBatch([], after)
        return _batch(entries)

    async def read(
        self, stream: str, after: int, *, count: int = 500, block: float | None = None
    ) -> FeedBatch:
        check_key("stream", stream)
        if type(after) is not int or after < 0:
            raise ValidationError("after", after, "an integer position >= 0")
        if type(count) is not int or count < 1:
            raise ValidationError("count", count, "a positive integer")
        blocking = block is not None and block > 0 and not self._closed
        if not blocking or self._followed.get(stream) != after:
            batch = await self._collect(stream, after, count)
            if batch.resync:
                self._followed.pop(stream, None)
                return batch
            self._followed[stream] = batch.position
            if batch.events or not blocking:
                return batch
        # ``after`` was checked against the stream by the last read: wait for what comes
        # next and take it from XREAD's reply. A gap (events trimmed meanwhile) goes back
        # to the read script, which reports it.
        assert block is not None
        entries = await self._wait(stream, after, count, block)
        if not entries:
            self._followed.pop(stream, None)  # quiet: the next read checks the stream again
            return FeedBatch([], after)
        batch = _batch(entries)
        if batch.events[0].position != after + 1:
            self._followed.pop(stream, None)
            return await self._collect(stream, after, count)
        self._followed[stream] = batch.position
        return batch

    async def _wait(self, stream: str, after: int, count: int, block: float) -> list[Any]:
        """Up to ``count`` entries after ``after``, waiting up to ``block`` seconds for the
        first; empty when none came or :meth:`close` ended the wait."""
        if self._blocking is None:
            self._blocking = build_client(self._target, socket_timeout=None, **self._client_options)
        key = self._keys.feed + stream
        xread = asyncio.ensure_future(
            self._blocking.execute_command(
                "XREAD",
                "COUNT",
                count,
                "BLOCK",
                max(1, round(block * 1000)),
                "STREAMS",
                key,
                f"{after}-0",
            )
        )
        self._xreads.add(xread)
        try:
            async with asyncio.timeout(block + self._socket_timeout):
                reply = await xread
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and task is not None and not task.cancelling():
                return []  # close() ended the wait
            raise
        except TimeoutError:
            raise self._fail(TimeoutError(f"XREAD BLOCK {block}s got no reply")) from None
        except _ERRORS as exc:
            if self._closed:
                return []
            raise self._fail(exc) from exc
        finally:
            self._xreads.discard(xread)
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3: {stream: [entries]}
            (entries,) = reply.values()
            return entries[0] if entries and isinstance(entries[0], list) else entries
        return reply[0][1]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r}, namespace={self.namespace!r})"
