"""Shared state: one protocol, an in-memory and a Redis implementation, and failover."""

from .factory import open_store
from .failover import FailoverStore
from .feed import FeedFollower
from .memory import MemoryStore
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
from .redis import RedisStore

__all__ = [
    "JSON",
    "Append",
    "Check",
    "CommitResult",
    "Delete",
    "FailoverStore",
    "FeedBatch",
    "FeedEvent",
    "FeedFollower",
    "MemoryStore",
    "Operation",
    "Put",
    "PutIfNewer",
    "Record",
    "RedisStore",
    "SetAdd",
    "SetRemove",
    "Store",
    "StoreStatus",
    "open_store",
]
