"""The one exception hierarchy of backend_services.

::

    BackendServicesError
    ├── ValidationError (also ValueError) ......... bad input: names field, value, expectation
    │   ├── SettingsError ......................... a malformed environment variable / file value
    │   └── ConfigValidationError ................. a configuration value failed validation
    ├── AuthorizationError (also PermissionError) . missing or wrong credentials
    ├── StoreError ................................ shared-state store problems
    │   ├── StoreUnavailableError ................. the server cannot be reached right now
    │   ├── StoreConfigurationError ............... wrong password / ACL / untrusted TLS cert
    │   └── ConflictError ......................... a compare-and-set saw another version
    ├── CircuitBreakerException ................... a call was not permitted by a breaker
    ├── ServiceUnavailableError ................... no endpoint could serve a request
    ├── RequestShedError .......................... admission control rejected work
    └── LifecycleError ............................ used before ``initialize()`` / after close

Every message says what was wrong, with which value, and what was expected.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthorizationError",
    "BackendServicesError",
    "CircuitBreakerException",
    "ConfigValidationError",
    "ConflictError",
    "LifecycleError",
    "RequestShedError",
    "ServiceUnavailableError",
    "SettingsError",
    "StoreConfigurationError",
    "StoreError",
    "StoreUnavailableError",
    "ValidationError",
]


class BackendServicesError(Exception):
    """Root of every error this library raises on purpose."""


class ValidationError(BackendServicesError, ValueError):
    """Invalid input. ``field``, ``value`` and ``expected`` say what and why."""

    def __init__(self, field: str, value: Any, expected: str, *, message: str | None = None):
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(message or f"{field}={_short(value)}: expected {expected}")


class SettingsError(ValidationError):
    """A setting (environment variable or settings-file entry) is malformed."""


class ConfigValidationError(ValidationError):
    """A configuration value was rejected; nothing was applied."""


class AuthorizationError(BackendServicesError, PermissionError):
    """Credentials were missing or wrong."""


class StoreError(BackendServicesError):
    """The shared-state store failed."""


class StoreUnavailableError(StoreError):
    """The store's server cannot be reached now (connection refused, timeout, reset)."""


class StoreConfigurationError(StoreError, ValueError):
    """The store is reachable but refused us: wrong password/ACL, untrusted certificate,
    bad URL. Retrying will not help, so this is raised, never silently retried."""


class ConflictError(StoreError):
    """A compare-and-set write found another version than the one it expected."""

    def __init__(self, key: str, expected: int | None, actual: int | None):
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"conflict on {key!r}: expected version {expected}, found {actual}"
            " (someone else changed it; re-read and retry)"
        )


class CircuitBreakerException(BackendServicesError):
    """Raised when a circuit breaker does not permit a call.

    ``circuit_name`` and ``state`` name the breaker and its state; ``retry_after`` is the
    number of seconds until the next trial call is allowed (``None`` when unknown).
    """

    def __init__(
        self,
        circuit_name: str,
        state: Any,
        retry_after: float | None = None,
        message: str | None = None,
    ):
        self.circuit_name = circuit_name
        self.state = state
        self.retry_after = retry_after
        if message is None:
            state_text = getattr(state, "value", state)
            message = f"circuit {circuit_name!r} is {state_text}; call not permitted"
            if retry_after is not None:
                message += f"; next trial in {max(0.0, retry_after):.3f}s"
        super().__init__(message)


class ServiceUnavailableError(BackendServicesError):
    """No endpoint of a service could serve the request (and no fallback was given)."""


class RequestShedError(BackendServicesError):
    """Admission control rejected work before it started; retry after ``retry_after`` s."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(message)


class LifecycleError(BackendServicesError, RuntimeError):
    """A component was used in the wrong lifecycle phase (e.g. after ``shutdown()``)."""


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
