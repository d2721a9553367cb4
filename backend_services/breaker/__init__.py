"""The circuit breaker's pure core: states and their transition table, configuration,
sliding windows and the state machine. No I/O, no asyncio, no clock reads: time is
passed in. The async shell is :mod:`backend_services.infrastructure.circuit_breaker`.

Modules: ``state`` (states and the transition table), ``config``, ``window`` (count and
time windows), ``events``, ``machine`` (the breaker's state and transitions) and ``core``
(:class:`BreakerCore`: the call path on top of the machine)."""

from .config import CircuitBreakerConfig, WindowType
from .core import ADMIT, ADMIT_UNRECORDED, REJECT, BreakerCore
from .events import CircuitBreakerEvent, EventKind
from .state import TRANSITIONS, CircuitState, Trigger, next_state
from .window import CountWindow, TimeWindow, WindowStats

__all__ = [
    "ADMIT",
    "ADMIT_UNRECORDED",
    "REJECT",
    "TRANSITIONS",
    "BreakerCore",
    "CircuitBreakerConfig",
    "CircuitBreakerEvent",
    "CircuitState",
    "CountWindow",
    "EventKind",
    "TimeWindow",
    "Trigger",
    "WindowStats",
    "WindowType",
    "next_state",
]
