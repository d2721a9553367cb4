"""The local cache: per-type index, cached healthy lists, feed ordering, resync diffs."""

from __future__ import annotations

from backend_services.discovery.model import (
    ServiceEndpoint,
    ServiceHealth,
    ServiceStatus,
    ServiceType,
)
from backend_services.discovery.registry_view import RegistryView

S = ServiceStatus
M, C = ServiceType.DTESN_MEMBRANE, ServiceType.CACHE_SERVICE


def _ep(sid: str, t: ServiceType = M, port: int = 80) -> ServiceEndpoint:
    return ServiceEndpoint(sid, t, "10.0.0.1", port)


def _h(sid: str, status: ServiceStatus = S.HEALTHY) -> ServiceHealth:
    return ServiceHealth(sid, status)


def test_healthy_lists_by_type() -> None:
    """healthy(type) holds only healthy instances of that type; None gives all types."""
    view = RegistryView()
    view.upsert(_ep("m1"), _h("m1"))
    view.upsert(_ep("m2"), _h("m2", S.STARTING))
    view.upsert(_ep("c1", C), _h("c1"))
    assert [e.service_id for e in view.healthy(M)] == ["m1"]
    assert [e.service_id for e in view.healthy(C)] == ["c1"]
    assert {e.service_id for e in view.healthy(None)} == {"m1", "c1"}
    assert view.healthy_count == 2
    assert view.count(M) == 2


def test_returned_lists_are_copies() -> None:
    """Mutating a returned list does not change the cache."""
    view = RegistryView()
    view.upsert(_ep("m1"), _h("m1"))
    got = view.healthy(M)
    got.clear()
    assert len(view.healthy(M)) == 1


def test_changes_to_one_type_keep_other_types_cached() -> None:
    """A change of a cache instance rebuilds nothing for membranes (same list object)."""
    view = RegistryView()
    view.upsert(_ep("m1"), _h("m1"))
    cached = view.healthy_view(M)
    view.upsert(_ep("c1", C), _h("c1"))
    view.set_health(_h("c1", S.UNHEALTHY))
    assert view.healthy_view(M) is cached
    view.set_health(_h("m1", S.UNHEALTHY))
    assert view.healthy_view(M) == []


def test_status_changes_are_reported() -> None:
    """Each write returns the old and new status (None = absent)."""
    view = RegistryView()
    change = view.upsert(_ep("a"), _h("a", S.STARTING))
    assert change is not None
    assert (change.old, change.new) == (None, S.STARTING)
    change = view.set_health(_h("a"))
    assert change is not None
    assert (change.old, change.new) == (S.STARTING, S.HEALTHY)
    change = view.remove("a")
    assert change is not None
    assert (change.old, change.new) == (S.HEALTHY, None)
    assert view.remove("a") is None
    assert view.set_health(_h("a")) is None


def test_type_change_moves_the_index_entry() -> None:
    """Re-registering an id with another type moves it between indexes."""
    view = RegistryView()
    view.upsert(_ep("a", M), _h("a"))
    view.upsert(_ep("a", C), _h("a"))
    assert view.healthy(M) == []
    assert [e.service_id for e in view.healthy(C)] == ["a"]


def test_local_writes_are_not_undone_by_older_feed_events() -> None:
    """A local write at position 10 wins over feed events at <= 10 for that id."""
    view = RegistryView()
    view.upsert(_ep("a"), _h("a", S.STARTING), position=5)
    view.set_health(_h("a"), position=10, local=True)
    assert view.set_health(_h("a", S.UNHEALTHY), position=8) is None
    assert view.set_health(_h("a"), position=10) is None
    assert view.status("a") is S.HEALTHY
    change = view.set_health(_h("a", S.UNHEALTHY), position=11)
    assert change is not None
    assert view.status("a") is S.UNHEALTHY


def test_settle_forgets_local_marks() -> None:
    """After the feed passed a local write, marks are dropped."""
    view = RegistryView()
    view.upsert(_ep("a"), _h("a"), position=3, local=True)
    view.settle(3)
    assert view.is_fresh("a", 2)


def test_replace_all_reports_the_difference_and_sets_a_floor() -> None:
    """A resync removes, adds and changes only what differs; older events are ignored."""
    view = RegistryView()
    view.upsert(_ep("a"), _h("a"))
    view.upsert(_ep("b"), _h("b"))
    changes = view.replace_all(
        [(_ep("b"), _h("b", S.UNHEALTHY), None), (_ep("c"), _h("c"), None)], floor=100
    )
    assert {(c.service_id, c.old, c.new) for c in changes} == {
        ("a", S.HEALTHY, None),
        ("b", S.HEALTHY, S.UNHEALTHY),
        ("c", None, S.HEALTHY),
    }
    assert view.upsert(_ep("a"), _h("a"), position=99) is None
    assert view.upsert(_ep("a"), _h("a"), position=101) is not None


def test_unchanged_entries_produce_no_changes_on_resync() -> None:
    """Reloading an identical registry reports nothing."""
    view = RegistryView()
    view.upsert(_ep("a"), _h("a"))
    assert view.replace_all([(_ep("a"), _h("a"), None)]) == []
