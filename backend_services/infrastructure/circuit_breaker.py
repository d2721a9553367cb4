"""Circuit breakers: stop calling what is failing, try again carefully, share it fleet-wide.

Usage (the spec's examples)::

    from backend_services.infrastructure.circuit_breaker import (
        CircuitBreaker, CircuitBreakerConfig, circuit_breaker
    )

    cb = CircuitBreaker("external-api", config=CircuitBreakerConfig(failure_threshold=5))
    await cb.initialize()
    async with cb:
        result = await external_service_call()

    @circuit_breaker("dtesn-membrane")
    async def process_membrane(data): ...

The state machine is the pure core in :mod:`backend_services.breaker`; this module is
its async shell: it reads the clock, enforces request timeouts (one shared watchdog per
event loop instead of a timer per call), runs fallbacks and listeners, and shares state
transitions through the store when a Redis URL is configured.

Fallbacks are called with the protected call's own ``*args, **kwargs``; inside one,
:func:`current_failure` returns why (the :class:`CircuitBreakerException` of a call that
was not permitted, the exception the call raised, or :class:`TimeoutError`). A fallback
is used when the call is not permitted or raises an :class:`Exception`; a returned value
that ``failure_on_result`` counts as a failure is still returned.

Hot path: while the breaker is closed, a call costs a flag test, two clock reads, an
integer increment and two comparisons (plus one dict store and delete when a request
timeout is set). Everything else — opening, half-open trials, listeners, fallbacks,
sharing — happens on slower paths that the flags divert to.

**Where the pieces live.** This module names the public API (and :data:`PROCESS_ID`);
the code is in :mod:`backend_services.infrastructure.cb`, one layer per module:
:mod:`~backend_services.infrastructure.cb.shell` (:class:`BreakerShell
<backend_services.infrastructure.cb.shell.BreakerShell>`: the state, construction,
connecting to the shared state, loop binding, reading, manual control;
:class:`CircuitBreakerMetrics`), :mod:`~backend_services.infrastructure.cb.recording`
(events, outcome recording, admission and the general guarded paths),
:mod:`~backend_services.infrastructure.cb.breaker` (:class:`CircuitBreaker` itself: the
fast paths of ``call()``, ``async with`` and ``call_sync()``, the decorator),
:mod:`~backend_services.infrastructure.cb.wrappers` (the decorator's specialised
wrappers), :mod:`~backend_services.infrastructure.cb.awaitables` (the finished
awaitables the ``async with`` fast paths return) and
:mod:`~backend_services.infrastructure.cb.registry` (:class:`CircuitBreakerRegistry`,
:func:`get_circuit_breaker`, :func:`circuit_breaker`). Next to them:
:mod:`~backend_services.infrastructure.cb.watchdog` (request timeouts),
:mod:`~backend_services.infrastructure.cb.notify` (listeners, fallbacks),
:mod:`~backend_services.infrastructure.cb.detached` (fire-and-forget tasks) and
:mod:`~backend_services.infrastructure.cb.fleet` (sharing state through the store, with
``fleet_reading``, ``fleet_writing`` and ``fleet_layout``).
"""

from __future__ import annotations

import os
import socket
import uuid

from ..breaker.config import CircuitBreakerConfig, WindowType
from ..breaker.events import CircuitBreakerEvent, EventKind
from ..breaker.state import CircuitState, Trigger
from ..errors import CircuitBreakerException
from .cb.breaker import CircuitBreaker
from .cb.notify import current_failure
from .cb.registry import (
    CircuitBreakerRegistry,
    circuit_breaker,
    get_circuit_breaker,
    get_default_registry,
)
from .cb.shell import CircuitBreakerMetrics

__all__ = [
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerEvent",
    "CircuitBreakerException",
    "CircuitBreakerMetrics",
    "CircuitBreakerRegistry",
    "CircuitState",
    "EventKind",
    "Trigger",
    "WindowType",
    "circuit_breaker",
    "current_failure",
    "get_circuit_breaker",
    "get_default_registry",
]

PROCESS_ID: str = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
"""How this process names itself to the fleet (host, pid, random suffix); read here
each time a breaker connects to the shared state, so it may be replaced (e.g. to run
two fleet members in one process)."""
