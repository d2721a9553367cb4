"""Fleet coordination: published levels, the global view, emergency shutdown, the
advisory floor, and store failures that never force degradation (one process, shared
in-memory store, fake clock)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backend_services.degradation.fleet import FLEET_KEY, INSTANCES_KEY, instance_key
from backend_services.errors import StoreUnavailableError
from backend_services.infrastructure.service_degradation import (
    DegradationLevel,
    GlobalDegradationManager,
    ResourceType,
    ServiceDegradationManager,
    get_global_degradation_manager,
)
from backend_services.store.memory import MemoryStore
from backend_services.testing import FakeClock

L = DegradationLevel
Factory = Callable[..., ServiceDegradationManager]  # the ``make`` fixture (conftest)


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


class TestLocalGlobalManager:
    async def test_global_status_and_emergency_in_one_process(
        self, make: Factory, clock: FakeClock
    ) -> None:
        """Without a store the global manager sees its registered managers; emergency
        shutdown forces EMERGENCY on each, clear_emergency hands back."""
        a, b = make("a"), make("b")
        b.register_resource_monitor(ResourceType.CPU, fixed(0.85), in_thread=False)
        g = GlobalDegradationManager(redis_url=None, clock=clock)
        for m in (a, b):
            await m.initialize()
            await g.register_service(m)
        await clock.advance(0)
        assert set(g.service_managers) == {"a", "b"}
        status = await g.get_global_status()
        assert status["global_level"] == "minimal"
        assert status["degraded_services"] == 1
        assert status["total_services"] == 2
        assert status["services"]["b"]["level"] == "minimal"
        assert status["shared"] is False
        result = await g.emergency_shutdown_all("disk array lost")
        assert result["local_services"] == 2
        assert a.current_level is L.EMERGENCY
        assert b.current_level is L.EMERGENCY
        assert a.get_degradation_history()[-1]["reason"] == "disk array lost"
        assert await g.clear_emergency() is True
        assert a.current_level is L.NORMAL
        assert b.current_level is L.MINIMAL
        assert await g.unregister_service("a") is True
        assert await g.unregister_service("a") is False

    def test_default_instance(self) -> None:
        """get_global_degradation_manager returns one shared instance."""
        assert get_global_degradation_manager() is get_global_degradation_manager()


class TestSharedStore:
    async def test_managers_publish_and_global_sees_them(
        self, make: Factory, store: MemoryStore, clock: FakeClock
    ) -> None:
        """Each manager publishes level and snapshot; the global view lists every
        instance, even ones not registered with it."""
        a = make("a", store=store)
        b = make("b", store=store)
        b.register_resource_monitor(ResourceType.MEMORY, fixed(0.91), in_thread=False)
        await a.initialize()
        await b.initialize()
        await clock.advance(0)
        g = GlobalDegradationManager(store=store, clock=clock)
        status = await g.get_global_status()
        assert status["shared"] is True
        assert status["total_instances"] == 2
        assert status["worst_level"] == "emergency"
        inst = status["services"]["b"]["instances"][b.instance_id]
        assert inst["resources"] == {"memory": 0.91}
        assert inst["level"] == "emergency"

    async def test_emergency_reaches_unregistered_managers_through_the_feed(
        self, make: Factory, store: MemoryStore, clock: FakeClock
    ) -> None:
        """emergency_shutdown_all lands on managers of other 'processes' via the feed;
        a manager starting later picks up the override in force; clear ends it."""
        a = make("a", store=store)
        await a.initialize()
        await clock.advance(0)
        g = GlobalDegradationManager(store=store, clock=clock)
        result = await g.emergency_shutdown_all("fleet overload", level="offline")
        assert result["published"] is True
        await clock.advance(0)
        assert a.current_level is L.OFFLINE
        assert a.get_status()["override"]["source"] == "fleet"
        late = make("late", store=store)
        await late.initialize()
        assert late.current_level is L.OFFLINE
        assert await g.clear_emergency("over") is True
        await clock.advance(0)
        assert a.current_level is L.NORMAL
        assert late.current_level is L.NORMAL
        assert a.get_degradation_history()[-1]["reason"] == "over"

    async def test_emergency_with_duration_expires_everywhere(
        self, make: Factory, store: MemoryStore, clock: FakeClock
    ) -> None:
        """An emergency with a duration ends by itself on each manager."""
        a = make("a", store=store)
        await a.initialize()
        g = GlobalDegradationManager(store=store, clock=clock)
        await g.emergency_shutdown_all(duration=30)
        await clock.advance(0)
        assert a.current_level is L.EMERGENCY
        await clock.advance(31)
        assert a.current_level is L.NORMAL

    async def test_manual_override_survives_fleet_clear(
        self, make: Factory, store: MemoryStore, clock: FakeClock
    ) -> None:
        """Clearing the fleet override does not clear a later local manual override."""
        a = make("a", store=store)
        await a.initialize()
        g = GlobalDegradationManager(store=store, clock=clock)
        await g.emergency_shutdown_all()
        await clock.advance(0)
        await a.force_degradation(L.MINIMAL, "local decision")
        await g.clear_emergency()
        await clock.advance(0)
        assert a.current_level is L.MINIMAL

    async def test_floor_is_advisory(
        self, make: Factory, store: MemoryStore, clock: FakeClock
    ) -> None:
        """A fleet floor is reported by every manager and applied only by those that
        follow it; clearing it restores them."""
        plain = make("plain", store=store)
        follower = make("follower", store=store, follow_fleet_floor=True)
        await plain.initialize()
        await follower.initialize()
        g = GlobalDegradationManager(store=store, clock=clock)
        await g.set_fleet_floor(L.MINIMAL, "shared db saturated")
        await clock.advance(0)
        assert plain.get_status()["fleet_floor"] == "minimal"
        assert plain.current_level is L.NORMAL
        assert follower.current_level is L.MINIMAL
        assert (await g.get_global_status())["fleet_floor"]["level"] == "minimal"
        await g.clear_fleet_floor()
        await clock.advance(0)
        assert follower.current_level is L.NORMAL
        assert plain.fleet_floor is None

    async def test_dead_instances_drop_out(
        self, make: Factory, store: MemoryStore, clock: FakeClock
    ) -> None:
        """A record not refreshed within its TTL disappears from the global view; a
        clean shutdown withdraws it at once."""
        a = make("a", store=store)
        b = make("b", store=store)
        await a.initialize()
        await b.initialize()
        await clock.advance(0)
        await b.shutdown()
        g = GlobalDegradationManager(store=store, clock=clock)
        assert (await g.get_global_status())["total_instances"] == 1
        await store.put(instance_key("ghost"), {"bad": "record"}, ttl=5)
        await store.set_add(INSTANCES_KEY, "ghost")
        status = await g.get_global_status()
        assert status["total_instances"] == 1  # malformed record skipped
        await clock.advance(6)
        await g.get_global_status()
        assert "ghost" not in await store.members(INSTANCES_KEY)

    async def test_corrupt_fleet_state_is_ignored(
        self, make: Factory, store: MemoryStore, clock: FakeClock
    ) -> None:
        """A malformed fleet record never changes a manager's level."""
        await store.put(FLEET_KEY, {"override": {"kind": "override", "level": "panic"}})
        a = make("a", store=store)
        await a.initialize()
        assert a.current_level is L.NORMAL


