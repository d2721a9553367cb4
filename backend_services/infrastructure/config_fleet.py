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

The synchroniser's state and the :class:`FleetHost` protocol are in
:mod:`~backend_services.infrastructure.config_fleet_state`, resync and reconciliation in
:mod:`~backend_services.infrastructure.config_fleet_resync`; this module commits and
follows, and :class:`FleetSync` combines them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..config.documents import decode_record
from ..config.fleet import commit_ops, parse_head
from ..config.model import VersionRecord
from ..config.versions import HistoryGapError
from ..errors import BackendServicesError, ConflictError, StoreError
from ..log import get_logger
from ..store.feed import FeedFollower
from ..store.protocol import FeedEvent, Store, StoreStatus
from ..tasks import Backoff, raise_if_cancelling
from .config_fleet_resync import FleetResync
from .config_fleet_state import FleetHost

__all__ = ["FleetHost", "FleetSync"]

_log = get_logger("config_manager.fleet")


class _CancelAwareFeed:
    """The two store calls a feed follower makes, ending promptly when its task is
    cancelled even if the client library swallowed the cancellation."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def read(
        self, stream: str, after: int, *, count: int = 500, block: float | None = None
    ) -> Any:
        raise_if_cancelling()
        try:
            return await self._store.read(stream, after, count=count, block=block)
        except Exception as exc:
            raise_if_cancelling(exc)
            raise

    async def feed_position(self, stream: str) -> int:
        raise_if_cancelling()
        try:
            return await self._store.feed_position(stream)
        except Exception as exc:
            raise_if_cancelling(exc)
            raise


class FleetSync(FleetResync):
    """Commits, follows and resyncs one service's configuration (see module docstring)."""

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Load the shared state (failing open) and start following the change feed."""
        position: int | None = None
        try:
            position = await self.store.feed_position(self.keys.stream)
            await self.resync()
        except (StoreError, BackendServicesError) as exc:
            raise_if_cancelling(exc)
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
            raise_if_cancelling(exc)
            _log.warning(
                "config_commit_local_only",
                version=record.version,
                error=str(exc),
            )
            self.local_only.add(record.id)
            await self.host.ingest(record)
            self.request_resync()
            return True
        self.head_revision = result.versions.get(self.keys.head, self.head_revision)
        await self.host.ingest(record)
        if not self.connected and self._failover:
            # written to the failover's memory: the store replays it when it is back
            self.local_only.add(record.id)
        return True

    # --- following ------------------------------------------------------------------

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
            if await self.host.ingest(record, remote=True):
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
                raise_if_cancelling(exc)
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
                    if not await self.host.ingest(record, remote=True):
                        raise HistoryGapError(history.version, record.version, "did not apply")
                    self.remote_applied += 1
                return
            except (HistoryGapError, BackendServicesError) as exc:
                _log.info("config_catch_up_fell_back_to_resync", reason=str(exc))
        await self.resync()
