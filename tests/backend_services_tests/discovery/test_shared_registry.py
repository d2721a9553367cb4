"""Several discovery processes over one store (clock-driven): shared health, checks
divided by leases, TTL leases with heartbeats, expiry, self-preservation, re-registration
and signed records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from backend_services.discovery.model import ServiceEndpoint, ServiceStatus, ServiceType
from backend_services.discovery.preservation import PreservationPolicy
from backend_services.errors import AuthorizationError, ValidationError
from backend_services.infrastructure.service_discovery import DiscoveryEvent, ServiceDiscovery
from backend_services.store.memory import MemoryStore
from backend_services.testing import FakeClock

from .scripted import ScriptedProbe

M = ServiceType.DTESN_MEMBRANE
Make = Callable[..., ServiceDiscovery]


def _ep(sid: str) -> ServiceEndpoint:
    return ServiceEndpoint(sid, M, "127.0.0.1", 9000)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=0.0)


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)


@pytest.fixture
async def make(clock: FakeClock, store: MemoryStore) -> AsyncIterator[Make]:
    made: list[ServiceDiscovery] = []

    def factory(name: str, **kwargs: Any) -> ServiceDiscovery:
        options: dict[str, Any] = {
            "health_check_interval": 10.0,
            "service_ttl": 30.0,
            "check_jitter": 0.0,
            "maintenance_interval": 2.0,
            "clock": clock,
            "store": store,
            "node_id": name,
            "probe": ScriptedProbe(name),
        }
        options.update(kwargs)
        d = ServiceDiscovery(**options)
        made.append(d)
        return d

    yield factory
    for d in made:
        await d.shutdown()


def _probe(d: ServiceDiscovery) -> ScriptedProbe:
    probe = d._probe
    assert isinstance(probe, ScriptedProbe)
    return probe


async def test_second_process_sees_registration_and_health(clock: FakeClock, make: Make) -> None:
    """A registration and its health status made in one process show in the other."""
    a, b = make("a"), make("b")
    await a.initialize()
    await b.initialize()
    await a.register_service(_ep("s1"))
    await clock.advance(0)
    assert "s1" in b.services
    assert (await b.get_service_health("s1")).status is ServiceStatus.HEALTHY  # type: ignore[union-attr]
    assert [e.service_id for e in await b.discover_services(M)] == ["s1"]
    await a.deregister_service("s1")
    await clock.advance(0)
    assert "s1" not in b.services


async def test_checks_are_divided_between_processes(clock: FakeClock, make: Make) -> None:
    """With two processes, every instance is checked by exactly one of them."""
    a, b = make("a"), make("b")
    await a.initialize()
    await b.initialize()
    await clock.advance(7)  # a few lease refreshes settle the fair share
    assert len(a._shards.held) == len(b._shards.held) == 8  # type: ignore[union-attr]
    for i in range(40):
        await a.register_service(_ep(f"s{i}"))
    await clock.advance(0)
    pa, pb = _probe(a), _probe(b)
    pa.calls.clear()
    pb.calls.clear()
    await clock.advance(30)
    checked_by_a, checked_by_b = set(pa.calls), set(pb.calls)
    assert checked_by_a | checked_by_b == {f"s{i}" for i in range(40)}
    assert checked_by_a.isdisjoint(checked_by_b)
    assert checked_by_a
    assert checked_by_b


async def test_shared_status_follows_the_checker(clock: FakeClock, make: Make) -> None:
    """A status found by whichever process checks is what every process sees."""
    a, b = make("a"), make("b")
    await a.initialize()
    await b.initialize()
    await clock.advance(7)
    await a.register_service(_ep("s1"))
    await clock.advance(0)
    for d in (a, b):
        _probe(d).set("s1", False)
    downs: list[str] = []
    a.add_service_down_callback(downs.append)
    await clock.advance(40)
    for d in (a, b):
        assert (await d.get_service_health("s1")).status is ServiceStatus.UNHEALTHY  # type: ignore[union-attr]
    assert downs == ["s1"]


async def test_survivor_takes_over_the_checks(clock: FakeClock, make: Make) -> None:
    """When one process stops, the other acquires its shards and checks everything."""
    a, b = make("a"), make("b")
    await a.initialize()
    await b.initialize()
    await clock.advance(7)
    for i in range(20):
        await b.register_service(_ep(f"s{i}"))
    await a.shutdown()
    await clock.advance(10)
    assert len(b._shards.held) == 16  # type: ignore[union-attr]
    _probe(b).calls.clear()
    await clock.advance(11)
    assert set(_probe(b).calls) == {f"s{i}" for i in range(20)}


async def test_heartbeats_keep_a_registration_past_its_ttl(
    clock: FakeClock, make: Make, store: MemoryStore
) -> None:
    """The owner renews the lease; the record outlives many TTLs."""
    a = make("a")
    await a.initialize()
    await a.register_service(_ep("s1"))
    await clock.advance(300)
    assert await store.get("sd:svc:s1") is not None
    assert "s1" in a.services


async def test_registration_of_a_dead_owner_expires(
    clock: FakeClock, make: Make, store: MemoryStore
) -> None:
    """An owner that stops heartbeating loses its registration after the TTL; the other
    process sees it expire and fires the down callback."""
    a, b = make("a"), make("b")
    await a.initialize()
    await b.initialize()
    await a.register_service(_ep("s1"))
    await clock.advance(1)
    downs: list[str] = []
    events: list[DiscoveryEvent] = []
    b.add_service_down_callback(downs.append)
    b.add_listener(events.append)
    await a._supervisor.close()  # the owner dies: no heartbeat, no deregistration
    await clock.advance(40)
    assert await store.get("sd:svc:s1") is None
    assert "s1" not in b.services
    assert downs == ["s1"]
    assert ("expired", "s1") in [(e.kind, e.service_id) for e in events]


async def test_self_preservation_pauses_mass_expiry(
    clock: FakeClock, make: Make, store: MemoryStore
) -> None:
    """When most registrations expire at once, the reaper keeps them and says so."""
    owner = make("owner")
    watcher = make("watcher", preservation_policy=PreservationPolicy(threshold=0.5, window=600))
    await owner.initialize()
    await watcher.initialize()
    for i in range(10):
        await owner.register_service(_ep(f"s{i}"))
    await clock.advance(1)
    events: list[DiscoveryEvent] = []
    watcher.add_listener(events.append)
    await owner._supervisor.close()
    await clock.advance(60)
    kinds = {e.kind for e in events}
    assert "self_preservation_started" in kinds
    assert "evictions_paused" in kinds
    assert len(watcher.services) == 10
    assert watcher.self_preservation
    assert watcher.get_metrics()["expired_services"] == 0


async def test_lost_registrations_are_restored_by_their_owner(
    clock: FakeClock, make: Make, store: MemoryStore
) -> None:
    """If the registry loses a record (flush, restart), the owner re-registers it."""
    a, b = make("a"), make("b")
    await a.initialize()
    await b.initialize()
    await a.register_service(_ep("s1"))
    await clock.advance(1)
    await store.delete("sd:svc:s1")
    await store.delete("sd:health:s1")
    await store.set_remove("sd:idx:dtesn_membrane", "s1")
    await clock.advance(11)  # one heartbeat (ttl / 3)
    assert await store.get("sd:svc:s1") is not None
    assert "s1" in await store.members("sd:idx:dtesn_membrane")
    assert a.get_metrics()["registrations_restored"] == 1
    assert "s1" in b.services


async def test_reader_resyncs_when_its_position_is_gone(
    clock: FakeClock, make: Make, store: MemoryStore
) -> None:
    """A feed reset forces a full reload; the view ends up equal to the registry."""
    a, b = make("a"), make("b")
    await a.initialize()
    await b.initialize()
    await a.register_service(_ep("s1"))
    await clock.advance(1)
    resyncs = b.get_metrics()["resyncs"]
    store.feeds.reset(10**9)
    await a.register_service(_ep("s2"))
    await clock.advance(2)
    assert b.get_metrics()["resyncs"] > resyncs
    assert set(b.services) == {"s1", "s2"}


# ---- signed records -------------------------------------------------------------------


async def test_signed_registry_ignores_and_reports_forged_records(
    clock: FakeClock, make: Make, store: MemoryStore
) -> None:
    """A record written straight into the store without the key is ignored by readers
    (on the feed and on reload) and reported."""
    a = make("a", registration_key="k3y")
    await a.initialize()
    events: list[DiscoveryEvent] = []
    a.add_listener(events.append)
    forged = {
        "kind": "registration",
        "endpoint": {
            "service_id": "evil",
            "service_type": "dtesn_membrane",
            "host": "203.0.113.9",
            "port": 80,
        },
        "owner": "x",
    }
    await store.put("sd:svc:evil", forged)
    await store.set_add("sd:idx:dtesn_membrane", "evil")
    await store.append(
        "sd:events",
        {"kind": "event", "op": "register", "id": "evil", "registration": forged, "health": {}},
    )
    await clock.advance(1)
    assert "evil" not in a.services
    store.feeds.reset(10**9)  # force a reload from the records
    await clock.advance(2)
    assert "evil" not in a.services
    assert a.get_metrics()["rejected_records"] >= 2
    assert any(e.kind == "record_rejected" and e.service_id == "evil" for e in events)


async def test_tampered_signed_record_is_rejected(
    clock: FakeClock, make: Make, store: MemoryStore
) -> None:
    """Changing a signed record (e.g. redirecting its host) breaks the signature."""
    a = make("a", registration_key="k3y")
    await a.initialize()
    await a.register_service(_ep("s1"))
    await clock.advance(1)
    record = await store.get("sd:svc:s1")
    assert record is not None
    record.value["endpoint"]["host"] = "203.0.113.9"
    await store.put("sd:svc:s1", record.value)
    b = make("b", registration_key="k3y")
    await b.initialize()
    assert "s1" not in b.services
    assert b.get_metrics()["rejected_records"] == 1


async def test_registration_without_credentials_is_refused(
    clock: FakeClock, make: Make, store: MemoryStore
) -> None:
    """A process required to sign but holding no key cannot register; nothing changes."""
    d = make("d", require_signed=True, registration_key=None)
    await d.initialize()
    with pytest.raises(AuthorizationError, match="DTESN_SERVICE_REGISTRATION_KEY"):
        await d.register_service(_ep("s1"))
    assert await store.get("sd:svc:s1") is None
    assert await store.members("sd:idx:dtesn_membrane") == set()
    assert "s1" not in d.services


async def test_key_from_environment(
    clock: FakeClock, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DTESN_SERVICE_REGISTRATION_KEY signs; a reader with another key ignores it."""
    monkeypatch.setenv("DTESN_SERVICE_REGISTRATION_KEY", "one")
    writer = make("w")
    await writer.initialize()
    await writer.register_service(_ep("s1"))
    monkeypatch.setenv("DTESN_SERVICE_REGISTRATION_KEY", "two")
    reader = make("r")
    await reader.initialize()
    assert "s1" not in reader.services
    assert reader.get_metrics()["rejected_records"] >= 1