class FailingStore(MemoryStore):
    """A store whose every call fails while ``down`` (an unreachable server)."""

    down = False

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if (
            name not in ("initialize", "close", "status")
            and not name.startswith("_")
            and callable(attr)
            and super().__getattribute__("down")
        ):

            async def fail(*a: Any, **k: Any) -> Any:
                raise StoreUnavailableError("server unreachable")

            return fail
        return attr


class TestStoreLoss:
    async def test_losing_the_store_never_forces_degradation(self, clock: FakeClock) -> None:
        """With the store failing, the level still follows local signals only; the
        global view falls back to local managers; publishing errors are counted."""
        store = FailingStore(clock=clock)
        m = ServiceDegradationManager(
            "a", clock=clock, store=store, builtin_monitors=False, check_interval=10
        )
        m.register_resource_monitor(ResourceType.CPU, fixed(0.2), in_thread=False)
        g = GlobalDegradationManager(store=store, clock=clock)
        await g.register_service(m)
        await m.initialize()
        await clock.advance(0)
        store.down = True
        await clock.advance(100)
        assert m.current_level is L.NORMAL
        assert m._link is not None
        assert m._link.publish_errors > 0
        status = await g.get_global_status()
        assert status["shared"] is False
        assert status["total_instances"] == 1
        result = await g.emergency_shutdown_all()
        assert result["published"] is False
        assert "unreachable" in result["error"]
        assert m.current_level is L.EMERGENCY  # local managers still reached
        store.down = False
        await m.shutdown()
