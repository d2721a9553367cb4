"""Breaker states, what moves a breaker between them, and the transition table.

The whole state machine is the table below; :func:`next_state` is the only place that
decides where a trigger leads. Automatic triggers apply only in the states listed for
them (a trigger in any other state changes nothing); manual and fleet triggers carry
their target state and may move a breaker from any state to any other.

=====================  ===================  ==================================================
from                   trigger              to
=====================  ===================  ==================================================
``closed``             ``failure_threshold``  ``open`` (consecutive failures reached)
``closed``             ``failure_rate``         ``open`` (window failure rate >= threshold)
``closed``             ``slow_call_rate``       ``open`` (window slow-call rate >= threshold)
``closed``             ``retry_after``          ``open`` (a failure carried a Retry-After hint)
``open``               ``open_elapsed``         ``half_open`` (the open duration has passed)
``half_open``          ``trial_success``        ``closed`` (``success_threshold`` trials succeeded)
``half_open``          ``trial_failure``        ``open`` (a trial failed)
``half_open``          ``trial_expired``        ``open`` (a trial outlived its deadline)
``half_open``          ``retry_after``          ``open``
any                    ``manual``               the state asked for (``transition_to``, ``reset``)
any                    ``remote``               the state another process published
=====================  ===================  ==================================================
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["TRANSITIONS", "CircuitState", "Trigger", "next_state"]


class CircuitState(StrEnum):
    """Where a breaker is. Values are the lower-case strings ``get_metrics()`` reports.

    ``CLOSED`` permits and records; ``OPEN`` rejects until its open duration passes;
    ``HALF_OPEN`` permits a limited number of trial calls; ``DISABLED`` permits everything
    and records nothing; ``FORCED_OPEN`` rejects everything until moved by hand;
    ``METRICS_ONLY`` permits everything and records, but never opens.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    DISABLED = "disabled"
    FORCED_OPEN = "forced_open"
    METRICS_ONLY = "metrics_only"


class Trigger(StrEnum):
    """Why a breaker changed state (also the ``reason`` of a transition event)."""

    FAILURE_THRESHOLD = "failure_threshold"
    FAILURE_RATE = "failure_rate"
    SLOW_CALL_RATE = "slow_call_rate"
    RETRY_AFTER = "retry_after"
    OPEN_ELAPSED = "open_elapsed"
    TRIAL_SUCCESS = "trial_success"
    TRIAL_FAILURE = "trial_failure"
    TRIAL_EXPIRED = "trial_expired"
    MANUAL = "manual"
    REMOTE = "remote"


_C, _O, _H = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN

TRANSITIONS: Final[dict[tuple[CircuitState, Trigger], CircuitState]] = {
    (_C, Trigger.FAILURE_THRESHOLD): _O,
    (_C, Trigger.FAILURE_RATE): _O,
    (_C, Trigger.SLOW_CALL_RATE): _O,
    (_C, Trigger.RETRY_AFTER): _O,
    (_O, Trigger.OPEN_ELAPSED): _H,
    (_H, Trigger.TRIAL_SUCCESS): _C,
    (_H, Trigger.TRIAL_FAILURE): _O,
    (_H, Trigger.TRIAL_EXPIRED): _O,
    (_H, Trigger.RETRY_AFTER): _O,
}
"""Automatic transitions: (state, trigger) -> new state."""

_TARGETED: Final = frozenset({Trigger.MANUAL, Trigger.REMOTE})


def next_state(
    state: CircuitState, trigger: Trigger, target: CircuitState | None = None
) -> CircuitState | None:
    """The state ``trigger`` leads to from ``state``, or ``None`` when it changes nothing.

    Manual and remote triggers need ``target`` (the state asked for); moving to the state
    a breaker is already in changes nothing, except that a manual or remote ``open``
    restarts the open period (so it is reported as a transition).
    """
    if trigger in _TARGETED:
        if target is None:
            raise ValueError(f"trigger {trigger.value!r} needs a target state")
        if target is state and target is not CircuitState.OPEN:
            return None
        return target
    return TRANSITIONS.get((state, trigger))
