"""What a breaker tells its listeners: one event type for every kind of happening."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .state import CircuitState, Trigger

__all__ = ["CircuitBreakerEvent", "EventKind"]


class EventKind(StrEnum):
    """The kinds of breaker events."""

    STATE_TRANSITION = "state_transition"
    SUCCESS = "success"
    FAILURE = "failure"
    REJECTED = "rejected"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class CircuitBreakerEvent:
    """One event of breaker ``name``.

    ``state`` is the state after the event; transitions also carry ``previous_state``
    and ``trigger`` (``remote=True`` when another process made the transition). Calls
    carry their ``duration`` in seconds, failures and ignored calls their ``exception``
    (``timed_out`` for a request timeout), rejections their ``retry_after`` in seconds.
    ``at`` is wall-clock time.
    """

    kind: EventKind
    name: str
    state: CircuitState
    at: float
    previous_state: CircuitState | None = None
    trigger: Trigger | None = None
    duration: float | None = None
    exception: BaseException | None = None
    timed_out: bool = False
    retry_after: float | None = None
    remote: bool = False
