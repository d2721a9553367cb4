"""The one exception hierarchy of backend_services.

::

    BackendServicesError
    ├── ValidationError (also ValueError) ......... bad input: names field, value, expectation
    │   ├── SettingsError ......................... a malformed environment variable / file value
    │   └── ConfigValidationError ................. a configuration value failed validation
    ├── AuthorizationError (also PermissionError) . missing or wrong credentials
    ├── StoreError ................................ shared-state store problems
    │   ├── StoreUnavailableError ................. the server cannot be reached right now
    │   ├── StoreConfigurationError (also ValueError) . wrong password / ACL / untrusted TLS
    │   └── ConflictError ......................... a compare-and-set saw another version
    ├── CircuitBreakerException ................... a call was not permitted by a breaker
    ├── ServiceUnavailableError ................... no endpoint could serve a request
    ├── RequestShedError .......................... admission control rejected work
    └── LifecycleError (also RuntimeError) ........ used before ``initialize()`` / after close

Every message says what was wrong, with which value, and what was expected. Every class
pickles (errors may cross process boundaries) with its attributes intact.
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

    def __reduce__(self) -> tuple[Any, ...]:
        # The default rebuilds with ``cls(*self.args)``, which breaks for subclasses whose
        # ``__init__`` takes other arguments than the message: restore without __init__.
        return (_restore, (type(self), self.args), self.__dict__)


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
    They are kept in ``args`` (so the exception pickles) and the message is built only
    when shown: a breaker rejecting calls creates these cheaply.
    """

    def __init__(
        self,
        circuit_name: str,
        state: Any,
        retry_after: float | None = None,
        message: str | None = None,
    ):
        super().__init__(circuit_name, state, retry_after, message)

    @property
    def circuit_name(self) -> str:
        return self.args[0]  # type: ignore[no-any-return]

    @property
    def state(self) -> Any:
        return self.args[1]

    @property
    def retry_after(self) -> float | None:
        return self.args[2] if len(self.args) > 2 else None

    def __str__(self) -> str:
        message = self.args[3] if len(self.args) > 3 else None
        if message is not None:
            return str(message)
        state_text = getattr(self.state, "value", self.state)
        text = f"circuit {self.circuit_name!r} is {state_text}; call not permitted"
        if self.retry_after is not None:
            text += f"; next trial in {max(0.0, self.retry_after):.3f}s"
        return text


class ServiceUnavailableError(BackendServicesError):
    """No endpoint of a service could serve the request (and no fallback was given)."""


class RequestShedError(BackendServicesError):
    """Admission control rejected work before it started; retry after ``retry_after`` s."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(message)


class LifecycleError(BackendServicesError, RuntimeError):
    """A component was used in the wrong lifecycle phase (e.g. after ``shutdown()``)."""


def _restore(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """Unpickle an error: create it without calling ``__init__``; pickle then restores
    its attributes (``__dict__``)."""
    error = cls.__new__(cls)
    error.args = args
    return error


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
