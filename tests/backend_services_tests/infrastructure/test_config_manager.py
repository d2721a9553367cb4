"""ConfigurationManager: the spec's example, sources and precedence, validation, versions,
rollback, callbacks, file watching, last-known-good, secrets, export/import, lifecycle.

Everything here runs in one process on the in-memory store with a fake clock; the
fleet tests on a real Redis (several OS processes) are in ``tests/backend_services_tests/
config/test_fleet_redis.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from backend_services.config.secrets import generate_key
from backend_services.errors import (
    ConfigValidationError,
    ConflictError,
    LifecycleError,
    SettingsError,
    ValidationError,
)
from backend_services.infrastructure.config_manager import (
    ConfigSource,
    ConfigurationManager,
    get_config_manager,
)
from backend_services.store.memory import MemoryStore
from backend_services.testing import FakeClock

SPEC_FILE = {
    "service_discovery": {"health_check_interval": 30, "service_ttl": 300},
    "circuit_breaker": {"default_failure_threshold": 5, "default_timeout": 60},
    "degradation": {"thresholds": {"cpu": {"partial": 0.7, "minimal": 0.8}}},
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(tmp_path: Path, clock: FakeClock) -> Callable[..., ConfigurationManager]:
    """Managers on memory with a fake clock and a last-known-good file under tmp_path."""

    def factory(service: str = "dtesn-service", **kw: Any) -> ConfigurationManager:
        kw.setdefault("redis_url", None)
        kw.setdefault("clock", clock)
        kw.setdefault("last_known_good", tmp_path / f"{service}.lkg.json")
        kw.setdefault("environ", {})
        return ConfigurationManager(service, **kw)

    return factory


@pytest.fixture
async def cm(make: Callable[..., ConfigurationManager]) -> AsyncIterator[ConfigurationManager]:
    manager = make()
    await manager.initialize()
    yield manager
    await manager.shutdown()


@pytest.fixture
async def pair(
    make: Callable[..., ConfigurationManager], clock: FakeClock
) -> AsyncIterator[tuple[ConfigurationManager, ConfigurationManager]]:
    """Two initialized managers sharing one in-memory store (no last-known-good file)."""
    store = MemoryStore(clock=clock)
    a, b = make(store=store, last_known_good=None), make(store=store, last_known_good=None)
    await a.initialize()
    await b.initialize()
    yield a, b
    await a.shutdown()
    await b.shutdown()


def _write(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


async def _settle(rounds: int = 30) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


# ---------------------------------------------------------------------------- spec --


class TestSpecExample:
    async def test_spec_example_runs_unchanged(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The spec's usage example, verbatim (no Redis listening: it runs on memory)."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("DTESN_CONFIG_STATE_DIR", str(tmp_path / "state"))
        (tmp_path / "config.json").write_text(json.dumps(SPEC_FILE))

        config = ConfigurationManager(
            service_name="dtesn-service",
            config_file="config.json",
            redis_url="redis://localhost:6379",
        )
        await config.initialize()

        await config.set_config("membrane_depth", 6, ConfigSource.API)
        await config.set_config("processing_timeout", 30.0, ConfigSource.API)

        depth = await config.get_config("membrane_depth", default=4)

        version_id = await config.create_version_snapshot("v1.0")
        await config.rollback_to_version(version_id)

        assert depth == 6
        assert await config.get_config("processing_timeout") == 30.0
        assert await config.get_config("circuit_breaker.default_timeout") == 60
        assert [v["kind"] for v in await config.list_versions()][-2:] == ["snapshot", "rollback"]
        await config.shutdown()
        assert (tmp_path / "state" / "config" / "dtesn-service.json").exists()


# ---------------------------------------------------------------- reading/writing --


class TestReadWrite:
    async def test_set_get_default_and_entry(self, cm: ConfigurationManager) -> None:
        """A set value is read back with its source and version; unset keys give the default."""
        assert await cm.get_config("membrane_depth", default=4) == 4
        assert await cm.set_config("membrane_depth", 6) is True
        assert await cm.get_config("membrane_depth", default=4) == 6
        entry = await cm.get_config_entry("membrane_depth")
        assert entry is not None
        assert (entry.value, entry.source, entry.version, entry.layer) == (
            6,
            ConfigSource.API,
            1,
            "runtime",
        )
        assert cm.get("membrane_depth") == 6

    async def test_dict_value_reads_by_prefix_and_replaces_subtree(
        self, cm: ConfigurationManager
    ) -> None:
        """A dict is stored as dotted keys; setting it again replaces the whole subtree."""
        await cm.set_config("reservoir", {"size": 100, "leak": 0.3})
        assert await cm.get_config("reservoir.size") == 100
        assert await cm.get_config("reservoir") == {"size": 100, "leak": 0.3}
        await cm.set_config("reservoir", {"size": 200})
        assert await cm.get_config("reservoir") == {"size": 200}

    async def test_values_returned_are_copies(self, cm: ConfigurationManager) -> None:
        """Mutating a returned list never changes the configuration."""
        await cm.set_config("layers", [1, 2])
        got = await cm.get_config("layers")
        got.append(3)
        assert await cm.get_config("layers") == [1, 2]

    async def test_delete_only_removes_runtime_values(
        self, make: Callable[..., ConfigurationManager]
    ) -> None:
        """delete_config removes a runtime value (revealing lower layers); False otherwise."""
        cm = make(defaults={"timeout": 5})
        await cm.initialize()
        await cm.set_config("timeout", 9)
        assert await cm.delete_config("timeout") is True
        assert await cm.get_config("timeout") == 5
        assert await cm.delete_config("timeout") is False
        assert cm.version == 2
        await cm.shutdown()

    async def test_setting_the_same_value_makes_no_version(self, cm: ConfigurationManager) -> None:
        """An identical write returns True and creates no new version."""
        await cm.set_config("a", 1)
        assert await cm.set_config("a", 1) is True
        assert cm.version == 1


# ------------------------------------------------------------------ precedence --


class TestPrecedence:
    async def test_runtime_over_env_over_file_over_defaults(
        self, make: Callable[..., ConfigurationManager], tmp_path: Path
    ) -> None:
        """One rule per key: runtime > environment > file > defaults; explain() says so."""
        cfg = tmp_path / "config.json"
        _write(cfg, {"membrane_depth": 3, "circuit_breaker": {"default_timeout": 60}})
        cm = make(
            config_file=cfg,
            defaults={"membrane_depth": 1, "name": "d"},
            environ={"DTESN_SERVICE__MEMBRANE_DEPTH": "5", "DTESN_CB_TIMEOUT": "30"},
        )
        await cm.initialize()
        assert await cm.get_config("membrane_depth") == 5
        assert await cm.get_config("name") == "d"
        assert await cm.get_config("circuit_breaker.default_timeout") == 30.0
        ex = cm.explain("membrane_depth")
        assert ex.layer == "environment"
        assert "DTESN_SERVICE__MEMBRANE_DEPTH" in ex.detail
        assert [o[0] for o in ex.overrides] == ["file", "default"]
        await cm.set_config("membrane_depth", 8)
        ex = cm.explain("membrane_depth").as_dict()
        assert ex["layer"] == "runtime"
        assert ex["value"] == 8
        assert [o["layer"] for o in ex["overrides"]] == ["environment", "file", "default"]
        await cm.shutdown()

    async def test_malformed_environment_variable_fails_initialize(
        self, make: Callable[..., ConfigurationManager]
    ) -> None:
        """A service variable that starts like JSON but is not names itself."""
        cm = make(environ={"DTESN_SERVICE__LAYERS": "[1, 2"})
        with pytest.raises(SettingsError, match="DTESN_SERVICE__LAYERS"):
            await cm.initialize()

    async def test_reload_configuration_reads_environment_again(
        self, make: Callable[..., ConfigurationManager]
    ) -> None:
        """reload_configuration() picks up a changed environment and fires callbacks."""
        env: dict[str, str] = {"DTESN_SERVICE__RATE": "1"}
        cm = make(environ=env)
        await cm.initialize()
        seen: list[tuple[str, Any, Any]] = []
        cm.add_global_change_callback(lambda k, n, o: seen.append((k, n, o)))
        env["DTESN_SERVICE__RATE"] = "2"
        assert await cm.reload_configuration() is True
        assert await cm.get_config("rate") == 2
        assert seen == [("rate", 2, 1)]
        audit = await cm.get_audit_log()
        assert audit[-1]["source"] == "environment"
        await cm.shutdown()


# ------------------------------------------------------------------ validation --


class _Breaker(BaseModel):
    default_timeout: float = Field(gt=0)


class _Schema(BaseModel):
    membrane_depth: int = Field(default=4, ge=1, le=16)
    circuit_breaker: _Breaker | None = None


class TestValidation:
    async def test_failing_validator_changes_nothing(self, cm: ConfigurationManager) -> None:
        """A rejected value raises naming key, value and reason; nothing is applied."""
        cm.add_validator("membrane_depth", lambda v: isinstance(v, int) and 1 <= v <= 16)
        await cm.set_config("membrane_depth", 6)
        with pytest.raises(ConfigValidationError, match=r"membrane_depth=99.*validator") as err:
            await cm.set_config("membrane_depth", 99)
        assert err.value.field == "membrane_depth"
        assert err.value.value == 99
        assert isinstance(err.value, ValueError)
        assert await cm.get_config("membrane_depth") == 6
        assert cm.version == 1

    async def test_broken_validator_fails_closed(self, cm: ConfigurationManager) -> None:
        """A validator that crashes rejects the change, saying so."""
        cm.add_validator("k", lambda v: v["missing"])
        with pytest.raises(ConfigValidationError, match="validator failed"):
            await cm.set_config("k", 1)
        assert cm.version == 0

    async def test_async_validator_reason_is_reported(self, cm: ConfigurationManager) -> None:
        """An async validator raising ValueError gives its reason."""

        async def even(v: int) -> bool:
            if v % 2:
                raise ValueError("must be even")
            return True

        cm.add_validator("n", even)
        with pytest.raises(ConfigValidationError, match="must be even"):
            await cm.set_config("n", 3)
        await cm.set_config("n", 4)

    async def test_bulk_update_is_all_or_nothing(self, cm: ConfigurationManager) -> None:
        """One invalid key in a bulk update means no key is applied."""
        cm.add_validator("timeout", lambda v: v > 0)
        await cm.set_config("timeout", 1)
        with pytest.raises(ConfigValidationError, match="timeout=-5"):
            await cm.bulk_update({"a": 1, "b": 2, "timeout": -5})
        assert await cm.get_config("a") is None
        assert cm.version == 1
        result = await cm.bulk_update({"a": 1, "b": 2, "timeout": 5}, description="tune")
        assert result == {"a": True, "b": True, "timeout": True}
        assert cm.version == 2
        assert (await cm.list_versions())[-1]["changed_keys"] == ["a", "b", "timeout"]

    async def test_schema_rejects_with_dotted_key(
        self, make: Callable[..., ConfigurationManager]
    ) -> None:
        """A pydantic schema validates the whole configuration after the change."""
        cm = make(schema=_Schema)
        await cm.initialize()
        await cm.set_config("circuit_breaker.default_timeout", 5)
        with pytest.raises(ConfigValidationError, match=r"circuit_breaker\.default_timeout=-1"):
            await cm.set_config("circuit_breaker.default_timeout", -1)
        with pytest.raises(ConfigValidationError, match="membrane_depth"):
            await cm.set_config("membrane_depth", 40)
        assert await cm.get_config("circuit_breaker.default_timeout") == 5
        await cm.shutdown()

    async def test_validate_false_still_checks_structure(self, cm: ConfigurationManager) -> None:
        """validate=False skips validators but never the structural checks."""
        cm.add_validator("x", lambda v: False)
        await cm.set_config("x", 1, validate=False)
        assert await cm.get_config("x") == 1
        with pytest.raises(ConfigValidationError, match="finite"):
            await cm.set_config("y", float("nan"), validate=False)

    async def test_size_limits(self, make: Callable[..., ConfigurationManager]) -> None:
        """Too many keys or too large a value is refused before anything is applied."""
        from backend_services.config.validation import Limits

        cm = make(limits=Limits(max_keys=2, max_value_bytes=64))
        await cm.initialize()
        with pytest.raises(ConfigValidationError, match="at most 2 keys"):
            await cm.bulk_update({"a": 1, "b": 2, "c": 3})
        with pytest.raises(ConfigValidationError, match="at most 64 bytes"):
            await cm.set_config("big", ["x" * 100])
        assert cm.version == 0
        await cm.shutdown()


# ----------------------------------------------------------------------- CAS --


class TestCompareAndSet:
    async def test_key_expected_version(self, cm: ConfigurationManager) -> None:
        """A write naming a stale key version fails clearly; the current one succeeds."""
        await cm.set_config("k", 1)
        entry = await cm.get_config_entry("k")
        assert entry is not None
        await cm.set_config("k", 2)
        with pytest.raises(ConflictError, match="expected version 1, found 2"):
            await cm.set_config("k", 3, expected_version=entry.version)
        await cm.set_config("k", 3, expected_version=2)
        with pytest.raises(ConflictError):
            await cm.set_config("k", 4, expected_version=0)  # 0 = must not exist
        await cm.set_config("new", 1, expected_version=0)
        assert await cm.get_config("k") == 3

    async def test_config_expected_version(self, cm: ConfigurationManager) -> None:
        """expected_config_version guards a whole-configuration change."""
        await cm.set_config("a", 1)
        with pytest.raises(ConflictError):
            await cm.bulk_update({"b": 1}, expected_config_version=0)
        await cm.bulk_update({"b": 1}, expected_config_version=1)
        assert cm.version == 2

    async def test_two_managers_on_one_store_race(
        self, pair: tuple[ConfigurationManager, ConfigurationManager]
    ) -> None:
        """Two writers expecting the same key version: exactly one wins."""
        a, b = pair
        await a.set_config("k", 0)
        await _settle()
        results = await asyncio.gather(
            a.set_config("k", "a", expected_version=1),
            b.set_config("k", "b", expected_version=1),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["ConflictError", "bool"]
        await _settle()
        assert a.version == b.version == 2
        assert await a.get_config("k") == await b.get_config("k")

    async def test_concurrent_writes_without_expectations_all_land(
        self, pair: tuple[ConfigurationManager, ConfigurationManager]
    ) -> None:
        """Without expectations, racing writers are re-planned: nothing is lost."""
        a, b = pair
        await asyncio.gather(*(m.set_config(f"k{i}", i) for i in range(10) for m in (a, b)))
        await _settle()
        assert a.version == b.version == 10
        assert (
            await a.get_all_config() == await b.get_all_config() == {f"k{i}": i for i in range(10)}
        )


# ------------------------------------------------------------------ versions --


class TestVersions:
    async def test_every_change_is_an_audited_version(self, cm: ConfigurationManager) -> None:
        """Versions grow by one with when/source/kind/description/author, oldest first."""
        await cm.set_config("a", 1, ConfigSource.FILE, description="first")
        await cm.delete_config("a", author="ops@host")
        versions = await cm.list_versions()
        assert [v["version"] for v in versions] == [1, 2]
        assert versions[0]["source"] == "file"
        assert versions[0]["description"] == "first"
        assert versions[1]["kind"] == "delete"
        assert versions[1]["author"] == "ops@host"
        assert versions[0]["timestamp"] == pytest.approx(FakeClock().time())
        assert len({v["version_id"] for v in versions}) == 2

    async def test_rollback_restores_exactly_as_new_version(self, cm: ConfigurationManager) -> None:
        """Rollback brings back that snapshot exactly (keys added since removed)."""
        await cm.bulk_update({"a": 1, "b": 2})
        snap = await cm.create_version_snapshot("good")
        await cm.set_config("a", 99)
        await cm.set_config("added", True)
        await cm.delete_config("b")
        assert await cm.rollback_to_version(snap) is True
        assert await cm.get_all_config() == {"a": 1, "b": 2}
        last = (await cm.list_versions())[-1]
        assert last["kind"] == "rollback"
        assert last["restored_id"] == snap
        assert last["version"] == 6

    async def test_diff_between_versions(self, cm: ConfigurationManager) -> None:
        """diff() shows added, removed and changed keys between two versions."""
        await cm.bulk_update({"a": 1, "b": 2})
        v1 = cm.version_id
        await cm.bulk_update({"a": 5, "c": 3}, delete=["b"])
        assert v1 is not None
        assert cm.version_id is not None
        d = await cm.diff_versions(v1, cm.version_id)
        assert d.as_dict() == {
            "added": {"c": 3},
            "removed": {"b": 2},
            "changed": {"a": {"old": 1, "new": 5}},
        }
        assert await cm.get_version_config(v1) == {"a": 1, "b": 2}

    async def test_history_is_bounded_and_trimmed_versions_are_unknown(
        self, make: Callable[..., ConfigurationManager]
    ) -> None:
        """Only max_versions are kept; rolling back to a trimmed one is a clear error."""
        cm = make(max_versions=3)
        await cm.initialize()
        first = await cm.create_version_snapshot("first")
        for i in range(5):
            await cm.set_config("k", i)
        assert len(await cm.list_versions()) == 3
        assert [v["version"] for v in await cm.list_versions(limit=2)] == [5, 6]
        with pytest.raises(ValidationError, match=first):
            await cm.rollback_to_version(first)
        await cm.shutdown()

    async def test_ids_are_never_reused_after_restart(
        self, make: Callable[..., ConfigurationManager], tmp_path: Path
    ) -> None:
        """Snapshot ids stay unique across a restart (and a fresh store)."""
        ids: set[str] = set()
        for _ in range(3):
            cm = make()
            await cm.initialize()
            for _ in range(12):
                ids.add(await cm.create_version_snapshot())
            await cm.shutdown()
        fresh = make(last_known_good=tmp_path / "other.json")
        await fresh.initialize()
        for _ in range(12):
            ids.add(await fresh.create_version_snapshot())
        await fresh.shutdown()
        assert len(ids) == 48


# ------------------------------------------------------------------ callbacks --


class TestCallbacks:
    async def test_key_global_and_prefix_callbacks_fire_once(
        self, cm: ConfigurationManager
    ) -> None:
        """cb(key, new, old): per key, per prefix and global, each once per change."""
        per_key: list[Any] = []
        prefix: list[Any] = []
        glob: list[Any] = []
        cm.add_change_callback("depth", lambda k, n, o: per_key.append((k, n, o)))
        cm.add_change_callback("cb", lambda k, n, o: prefix.append((k, n, o)))
        cm.add_global_change_callback(lambda k, n, o: glob.append(k))
        await cm.set_config("depth", 4)
        await cm.set_config("depth", 5)
        await cm.set_config("cb.timeout", 9)
        assert per_key == [("depth", 4, None), ("depth", 5, 4)]
        assert prefix == [("cb.timeout", 9, None)]
        assert glob == ["depth", "depth", "cb.timeout"]

    async def test_failing_callback_is_isolated(
        self, cm: ConfigurationManager, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A raising callback is logged; the change applies and other callbacks run."""
        seen: list[Any] = []

        def broken(k: str, n: Any, o: Any) -> None:
            raise RuntimeError("boom")

        async def later(k: str, n: Any, o: Any) -> None:
            seen.append(n)

        cm.add_global_change_callback(broken)
        cm.add_change_callback("x", later)
        with caplog.at_level(logging.ERROR, logger="backend_services"):
            assert await cm.set_config("x", 1) is True
        assert seen == [1]
        assert await cm.get_config("x") == 1
        assert cm.get_metrics()["callback_errors"] == 1
        assert any(r.getMessage() == "config_callback_failed" for r in caplog.records)

    async def test_callback_may_change_configuration(self, cm: ConfigurationManager) -> None:
        """A callback that writes configuration does not deadlock; its change fires too."""
        seen: list[str] = []

        async def follow(k: str, n: Any, o: Any) -> None:
            seen.append(k)
            if k == "a":
                await cm.set_config("b", n)

        cm.add_global_change_callback(follow)
        await cm.set_config("a", 1)
        await cm.drain()
        assert seen == ["a", "b"]
        assert await cm.get_config("b") == 1

    async def test_listener_receives_event_with_version(self, cm: ConfigurationManager) -> None:
        """Listeners get one event per change carrying its version record."""
        events: list[Any] = []
        remove = cm.add_listener(events.append)
        await cm.bulk_update({"a": 1, "b": 2}, description="two")
        remove()
        await cm.set_config("c", 3)
        assert len(events) == 1
        assert events[0].version.version == 1
        assert events[0].description == "two"
        assert [c.key for c in events[0].changes] == ["a", "b"]

    async def test_remote_change_fires_callbacks_once(
        self, pair: tuple[ConfigurationManager, ConfigurationManager]
    ) -> None:
        """A change made through another manager on the same store fires here once."""
        a, b = pair
        seen: list[Any] = []
        b.add_change_callback("depth", lambda k, n, o: seen.append(n))
        await a.set_config("depth", 7)
        await _settle()
        await b.resync()  # a duplicate delivery must not fire it again
        await _settle()
        assert seen == [7]
        assert await b.get_config("depth") == 7
        await a.rollback_to_version(1)
        await _settle()
        assert b.version == 2


