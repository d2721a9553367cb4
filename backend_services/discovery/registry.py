"""Registry operations on the shared store (the I/O half of the layout in ``records``).

Each change is one atomic :meth:`~backend_services.store.protocol.Store.commit`: the
record, the per-type index and the change-feed event move together, so a reader never
sees an event without its record or an index entry without its event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import StoreUnavailableError
from ..store.protocol import Append, Check, Delete, Operation, Put, SetAdd, SetRemove, Store
from .model import ServiceEndpoint, ServiceHealth, ServiceStatus, ServiceType
from .records import (
    FEED,
    RejectedRecord,
    health_doc,
    health_key,
    index_key,
    read_health,
    read_registration,
    registration_doc,
    service_key,
    signed_event,
)
from .signing import RecordSigner

__all__ = ["Owned", "Registration", "Registry", "Snapshot"]

RENEW_BATCH = 500
REGISTER_BATCH = 500


@dataclass(slots=True)
class Registration:
    """One registration write: the endpoint, its signed document and its health.

    ``write_health``: also store the health record (a fresh registration leaves it out:
    no record reads as STARTING); ``replaces``: an older endpoint's health is deleted."""

    endpoint: ServiceEndpoint
    doc: dict[str, Any]
    health: ServiceHealth
    previous_type: ServiceType | None = None
    reason: str = "registered"
    write_health: bool = False
    replaces: bool = False


@dataclass(slots=True)
class Owned:
    """A registration this process made and keeps alive."""

    endpoint: ServiceEndpoint
    doc: dict[str, Any]


@dataclass(slots=True)
class Snapshot:
    """A full reload of the registry."""

    entries: list[tuple[ServiceEndpoint, ServiceHealth, str | None]] = field(default_factory=list)
    rejected: list[RejectedRecord] = field(default_factory=list)


