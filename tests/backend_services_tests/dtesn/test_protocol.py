"""Request bodies, configuration values and fault updates, validated without a server."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend_services.dtesn.faults import FaultState, apply_fault_update
from backend_services.dtesn.protocol import (
    PayloadTooLargeError,
    parse_process_request,
    validate_membrane_config,
)
from backend_services.errors import ValidationError

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


class TestProcessRequest:
    @given(st.lists(st.lists(finite, min_size=3, max_size=3), min_size=1, max_size=20))
    def test_every_well_formed_body_is_accepted_unchanged(self, rows: list[list[float]]):
        """Any non-empty list of finite 3-vectors parses to exactly that array."""
        parsed = parse_process_request({"inputs": rows}, input_dim=3, max_depth=4)
        assert np.array_equal(parsed.inputs, np.asarray(rows))
        assert (parsed.depth, parsed.debug, parsed.request_id) == (None, False, None)

    @given(
        st.lists(st.lists(finite, min_size=3, max_size=3), min_size=1, max_size=5),
        st.integers(0, 14),
        st.sampled_from([math.nan, math.inf, -math.inf, "1", None, True, [1]]),
    )
    def test_any_bad_number_is_named_by_position(
        self, rows: list[list[float]], where: int, bad: Any
    ):
        """A non-finite or non-numeric entry is rejected, naming inputs[i][j]."""
        i, j = divmod(where % (3 * len(rows)), 3)
        rows[i][j] = bad
        with pytest.raises(ValidationError) as info:
            parse_process_request({"inputs": rows}, input_dim=3, max_depth=4)
        assert info.value.field == f"inputs[{i}][{j}]"

    def test_too_many_steps_is_payload_too_large(self):
        """More vectors than max_steps is a PayloadTooLargeError (HTTP 413)."""
        with pytest.raises(PayloadTooLargeError, match="at most 2 vectors"):
            parse_process_request({"inputs": [[0.0]] * 3}, input_dim=1, max_steps=2, max_depth=1)


class TestConfigValues:
    @pytest.mark.parametrize(
        ("key", "value", "ok"),
        [
            ("membrane_depth", 1, True),
            ("membrane_depth", 4, True),
            ("membrane_depth", 5, False),
            ("membrane_depth", True, False),
            ("membrane_depth", 2.0, False),
            ("processing_timeout", 0.5, True),
            ("processing_timeout", 0, False),
            ("processing_timeout", "5", False),
            ("colour", 1, False),
        ],
    )
    def test_values_are_checked_against_the_reservoir(self, key: str, value: Any, ok: bool):
        """Depth must fit the reservoir; the timeout must be positive seconds; keys known."""
        if ok:
            assert validate_membrane_config(key, value, 4) == value
        else:
            with pytest.raises(ValidationError):
                validate_membrane_config(key, value, 4)


class TestFaultUpdates:
    def test_updates_combine_and_clear_resets(self):
        """Updates add to the faults in force; clear switches all off first."""
        state = apply_fault_update(FaultState(), {"slow": 0.2})
        state = apply_fault_update(state, {"error_rate": 0.5})
        assert (state.slow, state.error_rate) == (0.2, 0.5)
        assert state.active
        state = apply_fault_update(state, {"clear": True, "pressure": 0.9})
        assert state == FaultState(pressure=0.9)

    def test_a_bad_field_changes_nothing(self):
        """One invalid field rejects the whole update."""
        before = FaultState(slow=1.0)
        with pytest.raises(ValidationError, match="error_rate"):
            apply_fault_update(before, {"slow": 2.0, "error_rate": 7})
        assert before == FaultState(slow=1.0)