# ------------------------------------------------------------------ file watch --


class TestFileWatch:
    async def test_file_change_applies_after_debounce(
        self, make: Callable[..., ConfigurationManager], tmp_path: Path, clock: FakeClock
    ) -> None:
        """A file edit is applied once it settled for the debounce time, with callbacks."""
        cfg = tmp_path / "config.json"
        _write(cfg, SPEC_FILE)
        cm = make(config_file=cfg, watch_interval=1.0, watch_debounce=2.0)
        await cm.initialize()
        seen: list[Any] = []
        cm.add_change_callback("circuit_breaker", lambda k, n, o: seen.append((k, n, o)))
        _write(cfg, {**SPEC_FILE, "circuit_breaker": {"default_timeout": 30}})
        await clock.advance(1.0)
        assert await cm.get_config("circuit_breaker.default_timeout") == 60  # not settled
        await clock.advance(1.0)
        assert await cm.get_config("circuit_breaker.default_timeout") == 60
        await clock.advance(1.0)
        assert await cm.get_config("circuit_breaker.default_timeout") == 30
        assert await cm.get_config("circuit_breaker.default_failure_threshold") is None
        assert ("circuit_breaker.default_timeout", 30, 60) in seen
        assert cm.metrics["file_reloads"] == 1
        await cm.shutdown()

    async def test_invalid_file_is_rejected_and_current_stays(
        self, make: Callable[..., ConfigurationManager], tmp_path: Path, clock: FakeClock
    ) -> None:
        """A broken or invalid new file is rejected; the current values stay in force."""
        cfg = tmp_path / "config.yaml"
        _write(cfg, "timeout: 5\n")
        cm = make(config_file=cfg, watch_interval=1.0, watch_debounce=0.0)
        cm.add_validator("timeout", lambda v: v > 0)
        await cm.initialize()
        _write(cfg, "timeout: [unclosed\n")
        await clock.advance(1.0)
        assert await cm.get_config("timeout") == 5
        _write(cfg, "timeout: -1\n")
        await clock.advance(1.0)
        assert await cm.get_config("timeout") == 5
        assert cm.metrics["file_rejections"] == 2
        _write(cfg, "timeout: 7\n")
        await clock.advance(1.0)
        assert await cm.get_config("timeout") == 7
        await cm.shutdown()

    async def test_missing_file_warns_and_is_loaded_when_it_appears(
        self,
        make: Callable[..., ConfigurationManager],
        tmp_path: Path,
        clock: FakeClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A missing config_file is a warning; the file is picked up when it appears."""
        cfg = tmp_path / "later.json"
        cm = make(config_file=cfg, watch_interval=1.0, watch_debounce=0.5)
        with caplog.at_level(logging.WARNING, logger="backend_services"):
            await cm.initialize()
        assert any(r.getMessage() == "config_file_missing" for r in caplog.records)
        _write(cfg, {"late": True})
        await clock.advance(1.0)
        await clock.advance(1.0)
        assert await cm.get_config("late") is True
        await cm.shutdown()

    async def test_invalid_file_at_start_without_fallback_raises(
        self, make: Callable[..., ConfigurationManager], tmp_path: Path
    ) -> None:
        """With no last-known-good copy, an invalid file fails initialize clearly."""
        cfg = tmp_path / "config.json"
        _write(cfg, "{ not json")
        cm = make(config_file=cfg)
        with pytest.raises(ConfigValidationError, match=r"config\.json"):
            await cm.initialize()


# ------------------------------------------------------------ last known good --


class TestLastKnownGood:
    async def test_starts_from_last_known_good_without_file_and_store(
        self, make: Callable[..., ConfigurationManager], tmp_path: Path
    ) -> None:
        """With the file gone and no shared store, a restart has its last valid config."""
        cfg = tmp_path / "config.json"
        _write(cfg, SPEC_FILE)
        first = make(config_file=cfg)
        await first.initialize()
        await first.set_config("membrane_depth", 6)
        await first.shutdown()
        cfg.unlink()
        second = make(config_file=cfg)
        await second.initialize()
        assert await second.get_config("membrane_depth") == 6
        assert await second.get_config("circuit_breaker.default_timeout") == 60
        assert second.version == 1
        assert (await second.get_config_summary())["file"]["loaded_from"] == "last_known_good"
        await second.shutdown()

    async def test_invalid_file_at_start_uses_last_known_good_copy(
        self, make: Callable[..., ConfigurationManager], tmp_path: Path
    ) -> None:
        """An invalid file at start is rejected in favour of its last valid contents."""
        cfg = tmp_path / "config.json"
        _write(cfg, {"timeout": 5})
        first = make(config_file=cfg)
        await first.initialize()
        await first.shutdown()
        _write(cfg, "{ broken")
        second = make(config_file=cfg)
        await second.initialize()
        assert await second.get_config("timeout") == 5
        assert second.metrics["file_rejections"] == 1
        await second.shutdown()

    async def test_corrupt_last_known_good_is_ignored(
        self, make: Callable[..., ConfigurationManager], tmp_path: Path
    ) -> None:
        """A damaged last-known-good file is reported and skipped, never fatal."""
        path = tmp_path / "lkg.json"
        path.write_text("{ nope")
        cm = make(last_known_good=path, defaults={"a": 1})
        await cm.initialize()
        assert await cm.get_config("a") == 1
        await cm.shutdown()
        assert json.loads(path.read_text())["format"].endswith("last_known_good")


# ------------------------------------------------------------------ secrets --


class TestSecrets:
    async def test_secret_is_sealed_everywhere_at_rest(
        self, make: Callable[..., ConfigurationManager], tmp_path: Path, clock: FakeClock
    ) -> None:
        """A secret is plaintext to get_config but sealed in the store, LKG and export."""
        store = MemoryStore(clock=clock)
        lkg = tmp_path / "lkg.json"
        cm = make(
            store=store,
            last_known_good=lkg,
            secret_keys=["db.password"],
            encryption_keys=generate_key(),
        )
        await cm.initialize()
        await cm.set_config("db.password", "hunter2")
        await cm.set_config("api_token", "tok-123", secret=True)
        assert await cm.get_config("db.password") == "hunter2"
        rec = await store.get("config:dtesn-service:entry:db.password")
        assert rec is not None
        assert "hunter2" not in json.dumps(rec.value)
        export = await cm.export_configuration()
        assert "hunter2" not in export
        assert "tok-123" not in export
        assert "hunter2" in await cm.export_configuration(reveal_secrets=True)
        summary = json.dumps(await cm.get_config_summary())
        assert "hunter2" not in summary
        assert "tok-123" not in summary
        assert cm.explain("db.password").value == "***"
        await cm.shutdown()
        assert "hunter2" not in lkg.read_text()
        assert "tok-123" not in lkg.read_text()

    async def test_secrets_never_reach_logs(
        self, make: Callable[..., ConfigurationManager], caplog: pytest.LogCaptureFixture
    ) -> None:
        """Neither a change nor a rejection logs a secret's value."""
        cm = make(secret_keys=["*.password"], encryption_keys=generate_key())
        cm.add_validator("db.password", lambda v: len(v) > 20)

        def chatty(v: str) -> bool:
            if v.startswith("x"):
                raise ValueError(f"{v!r} must not start with x")
            return True

        cm.add_validator("db.password", chatty)
        with caplog.at_level(logging.DEBUG, logger="backend_services"):
            await cm.initialize()
            await cm.set_config("db.password", "a-long-enough-password-x")
            with pytest.raises(ConfigValidationError) as err:
                await cm.set_config("db.password", "short-pw")
            with pytest.raises(ConfigValidationError, match="withheld") as err2:
                await cm.set_config("db.password", "x-long-enough-but-quoted-pw")
        assert "short-pw" not in str(err.value)
        assert "quoted" not in str(err2.value)
        text = " ".join(f"{r.getMessage()} {getattr(r, 'bs_fields', '')}" for r in caplog.records)
        assert "short-pw" not in text
        assert "a-long-enough-password-x" not in text
        assert "quoted" not in text
        await cm.shutdown()

    async def test_secret_looking_names_are_redacted_when_shown(
        self, cm: ConfigurationManager
    ) -> None:
        """Keys named like secrets — the same words the logs mask, authorization headers
        and cookies included — are shown redacted and read back in full."""
        await cm.bulk_update({"http.authorization": "Bearer abc", "session.cookie": "c=1"})
        shown = (await cm.get_config_summary())["config"]
        assert shown["http.authorization"] == shown["session.cookie"] == "***"
        assert cm.explain("session.cookie").value == "***"
        assert await cm.get_config("http.authorization") == "Bearer abc"

    async def test_secret_without_key_is_refused(self, cm: ConfigurationManager) -> None:
        """Marking a value secret with no encryption key names the variable to set."""
        with pytest.raises(ConfigValidationError, match="DTESN_CONFIG_ENCRYPTION_KEYS"):
            await cm.set_config("pw", "x", secret=True)
        assert cm.version == 0

    async def test_export_import_round_trip_with_secrets(
        self, make: Callable[..., ConfigurationManager], tmp_path: Path
    ) -> None:
        """export -> import into a fresh manager reproduces values, secrets included."""
        key = generate_key()
        src = make(encryption_keys=key, secret_keys=["pw"])
        await src.initialize()
        await src.bulk_update({"pw": "s3cret", "depth": 6, "cb": {"timeout": 5}})
        for fmt in ("json", "yaml"):
            text = await src.export_configuration(fmt)
            dst = make(
                service="copy", encryption_keys=key, last_known_good=tmp_path / f"copy-{fmt}.json"
            )
            await dst.initialize()
            assert await dst.import_configuration(text, fmt) is True
            assert await dst.get_all_config() == await src.get_all_config()
            entry = await dst.get_config_entry("pw")
            assert entry is not None
            assert entry.secret
            assert "import of dtesn-service v1" in (await dst.list_versions())[-1]["description"]
            await dst.shutdown()
        await src.shutdown()

    async def test_rotation_reseals_with_newest_key(
        self, make: Callable[..., ConfigurationManager], tmp_path: Path, clock: FakeClock
    ) -> None:
        """After a new key is put first, rotate_encryption re-seals; the old key is not needed."""
        old, new = generate_key(), generate_key()
        store = MemoryStore(clock=clock)
        a = make(store=store, encryption_keys=old, secret_keys=["pw"], last_known_good=None)
        await a.initialize()
        await a.set_config("pw", "v1")
        await a.shutdown()
        b = make(store=store, encryption_keys=f"{new},{old}", last_known_good=None)
        await b.initialize()
        assert await b.get_config("pw") == "v1"
        assert await b.rotate_encryption() == 1
        await b.shutdown()
        c = make(store=store, encryption_keys=new, last_known_good=None)
        await c.initialize()
        assert await c.get_config("pw") == "v1"
        await c.shutdown()


# ------------------------------------------------------------------ import --


class TestImport:
    async def test_invalid_import_applies_nothing(self, cm: ConfigurationManager) -> None:
        """An import with one invalid value is refused whole."""
        cm.add_validator("depth", lambda v: v < 10)
        await cm.set_config("keep", 1)
        doc = {
            "format": "backend_services.config",
            "entries": {"a": {"value": 1}, "depth": {"value": 50}},
        }
        with pytest.raises(ConfigValidationError, match="depth=50"):
            await cm.import_configuration(json.dumps(doc))
        assert await cm.get_all_config() == {"keep": 1}

    async def test_plain_yaml_import_and_replace(self, cm: ConfigurationManager) -> None:
        """A plain YAML document imports as one version; replace=True drops other keys."""
        await cm.set_config("old", 1)
        await cm.import_configuration("cb:\n  timeout: 5\n", "yaml", replace=True)
        assert await cm.get_all_config() == {"cb.timeout": 5}
        assert cm.version == 2


# ------------------------------------------------------------------ lifecycle --


class TestLifecycle:
    async def test_write_before_initialize_is_a_lifecycle_error(
        self, make: Callable[..., ConfigurationManager]
    ) -> None:
        """Changing configuration before initialize() says what to do."""
        cm = make()
        with pytest.raises(LifecycleError, match="initialize"):
            await cm.set_config("a", 1)

    async def test_async_with_and_no_tasks_left(
        self, make: Callable[..., ConfigurationManager], tmp_path: Path
    ) -> None:
        """async with initializes and shuts down; no background task is left behind."""
        cfg = tmp_path / "c.json"
        _write(cfg, {"a": 1})
        before = asyncio.all_tasks()
        async with make(config_file=cfg) as cm:
            await cm.set_config("b", 2)
            assert len(asyncio.all_tasks() - before) >= 3
        await _settle()
        assert asyncio.all_tasks() - before == set()
        assert cm.closed
        assert await cm.get_config("b") == 2
        with pytest.raises(LifecycleError):
            await cm.initialize()

    async def test_shared_instance(self, tmp_path: Path, clock: FakeClock) -> None:
        """get_config_manager shares one instance per name; other arguments are an error."""
        kwargs: dict[str, Any] = {
            "redis_url": None,
            "clock": clock,
            "last_known_good": tmp_path / "s.json",
        }
        first = get_config_manager("shared-svc", **kwargs)
        assert get_config_manager("shared-svc") is first
        assert get_config_manager("shared-svc", **kwargs) is first
        with pytest.raises(ValidationError, match="shared manager"):
            get_config_manager("shared-svc", redis_url=None)
        await first.initialize()
        await first.shutdown()
        second = get_config_manager("shared-svc", **kwargs)
        assert second is not first
        assert get_config_manager().service_name == "backend-services"

    async def test_summary_and_metrics(self, cm: ConfigurationManager) -> None:
        """The summary counts keys by source and names the version; metrics count changes."""
        await cm.set_config("a", 1)
        summary = await cm.get_config_summary()
        assert summary["service_name"] == "dtesn-service"
        assert summary["version"] == 1
        assert summary["sources"] == {"api": 1}
        assert summary["config"] == {"a": 1}
        assert cm.get_metrics()["changes_committed"] == 1
