"""The transition table: where each trigger leads from each state."""

from __future__ import annotations

import pytest

from backend_services.breaker.state import TRANSITIONS, CircuitState, Trigger, next_state

C, OP, H = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
AUTOMATIC = [t for t in Trigger if t not in (Trigger.MANUAL, Trigger.REMOTE)]


class TestValues:
    def test_states_are_lower_case_strings(self) -> None:
        """Enum values are the strings get_metrics() reports."""
        assert [s.value for s in CircuitState] == [
            "closed",
            "open",
            "half_open",
            "disabled",
            "forced_open",
            "metrics_only",
        ]
        assert CircuitState.HALF_OPEN == "half_open"


class TestAutomaticTriggers:
    @pytest.mark.parametrize(
        ("state", "trigger", "expected"),
        [
            (C, Trigger.FAILURE_THRESHOLD, OP),
            (C, Trigger.FAILURE_RATE, OP),
            (C, Trigger.SLOW_CALL_RATE, OP),
            (C, Trigger.RETRY_AFTER, OP),
            (OP, Trigger.OPEN_ELAPSED, H),
            (H, Trigger.TRIAL_SUCCESS, C),
            (H, Trigger.TRIAL_FAILURE, OP),
            (H, Trigger.TRIAL_EXPIRED, OP),
            (H, Trigger.RETRY_AFTER, OP),
        ],
    )
    def test_listed_transitions(
        self, state: CircuitState, trigger: Trigger, expected: CircuitState
    ) -> None:
        """Each row of the table leads where the module docstring says."""
        assert next_state(state, trigger) is expected

    def test_everything_else_changes_nothing(self) -> None:
        """A trigger outside the table (e.g. a failure while open) changes nothing."""
        for state in CircuitState:
            for trigger in AUTOMATIC:
                if (state, trigger) not in TRANSITIONS:
                    assert next_state(state, trigger) is None, (state, trigger)

    def test_special_states_never_move_by_themselves(self) -> None:
        """DISABLED, FORCED_OPEN and METRICS_ONLY have no automatic transition."""
        for state in (CircuitState.DISABLED, CircuitState.FORCED_OPEN, CircuitState.METRICS_ONLY):
            assert all(next_state(state, t) is None for t in AUTOMATIC)


class TestTargetedTriggers:
    def test_manual_moves_anywhere(self) -> None:
        """A manual trigger moves from any state to any other."""
        for a in CircuitState:
            for b in CircuitState:
                expected = None if (a is b and b is not OP) else b
                assert next_state(a, Trigger.MANUAL, b) is expected

    def test_remote_open_restarts(self) -> None:
        """Open -> open by remote/manual is a transition (the open period restarts)."""
        assert next_state(OP, Trigger.REMOTE, OP) is OP

    def test_target_required(self) -> None:
        """A manual trigger without a target is a programming error."""
        with pytest.raises(ValueError, match="target"):
            next_state(C, Trigger.MANUAL)
