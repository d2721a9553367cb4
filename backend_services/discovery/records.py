"""The registry's shared-state layout and documents (pure: no I/O).

Keys (the store adds its namespace)::

    sd:svc:<id>        registration document, TTL = service_ttl, renewed by heartbeat
    sd:health:<id>     health document (written on status transitions)
    sd:idx:<type>      set of the ids registered with that type (no scans, ever)
    sd:events          change feed: register / health / deregister / expire events
    sd:shard:<n>       lease: which process runs the health checks of shard n
    sd:reaper          lease: which process removes expired registrations
    sd:node:<node>     a live discovery process (TTL), listed in the set sd:nodes

Every document is signed by :class:`~backend_services.discovery.signing.RecordSigner`;
:func:`read_registration`, :func:`read_health` and :func:`read_event` validate what comes
back and raise :class:`RejectedRecord` (with the reason) for anything a reader must skip.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..errors import ValidationError
from .model import (
    ServiceEndpoint,
    ServiceHealth,
    ServiceType,
    endpoint_from_dict,
    endpoint_to_dict,
    health_from_dict,
    health_to_dict,
)
from .signing import RecordSigner

__all__ = [
    "FEED",
    "NODES",
    "REAPER_LEASE",
    "EventDoc",
    "RejectedRecord",
    "health_doc",
    "health_key",
    "index_key",
    "node_key",
    "read_event",
    "read_health",
    "read_registration",
    "registration_doc",
    "service_key",
    "shard_lease",
    "shard_of",
    "signed_event",
]

FEED: Final = "sd:events"
NODES: Final = "sd:nodes"
REAPER_LEASE: Final = "sd:reaper"


def service_key(service_id: str) -> str:
    return f"sd:svc:{service_id}"


def health_key(service_id: str) -> str:
    return f"sd:health:{service_id}"


def index_key(service_type: ServiceType) -> str:
    return f"sd:idx:{service_type.value}"


def shard_lease(shard: int) -> str:
    return f"sd:shard:{shard}"


def node_key(node: str) -> str:
    return f"sd:node:{node}"


def shard_of(service_id: str, shards: int) -> int:
    """The health-check shard of an id (stable across processes)."""
    return zlib.crc32(service_id.encode()) % shards


class RejectedRecord(Exception):
    """A document from shared state that readers must ignore (``reason`` says why)."""

    def __init__(self, what: str, reason: str, service_id: str | None = None):
        self.what = what
        self.reason = reason
        self.service_id = service_id
        super().__init__(f"{what} {service_id or '?'} rejected: {reason}")


def registration_doc(
    endpoint: ServiceEndpoint, owner: str, registered_at: float, signer: RecordSigner
) -> dict[str, Any]:
    return signer.sign(
        {
            "kind": "registration",
            "endpoint": endpoint_to_dict(endpoint),
            "owner": owner,
            "registered_at": registered_at,
        }
    )


def health_doc(health: ServiceHealth, checker: str, signer: RecordSigner) -> dict[str, Any]:
    return signer.sign({"kind": "health", "health": health_to_dict(health), "checker": checker})


def signed_event(op: str, service_id: str, signer: RecordSigner, **fields: Any) -> dict[str, Any]:
    return signer.sign({"kind": "event", "op": op, "id": service_id, **fields})


def _check(
    doc: Any, kind: str, signer: RecordSigner, service_id: str | None, *, verified: bool = False
) -> Mapping[str, Any]:
    """``doc`` as a document of ``kind`` with a valid signature (``verified``: the
    signature was checked with the event that carries it; only its shape is checked)."""
    if verified:
        if not isinstance(doc, Mapping):
            raise RejectedRecord(kind, "malformed document", service_id)
        return doc
    if not isinstance(doc, Mapping) or doc.get("kind") != kind:
        raise RejectedRecord(kind, "malformed document", service_id)
    verdict = signer.accepts(doc)
    if verdict is not None:
        raise RejectedRecord(kind, verdict.value, service_id)
    return doc


def read_registration(
    doc: Any, signer: RecordSigner, service_id: str | None = None, *, verified: bool = False
) -> tuple[ServiceEndpoint, str | None]:
    """``(endpoint, owner)`` from a registration document."""
    doc = _check(doc, "registration", signer, service_id, verified=verified)
    try:
        endpoint = endpoint_from_dict(doc.get("endpoint"))
    except ValidationError as exc:
        raise RejectedRecord("registration", f"invalid endpoint: {exc}", service_id) from None
    if service_id is not None and endpoint.service_id != service_id:
        raise RejectedRecord("registration", "stored under another id", service_id)
    owner = doc.get("owner")
    return endpoint, owner if isinstance(owner, str) else None


def read_health(
    doc: Any, signer: RecordSigner, service_id: str | None = None, *, verified: bool = False
) -> ServiceHealth:
    """The :class:`ServiceHealth` in a health document."""
    doc = _check(doc, "health", signer, service_id, verified=verified)
    try:
        health = health_from_dict(doc.get("health"))
    except ValidationError as exc:
        raise RejectedRecord("health", f"invalid health: {exc}", service_id) from None
    if service_id is not None and health.service_id != service_id:
        raise RejectedRecord("health", "stored under another id", service_id)
    return health


@dataclass(frozen=True, slots=True)
class EventDoc:
    """A verified change-feed event."""

    op: str
    service_id: str
    endpoint: ServiceEndpoint | None = None
    owner: str | None = None
    health: ServiceHealth | None = None
    service_type: ServiceType | None = None
    reason: str = ""
    writer: str | None = None


def read_event(doc: Any, signer: RecordSigner) -> EventDoc:
    """Verify and decode one change-feed event."""
    sid = doc.get("id") if isinstance(doc, Mapping) else None
    sid = sid if isinstance(sid, str) and sid else None
    checked = _check(doc, "event", signer, sid)
    if sid is None:
        raise RejectedRecord("event", "missing id")
    op = checked.get("op")
    reason = checked.get("reason")
    reason = reason if isinstance(reason, str) else ""
    writer = checked.get("writer")
    writer = writer if isinstance(writer, str) else None
    if op == "register":
        endpoint, owner = read_registration(checked.get("registration"), signer, sid, verified=True)
        health = read_health(checked.get("health"), signer, sid, verified=True)
        return EventDoc(op, sid, endpoint, owner, health, endpoint.service_type, reason, writer)
    if op == "health":
        return EventDoc(
            op,
            sid,
            health=read_health(checked.get("health"), signer, sid, verified=True),
            reason=reason,
            writer=writer,
        )
    if op in ("deregister", "expire"):
        return EventDoc(op, sid, reason=reason, writer=writer)
    raise RejectedRecord("event", f"unknown op {op!r}", sid)