class CountingStore(MemoryStore):
    """A real in-memory store that counts commits; each commit yields to the loop once,
    as a network round trip would."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.commits = 0

    async def commit(self, ops: Any) -> Any:
        self.commits += 1
        await asyncio.sleep(0)
        return await super().commit(ops)


async def test_concurrent_registrations_share_commits(clock: FakeClock) -> None:
    """Registrations made concurrently are written together: fewer commits than
    registrations, each with its own feed position, all visible elsewhere."""
    store = CountingStore(clock)
    a = ServiceDiscovery(store=store, clock=clock, probe=ScriptedProbe(), node_id="a")
    b = ServiceDiscovery(store=store, clock=clock, probe=ScriptedProbe(), node_id="b")
    await a.initialize()
    await b.initialize()
    try:
        before = store.commits
        assert await a.register_services([_ep(f"s{i}") for i in range(50)]) == [True] * 50
        assert store.commits - before < 10
        await clock.advance(0)
        assert len(b.services) == 50
        assert len(await store.members("sd:idx:dtesn_membrane")) == 50
    finally:
        await a.shutdown()
        await b.shutdown()


async def test_bulk_registration_validates_everything_first(clock: FakeClock, make: Make) -> None:
    """One bad entry in a bulk registration registers nothing."""
    a = make("a")
    await a.initialize()
    with pytest.raises(ValidationError, match=r"endpoints\[1\]"):
        await a.register_services([_ep("ok"), "not an endpoint"])  # type: ignore[list-item]
    assert len(a.services) == 0


async def test_mass_failure_pauses_deregistration(clock: FakeClock, make: Make) -> None:
    """When most instances fail their checks at once (the checker lost its network),
    they are marked unhealthy but not deregistered, and an event says why."""
    d = make(
        "d",
        max_consecutive_failures=1,
        deregister_after=20.0,
        preservation_policy=PreservationPolicy(threshold=0.5, window=600),
    )
    await d.initialize()
    events: list[DiscoveryEvent] = []
    d.add_listener(events.append)
    for i in range(6):
        await d.register_service(_ep(f"s{i}"))
    await clock.advance(1)
    for i in range(6):
        _probe(d).set(f"s{i}", False)
    await clock.advance(60)
    assert d.get_metrics()["healthy_services"] == 0
    assert len(d.services) == 6
    assert d.get_metrics()["deregistered_unhealthy"] == 0
    kinds = [e.kind for e in events]
    assert "self_preservation_started" in kinds
    assert "evictions_paused" in kinds


async def test_single_failure_is_still_deregistered(clock: FakeClock, make: Make) -> None:
    """One instance of many failing is an ordinary eviction, not self-preservation."""
    d = make("d", max_consecutive_failures=1, deregister_after=20.0)
    await d.initialize()
    for i in range(6):
        await d.register_service(_ep(f"s{i}"))
    await clock.advance(1)
    _probe(d).set("s0", False)
    await clock.advance(60)
    assert "s0" not in d.services
    assert len(d.services) == 5
    assert not d.self_preservation


async def test_ejection_triggers_an_active_check(clock: FakeClock, make: Make) -> None:
    """Failed real calls eject an endpoint and move its next health check to now."""
    d = make("d", health_check_interval=300.0)
    await d.initialize()
    for i in range(3):
        await d.register_service(_ep(f"s{i}"))
    await clock.advance(1)
    probe = _probe(d)
    before = probe.count("s0")
    endpoint = d.services["s0"]
    for _ in range(d._outlier_policy.consecutive_failures):
        d.report_outcome(endpoint, False, 0.01)
    assert d.is_ejected("s0")
    usable, everything = d.usable_endpoints(M)
    assert "s0" not in {e.service_id for e in usable}
    assert len(everything) == 3
    await clock.advance(0)
    assert probe.count("s0") == before + 1


async def test_view_age_is_zero_while_current(clock: FakeClock, make: Make) -> None:
    """With the store answering and the feed followed, the view's age is 0."""
    d = make("d")
    await d.initialize()
    await clock.advance(1)
    assert d.view_age() == 0.0
    assert d.get_metrics()["view_age_seconds"] == 0.0


