"""Resync and reconciliation of the configuration manager with the shared store.

A resync loads the store's head and every entry; it adopts the store's history when
that continues the local one, and otherwise merges per key, newest write wins, and
commits a ``reconcile`` version above both heads (or re-seeds a store that lost its
head). The rules, and when a resync runs, are set out in
:mod:`backend_services.infrastructure.config_fleet`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from ..config.documents import decode_entry, decode_record, encode_entry, encode_record
from ..config.fleet import Head, commit_ops, head_value, is_tombstone, parse_head
from ..config.model import ChangeKind, ConfigSource, ConfigVersion, Entry, VersionRecord
from ..config.versions import HistoryGapError, VersionHistory
from ..errors import BackendServicesError, ConflictError
from ..log import get_logger
from ..store.protocol import Check, Put, SetAdd, SetRemove
from .config_fleet_state import FleetState

__all__ = ["FleetResync"]

_log = get_logger("config_manager.fleet")
_MAX_RESYNC_ATTEMPTS = 8


class FleetResync(FleetState):
    """Converging with the store: resync, merge, reconcile, re-seed."""

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
                await self.host.adopt(chain.current, chain.records(), chain.head, "resync")
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
        await self.host.adopt(
            after, [r for r in prior if r.id in kept] + [record], meta, "reconcile"
        )
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
