"""``CircuitBreakerConfig``: every knob of a breaker, validated when it is created.

Defaults and settings
---------------------
Four fields can come from the environment or the settings file (API.md precedence:
explicit argument > environment variable > settings file > built-in default):

=========================  ===========================================================
field                      environment variable / settings-file key
=========================  ===========================================================
``failure_threshold``      ``DTESN_CB_FAILURE_THRESHOLD`` /
                           ``circuit_breaker.default_failure_threshold``
``timeout``                ``DTESN_CB_TIMEOUT`` / ``circuit_breaker.default_timeout``
``request_timeout``        ``DTESN_CB_REQUEST_TIMEOUT`` / ``circuit_breaker.request_timeout``
``slow_call_threshold``    ``DTESN_CB_SLOW_CALL_THRESHOLD`` /
                           ``circuit_breaker.slow_call_threshold``
=========================  ===========================================================

How the config knows what was explicit: those four parameters default to the sentinel
:data:`~backend_services.settings.UNSET`. Any field left ``UNSET`` is filled, at creation,
from ``settings=`` (a :class:`~backend_services.settings.Settings`), or from
:func:`~backend_services.settings.load_settings` when none is passed, then from the
built-in default. Passing ``settings=Settings()`` ignores the environment and file.
The resulting object holds plain values only (``request_timeout=None`` and
``slow_call_threshold=None`` mean "off"), so two configs compare equal exactly when
they behave the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from ..errors import ValidationError
from ..settings import UNSET, Settings, Unset, load_settings, pick

__all__ = [
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_SLOW_CALL_THRESHOLD",
    "DEFAULT_TIMEOUT",
    "CircuitBreakerConfig",
    "WindowType",
]

DEFAULT_FAILURE_THRESHOLD: Final = 5
DEFAULT_TIMEOUT: Final = 60.0
DEFAULT_REQUEST_TIMEOUT: Final = 30.0
DEFAULT_SLOW_CALL_THRESHOLD: Final = 5.0

ExceptionTypes = tuple[type[BaseException], ...]


class WindowType(StrEnum):
    """How the sliding window is measured: the last N calls, or the last N seconds."""

    COUNT = "count"
    TIME = "time"


@dataclass(frozen=True, slots=True, init=False)
class CircuitBreakerConfig:
    """Configuration of one circuit breaker (keyword arguments; validated on creation).

    Opening: ``failure_threshold`` consecutive failures (0 turns this rule off); or, once
    the window holds at least ``minimum_throughput`` calls, a failure rate at or above
    ``failure_rate_threshold`` or a slow-call rate (calls lasting ``slow_call_threshold``
    seconds or more) at or above ``slow_call_rate_threshold``.

    Window: ``window_type`` ``"count"`` keeps the last ``window_size`` calls; ``"time"``
    the calls of the last ``window_duration`` seconds in ``window_buckets`` buckets.

    Open: for ``timeout`` seconds; each further opening without a close in between
    multiplies it by ``timeout_multiplier`` up to ``max_timeout``, with up to
    ``timeout_jitter`` (a fraction) of random spread.

    Half-open: at most ``half_open_max_calls`` trials at once, ``success_threshold``
    successes close it, any failure reopens it; a trial not finished after
    ``trial_timeout`` seconds (default: ``request_timeout``, else ``timeout``) counts as
    failed so a hung call cannot wedge the breaker.

    Calls: ``request_timeout`` seconds per async call (``None`` = no limit; a timeout is
    a failure). ``record_exceptions`` count as failures unless in ``ignore_exceptions``;
    ``is_failure(exc)`` / ``is_ignored(exc)`` decide instead when given (ignored calls are
    not counted at all). ``failure_on_result(value)`` returning true counts a returned
    value as a failure. ``retry_after(exc)`` returning seconds opens the breaker for that
    long (a Retry-After hint). A cancelled call is not counted unless
    ``count_cancellation_as_failure``.
    """

    failure_threshold: int
    timeout: float
    half_open_max_calls: int
    success_threshold: int
    request_timeout: float | None
    slow_call_threshold: float | None
    slow_call_rate_threshold: float
    minimum_throughput: int
    failure_rate_threshold: float
    window_type: WindowType
    window_size: int
    window_duration: float
    window_buckets: int
    timeout_multiplier: float
    max_timeout: float | None
    timeout_jitter: float
    trial_timeout: float | None
    count_cancellation_as_failure: bool
    record_exceptions: ExceptionTypes
    ignore_exceptions: ExceptionTypes
    is_failure: Callable[[BaseException], bool] | None
    is_ignored: Callable[[BaseException], bool] | None
    failure_on_result: Callable[[Any], bool] | None
    retry_after: Callable[[BaseException], float | None] | None

    def __init__(
        self,
        failure_threshold: int | Unset = UNSET,
        timeout: float | Unset = UNSET,
        half_open_max_calls: int = 3,
        success_threshold: int = 2,
        request_timeout: float | Unset | None = UNSET,
        slow_call_threshold: float | Unset | None = UNSET,
        slow_call_rate_threshold: float = 0.5,
        minimum_throughput: int = 10,
        failure_rate_threshold: float = 0.5,
        *,
        window_type: WindowType | str = WindowType.COUNT,
        window_size: int = 100,
        window_duration: float = 60.0,
        window_buckets: int = 10,
        timeout_multiplier: float = 1.0,
        max_timeout: float | None = None,
        timeout_jitter: float = 0.0,
        trial_timeout: float | None = None,
        count_cancellation_as_failure: bool = False,
        record_exceptions: ExceptionTypes | type[BaseException] = (Exception,),
        ignore_exceptions: ExceptionTypes | type[BaseException] = (),
        is_failure: Callable[[BaseException], bool] | None = None,
        is_ignored: Callable[[BaseException], bool] | None = None,
        failure_on_result: Callable[[Any], bool] | None = None,
        retry_after: Callable[[BaseException], float | None] | None = None,
        settings: Settings | None = None,
    ) -> None:
        if UNSET in (failure_threshold, timeout, request_timeout, slow_call_threshold):
            cbs = (settings if settings is not None else load_settings()).circuit_breaker
            failure_threshold = pick(
                failure_threshold, cbs.failure_threshold, DEFAULT_FAILURE_THRESHOLD
            )
            timeout = pick(timeout, cbs.timeout, DEFAULT_TIMEOUT)
            request_timeout = pick(request_timeout, cbs.request_timeout, DEFAULT_REQUEST_TIMEOUT)
            slow_call_threshold = pick(
                slow_call_threshold, cbs.slow_call_threshold, DEFAULT_SLOW_CALL_THRESHOLD
            )
        assert not isinstance(failure_threshold, Unset)
        assert not isinstance(timeout, Unset)
        assert not isinstance(request_timeout, Unset)
        assert not isinstance(slow_call_threshold, Unset)
        values: dict[str, Any] = {
            "failure_threshold": _int("failure_threshold", failure_threshold, 0),
            "timeout": _seconds("timeout", timeout),
            "half_open_max_calls": _int("half_open_max_calls", half_open_max_calls, 1),
            "success_threshold": _int("success_threshold", success_threshold, 1),
            "request_timeout": _seconds("request_timeout", request_timeout, optional=True),
            "slow_call_threshold": _seconds(
                "slow_call_threshold", slow_call_threshold, optional=True
            ),
            "slow_call_rate_threshold": _rate("slow_call_rate_threshold", slow_call_rate_threshold),
            "minimum_throughput": _int("minimum_throughput", minimum_throughput, 1),
            "failure_rate_threshold": _rate("failure_rate_threshold", failure_rate_threshold),
            "window_type": _window_type(window_type),
            "window_size": _int("window_size", window_size, 1),
            "window_duration": _seconds("window_duration", window_duration),
            "window_buckets": _int("window_buckets", window_buckets, 1),
            "timeout_multiplier": _number("timeout_multiplier", timeout_multiplier, 1.0, ">= 1"),
            "max_timeout": _seconds("max_timeout", max_timeout, optional=True),
            "timeout_jitter": _fraction("timeout_jitter", timeout_jitter),
            "trial_timeout": _seconds("trial_timeout", trial_timeout, optional=True),
            "count_cancellation_as_failure": _bool(
                "count_cancellation_as_failure", count_cancellation_as_failure
            ),
            "record_exceptions": _types("record_exceptions", record_exceptions),
            "ignore_exceptions": _types("ignore_exceptions", ignore_exceptions),
            "is_failure": _callable("is_failure", is_failure),
            "is_ignored": _callable("is_ignored", is_ignored),
            "failure_on_result": _callable("failure_on_result", failure_on_result),
            "retry_after": _callable("retry_after", retry_after),
        }
        if values["max_timeout"] is not None and values["max_timeout"] < values["timeout"]:
            raise ValidationError(
                "max_timeout", max_timeout, f"a number of seconds >= timeout ({timeout})"
            )
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, **overrides: Any
    ) -> CircuitBreakerConfig:
        """A config whose settings-backed fields come from ``settings`` (default:
        :func:`load_settings`) unless given in ``overrides``."""
        return cls(settings=settings if settings is not None else load_settings(), **overrides)

    @property
    def effective_trial_timeout(self) -> float:
        """Seconds a half-open trial may run before it counts as failed."""
        if self.trial_timeout is not None:
            return self.trial_timeout
        if self.request_timeout is not None:
            return self.request_timeout
        return self.timeout

    def to_dict(self) -> dict[str, Any]:
        """The plain-valued fields (callables and exception lists named), for display."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, tuple):
                value = [t.__qualname__ for t in value]
            elif callable(value):
                value = getattr(value, "__qualname__", repr(value))
            elif isinstance(value, StrEnum):
                value = value.value
            out[name] = value
        return out


