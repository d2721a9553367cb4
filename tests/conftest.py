"""Test-wide setup: a clean environment, a Hypothesis profile for CI, real Redis servers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings

from backend_services.testing import RedisServer

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _clean_dtesn_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No test sees DTESN_* variables it did not set itself, and none writes
    last-known-good configuration into the user's state directory."""
    for name in list(os.environ):
        if name.startswith("DTESN_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DTESN_CONFIG_STATE_DIR", str(tmp_path_factory.mktemp("state")))


# ---- Redis: a real server for the tests that need one -------------------------------


@pytest.fixture(scope="session")
def redis_session_url() -> Iterator[str]:
    """URL of the session's Redis-compatible server: ``REDIS_URL`` when set, else a
    Valkey server started from the test extra's binary for the whole session."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    with RedisServer("valkey") as server:
        yield server.url


@pytest.fixture
def redis_url(redis_session_url: str) -> str:
    """A running real server's URL, emptied (FLUSHALL) before the test."""
    client = redis.Redis.from_url(redis_session_url, socket_timeout=10)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_session_url


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start servers of your own (``RedisServer`` arguments); the test may stop and
    restart them; all are stopped at teardown."""
    servers: list[RedisServer] = []

    def factory(binary: str = "valkey", **kwargs: Any) -> RedisServer:
        server = RedisServer(binary, **kwargs)
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()
