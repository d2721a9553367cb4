"""Shared state: one protocol, an in-memory and a Redis implementation, and failover."""

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
    Store,
    StoreStatus,
)

__all__ = [
    "JSON",
    "Append",
    "Check",
    "CommitResult",
    "Delete",
    "FeedBatch",
    "FeedEvent",
    "Operation",
    "Put",
    "PutIfNewer",
    "Record",
    "SetAdd",
    "SetRemove",
    "Store",
    "StoreStatus",
]