# --- validation helpers -----------------------------------------------------------------


def _number(field: str, value: Any, minimum: float, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(field, value, f"a number {expected}")
    if math.isnan(value) or math.isinf(value) or value < minimum:
        raise ValidationError(field, value, f"a number {expected}")
    return float(value)


def _int(field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(field, value, f"an integer >= {minimum}")
    return value


def _seconds(field: str, value: Any, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    expected = "a number of seconds > 0" + (" or None (off)" if optional else "")
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or math.isinf(value)
        or value <= 0
    ):
        raise ValidationError(field, value, expected)
    return float(value)


def _rate(field: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or not 0 < value <= 1
    ):
        raise ValidationError(field, value, "a rate > 0 and <= 1")
    return float(value)


def _fraction(field: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or not 0 <= value <= 1
    ):
        raise ValidationError(field, value, "a fraction between 0 and 1")
    return float(value)


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(field, value, "True or False")
    return value


def _window_type(value: Any) -> WindowType:
    try:
        return WindowType(value)
    except ValueError:
        raise ValidationError("window_type", value, "'count' or 'time'") from None


def _types(field: str, value: Any) -> ExceptionTypes:
    items = (value,) if isinstance(value, type) else value
    if not isinstance(items, (tuple, list, frozenset, set)) or not all(
        isinstance(t, type) and issubclass(t, BaseException) for t in items
    ):
        raise ValidationError(field, value, "an exception class or a tuple of them")
    return tuple(items)


def _callable(field: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise ValidationError(field, value, "a callable or None")
    return value
