"""The exception hierarchy: its shape, its drawing, its messages, and pickling."""

from __future__ import annotations

import copy
import enum
import pickle
import re

import pytest

from backend_services import errors
from backend_services.errors import (
    AuthorizationError,
    BackendServicesError,
    CircuitBreakerException,
    ConfigValidationError,
    ConflictError,
    LifecycleError,
    RequestShedError,
    ServiceUnavailableError,
    SettingsError,
    StoreConfigurationError,
    StoreError,
    StoreUnavailableError,
    ValidationError,
)


class _State(enum.Enum):
    OPEN = "open"
    HALF_OPEN = "half_open"


def _drawn_tree() -> dict[str, tuple[str | None, list[str]]]:
    """class name -> (parent drawn above it, names in its "(also ...)" note)."""
    doc = errors.__doc__ or ""
    lines = doc.split("::", 1)[1].strip("\n").splitlines()
    drawn: dict[str, tuple[str | None, list[str]]] = {}
    stack: list[str] = []
    for line in lines:
        if not line.strip():
            break
        body = line[4:]  # the literal block is indented by four spaces
        match = re.match(r"^([│ ]   |[├└]── )*", body)
        assert match is not None
        depth = len(match.group(0)) // 4
        name = body[match.end() :].split()[0]
        also = re.search(r"\(also ([\w, ]+)\)", body)
        del stack[depth:]
        drawn[name] = (stack[-1] if stack else None, also.group(1).split(", ") if also else [])
        stack.append(name)
    return drawn


# --- the hierarchy -------------------------------------------------------------------


def test_every_public_class_is_a_backend_services_error() -> None:
    """Every name in __all__ is an exception class under the one root."""
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert isinstance(cls, type)
        assert issubclass(cls, BackendServicesError), name


def test_docstring_tree_draws_exactly_the_classes_in_all() -> None:
    """The drawing in the module docstring names every class in __all__ and no other."""
    assert set(_drawn_tree()) == set(errors.__all__)


def test_docstring_tree_matches_the_real_bases() -> None:
    """Each class's bases are the parent drawn above it plus those in its "(also ...)"."""
    builtin = {"ValueError": ValueError, "PermissionError": PermissionError}
    builtin["RuntimeError"] = RuntimeError
    for name, (parent, also) in _drawn_tree().items():
        cls = getattr(errors, name)
        expected = [getattr(errors, parent)] if parent else [Exception]
        expected += [builtin[a] for a in also]
        assert list(cls.__bases__) == expected, name


def test_validation_errors_are_value_errors() -> None:
    """Validation and settings errors can be caught as ValueError (stdlib habit)."""
    for cls in (ValidationError, SettingsError, ConfigValidationError):
        assert issubclass(cls, ValueError)
    with pytest.raises(ValueError, match="port"):
        raise ValidationError("port", 0, "an integer 1-65535")


def test_authorization_error_is_a_permission_error() -> None:
    """Authorization failures can be caught as PermissionError."""
    assert issubclass(AuthorizationError, PermissionError)
    assert not issubclass(AuthorizationError, ValueError)


def test_store_configuration_error_is_not_a_retryable_outage() -> None:
    """A configuration error is a StoreError but not StoreUnavailableError (which callers
    retry), so handlers for outages never swallow a wrong password."""
    assert issubclass(StoreConfigurationError, StoreError)
    assert not issubclass(StoreConfigurationError, StoreUnavailableError)
    assert issubclass(StoreConfigurationError, ValueError)
    caught = "none"
    try:
        raise StoreConfigurationError("WRONGPASS")
    except StoreUnavailableError:  # pragma: no cover - must not match
        caught = "outage"
    except StoreError:
        caught = "store error"
    assert caught == "store error"


def test_lifecycle_error_is_a_runtime_error() -> None:
    """Using a component in the wrong phase can be caught as RuntimeError."""
    assert issubclass(LifecycleError, RuntimeError)
    assert not issubclass(StoreUnavailableError, LifecycleError)


