"""Fault switches of a membrane, for demos and tests (pure: no I/O).

A membrane started with ``--enable-faults`` accepts ``POST /admin/faults`` with any of::

    {"crash": true}            exit the process at once (after answering), as a crash would
    {"hang": true}             stop answering every request (health too) until cleared
    {"slow": 0.4}              add 0.4 s to every /process call (health stays fast)
    {"error_rate": 1.0}        answer that share of /process calls with HTTP 500
    {"pressure": 0.9}          report that much synthetic resource pressure (0..1)
    {"clear": true}            all of the above off

Without the flag the endpoint refuses with 403: no production membrane can be told to fail.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from ..errors import ValidationError

__all__ = ["MAX_SLOW_SECONDS", "FaultState", "apply_fault_update"]

MAX_SLOW_SECONDS: Final = 120.0
_KEYS: Final = ("crash", "hang", "slow", "error_rate", "pressure", "clear")


@dataclass(frozen=True, slots=True)
class FaultState:
    """The faults in force."""

    hang: bool = False
    slow: float = 0.0
    error_rate: float = 0.0
    pressure: float = 0.0
    crash: bool = False

    @property
    def active(self) -> bool:
        """Whether any fault is switched on."""
        return self != FaultState()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(field: str, value: Any, low: float, high: float) -> float:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(float(value))
        or not low <= float(value) <= high
    ):
        raise ValidationError(field, value, f"a number in {low:g}..{high:g}")
    return float(value)


def _flag(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(field, value, "true or false")
    return value


def apply_fault_update(state: FaultState, update: Any) -> FaultState:
    """The state after an admin update (validated as a whole before anything changes)."""
    if not isinstance(update, dict) or not update:
        raise ValidationError("body", update, "a JSON object with one of " + ", ".join(_KEYS))
    unknown = sorted(set(update) - set(_KEYS))
    if unknown:
        raise ValidationError("body", unknown, "only the fields " + ", ".join(_KEYS))
    new = FaultState() if update.get("clear") is True else state
    if "clear" in update:
        _flag("clear", update["clear"])
    if "crash" in update:
        new = replace(new, crash=_flag("crash", update["crash"]))
    if "hang" in update:
        new = replace(new, hang=_flag("hang", update["hang"]))
    if "slow" in update:
        new = replace(new, slow=_number("slow", update["slow"], 0.0, MAX_SLOW_SECONDS))
    if "error_rate" in update:
        new = replace(new, error_rate=_number("error_rate", update["error_rate"], 0.0, 1.0))
    if "pressure" in update:
        new = replace(new, pressure=_number("pressure", update["pressure"], 0.0, 1.0))
    return new
