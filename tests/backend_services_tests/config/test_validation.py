"""Validation: structure and size limits, per-key validators, typed schema."""

from __future__ import annotations

import math

import pytest
from pydantic import BaseModel, Field

from backend_services.config.layers import MISSING, Candidate, LayeredConfig
from backend_services.config.model import Entry
from backend_services.config.validation import (
    Limits,
    ValidatorRegistry,
    check_value,
    run_schema,
    run_validators,
)
from backend_services.errors import ConfigValidationError


def _shown(_key: str, value: object) -> object:
    return value


class TestStructure:
    @pytest.mark.parametrize("bad", [math.nan, math.inf, {1: "x"}, object(), {"a": {2}}])
    def test_non_json_values_are_rejected(self, bad: object) -> None:
        """NaN, Infinity, non-string keys and foreign objects are not configuration."""
        with pytest.raises(ConfigValidationError, match="k="):
            check_value("k", bad, Limits())

    def test_size_limit_names_the_key_and_size(self) -> None:
        """A value larger than max_value_bytes is refused with its size."""
        with pytest.raises(ConfigValidationError, match="at most 10 bytes"):
            check_value("big", ["x" * 20], Limits(max_value_bytes=10))

    @pytest.mark.parametrize("key", ["", ".a", "a.", "a..b", "a b", 5])
    def test_malformed_keys_are_rejected(self, key: object) -> None:
        """Keys are non-empty dotted names without whitespace."""
        with pytest.raises(ConfigValidationError):
            check_value(key, 1, Limits())  # type: ignore[arg-type]

    def test_tuples_become_lists(self) -> None:
        """Values are kept in canonical JSON form."""
        assert check_value("k", (1, 2), Limits()) == [1, 2]

    def test_limits_are_validated(self) -> None:
        """A zero limit is a clear error."""
        with pytest.raises(ConfigValidationError, match="max_keys"):
            Limits(max_keys=0)


class TestValidators:
    async def test_false_result_names_key_value_and_validator(self) -> None:
        """A validator returning False rejects with the key, value and its name."""
        reg = ValidatorRegistry()

        def positive(v: int) -> bool:
            return v > 0

        reg.add("depth", positive)
        lc = LayeredConfig()
        cand = Candidate(lc, runtime={"depth": Entry(-1)})
        with pytest.raises(ConfigValidationError, match=r"depth=-1.*positive") as info:
            await run_validators(reg, cand.changed, cand.value, _shown, MISSING)
        assert info.value.field == "depth"
        assert info.value.value == -1

    async def test_async_validator_and_valueerror_reason(self) -> None:
        """An async validator that raises ValueError rejects with its reason."""
        reg = ValidatorRegistry()

        async def check(v: int) -> bool:
            raise ValueError("must be even")

        reg.add("n", check)
        cand = Candidate(LayeredConfig(), runtime={"n": Entry(3)})
        with pytest.raises(ConfigValidationError, match="must be even"):
            await run_validators(reg, cand.changed, cand.value, _shown, MISSING)

    async def test_prefix_validator_sees_the_subtree(self) -> None:
        """A validator for a prefix receives the dict below it after the change."""
        reg = ValidatorRegistry()
        seen: list[object] = []
        reg.add("cb", lambda v: seen.append(v) or True)
        cand = Candidate(LayeredConfig(), runtime={"cb.timeout": Entry(5)})
        await run_validators(reg, cand.changed, cand.value, _shown, MISSING)
        assert seen == [{"timeout": 5}]

    async def test_unset_key_skips_its_validator(self) -> None:
        """Removing a key does not call its validator with a missing value."""
        reg = ValidatorRegistry()
        reg.add("x", lambda v: False)
        cand = Candidate(LayeredConfig(), runtime={"x": None})
        await run_validators(reg, cand.changed, cand.value, _shown, MISSING)

    def test_non_callable_validator_is_refused(self) -> None:
        """add() checks it was given a callable."""
        with pytest.raises(ConfigValidationError, match="validator"):
            ValidatorRegistry().add("x", 5)  # type: ignore[arg-type]


class _Breaker(BaseModel):
    default_timeout: float = Field(gt=0)


class _Schema(BaseModel):
    membrane_depth: int = Field(ge=1, le=16, default=4)
    circuit_breaker: _Breaker | None = None


class TestSchema:
    def test_pydantic_error_maps_to_key(self) -> None:
        """A pydantic failure names the dotted key, the value and the message."""
        with pytest.raises(ConfigValidationError, match=r"circuit_breaker\.default_timeout=-1"):
            run_schema(_Schema, {"circuit_breaker": {"default_timeout": -1}}, _shown)

    def test_valid_document_passes(self) -> None:
        """A document matching the schema is accepted."""
        run_schema(_Schema, {"membrane_depth": 6}, _shown)

    def test_plain_callable_schema(self) -> None:
        """A callable that raises ValueError works as a schema too."""

        def schema(doc: dict[str, object]) -> None:
            if "required" not in doc:
                raise ValueError("'required' is missing")

        with pytest.raises(ConfigValidationError, match="required"):
            run_schema(schema, {}, _shown)