# --- messages ------------------------------------------------------------------------


def test_validation_message_names_field_value_and_expectation() -> None:
    """The message carries the field, the value's repr and what was expected."""
    err = ValidationError("weight", -2.5, "a number > 0")
    assert str(err) == "weight=-2.5: expected a number > 0"
    assert (err.field, err.value, err.expected) == ("weight", -2.5, "a number > 0")


def test_validation_message_quotes_strings_and_shortens_long_values() -> None:
    """String values are quoted; a huge value is cut to keep the message readable."""
    assert "host='': expected" in str(ValidationError("host", "", "a non-empty name"))
    long = ValidationError("metadata", "x" * 1000, "at most 64 KiB")
    assert len(str(long)) < 150
    assert str(long).endswith("...: expected at most 64 KiB")


def test_validation_custom_message_keeps_the_attributes() -> None:
    """A custom message replaces the text but field/value/expected stay available."""
    err = SettingsError("DTESN_CB_TIMEOUT", "x", "a number > 0", message="bad timeout")
    assert str(err) == "bad timeout"
    assert err.field == "DTESN_CB_TIMEOUT"


def test_conflict_message_names_key_and_both_versions() -> None:
    """A conflict says which key, which version was expected and which was found."""
    err = ConflictError("svc:a", 3, 5)
    assert "'svc:a'" in str(err)
    assert "expected version 3" in str(err)
    assert "found 5" in str(err)


def test_circuit_breaker_message_names_circuit_state_and_seconds() -> None:
    """The rejection message names the circuit, its state value and the seconds to wait."""
    err = CircuitBreakerException("payments", _State.OPEN, 12.3456)
    text = str(err)
    assert "'payments'" in text
    assert "open" in text
    assert "_State" not in text
    assert "12.346s" in text
    assert (err.circuit_name, err.state, err.retry_after) == ("payments", _State.OPEN, 12.3456)


def test_circuit_breaker_message_without_retry_after_and_never_negative() -> None:
    """Unknown wait time is left out; a wait already past shows as zero seconds."""
    assert "next trial" not in str(CircuitBreakerException("db", "half_open"))
    assert "in 0.000s" in str(CircuitBreakerException("db", _State.OPEN, -4.0))


def test_request_shed_error_carries_retry_after() -> None:
    """Shed work tells the caller when to come back."""
    err = RequestShedError("overloaded", retry_after=2.5)
    assert err.retry_after == 2.5
    assert str(err) == "overloaded"


# --- pickling ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        BackendServicesError("root"),
        ValidationError("port", 0, "1-65535"),
        SettingsError("DTESN_CB_TIMEOUT", "abc", "a number > 0"),
        ConfigValidationError("depth", -1, "an integer >= 0", message="custom"),
        AuthorizationError("no token"),
        StoreError("boom"),
        StoreUnavailableError("refused"),
        StoreConfigurationError("WRONGPASS"),
        ConflictError("k", 1, 2),
        CircuitBreakerException("payments", _State.OPEN, 3.0),
        ServiceUnavailableError("nobody home"),
        RequestShedError("shed", retry_after=1.0),
        LifecycleError("closed"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_error_pickles_and_copies_with_message_and_attributes(
    error: BackendServicesError,
) -> None:
    """Errors survive pickling (process boundaries) and copying: same type, message and
    attributes."""
    for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(clone) is type(error)
        assert str(clone) == str(error)
        public = {k: v for k, v in vars(error).items() if not k.startswith("_")}
        assert {k: v for k, v in vars(clone).items() if not k.startswith("_")} == public


def test_pickling_covers_every_class_in_all() -> None:
    """The pickling test above lists one instance of every public class."""
    params = test_every_error_pickles_and_copies_with_message_and_attributes
    marks = getattr(params, "pytestmark", [])
    (mark,) = [m for m in marks if m.name == "parametrize"]
    assert {type(e).__name__ for e in mark.args[1]} == set(errors.__all__)
