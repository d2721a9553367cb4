"""backend_services: keep a fleet of DTESN services running when parts of it fail."""

from .clock import Clock, SystemClock
from .errors import (
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
from .log import configure_logging
from .settings import UNSET, Settings, load_settings

__version__ = "0.1.0"

__all__ = [
    "UNSET",
    "AuthorizationError",
    "BackendServicesError",
    "CircuitBreakerException",
    "Clock",
    "ConfigValidationError",
    "ConflictError",
    "LifecycleError",
    "RequestShedError",
    "ServiceUnavailableError",
    "Settings",
    "SettingsError",
    "StoreConfigurationError",
    "StoreError",
    "StoreUnavailableError",
    "SystemClock",
    "ValidationError",
    "__version__",
    "configure_logging",
    "load_settings",
]
