"""Keeping a process's configuration in step with the fleet through the shared store.

* **Commit.** A change is one atomic ``commit`` (layout in
  :mod:`backend_services.config.fleet`) conditional on the head's record version; when
  another writer got there first the commit fails, this process catches up, and the
  caller re-plans (and re-validates) on the new head.
* **Follow.** A :class:`~backend_services.store.feed.FeedFollower` delivers every
  version's event; a record that continues the local head is applied at once (callbacks
  fire once: records are de-duplicated by id). A gap is filled from the head's history;
  anything else (a position lost, a fork, an unknown version at or below the head — such
  as another process's outage writes replayed after this one reconciled) triggers a full
  resync.
* **Resync.** Loads the head and every entry. When the store's history continues the
  local one, the process simply adopts it. When histories forked — several processes
  changed the configuration while the store was unreachable — the per-key values are
  merged newest-write-wins (a local change the store does not have yet is kept when it
  is newer than what the store holds, tombstones included), and a ``reconcile`` version,
  numbered above both heads, is committed so every process converges on one content and
  version numbers never go backwards. A store that lost its head (flushed) is re-seeded
  from this process's state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..clock import Clock
from ..config.documents import decode_entry, decode_record, encode_entry, encode_record
from ..config.fleet import (
    DEFAULT_EMBED_LIMIT,
    DEFAULT_TOMBSTONE_TTL,
    FleetKeys,
    Head,
    commit_ops,
    head_value,
    is_tombstone,
    parse_head,
)
from ..config.model import (
    ChangeKind,
    ConfigSource,
    ConfigVersion,
    Entry,
    VersionRecord,
)
from ..config.versions import HistoryGapError, VersionHistory
from ..errors import BackendServicesError, ConflictError, StoreError
from ..log import get_logger
from ..store.feed import FeedFollower
from ..store.protocol import Check, FeedEvent, Put, SetAdd, SetRemove, Store, StoreStatus
from ..tasks import Backoff, Supervisor

__all__ = ["FleetHost", "FleetSync"]

_log = get_logger("config_manager.fleet")
_MAX_RESYNC_ATTEMPTS = 8


class FleetHost(Protocol):
    """What the synchroniser needs from the configuration manager."""

    @property
    def history(self) -> VersionHistory: ...
    @property
    def author(self) -> str | None: ...
    def ingest(self, record: VersionRecord) -> bool: ...
    def adopt(
        self,
        current: Mapping[str, Entry],
        records: list[VersionRecord],
        head: ConfigVersion | None,
        reason: str,
    ) -> None: ...
    def open_secret(self, key: str, token: str) -> Any: ...
    def new_version_id(self, version: int) -> str: ...
    async def drain(self) -> None: ...


def _raise_if_cancelling(exc: BaseException | None = None) -> None:
    """Re-raise as a cancellation when the current task is being cancelled: a client
    library may turn a cancellation into a timeout or connection error, and a loop that
    treats that as transient would never end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError() from exc


