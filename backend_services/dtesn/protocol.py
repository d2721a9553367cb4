"""The membrane's request bodies, validated (pure: no I/O).

``POST /process`` takes::

    {"inputs": [[x, ...], ...], "depth": 3, "debug": false, "request_id": "abc"}

``inputs`` is a non-empty list of input vectors of the membrane's input size, each
number finite; ``depth`` (optional) asks for fewer levels than configured; ``debug``
(optional) asks for per-level state trajectories when the ``debug_interface`` feature is
on. Every rejection is a :class:`~backend_services.errors.ValidationError` that names the
field, the value and what was expected; the service turns it into a 400/413/422 reply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ..errors import ValidationError

__all__ = [
    "CONFIG_KEYS",
    "DEFAULT_MAX_STEPS",
    "MAX_BODY_BYTES",
    "PayloadTooLargeError",
    "ProcessRequest",
    "parse_process_request",
    "validate_membrane_config",
]

DEFAULT_MAX_STEPS: Final = 1000
MAX_BODY_BYTES: Final = 1024 * 1024
_MAX_REQUEST_ID: Final = 128
_ALLOWED_KEYS: Final = frozenset({"inputs", "depth", "debug", "request_id"})
CONFIG_KEYS: Final = ("membrane_depth", "processing_timeout")
"""The configuration keys a membrane reads (and applies live)."""


class PayloadTooLargeError(ValidationError):
    """The request is well formed but bigger than this membrane accepts (HTTP 413)."""


@dataclass(frozen=True, slots=True)
class ProcessRequest:
    """A validated ``/process`` request."""

    inputs: npt.NDArray[np.float64]
    depth: int | None = None
    debug: bool = False
    request_id: str | None = None


def _finite_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def parse_process_request(
    body: Any, *, input_dim: int, max_steps: int = DEFAULT_MAX_STEPS, max_depth: int
) -> ProcessRequest:
    """Check a decoded JSON body and return it as a :class:`ProcessRequest`."""
    if not isinstance(body, dict):
        raise ValidationError("body", type(body).__name__, "a JSON object")
    unknown = sorted(set(body) - _ALLOWED_KEYS)
    if unknown:
        raise ValidationError(
            "body", unknown, "only the fields " + ", ".join(sorted(_ALLOWED_KEYS))
        )
    if "inputs" not in body:
        raise ValidationError("inputs", None, "a list of input vectors (required)")
    raw = body["inputs"]
    if not isinstance(raw, list) or not raw:
        raise ValidationError("inputs", raw, "a non-empty list of input vectors")
    if len(raw) > max_steps:
        raise PayloadTooLargeError("inputs", f"{len(raw)} vectors", f"at most {max_steps} vectors")
    for i, vector in enumerate(raw):
        if not isinstance(vector, list) or len(vector) != input_dim:
            shown = f"length {len(vector)}" if isinstance(vector, list) else vector
            raise ValidationError(f"inputs[{i}]", shown, f"a list of {input_dim} numbers")
        for j, x in enumerate(vector):
            if not _finite_number(x):
                raise ValidationError(f"inputs[{i}][{j}]", x, "a finite number")
    inputs = np.asarray(raw, dtype=np.float64)
    if float(np.max(np.abs(inputs))) > 1e6:
        raise ValidationError("inputs", "a value beyond 1e6", "numbers with |x| <= 1e6")

    depth = body.get("depth")
    if depth is not None and (
        not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= max_depth
    ):
        raise ValidationError("depth", depth, f"an integer in 1..{max_depth}")
    debug = body.get("debug", False)
    if not isinstance(debug, bool):
        raise ValidationError("debug", debug, "true or false")
    request_id = body.get("request_id")
    if request_id is not None and (
        not isinstance(request_id, str) or not 0 < len(request_id) <= _MAX_REQUEST_ID
    ):
        raise ValidationError(
            "request_id", request_id, f"a string of 1..{_MAX_REQUEST_ID} characters"
        )
    return ProcessRequest(inputs, depth, debug, request_id)


def validate_membrane_config(key: str, value: Any, max_depth: int) -> int | float:
    """Check one of the membrane's configuration values; returns it normalised."""
    if key == "membrane_depth":
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= max_depth:
            raise ValidationError(key, value, f"an integer in 1..{max_depth}")
        return value
    if key == "processing_timeout":
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not 0.0 < float(value) <= 3600.0
        ):
            raise ValidationError(key, value, "a number of seconds in (0, 3600]")
        return float(value)
    raise ValidationError("key", key, "one of " + ", ".join(CONFIG_KEYS))
