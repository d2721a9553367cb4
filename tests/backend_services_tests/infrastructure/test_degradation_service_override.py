"""Per-service fleet overrides: ``force_service``/``clear_service`` reach the managers
of one service name in every process through the change feed, and no other (shared
in-memory store, fake clock)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from backend_services.degradation.fleet import FleetCommand, FleetState
from backend_services.errors import ValidationError
from backend_services.infrastructure.service_degradation import (
    DegradationLevel,
    GlobalDegradationManager,
    ServiceDegradationManager,
)
from backend_services.store.memory import MemoryStore
from backend_services.testing import FakeClock

L = DegradationLevel
Factory = Callable[..., ServiceDegradationManager]  # the ``make`` fixture (conftest)


class TestThroughTheFeed:
    async def test_force_reaches_only_the_named_service_and_clear_restores(
        self, make: Factory, store: MemoryStore, clock: FakeClock
    ) -> None:
        """Both instances of 'a' (not registered with the global manager) take the
        forced level, 'b' stays normal; clear_service brings 'a' back."""
        a1, a2, b = make("a", store=store), make("a", store=store), make("b", store=store)
        for m in (a1, a2, b):
            await m.initialize()
        g = GlobalDegradationManager(store=store, clock=clock)
        result = await g.force_service("a", "minimal", "drill")
        assert (result["service"], result["level"], result["published"]) == ("a", "minimal", True)
        await clock.advance(0)
        assert (a1.current_level, a2.current_level, b.current_level) == (
            L.MINIMAL,
            L.MINIMAL,
            L.NORMAL,
        )
        assert a1.get_status()["override"]["source"] == "fleet"
        status = await g.get_global_status()
        assert status["services"]["a"]["level"] == "minimal"
        assert set(status["service_overrides"]) == {"a"}
        assert await g.clear_service("a", "drill over") is True
        await clock.advance(0)
        assert (a1.current_level, a2.current_level, b.current_level) == (
            L.NORMAL,
            L.NORMAL,
            L.NORMAL,
        )
        assert a1.get_degradation_history()[-1]["reason"] == "drill over"
        assert (await g.get_global_status())["service_overrides"] == {}
        assert await g.clear_service("a") is False

    async def test_a_manager_starting_later_applies_its_own_override_only(
        self, make: Factory, store: MemoryStore, clock: FakeClock
    ) -> None:
        """A service started while its override is in force applies it; another
        service started then does not."""
        g = GlobalDegradationManager(store=store, clock=clock)
        await g.force_service("a", "emergency", "bad deploy")
        a, b = make("a", store=store), make("b", store=store)
        await a.initialize()
        await b.initialize()
        assert a.current_level is L.EMERGENCY
        assert b.current_level is L.NORMAL

    async def test_clearing_one_service_keeps_the_fleet_override(
        self, make: Factory, store: MemoryStore, clock: FakeClock
    ) -> None:
        """Under a fleet-wide emergency, a per-service force then clear leaves that
        service at the fleet level; clearing the fleet ends every override."""
        a, b = make("a", store=store), make("b", store=store)
        await a.initialize()
        await b.initialize()
        g = GlobalDegradationManager(store=store, clock=clock)
        await g.emergency_shutdown_all("overload", level="partial")
        await g.force_service("a", "offline", "isolate a")
        await clock.advance(0)
        assert (a.current_level, b.current_level) == (L.OFFLINE, L.PARTIAL)
        await g.clear_service("a")
        await clock.advance(0)
        assert (a.current_level, b.current_level) == (L.PARTIAL, L.PARTIAL)
        await g.force_service("b", "minimal")
        await clock.advance(0)
        assert await g.clear_emergency("all clear") is True
        await clock.advance(0)
        assert (a.current_level, b.current_level) == (L.NORMAL, L.NORMAL)
        assert (await g.get_global_status())["service_overrides"] == {}

    async def test_a_per_service_override_with_a_duration_expires(
        self, make: Factory, store: MemoryStore, clock: FakeClock
    ) -> None:
        """force_service with a duration ends by itself on the named service."""
        a = make("a", store=store)
        await a.initialize()
        g = GlobalDegradationManager(store=store, clock=clock)
        await g.force_service("a", "minimal", duration=30)
        await clock.advance(0)
        assert a.current_level is L.MINIMAL
        await clock.advance(31)
        assert a.current_level is L.NORMAL
        assert (await g.get_global_status())["service_overrides"] == {}


class TestInOneProcess:
    async def test_local_force_and_clear_without_a_store(
        self, make: Factory, clock: FakeClock
    ) -> None:
        """Without a store, registered managers of the named service take the level
        (others do not) and a clear hands back to the fleet override in force."""
        a, b = make("a"), make("b")
        g = GlobalDegradationManager(redis_url=None, clock=clock)
        for m in (a, b):
            await m.initialize()
            await g.register_service(m)
        result = await g.force_service("a", "minimal")
        assert (result["local_services"], result["published"]) == (1, False)
        assert (a.current_level, b.current_level) == (L.MINIMAL, L.NORMAL)
        assert await g.clear_service("a") is True
        assert a.current_level is L.NORMAL
        await g.emergency_shutdown_all(level="partial")
        await g.force_service("a", "offline")
        await g.clear_service("a")
        assert (a.current_level, b.current_level) == (L.PARTIAL, L.PARTIAL)

    @pytest.mark.parametrize("name", ["", "  ", None, 3])
    async def test_service_name_is_validated(self, clock: FakeClock, name: Any) -> None:
        """A missing or blank service name is a ValidationError naming the field."""
        g = GlobalDegradationManager(redis_url=None, clock=clock)
        with pytest.raises(ValidationError) as info:
            await g.force_service(name, "minimal")
        assert info.value.field == "service_name"
        with pytest.raises(ValidationError):
            await g.clear_service(name)


class TestRecords:
    def test_fleet_state_round_trips_per_service_overrides(self) -> None:
        """The fleet record keeps per-service commands; the latest active of the fleet
        override and a service's own is the one that service follows."""
        fleet = FleetCommand("override", "f", L.PARTIAL, "fleet", issued_at=10.0)
        own = FleetCommand("override", "s", L.OFFLINE, "own", issued_at=20.0, service="a")
        state = FleetState.from_json(FleetState(fleet, None, {"a": own}).to_json())
        assert state.services == {"a": own}
        assert state.override_for("a", 30.0) == own
        assert state.override_for("b", 30.0) == fleet
        assert FleetState.from_json({"override": None}).services == {}

    def test_a_command_keyed_under_another_service_is_rejected(self) -> None:
        """A per-service command stored under a different name is malformed data."""
        own = FleetCommand("override", "s", L.OFFLINE, "own", 1.0, service="a")
        with pytest.raises(ValidationError):
            FleetState.from_json({"services": {"b": own.to_json()}})