class FeedBeforeReply(MemoryStore):
    """A store whose commits answer only once the change feed has handed their events to
    ``follower_of`` (the order a registering process may see them in over a network)."""

    follower_of: ServiceDiscovery | None = None

    async def commit(self, ops: Any) -> Any:
        result = await super().commit(ops)
        end = max(result.positions.values(), default=0)
        d = self.follower_of
        while d is not None and d._follower is not None and (d._follower.position or 0) < end:  # noqa: ASYNC110
            await asyncio.sleep(0)  # let the follower run; no time passes
        return result


async def test_own_registrations_are_left_to_their_calls_not_the_feed(clock: FakeClock) -> None:
    """The feed copy of this process's registration is not decoded and applied again even
    when it arrives before the registering call resumes; another process's is applied."""
    store = FeedBeforeReply(clock=clock)
    options: dict[str, Any] = {"clock": clock, "store": store, "health_check_interval": 10.0}
    local = ServiceDiscovery(node_id="local", probe=ScriptedProbe("local"), **options)
    other = ServiceDiscovery(node_id="other", probe=ScriptedProbe("other"), **options)
    async with local, other:
        applied: list[str] = []
        apply = local._apply_event

        def recording(doc: Any, position: int) -> None:
            if doc.op == "register":
                applied.append(doc.service_id)
            apply(doc, position)

        local._apply_event = recording  # type: ignore[method-assign]
        store.follower_of = local
        await asyncio.gather(*(local.register_service(_ep(f"own-{i}")) for i in range(20)))
        await other.register_service(_ep("theirs"))
        assert applied == ["theirs"]
        assert {f"own-{i}" for i in range(20)} | {"theirs"} == set(local.services)
        assert local.get_metrics()["registered_services"] == 21


