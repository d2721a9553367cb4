"""Environment overrides (<SERVICE>__<KEY>, the spec's DTESN_* variables) and file parsing."""

from __future__ import annotations

import pytest

from backend_services.config.sources import (
    env_prefix,
    env_var_for,
    parse_document,
    read_environment,
)
from backend_services.config.validation import Limits
from backend_services.errors import ConfigValidationError, SettingsError


class TestNaming:
    def test_api_md_example(self) -> None:
        """dtesn-service + membrane_depth -> DTESN_SERVICE__MEMBRANE_DEPTH."""
        assert env_var_for("dtesn-service", "membrane_depth") == "DTESN_SERVICE__MEMBRANE_DEPTH"

    def test_dots_become_double_underscores(self) -> None:
        """Nested keys use __ for the dots."""
        assert (
            env_var_for("svc.v2", "circuit_breaker.default_timeout")
            == "SVC_V2__CIRCUIT_BREAKER__DEFAULT_TIMEOUT"
        )
        assert env_prefix("a b") == "A_B__"


class TestReadEnvironment:
    def test_values_parse_as_json_else_string(self) -> None:
        """Numbers, lists and objects parse as JSON; other text stays a string."""
        env = {
            "DTESN_SERVICE__MEMBRANE_DEPTH": "6",
            "DTESN_SERVICE__NAME": "reservoir one",
            "DTESN_SERVICE__LIST": "[1, 2]",
            "DTESN_SERVICE__CB": '{"timeout": 5}',
            "DTESN_SERVICE__NAN": "NaN",
            "OTHER__X": "1",
        }
        values, origin = read_environment("dtesn-service", env, Limits(), spec_variables=False)
        assert values == {
            "membrane_depth": 6,
            "name": "reservoir one",
            "list": [1, 2],
            "cb.timeout": 5,
            "nan": "NaN",
        }
        assert origin["cb.timeout"] == "DTESN_SERVICE__CB"

    @pytest.mark.parametrize(
        ("var", "value"),
        [
            ("DTESN_SERVICE__BROKEN", "[1, 2"),
            ("DTESN_SERVICE__BROKEN", '{"a": }'),
            ("DTESN_SERVICE__", "1"),
            ("DTESN_SERVICE__A____B", "1"),
        ],
    )
    def test_malformed_values_name_the_variable(self, var: str, value: str) -> None:
        """Text that starts like JSON but is not, or a bad name, is an error naming it."""
        with pytest.raises(SettingsError, match=var):
            read_environment("dtesn-service", {var: value}, Limits())

    def test_spec_variables_override_their_file_keys(self) -> None:
        """DTESN_CB_TIMEOUT etc. land on the spec JSON's keys, parsed and checked."""
        env = {"DTESN_CB_TIMEOUT": "30", "DTESN_DEGRADATION_CPU_THRESHOLD": "0.8"}
        values, origin = read_environment("svc", env, Limits())
        assert values == {
            "circuit_breaker.default_timeout": 30.0,
            "degradation.thresholds.cpu.minimal": 0.8,
        }
        assert origin["circuit_breaker.default_timeout"] == "DTESN_CB_TIMEOUT"

    def test_malformed_spec_variable_is_a_clear_error(self) -> None:
        """A spec variable with a bad value names itself."""
        with pytest.raises(SettingsError, match="DTESN_CB_TIMEOUT"):
            read_environment("svc", {"DTESN_CB_TIMEOUT": "soon"}, Limits())


class TestDocuments:
    def test_json_is_flattened(self) -> None:
        """Nested objects read as dotted keys."""
        flat = parse_document('{"circuit_breaker": {"default_timeout": 60}, "x": []}', "c.json")
        assert flat == {"circuit_breaker.default_timeout": 60, "x": []}

    def test_yaml_by_extension(self) -> None:
        """A .yaml file is parsed as YAML."""
        assert parse_document("a:\n  b: 1\n", "c.yaml") == {"a.b": 1}

    @pytest.mark.parametrize(
        ("text", "name"), [("{", "c.json"), ("[1]", "c.json"), ("a: [", "c.yml")]
    )
    def test_invalid_documents_name_the_file(self, text: str, name: str) -> None:
        """Syntax errors and non-object documents name the file."""
        with pytest.raises(ConfigValidationError, match=name.replace(".", r"\.")):
            parse_document(text, name)

    def test_empty_document_is_empty(self) -> None:
        """An empty YAML file is an empty configuration."""
        assert parse_document("", "c.yaml") == {}
