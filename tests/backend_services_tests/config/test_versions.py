"""Version history: apply, content at a version, diff, rollback plans, trimming, ids."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend_services.config.model import (
    REDACTED,
    ChangeKind,
    ConfigSource,
    ConfigVersion,
    Entry,
    VersionRecord,
)
from backend_services.config.versions import (
    HistoryGapError,
    VersionHistory,
    diff_contents,
    new_version_id,
)
from backend_services.errors import ValidationError


def _commit(
    history: VersionHistory, updates: dict[str, object | None], **meta: object
) -> VersionRecord:
    """Plan ``updates`` on ``history`` and append them as the next version."""
    version = history.version + 1
    entries = {
        k: None if v is None else Entry(v, ConfigSource.API, version, float(version))
        for k, v in updates.items()
    }
    changes = history.plan(entries)
    record = VersionRecord(
        ConfigVersion(
            version=version,
            id=new_version_id(version, 1_700_000_000.0 + version, os.urandom(4)),
            created_at=float(version),
            source=ConfigSource.API,
            kind=ChangeKind.SET,
            keys=tuple(changes),
            parent_id=None if history.head is None else history.head.id,
            **meta,  # type: ignore[arg-type]
        ),
        changes,
    )
    history.apply(record)
    return record


def _values(content: dict[str, Entry]) -> dict[str, object]:
    return {k: e.value for k, e in content.items()}


class TestApplyAndContent:
    def test_versions_grow_and_content_follows(self) -> None:
        """Each applied record bumps the version by one and changes the content."""
        h = VersionHistory()
        _commit(h, {"a": 1})
        _commit(h, {"b": 2})
        _commit(h, {"a": None})
        assert h.version == 3
        assert _values(dict(h.current)) == {"b": 2}

    def test_content_at_rebuilds_old_versions(self) -> None:
        """content_at(v) is exactly the content right after version v."""
        h = VersionHistory()
        r1 = _commit(h, {"a": 1})
        r2 = _commit(h, {"a": 2, "b": [1, 2]})
        _commit(h, {"a": None, "c": {"x": 1}})
        assert _values(h.content_at(r1.id)) == {"a": 1}
        assert _values(h.content_at(r2.version)) == {"a": 2, "b": [1, 2]}

    def test_record_that_skips_a_version_is_refused(self) -> None:
        """A record must follow the head: a gap raises HistoryGapError."""
        h = VersionHistory()
        r1 = _commit(h, {"a": 1})
        other = VersionHistory()
        _commit(other, {"z": 1})
        r2 = _commit(other, {"z": 2})
        with pytest.raises(HistoryGapError):
            h.apply(r2)
        assert h.head == r1.meta

    def test_record_from_another_history_is_refused(self) -> None:
        """A record whose parent is not our head (a fork) is refused."""
        h, other = VersionHistory(), VersionHistory()
        _commit(h, {"a": 1})
        _commit(other, {"a": 1})
        forked = _commit(other, {"a": 2})
        with pytest.raises(HistoryGapError):
            h.apply(forked)

    def test_plan_drops_no_ops(self) -> None:
        """Setting a key to its current value (same type) plans nothing."""
        h = VersionHistory()
        _commit(h, {"a": 1})
        assert h.plan({"a": Entry(1)}) == {}
        assert set(h.plan({"a": Entry(1.0)})) == {"a"}  # 1.0 is not 1: a real change
        assert h.plan({"missing": None}) == {}


class TestDiffAndRollback:
    def test_diff_names_added_removed_changed(self) -> None:
        """diff(a, b) lists keys added, removed and changed between two versions."""
        h = VersionHistory()
        r1 = _commit(h, {"a": 1, "b": 2})
        r2 = _commit(h, {"a": 3, "b": None, "c": 4})
        d = h.diff(r1.id, r2.id)
        assert dict(d.added) == {"c": 4}
        assert dict(d.removed) == {"b": 2}
        assert dict(d.changed) == {"a": (1, 3)}
        assert not h.diff(r2.id, r2.id)

    def test_diff_redacts_secrets(self) -> None:
        """Secret values show as *** in a diff unless revealed."""
        a = {"pw": Entry("old", secret=True, sealed="enc:v1:x:1")}
        b = {"pw": Entry("new", secret=True, sealed="enc:v1:x:2")}
        assert dict(diff_contents(a, b).changed) == {"pw": (REDACTED, REDACTED)}
        assert dict(diff_contents(a, b, reveal=True).changed) == {"pw": ("old", "new")}

    def test_rollback_plan_restores_exactly(self) -> None:
        """Applying a rollback plan gives that version's content; keys added since go."""
        h = VersionHistory()
        r1 = _commit(h, {"a": 1, "b": 2})
        _commit(h, {"a": 5, "new": 1})
        _commit(h, {"b": None})
        plan = h.rollback_plan(r1.id)
        _commit(h, {k: None if e is None else e.value for k, e in plan.items()})
        assert _values(dict(h.current)) == {"a": 1, "b": 2}

    def test_unknown_version_is_a_clear_error(self) -> None:
        """Asking for a version that is not retained names it."""
        h = VersionHistory()
        with pytest.raises(ValidationError, match="nope"):
            h.content_at("nope")


class TestBoundsAndIds:
    def test_history_is_bounded(self) -> None:
        """Only the newest max_versions records are retained, oldest first."""
        h = VersionHistory(max_versions=3)
        for i in range(10):
            _commit(h, {"k": i})
        assert [m.version for m in h.versions()] == [8, 9, 10]
        assert [m.version for m in h.versions(limit=2)] == [9, 10]
        assert h.find(1) is None

    def test_max_versions_must_be_positive(self) -> None:
        """A history of zero versions is refused with the field named."""
        with pytest.raises(ValidationError, match="max_versions"):
            VersionHistory(max_versions=0)

    def test_ids_are_unique_even_for_equal_numbers_and_times(self) -> None:
        """Ids carry random bits: the same number at the same time gives new ids."""
        ids = {new_version_id(1, 1_700_000_000.0, os.urandom(4)) for _ in range(1000)}
        assert len(ids) == 1000
        assert all(i.startswith("v1-") for i in ids)


_values_st = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none())
_step = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d.e", "d.f"]),
    st.one_of(_values_st, st.just("<del>")),
    min_size=1,
    max_size=4,
)


@given(st.lists(_step, min_size=1, max_size=12), st.integers(1, 12))
def test_property_content_at_matches_what_was_there(
    steps: list[dict[str, object]], limit: int
) -> None:
    """For any change sequence, every retained version rebuilds to the content it had."""
    h = VersionHistory(max_versions=limit)
    seen: dict[str, dict[str, object]] = {}
    for step in steps:
        updates = {k: (None if v == "<del>" else v) for k, v in step.items()}
        record = _commit(h, updates)
        seen[record.id] = _values(dict(h.current))
    for meta in h.versions():
        assert _values(h.content_at(meta.id)) == seen[meta.id]
        plan = h.rollback_plan(meta.id)
        after = dict(_values(dict(h.current)))
        for k, e in plan.items():
            if e is None:
                after.pop(k, None)
            else:
                after[k] = e.value
        assert after == seen[meta.id]
