"""Self-preservation: evictions pause when a large share disappears at once."""

from __future__ import annotations

from backend_services.discovery.preservation import PreservationPolicy, SelfPreservation


def test_large_simultaneous_loss_activates() -> None:
    """Losing half of 10 instances within the window activates self-preservation once."""
    sp = SelfPreservation(PreservationPolicy(threshold=0.5, window=60))
    changes = [sp.record_loss(f"s{i}", 0.0, 10) for i in range(5)]
    assert changes == [None, None, None, None, True]
    assert not sp.evictions_allowed()
    assert sp.activations == 1


def test_spread_out_losses_do_not_activate() -> None:
    """The same losses spread over more than the window never trip it."""
    sp = SelfPreservation(PreservationPolicy(threshold=0.5, window=60))
    for i in range(8):
        sp.record_loss(f"s{i}", i * 61.0, 10)
    assert sp.evictions_allowed()


def test_ends_when_losses_age_out() -> None:
    """After the window passes, the share drops and evictions resume."""
    sp = SelfPreservation(PreservationPolicy(threshold=0.5, window=60))
    for i in range(6):
        sp.record_loss(f"s{i}", 0.0, 10)
    assert sp.update(30.0, 10) is None
    assert sp.update(61.0, 10) is False
    assert sp.evictions_allowed()


def test_small_groups_never_trigger() -> None:
    """Below min_instances, losing everything is not suspicious."""
    sp = SelfPreservation(PreservationPolicy(min_instances=3))
    sp.record_loss("a", 0.0, 2)
    sp.record_loss("b", 0.0, 2)
    assert sp.evictions_allowed()


def test_same_instance_counts_once() -> None:
    """One flapping instance is one loss, not many."""
    sp = SelfPreservation(PreservationPolicy(threshold=0.3))
    for _ in range(10):
        sp.record_loss("a", 0.0, 10)
    assert sp.evictions_allowed()
    assert sp.loss_share(0.0, 10) == 0.1


def test_disabled_policy_never_activates() -> None:
    """enabled=False turns the mechanism off."""
    sp = SelfPreservation(PreservationPolicy(enabled=False))
    for i in range(10):
        sp.record_loss(f"s{i}", 0.0, 10)
    assert sp.evictions_allowed()
