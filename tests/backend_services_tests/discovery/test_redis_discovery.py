"""Discovery over a real Redis: two OS processes, expiry on the server's clock, Redis
restarts and outages mid-traffic, credentials."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from backend_services.client import ServiceClient
from backend_services.discovery.model import ServiceEndpoint, ServiceStatus, ServiceType
from backend_services.errors import StoreConfigurationError
from backend_services.infrastructure.service_discovery import ServiceDiscovery
from backend_services.store.factory import open_store
from backend_services.store.protocol import Append, Put, SetAdd
from backend_services.testing import RedisServer

from .servers import FlakyServer, wait_for

C = ServiceType.COGNITIVE_SERVICE
PEER = Path(__file__).with_name("peer_process.py")


class Peer:
    """Another OS process running discovery."""

    def __init__(self, url: str, name: str, ttl: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(PEER), url, name, str(ttl)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self._read()
        assert line.startswith("ready"), line
        self.port = int(line.split()[1])

    def _read(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        reply = await asyncio.wait_for(asyncio.to_thread(self._read), timeout=15)
        assert reply == f"ok {command}", reply

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.close()


def _discovery(url: str, **kwargs: Any) -> ServiceDiscovery:
    options: dict[str, Any] = {
        "health_check_interval": 0.1,
        "health_check_timeout": 0.5,
        "max_consecutive_failures": 1,
        "maintenance_interval": 0.2,
    }
    options.update(kwargs)
    return ServiceDiscovery(redis_url=url, **options)


def _status(d: ServiceDiscovery, sid: str) -> ServiceStatus | None:
    health = d.service_health.get(sid)
    return health.status if health is not None else None


async def test_two_processes_share_registrations_and_health(
    redis_url: str, peers: list[Peer]
) -> None:
    """A registration and every status change made by another OS process are seen here;
    its graceful shutdown removes the registration."""
    peer = Peer(redis_url, "peer-svc")
    peers.append(peer)
    async with _discovery(redis_url) as local:
        await wait_for(lambda: _status(local, "peer-svc") is ServiceStatus.HEALTHY)
        await peer.send("down")
        await wait_for(lambda: _status(local, "peer-svc") is ServiceStatus.UNHEALTHY)
        await peer.send("up")
        await wait_for(lambda: _status(local, "peer-svc") is ServiceStatus.HEALTHY)
        await peer.send("register peer-svc-2")
        await wait_for(lambda: "peer-svc-2" in local.services)
        await peer.send("quit")
        await wait_for(lambda: not local.services)


async def test_killed_process_registration_expires_on_the_server_clock(
    redis_url: str, peers: list[Peer]
) -> None:
    """A process killed without shutdown stops heartbeating: Redis expires its record
    after the TTL and the registration disappears everywhere."""
    peer = Peer(redis_url, "doomed", ttl=1.5)
    peers.append(peer)
    async with _discovery(redis_url, service_ttl=1.5) as local:
        await wait_for(lambda: "doomed" in local.services)
        client = redis.Redis.from_url(redis_url)
        try:
            ttl_ms = next(client.pttl(key) for key in client.scan_iter("*sd:svc:doomed*"))
        finally:
            client.close()
        assert 0 < ttl_ms <= 1500
        peer.proc.kill()
        await wait_for(lambda: "doomed" not in local.services, limit=10)
        assert local.get_metrics()["expired_services"] == 1


async def test_redis_restart_mid_traffic(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Redis restarts empty while a client sends requests: no request fails, the view is
    kept meanwhile, and the owner restores its registrations in the new server."""
    server = redis_server_factory()
    replicas = [await FlakyServer(f"r{i}").start() for i in range(3)]
    owner = _discovery(server.url, health_check_interval=0.2)
    reader = _discovery(server.url, health_check_interval=0.2)
    try:
        await owner.initialize()
        await reader.initialize()
        for r in replicas:
            await owner.register_service(ServiceEndpoint(r.name, C, "127.0.0.1", r.port))
        await wait_for(lambda: len(reader.usable_endpoints(C)[0]) == 3)
        failures = 0
        sent = 0
        stop = asyncio.Event()

        async def traffic() -> None:
            nonlocal failures, sent
            async with ServiceClient(reader, C) as client:
                while not stop.is_set():
                    sent += 1
                    try:
                        await client.request("GET", "/")
                    except Exception:
                        failures += 1
                    await asyncio.sleep(0.005)

        task = asyncio.create_task(traffic())
        await asyncio.sleep(0.3)
        await asyncio.to_thread(server.restart)
        client = redis.Redis.from_url(server.url)
        try:
            await wait_for(lambda: len(list(client.scan_iter("*sd:svc:*"))) == 3, limit=15)
            await wait_for(lambda: owner.get_metrics()["registrations_restored"] >= 3, limit=15)
            assert client.scard(next(iter(client.scan_iter("*sd:idx:cognitive_service*")))) == 3
        finally:
            client.close()
        await asyncio.sleep(0.3)
        stop.set()
        await task
        assert sent > 50
        assert failures == 0
        assert len(await reader.discover_services(C)) == 3
    finally:
        await owner.shutdown()
        await reader.shutdown()
        for r in replicas:
            await r.stop()