class Registry:
    """Registry reads and writes for one process (``node``)."""

    def __init__(
        self,
        store: Store,
        signer: RecordSigner,
        node: str,
        *,
        ttl: float,
        feed_maxlen: int = 10_000,
    ) -> None:
        self.store = store
        self.signer = signer
        self.node = node
        self.ttl = ttl
        self.feed_maxlen = feed_maxlen
        self._pending: list[tuple[Registration, asyncio.Future[int]]] = []
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()

    def _append(self, event: dict[str, Any]) -> Append:
        return Append(FEED, event, self.feed_maxlen)

    # ---- writes ----------------------------------------------------------------------

    def registration(self, endpoint: ServiceEndpoint, registered_at: float) -> dict[str, Any]:
        """A signed registration document for ``endpoint`` owned by this process."""
        return registration_doc(endpoint, self.node, registered_at, self.signer)

    def _register_ops(self, item: Registration) -> list[Operation]:
        endpoint = item.endpoint
        sid = endpoint.service_id
        hdoc = health_doc(item.health, self.node, self.signer)
        event = signed_event(
            "register",
            sid,
            self.signer,
            registration=item.doc,
            health=hdoc,
            reason=item.reason,
            writer=self.node,
        )
        ops: list[Operation] = [
            Put(service_key(sid), item.doc, ttl=self.ttl),
            SetAdd(index_key(endpoint.service_type), (sid,)),
        ]
        if item.write_health:
            ops.append(Put(health_key(sid), hdoc))
        elif item.replaces:
            ops.append(Delete(health_key(sid)))  # an older endpoint's health is void
        if item.previous_type is not None and item.previous_type is not endpoint.service_type:
            ops.append(SetRemove(index_key(item.previous_type), (sid,)))
        ops.append(self._append(event))
        return ops

    async def register(self, item: Registration) -> int:
        """Write the registration, the index entry and the event (plus the health record
        when asked); returns the event's feed position.

        Concurrent calls are grouped into one commit (group commit): a lone call costs
        one round trip, a hundred concurrent ones a few."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._flushing:
            try:
                await self._flush()
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    future.exception()  # retrieved: this caller is being cancelled
                future.cancel()
                raise
        return await future

    async def _flush(self) -> None:
        self._flushing = True
        handed_off = False
        try:
            while self._pending:
                batch = self._pending[:REGISTER_BATCH]
                del self._pending[:REGISTER_BATCH]
                try:
                    ops: list[Operation] = []
                    for item, _ in batch:
                        ops += self._register_ops(item)
                    result = await self.store.commit(ops)
                except BaseException as exc:
                    failure = (
                        StoreUnavailableError("the registration write was interrupted")
                        if isinstance(exc, asyncio.CancelledError)
                        else exc
                    )
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(failure)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                last = result.positions.get(FEED, 0)
                first = last - len(batch) + 1
                for i, (_, future) in enumerate(batch):
                    if not future.done():
                        future.set_result(first + i if last else 0)
                if self._pending:
                    # the next group formed while this one was written: a task leads it,
                    # so the callers of this group return now
                    task = asyncio.ensure_future(self._flush())
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    handed_off = True
                    return
        finally:
            if not handed_off:
                self._flushing = False

    def close(self) -> None:
        """Fail registrations still waiting for a write (shutdown)."""
        for task in self._tasks:
            task.cancel()
        pending, self._pending = self._pending, []
        for _, future in pending:
            if not future.done():
                future.set_exception(StoreUnavailableError("discovery is shutting down"))
        self._flushing = False

    async def deregister(
        self,
        service_id: str,
        service_type: ServiceType,
        *,
        op: str = "deregister",
        reason: str = "deregistered",
        only_if_absent: bool = False,
    ) -> int:
        """Remove a registration (``only_if_absent``: only when its record has expired —
        raises ConflictError if it came back). Returns the event's feed position."""
        ops = self._deregister_ops(service_id, service_type, op, reason, only_if_absent)
        result = await self.store.commit(ops)
        return result.positions.get(FEED, 0)

    def _deregister_ops(
        self,
        service_id: str,
        service_type: ServiceType,
        op: str,
        reason: str,
        only_if_absent: bool = False,
    ) -> list[Operation]:
        event = signed_event(
            op, service_id, self.signer, type=service_type.value, reason=reason, writer=self.node
        )
        record = service_key(service_id)
        return [
            Check(record, 0) if only_if_absent else Delete(record),
            Delete(health_key(service_id)),
            SetRemove(index_key(service_type), (service_id,)),
            self._append(event),
        ]

    async def deregister_many(
        self, entries: Sequence[tuple[str, ServiceType]], *, reason: str = "deregistered"
    ) -> list[int]:
        """Remove many registrations in a few commits; returns their feed positions."""
        positions: list[int] = []
        for start in range(0, len(entries), REGISTER_BATCH):
            batch = entries[start : start + REGISTER_BATCH]
            ops: list[Operation] = []
            for sid, service_type in batch:
                ops += self._deregister_ops(sid, service_type, "deregister", reason)
            result = await self.store.commit(ops)
            last = result.positions.get(FEED, 0)
            positions += [last - len(batch) + 1 + i if last else 0 for i in range(len(batch))]
        return positions

    async def publish_health(self, health: ServiceHealth, *, reason: str = "") -> int:
        """Share a status transition; returns the event's feed position."""
        hdoc = health_doc(health, self.node, self.signer)
        event = signed_event(
            "health", health.service_id, self.signer, health=hdoc, reason=reason, writer=self.node
        )
        result = await self.store.commit(
            [Put(health_key(health.service_id), hdoc), self._append(event)]
        )
        return result.positions.get(FEED, 0)

    async def renew(self, owned: Sequence[Owned]) -> list[Owned]:
        """Extend the TTL of every owned registration; returns those the registry had
        lost (their record had to be created anew: re-register them)."""
        lost: list[Owned] = []
        for start in range(0, len(owned), RENEW_BATCH):
            batch = owned[start : start + RENEW_BATCH]
            result = await self.store.commit(
                [Put(service_key(o.endpoint.service_id), o.doc, ttl=self.ttl) for o in batch]
            )
            for o in batch:
                if result.versions.get(service_key(o.endpoint.service_id)) == 1:
                    lost.append(o)
        return lost

    # ---- reads -----------------------------------------------------------------------

    async def indexed_ids(self) -> dict[ServiceType, set[str]]:
        """The per-type indexes."""
        return {t: await self.store.members(index_key(t)) for t in ServiceType}

    async def snapshot(self) -> Snapshot:
        """Every live registration with its health (signatures and fields checked)."""
        indexes = await self.indexed_ids()
        ids = sorted(set().union(*indexes.values()))
        snap = Snapshot()
        if not ids:
            return snap
        records = await self.store.get_many([service_key(s) for s in ids])
        healths = await self.store.get_many([health_key(s) for s in ids])
        for sid in ids:
            record = records.get(service_key(sid))
            if record is None:
                continue  # expired; the reaper removes it from the index
            try:
                endpoint, owner = read_registration(record.value, self.signer, sid)
            except RejectedRecord as exc:
                snap.rejected.append(exc)
                continue
            health = ServiceHealth(sid, ServiceStatus.STARTING)
            hrec = healths.get(health_key(sid))
            if hrec is not None:
                try:
                    health = read_health(hrec.value, self.signer, sid)
                except RejectedRecord as exc:
                    snap.rejected.append(exc)
            snap.entries.append((endpoint, health, owner))
        return snap

    async def record_type(self, service_id: str) -> ServiceType | None:
        """The type of a registration held by the registry (None when absent/invalid)."""
        record = await self.store.get(service_key(service_id))
        if record is None:
            return None
        try:
            return read_registration(record.value, self.signer, service_id)[0].service_type
        except RejectedRecord:
            return None

    async def expired(self) -> tuple[list[tuple[str, ServiceType]], int]:
        """Indexed ids whose registration record is gone, and how many are indexed."""
        indexes = await self.indexed_ids()
        pairs = [(sid, t) for t, members in indexes.items() for sid in members]
        if not pairs:
            return [], 0
        present = await self.store.get_many([service_key(s) for s, _ in pairs])
        gone = [(s, t) for s, t in pairs if service_key(s) not in present]
        return gone, len(pairs)
