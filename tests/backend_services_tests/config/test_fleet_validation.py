"""Values written by other processes meet this process's own validation: a value its
validators or schema refuse is held back (the value it had stays in force) until a
later version replaces it; the fleet's history still records it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from backend_services.config.model import ConfigSource, Entry
from backend_services.config.quarantine import Quarantine
from backend_services.infrastructure.config_manager import ConfigurationManager
from backend_services.store.memory import MemoryStore
from backend_services.testing import FakeClock

Make = Callable[..., ConfigurationManager]


def _depth_ok(value: Any) -> bool:
    return isinstance(value, int) and 1 <= value <= 16


class _Schema(BaseModel):
    membrane_depth: int = Field(default=4, ge=1, le=16)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)


@pytest.fixture
async def make(clock: FakeClock, store: MemoryStore) -> AsyncIterator[Make]:
    """Managers of one service sharing one in-memory store; shut down afterwards."""
    made: list[ConfigurationManager] = []

    def factory(**kw: Any) -> ConfigurationManager:
        kw.setdefault("redis_url", None)
        kw.setdefault("store", store)
        kw.setdefault("clock", clock)
        kw.setdefault("last_known_good", None)
        kw.setdefault("environ", {})
        manager = ConfigurationManager("fleet-svc", **kw)
        made.append(manager)
        return manager

    yield factory
    for manager in made:
        await manager.shutdown()


async def _settle(rounds: int = 40) -> None:
    """Let the followers deliver (no time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def _pair(make: Make, **strict: Any) -> tuple[ConfigurationManager, ConfigurationManager]:
    """A writer without validation and a stricter reader, both running."""
    writer, reader = make(), make(**strict)
    await writer.initialize()
    await reader.initialize()
    return writer, reader


class TestHeldBack:
    async def test_a_refused_value_from_another_process_is_held_back(self, make: Make) -> None:
        """The stricter process keeps its value and reports the refused version; the rest
        of the same version applies; the writer and the history have the new value."""
        writer, reader = await _pair(make)
        reader.add_validator("membrane_depth", _depth_ok)
        await writer.set_config("membrane_depth", 6)
        await _settle()
        assert await reader.get_config("membrane_depth") == 6
        await writer.bulk_update({"membrane_depth": 99, "membrane_kind": "echo"})
        await _settle()
        assert await writer.get_config("membrane_depth") == 99
        assert await reader.get_config("membrane_depth") == 6
        assert await reader.get_config("membrane_kind") == "echo"
        assert reader.version == writer.version == 2
        held = (await reader.get_config_summary())["held_back"]
        assert list(held) == ["membrane_depth"]
        assert held["membrane_depth"]["version"] == 2
        assert "membrane_depth=99" in held["membrane_depth"]["reason"]
        assert reader.get_metrics()["remote_rejections"] == 1
        assert reader.get_metrics()["held_back"] == 1
        explained = reader.explain("membrane_depth")
        assert (explained.source, explained.version) == (ConfigSource.API, 1)
        assert "fleet's version 2 was refused here" in explained.detail
        assert "held back" not in writer.explain("membrane_depth").detail

    async def test_a_later_valid_version_ends_the_hold(self, make: Make) -> None:
        """A valid value for a held key applies and the hold is gone."""
        writer, reader = await _pair(make)
        reader.add_validator("membrane_depth", _depth_ok)
        await writer.set_config("membrane_depth", 99)
        await _settle()
        assert await reader.get_config("membrane_depth") is None
        await writer.set_config("membrane_kind", "echo")  # another key: still held
        await _settle()
        assert "membrane_depth" in (await reader.get_config_summary())["held_back"]
        await writer.set_config("membrane_depth", 8)
        await _settle()
        assert await reader.get_config("membrane_depth") == 8
        assert (await reader.get_config_summary())["held_back"] == {}

    async def test_callbacks_see_only_what_applies(self, make: Make) -> None:
        """A held-back value fires no change callback; the valid one after it does."""
        writer, reader = await _pair(make)
        reader.add_validator("membrane_depth", _depth_ok)
        seen: list[tuple[Any, Any]] = []
        reader.add_change_callback("membrane_depth", lambda k, new, old: seen.append((new, old)))
        await writer.set_config("membrane_depth", 99)
        await _settle()
        await reader.drain()
        assert seen == []
        await writer.set_config("membrane_depth", 3)
        await _settle()
        await reader.drain()
        assert seen == [(3, None)]

    async def test_a_schema_refusal_holds_only_the_offending_key(self, make: Make) -> None:
        """A schema that refuses one key of a version holds that key back alone."""
        writer, reader = await _pair(make, schema=_Schema)
        await writer.bulk_update({"membrane_depth": 40, "other": 1})
        await _settle()
        assert await reader.get_config("other") == 1
        assert await reader.get_config("membrane_depth") is None
        assert list((await reader.get_config_summary())["held_back"]) == ["membrane_depth"]

    async def test_without_validation_every_value_applies(self, make: Make) -> None:
        """validation_enabled=False (or no validators and no schema) applies as written."""
        writer, reader = await _pair(make, validation_enabled=False)
        reader.add_validator("membrane_depth", _depth_ok)
        await writer.set_config("membrane_depth", 99)
        await _settle()
        assert await reader.get_config("membrane_depth") == 99
        assert reader.get_metrics()["remote_rejections"] == 0


class TestReloads:
    async def test_a_process_starting_on_a_refused_value_does_not_serve_it(
        self, make: Make
    ) -> None:
        """The full load at start holds back what its validation refuses."""
        writer = make()
        await writer.initialize()
        await writer.bulk_update({"membrane_depth": 99, "membrane_kind": "echo"})
        reader = make(defaults={"membrane_depth": 4}, schema=_Schema)
        await reader.initialize()
        assert await reader.get_config("membrane_depth") == 4  # the default, not 99
        assert await reader.get_config("membrane_kind") == "echo"
        assert reader.version == 1
        assert list((await reader.get_config_summary())["held_back"]) == ["membrane_depth"]

    async def test_last_known_good_values_are_validated_at_start(
        self, make: Make, tmp_path: Path
    ) -> None:
        """A saved value that the restarted process's validation refuses is not served."""
        lkg = tmp_path / "lkg.json"
        first = make(last_known_good=lkg, store=MemoryStore())
        await first.initialize()
        await first.set_config("membrane_depth", 99)
        await first.shutdown()
        second = make(last_known_good=lkg, store=MemoryStore(), schema=_Schema)
        await second.initialize()
        assert await second.get_config("membrane_depth") is None
        assert list((await second.get_config_summary())["held_back"]) == ["membrane_depth"]
        assert second.get_metrics()["remote_rejections"] >= 1


class TestQuarantine:
    def test_holds_keep_the_served_entry_until_a_version_replaces_it(self) -> None:
        """Held keys serve the entry from before; a new value or removal releases them."""
        old = Entry(1, version=1)
        fleet = {"k": Entry(99, version=2), "j": Entry(5, version=2)}
        q = Quarantine()
        assert q.effective(fleet) is fleet
        q.update(["k", "j"], {"k": "too deep", "j": "bad"}, {"k": old}, version=2)
        assert q.effective(fleet) == {"k": old}  # j had nothing before: unset
        assert q.report() == {
            "j": {"version": 2, "reason": "bad"},
            "k": {"version": 2, "reason": "too deep"},
        }
        q.update(["j"], {}, {}, version=3)
        assert q.effective(fleet) == {"k": old, "j": fleet["j"]}
        assert "k" in q
        assert len(q) == 1