class _CancelAwareFeed:
    """The two store calls a feed follower makes, ending promptly when its task is
    cancelled even if the client library swallowed the cancellation."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def read(
        self, stream: str, after: int, *, count: int = 500, block: float | None = None
    ) -> Any:
        _raise_if_cancelling()
        try:
            return await self._store.read(stream, after, count=count, block=block)
        except Exception as exc:
            _raise_if_cancelling(exc)
            raise

    async def feed_position(self, stream: str) -> int:
        _raise_if_cancelling()
        try:
            return await self._store.feed_position(stream)
        except Exception as exc:
            _raise_if_cancelling(exc)
            raise


class FleetSync:
    """Commits, follows and resyncs one service's configuration (see module docstring)."""

    def __init__(
        self,
        host: FleetHost,
        store: Store,
        service_name: str,
        *,
        clock: Clock,
        supervisor: Supervisor,
        embed_limit: int = DEFAULT_EMBED_LIMIT,
        tombstone_ttl: float = DEFAULT_TOMBSTONE_TTL,
        block: float = 1.0,
        private: bool = False,
    ) -> None:
        self.host = host
        self._private = private  # a store only this process uses: seed it without a version
        self.store = store
        self.keys = FleetKeys(service_name)
        self._clock = clock
        self._supervisor = supervisor
        self._embed_limit = embed_limit
        self._tombstone_ttl = tombstone_ttl
        self._block = block
        self.head_revision: int | None = None
        self._follower: FeedFollower | None = None
        self._wake = asyncio.Event()
        self._remove_listener: Callable[[], None] | None = None
        self._failover = callable(getattr(store, "add_listener", None))
        self._stopping = False
        self.local_only: set[str] = set()
        """Ids of versions applied locally that the store has not confirmed."""
        self.resyncs = 0
        self.reconciles = 0
        self.remote_applied = 0

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Load the shared state (failing open) and start following the change feed."""
        position: int | None = None
        try:
            position = await self.store.feed_position(self.keys.stream)
            await self.resync()
        except (StoreError, BackendServicesError) as exc:
            _raise_if_cancelling(exc)
            if isinstance(exc, ConflictError):
                self.request_resync()
            else:
                _log.warning("config_store_unavailable_at_start", error=str(exc))
                self.request_resync()
        if self._failover:
            add = self.store.add_listener  # type: ignore[attr-defined]
            self._remove_listener = add(self._on_status)
        self._follower = FeedFollower(
            _CancelAwareFeed(self.store),  # type: ignore[arg-type]
            self.keys.stream,
            on_events=self._on_events,
            on_resync=self.request_resync,
            clock=self._clock,
            block=self._block,
            start=position,
            supervisor=self._supervisor,
        )
        self._follower.start()
        self._supervisor.spawn("config-resync", self._resync_loop, backoff=Backoff(0.05, 5.0))

    async def stop(self) -> None:
        # loops also end on this flag: a cancellation swallowed inside a client library
        # (an asyncio timeout race) must not leave a loop waiting forever
        self._stopping = True
        self._wake.set()
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        if self._follower is not None:
            await self._follower.stop()
            self._follower = None

    @property
    def connected(self) -> bool:
        return bool(self.store.status().connected)

    def status(self) -> dict[str, Any]:
        st: StoreStatus = self.store.status()
        return {
            "backend": st.backend,
            "connected": st.connected,
            "outages": st.outages,
            "pending_writes": st.pending_writes,
            "local_only_versions": len(self.local_only),
            "resyncs": self.resyncs,
            "reconciles": self.reconciles,
            "remote_versions_applied": self.remote_applied,
            "feed_position": None if self._follower is None else self._follower.position,
        }

    # --- committing -----------------------------------------------------------------

    def _history_after(self, record: VersionRecord) -> tuple[list[tuple[int, str]], list[str]]:
        history = self.host.history
        pairs = [(m.version, m.id) for m in history.versions()] + [(record.version, record.id)]
        keep = pairs[-history.max_versions :]
        dropped = [i for _, i in pairs[: len(pairs) - len(keep)]]
        return keep, dropped

    async def commit(self, record: VersionRecord) -> bool:
        """Commit ``record`` (which follows the local head) and apply it.

        False when another writer moved the head first (this process has caught up;
        the caller re-plans). When the store fails, the change is applied locally and
        reconciled when the store is back (fail open)."""
        if self.head_revision is None:
            await self.catch_up()
            if self.host.history.version != record.version - 1:
                return False
        history, dropped = self._history_after(record)
        ops = commit_ops(
            self.keys,
            record,
            head_revision=self.head_revision or 0,
            history=history,
            dropped=dropped,
            tombstone_ttl=self._tombstone_ttl,
            embed_limit=self._embed_limit,
        )
        try:
            result = await self.store.commit(ops)
        except ConflictError as exc:
            if exc.key != self.keys.head:
                raise
            await self.catch_up()
            return False
        except StoreError as exc:
            _raise_if_cancelling(exc)
            _log.warning(
                "config_commit_local_only",
                version=record.version,
                error=str(exc),
            )
            self.local_only.add(record.id)
            self.host.ingest(record)
            self.request_resync()
            return True
        self.head_revision = result.versions.get(self.keys.head, self.head_revision)
        self.host.ingest(record)
        if not self.connected and self._failover:
            # written to the failover's memory: the store replays it when it is back
            self.local_only.add(record.id)
        return True

    # --- following ------------------------------------------------------------------

    def request_resync(self) -> None:
        self._wake.set()

    def _on_status(self, status: StoreStatus) -> None:
        if status.connected:
            _log.info("config_store_reconnected", service=self.keys.service)
            self._wake.set()

    async def _fetch_record(self, version_id: str) -> VersionRecord | None:
        rec = await self.store.get(self.keys.version(version_id))
        if rec is None:
            return None
        return decode_record(rec.value, self.host.open_secret)

    async def _on_events(self, events: list[FeedEvent]) -> None:
        history = self.host.history
        for event in events:
            data = event.data
            version, ident = data.get("version"), data.get("id")
            if not isinstance(version, int) or not isinstance(ident, str):
                _log.warning("config_event_malformed", position=event.position)
                continue
            head = history.head
            if (head is not None and head.id == ident) or history.find(ident) is not None:
                continue  # already applied (our own commit, or delivered twice)
            if version <= history.version:
                # a version we never saw, at or below our head: another history — e.g.
                # outage writes of another process, replayed into the store under a head
                # we already hold. Even older than anything we retain, it may carry
                # changes no version of ours announces: resync (it commits only if the
                # store's content differs from our head's).
                self.request_resync()
                continue
            if version > history.version + 1 or data.get("parent_id") != (
                None if head is None else head.id
            ):
                self.request_resync()
                continue
            try:
                raw = data.get("record")
                record = (
                    decode_record(raw, self.host.open_secret)
                    if raw is not None
                    else await self._fetch_record(ident)
                )
            except (BackendServicesError, StoreError) as exc:
                _log.warning("config_event_unreadable", id=ident, error=str(exc))
                self.request_resync()
                continue
            if record is None or history.version != version - 1:
                self.request_resync()
                continue
            if self.host.ingest(record):
                self.remote_applied += 1
                revision = data.get("head_revision")
                if isinstance(revision, int):
                    self.head_revision = revision
            else:
                self.request_resync()
        await self.host.drain()

    async def _resync_loop(self) -> None:
        backoff = Backoff(initial=0.05, maximum=5.0)
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            if self._failover and not self.connected:
                continue  # the store's reconnect listener wakes us
            try:
                await self.resync()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _raise_if_cancelling(exc)
                delay = backoff.next_delay()
                _log.warning("config_resync_failed", error=str(exc), retry_in=round(delay, 3))
                self._wake.set()
                await self._clock.sleep(delay)
            else:
                await self.host.drain()

    async def catch_up(self) -> None:
        """Bring the local head up to the store's (fetching missed versions)."""
        rec = await self.store.get(self.keys.head)
        history = self.host.history
        if self._failover and not self.connected:
            # serving from the failover's memory: write on top of what it holds; the
            # fleet merge happens when the store is back
            self.head_revision = 0 if rec is None else rec.version
            return
        if rec is None:
            if history.version == 0 and not history.current:
                self.head_revision = 0
                return
            await self.resync()
            return
        head = parse_head(rec.value)
        self.head_revision = rec.version
        local = history.head
        if local is not None and head.id == local.id:
            return
        ids = head.ids()
        if local is not None and local.id in ids and head.version > local.version:
            missing = ids[ids.index(local.id) + 1 :]
            found = await self.store.get_many([self.keys.version(i) for i in missing])
            try:
                for ident in missing:
                    raw = found.get(self.keys.version(ident))
                    if raw is None:
                        raise HistoryGapError(history.version, -1, f"record {ident} missing")
                    record = decode_record(raw.value, self.host.open_secret)
                    if not self.host.ingest(record):
                        raise HistoryGapError(history.version, record.version, "did not apply")
                    self.remote_applied += 1
                return
            except (HistoryGapError, BackendServicesError) as exc:
                _log.info("config_catch_up_fell_back_to_resync", reason=str(exc))
        await self.resync()

    # --- resync and reconciliation --------------------------------------------------

    async def _load_entries(
        self,
    ) -> tuple[dict[str, Entry], dict[str, float], dict[str, int], set[str]]:
        """Entries, tombstone times, record revisions of every indexed key, and keys
        whose records are gone (expired tombstones)."""
        names = sorted(await self.store.members(self.keys.keys))
        found = await self.store.get_many([self.keys.entry(k) for k in names]) if names else {}
        entries: dict[str, Entry] = {}
        tombs: dict[str, float] = {}
        revisions: dict[str, int] = {}
        gone: set[str] = set()
        for key in names:
            rec = found.get(self.keys.entry(key))
            if rec is None:
                gone.add(key)
                revisions[key] = 0
                continue
            revisions[key] = rec.version
            tomb = is_tombstone(rec.value)
            if tomb is not None:
                tombs[key] = tomb.updated_at
                continue
            try:
                entries[key] = decode_entry(key, rec.value, self.host.open_secret)
            except BackendServicesError as exc:
                _log.warning("config_entry_unreadable", key=key, error=str(exc))
        return entries, tombs, revisions, gone

    async def resync(self) -> None:
        """Converge with the store (see the module docstring); retried on contention.

        Skipped while a failover store serves from memory: what it holds then is a
        partial mirror, not the fleet's state (it runs again on reconnection)."""
        if self._failover and not self.connected:
            self.request_resync()
            return
        self.resyncs += 1
        for _ in range(_MAX_RESYNC_ATTEMPTS):
            if await self._resync_once():
                return
        raise ConflictError(self.keys.head, None, None)

    async def _resync_once(self) -> bool:
        history = self.host.history
        local_head = history.head
        head_rec = await self.store.get(self.keys.head)
        if head_rec is None and local_head is None and not history.current:
            self.head_revision = 0
            return True
        entries, tombs, _revisions, gone = await self._load_entries()
        if gone:
            await self._prune(gone)
        if head_rec is None and self._private and not entries:
            return await self._seed_private()
        head = None if head_rec is None else parse_head(head_rec.value)
        fetched = None if head is None else await self._store_chain(head)
        if history.head is not local_head:
            return False  # changed while we were reading: start again
        damaged = head is None or fetched is None
        chain = VersionHistory(history.max_versions)
        verified = False
        if head is not None and fetched is not None:
            chain, verified = self._rebuild(history, fetched, entries)
        merged, ours_newer, deleted_at = self._merge(entries, tombs, head, history, damaged=damaged)
        if (
            head is not None
            and head_rec is not None
            and not damaged
            and not ours_newer
            and (not verified or _same(chain.current, entries))
            and (local_head is None or head.version >= local_head.version)
        ):
            self.head_revision = head_rec.version
            if (
                local_head is None
                or head.id != local_head.id
                or not _same(history.current, chain.current)
            ):
                self.host.adopt(chain.current, chain.records(), chain.head, "resync")
            self.local_only.clear()
            return True
        return await self._reconcile(
            head,
            0 if head_rec is None else head_rec.version,
            chain,
            damaged,
            entries,
            deleted_at,
            merged,
        )

    async def _reconcile(
        self,
        head: Head | None,
        head_revision: int,
        chain: VersionHistory,
        damaged: bool,
        entries: Mapping[str, Entry],
        deleted_at: Mapping[str, float],
        merged: Mapping[str, Entry],
    ) -> bool:
        """Commit the merged content as a version above both heads.

        Three cases: the store's history is intact (the record continues it); the store
        lost records (a restart without persistence: the record starts a new history);
        the store holds no head at all (flushed: our own history continues, re-seeded)."""
        history = self.host.history
        local_head = history.head
        if head is None:
            base: Mapping[str, Entry] = history.current
            prior = history.records()
            parent = None if local_head is None else local_head.id
            version = history.version + 1
        elif damaged:
            base, prior, parent = history.current, [], None
            version = max(head.version, history.version) + 1
        else:
            base, prior, parent = chain.current, chain.records(), head.id
            version = max(head.version, history.version) + 1
        author = self.host.author
        changes: dict[str, tuple[Entry | None, Entry | None]] = {}
        for key in sorted(set(base) | set(merged)):
            old, new = base.get(key), merged.get(key)
            if new is None:
                if old is not None:
                    changes[key] = (old, None)
            elif old is None or not old.same_content(new):
                changes[key] = (old, new)  # kept as written: newest-write-wins stays true
        after = dict(merged)
        also_write = {
            k: e
            for k, e in after.items()
            if k not in changes and not _same_entry(entries.get(k), e)
        }
        also_delete = [k for k in entries if k not in after and k not in changes]
        kind_text = (
            "re-seeded the shared store (it held no configuration)"
            if head is None
            else "rebuilt after the shared store lost versions"
            if damaged
            else "reconciled diverged histories"
        )
        meta = ConfigVersion(
            version=version,
            id=self.host.new_version_id(version),
            created_at=self._clock.time(),
            source=ConfigSource.REDIS,
            kind=ChangeKind.RECONCILE,
            description=(
                f"{kind_text}: shared head "
                f"{'none' if head is None else f'v{head.version} ({head.id})'}, local head "
                f"{'none' if local_head is None else f'v{local_head.version} ({local_head.id})'}"
                f"; {len(changes) + len(also_write) + len(also_delete)} key(s) settled "
                "newest-write-wins"
            ),
            author=author,
            keys=tuple(sorted(changes)),
            size=len(after),
            parent_id=parent,
        )
        record = VersionRecord(meta, changes)
        pairs = [(r.version, r.id) for r in prior] + [(version, meta.id)]
        keep = pairs[-history.max_versions :]
        kept = {i for _, i in keep}
        ops = commit_ops(
            self.keys,
            record,
            head_revision=head_revision,
            history=keep,
            extra_records=[r for r in prior if r.id in kept] if head is None else (),
            also_write=also_write,
            also_delete=also_delete,
            newest_wins=deleted_at,
            tombstone_ttl=self._tombstone_ttl,
            embed_limit=self._embed_limit,
        )
        try:
            result = await self.store.commit(ops)
        except ConflictError:
            return False
        if history.head is not local_head:
            self.head_revision = None  # our state moved meanwhile: the next round redoes it
            return False
        self.head_revision = result.versions.get(self.keys.head)
        self.host.adopt(after, [r for r in prior if r.id in kept] + [record], meta, "reconcile")
        self.local_only.clear()
        self.reconciles += 1
        _log.warning(
            "config_reconciled",
            service=self.keys.service,
            version=version,
            how=kind_text,
            keys=len(changes) + len(also_write) + len(also_delete),
            shared_head=None if head is None else head.version,
            local_head=None if local_head is None else local_head.version,
        )
        return True

    async def _store_chain(self, head: Head) -> list[VersionRecord] | None:
        """The store's retained records, oldest first (None when one cannot be read)."""
        ids = head.ids()
        if not ids:
            return None
        found = await self.store.get_many([self.keys.version(i) for i in ids])
        out: list[VersionRecord] = []
        for ident in ids:
            rec = found.get(self.keys.version(ident))
            if rec is None:
                return None
            try:
                out.append(decode_record(rec.value, self.host.open_secret))
            except BackendServicesError:
                return None
        return out if out[-1].id == head.id else None

    def _rebuild(
        self,
        history: VersionHistory,
        fetched: list[VersionRecord],
        entries: Mapping[str, Entry],
    ) -> tuple[VersionHistory, bool]:
        """The history the store's head describes: ``(chain, verified)``.

        When both histories share a version, the store's newer records are replayed
        onto our content at that version — the result can be compared with the store's
        entries (``verified``). Otherwise the store's entries are taken as its content
        and its records as the way back (a process that knows nothing shared trusts it).
        """
        chain = VersionHistory(history.max_versions)
        local_ids = {r.id for r in history.records()}
        shared_at = -1
        for i, record in enumerate(fetched):
            if record.id in local_ids:
                shared_at = i
        if shared_at >= 0:
            shared = fetched[shared_at]
            try:
                base = history.content_at(shared.id)
                prior = [r for r in history.records() if r.version <= shared.version]
                chain.reset(base, prior, shared.meta)
                for record in fetched[shared_at + 1 :]:
                    chain.apply(record)
                return chain, True
            except (HistoryGapError, BackendServicesError):
                chain = VersionHistory(history.max_versions)
        chain.reset(entries, fetched, fetched[-1].meta)
        return chain, False

    def _merge(
        self,
        entries: Mapping[str, Entry],
        tombs: Mapping[str, float],
        head: Head | None,
        history: VersionHistory,
        *,
        damaged: bool,
    ) -> tuple[dict[str, Entry], set[str], dict[str, float]]:
        """The store's entries plus local state the store lacks and that is newer than
        what it holds (newest write wins, tombstones included).

        Candidates are the keys of local versions the store never confirmed; when the
        store lost data (``damaged``), every local key is a candidate."""
        merged = dict(entries)
        ours_newer: set[str] = set()
        store_ids = set() if head is None else set(head.ids())
        deleted_at: dict[str, float] = {}
        candidates: set[str] = set()
        for record in history.records():
            for key, (_old, new) in record.changes.items():
                if new is None:
                    deleted_at[key] = record.meta.created_at
            if record.id in self.local_only and record.id not in store_ids:
                candidates.update(record.changes)
        if damaged:
            candidates.update(history.current)
            candidates.update(deleted_at)
        for key in candidates:
            mine = history.current.get(key)
            my_at = mine.updated_at if mine is not None else deleted_at.get(key, float("-inf"))
            theirs = entries.get(key)
            their_at = theirs.updated_at if theirs is not None else tombs.get(key, float("-inf"))
            if my_at > their_at:
                if mine is None:
                    if key in merged:
                        merged.pop(key)
                        ours_newer.add(key)
                elif theirs is None or not theirs.same_content(mine):
                    merged[key] = mine
                    ours_newer.add(key)
        times = dict(tombs)
        times.update({k: deleted_at[k] for k in ours_newer if k in deleted_at and k not in merged})
        return merged, ours_newer, times

    async def _seed_private(self) -> bool:
        """Fill a private (in-memory) store with our state as it is: no new version."""
        history = self.host.history
        head = history.head
        if head is None:
            self.head_revision = 0
            return True
        pairs = [(m.version, m.id) for m in history.versions()]
        ops: list[Any] = [
            Put(self.keys.head, head_value(head.version, head.id, head.created_at, pairs), 0)
        ]
        ops += [Put(self.keys.entry(k), encode_entry(e)) for k, e in history.current.items()]
        if history.current:
            ops.append(SetAdd(self.keys.keys, tuple(history.current)))
        ops += [Put(self.keys.version(r.id), encode_record(r)) for r in history.records()]
        try:
            result = await self.store.commit(ops)
        except ConflictError:
            return False
        self.head_revision = result.versions.get(self.keys.head)
        return True

    async def _prune(self, gone: set[str]) -> None:
        """Drop keys whose records expired from the key index (only if still absent)."""
        ops: list[Any] = [Check(self.keys.entry(k), 0) for k in sorted(gone)]
        ops.append(SetRemove(self.keys.keys, tuple(sorted(gone))))
        with contextlib.suppress(ConflictError):
            await self.store.commit(ops)


def _same_entry(a: Entry | None, b: Entry) -> bool:
    return a is not None and a.version == b.version and a.same_content(b)


def _same(a: Mapping[str, Entry], b: Mapping[str, Entry]) -> bool:
    if a.keys() != b.keys():
        return False
    for key, entry in a.items():
        other = b[key]
        if entry.version != other.version or not entry.same_content(other):
            return False
    return True