async def test_a_steady_status_is_shared_again_after_the_refresh_period(
    clock: FakeClock, make: Make
) -> None:
    """With no status change, the checking process still shares its latest check every
    refresh period, so another process sees a recent last_check; no callback fires."""
    a, b = make("a", health_refresh=60.0), make("b", health_refresh=60.0)
    await a.initialize()
    await b.initialize()
    await clock.advance(7)
    await a.register_service(_ep("s1"))
    await clock.advance(11)
    checker = a if "s1" in a._machines else b
    other = b if checker is a else a
    first = (await other.get_service_health("s1")).last_check  # type: ignore[union-attr]
    ups: list[str] = []
    other.add_service_up_callback(ups.append)
    await clock.advance(130)
    later = (await other.get_service_health("s1")).last_check  # type: ignore[union-attr]
    assert later >= first + 100
    assert 1 <= checker.get_metrics()["health_refreshes"] <= 3  # about one per 60 s
    assert ups == []


async def test_without_refresh_only_changes_are_shared(clock: FakeClock, make: Make) -> None:
    """health_refresh=None: another process's last_check stays at the last change."""
    a, b = make("a", health_refresh=None), make("b", health_refresh=None)
    await a.initialize()
    await b.initialize()
    await clock.advance(7)
    await a.register_service(_ep("s1"))
    await clock.advance(11)
    first = (await b.get_service_health("s1")).last_check  # type: ignore[union-attr]
    await clock.advance(130)
    checker = a if "s1" in a._machines else b
    other = b if checker is a else a
    assert (await other.get_service_health("s1")).last_check == first  # type: ignore[union-attr]
    assert (await checker.get_service_health("s1")).last_check > first + 100  # type: ignore[union-attr]
    assert checker.get_metrics()["health_refreshes"] == 0