async def test_outage_serves_last_view_and_reconciles(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """While Redis is down, discovery answers from its last view (its age grows) and new
    registrations are accepted; when Redis is back, they reach it and other processes."""
    server = redis_server_factory()
    a = _discovery(server.url, health_check_interval=0.2)
    b = _discovery(server.url, health_check_interval=0.2)
    replica = await FlakyServer("r").start()
    try:
        await a.initialize()
        await b.initialize()
        await a.register_service(ServiceEndpoint("before", C, "127.0.0.1", replica.port))
        await wait_for(lambda: _status(b, "before") is ServiceStatus.HEALTHY)
        await asyncio.to_thread(server.stop)
        await wait_for(lambda: a.get_metrics()["store_connected"] is False)
        assert await a.register_service(ServiceEndpoint("during", C, "127.0.0.1", replica.port))
        await asyncio.sleep(0.5)
        assert [e.service_id for e in await b.discover_services(C)] == ["before"]
        assert b.view_age() > 0
        await asyncio.to_thread(server.start)
        await wait_for(lambda: "during" in b.services, limit=20)
        await wait_for(lambda: _status(b, "during") is ServiceStatus.HEALTHY, limit=10)
        assert "before" in b.services
    finally:
        await a.shutdown()
        await b.shutdown()
        await replica.stop()


async def test_wrong_password_is_a_configuration_error(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Bad credentials are raised by initialize(), not retried silently."""
    server = redis_server_factory(password="right")
    discovery = ServiceDiscovery(redis_url=server.url_for(password="wrong"))
    with pytest.raises(StoreConfigurationError):
        await discovery.initialize()
    with contextlib.suppress(Exception):
        await discovery.shutdown()


async def test_acl_users_and_signed_records(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """The documented pairing: discovery runs as an ACL user confined to the namespace;
    another user who may write there (another component) still cannot inject a
    registration, because it cannot sign one."""
    rule = (
        "on >{pw} ~{{dtesn}}:* &* -@all +@read +@write +@stream +@scripting"
        " +@connection +@transaction +info +time"
    )
    server = redis_server_factory(
        acl_users=[
            "default off",
            "registry " + rule.format(pw="pw1"),
            "other " + rule.format(pw="pw2"),
        ]
    )
    async with ServiceDiscovery(
        redis_url=server.url_for("registry", "pw1"),
        health_check_interval=30.0,
        registration_key="registration-secret",
    ) as discovery:
        await discovery.register_service(ServiceEndpoint("acl", C, "127.0.0.1", 9))
        assert discovery.get_metrics()["store_connected"] is True
        raw = redis.Redis.from_url(server.url_for("registry", "pw1"))
        try:
            with pytest.raises(redis.exceptions.NoPermissionError):
                raw.get("outside-the-namespace")
        finally:
            raw.close()
        intruder = open_store(server.url_for("other", "pw2"))
        await intruder.initialize()
        try:
            forged = {
                "kind": "registration",
                "endpoint": {
                    "service_id": "evil",
                    "service_type": C.value,
                    "host": "203.0.113.9",
                    "port": 80,
                },
                "owner": "intruder",
            }
            await intruder.commit(
                [
                    Put("sd:svc:evil", forged),
                    SetAdd("sd:idx:cognitive_service", ("evil",)),
                    Append(
                        "sd:events",
                        {
                            "kind": "event",
                            "op": "register",
                            "id": "evil",
                            "registration": forged,
                            "health": {},
                        },
                    ),
                ]
            )
        finally:
            await intruder.close()
        await wait_for(lambda: discovery.get_metrics()["rejected_records"] >= 1)
        assert "evil" not in discovery.services
        assert set(discovery.services) == {"acl"}
