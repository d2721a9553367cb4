"""RedisStore with passwords, ACL users and TLS, against real servers (TLS through a
terminating proxy with certificates made for the test)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from backend_services.errors import StoreConfigurationError
from backend_services.store import Append, Put
from backend_services.store.redis import RedisStore
from backend_services.testing import RedisServer, TestPki, TlsProxy, make_test_pki

from .blocking import until_blocked

SECRET = "s3cret-Pa55"
STORE_ACL = "+@read +@write +@scripting +@connection +time"
"""The commands a store needs (documented in the README); keys are limited per test."""


async def _exercise(store: RedisStore) -> None:
    """Every kind of operation once: records, commit, sets, counters, leases, feeds."""
    assert await store.put("k", {"v": 1}) == 1
    assert (await store.get_many(["k"]))["k"].value == {"v": 1}
    result = await store.commit([Put("k", 2, expect_version=1), Append("f", {"i": 1})])
    assert result.versions == {"k": 2}
    assert await store.set_add("s", "a") == 1
    assert await store.members("s") == {"a"}
    assert await store.incr("n") == 1
    assert await store.acquire_lease("l", "me", 5) is True
    assert await store.release_lease("l", "me") is True
    reader = asyncio.create_task(store.read("f", 1, block=5))
    await until_blocked(store)
    await store.append("f", {"i": 2})
    batch = await asyncio.wait_for(reader, 5)
    assert [e.position for e in batch.events] == [2]
    assert await store.server_time() > 0
    assert await store.delete("k", expect_version=2) is True


@pytest.fixture
async def close_later() -> AsyncIterator[list[RedisStore]]:
    """Stores appended here are closed after the test."""
    stores: list[RedisStore] = []
    yield stores
    for store in stores:
        await store.close()


# ---- passwords ----------------------------------------------------------------------------


async def test_password_in_the_url_or_as_an_argument_connects(
    redis_server_factory: Callable[..., RedisServer], close_later: list[RedisStore]
) -> None:
    """requirepass: the URL's password works, and password= wins over a wrong one in the URL."""
    server = redis_server_factory(password=SECRET)
    for store in (
        RedisStore(server.url, namespace="one"),
        RedisStore(server.url_for(password="wrong"), namespace="two", password=SECRET),
    ):
        close_later.append(store)
        await store.initialize()
        await _exercise(store)


async def test_wrong_or_missing_password_is_a_quick_configuration_error(
    redis_server_factory: Callable[..., RedisServer],
    close_later: list[RedisStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A wrong or missing password makes initialize() raise StoreConfigurationError at once,
    and the password appears in no message or log line."""
    server = redis_server_factory(password=SECRET)
    wrong = "not-" + SECRET
    for url in (server.url_for(password=wrong), server.url_for()):
        store = RedisStore(url)
        close_later.append(store)
        started = time.monotonic()
        with (
            caplog.at_level(logging.DEBUG, logger="backend_services"),
            pytest.raises(StoreConfigurationError, match="refused our credentials") as err,
        ):
            await store.initialize()
        assert time.monotonic() - started < 2.0
        assert wrong not in str(err.value)
        assert wrong not in repr(store)
    assert all(wrong not in r.getMessage() + str(r.__dict__) for r in caplog.records)


# ---- ACL users ----------------------------------------------------------------------------


async def test_acl_user_limited_to_the_namespace_can_do_everything(
    redis_server_factory: Callable[..., RedisServer], close_later: list[RedisStore]
) -> None:
    """An ACL user allowed only ~{ns}:* and the store's command categories runs every op."""
    server = redis_server_factory(acl_users=[f"svc on >svcpw ~{{app}}:* {STORE_ACL}"])
    store = RedisStore(server.url_for("svc", "svcpw"), namespace="app")
    close_later.append(store)
    await store.initialize()
    assert store.maxmemory_policy is None  # CONFIG is not allowed: reported, not fatal
    await _exercise(store)
    by_argument = RedisStore(server.url, namespace="app", username="svc", password="svcpw")
    close_later.append(by_argument)
    await by_argument.initialize()
    assert await by_argument.get("k") is None


async def test_acl_user_without_our_keys_is_a_configuration_error(
    redis_server_factory: Callable[..., RedisServer], close_later: list[RedisStore]
) -> None:
    """An ACL user whose key pattern does not cover the namespace fails initialize() clearly."""
    server = redis_server_factory(acl_users=[f"svc on >svcpw ~{{other}}:* {STORE_ACL}"])
    store = RedisStore(server.url_for("svc", "svcpw"), namespace="app")
    close_later.append(store)
    with pytest.raises(StoreConfigurationError, match="ACL"):
        await store.initialize()


# ---- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """A CA with a server and a client certificate, made for this module."""
    return make_test_pki(tmp_path_factory.mktemp("pki"), name="trusted")


async def test_rediss_with_the_right_ca_works(
    redis_server_factory: Callable[..., RedisServer],
    pki: TestPki,
    close_later: list[RedisStore],
) -> None:
    """rediss:// through a TLS proxy, verified with ssl_ca_certs, runs every operation."""
    server = redis_server_factory()
    async with TlsProxy(
        (server.host, server.port), certfile=pki.server_cert, keyfile=pki.server_key
    ) as proxy:
        store = RedisStore(f"rediss://127.0.0.1:{proxy.port}", ssl_ca_certs=pki.ca_cert)
        close_later.append(store)
        await store.initialize()
        await _exercise(store)
        await store.close()
        assert proxy.connections >= 2  # commands and the blocking reader both went through TLS


async def test_client_certificates_are_presented_when_required(
    redis_server_factory: Callable[..., RedisServer],
    pki: TestPki,
    close_later: list[RedisStore],
) -> None:
    """With a proxy demanding client certificates, ssl_certfile/ssl_keyfile get through."""
    server = redis_server_factory()
    async with TlsProxy(
        (server.host, server.port),
        certfile=pki.server_cert,
        keyfile=pki.server_key,
        client_ca=pki.ca_cert,
    ) as proxy:
        store = RedisStore(
            f"rediss://127.0.0.1:{proxy.port}",
            ssl_ca_certs=pki.ca_cert,
            ssl_certfile=pki.client_cert,
            ssl_keyfile=pki.client_key,
        )
        close_later.append(store)
        await store.initialize()
        assert await store.put("k", 1) == 1


async def test_untrusted_certificate_is_a_quick_configuration_error(
    redis_server_factory: Callable[..., RedisServer],
    pki: TestPki,
    tmp_path: Path,
    close_later: list[RedisStore],
) -> None:
    """A server certificate from a CA we do not trust fails initialize() clearly, at once."""
    stranger = make_test_pki(tmp_path, name="stranger")
    server = redis_server_factory()
    async with TlsProxy(
        (server.host, server.port), certfile=pki.server_cert, keyfile=pki.server_key
    ) as proxy:
        store = RedisStore(f"rediss://127.0.0.1:{proxy.port}", ssl_ca_certs=stranger.ca_cert)
        close_later.append(store)
        started = time.monotonic()
        with pytest.raises(StoreConfigurationError, match="TLS connection") as err:
            await store.initialize()
        assert time.monotonic() - started < 2.0
        assert "certificate" in str(err.value)
        assert store.status().connected is False
