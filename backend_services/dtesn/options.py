"""How to run one membrane: :class:`MembraneOptions`."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ValidationError
from .protocol import DEFAULT_MAX_STEPS
from .reservoir import MembraneKind

__all__ = ["MembraneOptions"]


@dataclass(frozen=True, slots=True)
class MembraneOptions:
    """How to run one membrane."""

    kind: MembraneKind = MembraneKind.MEMORY
    membrane_id: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    levels: int = 4
    seed: int = 0
    input_dim: int = 8
    output_dim: int = 4
    membrane_depth: int | None = None
    processing_timeout: float = 30.0
    max_steps: int = DEFAULT_MAX_STEPS
    enable_faults: bool = False
    admin_token: str | None = None
    drain_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValidationError("port", self.port, "an integer in 0..65535 (0 = any free)")
        if not isinstance(self.max_steps, int) or not 1 <= self.max_steps <= 100_000:
            raise ValidationError("max_steps", self.max_steps, "an integer in 1..100000")
        if self.membrane_id is not None and not (0 < len(self.membrane_id) <= 128):
            raise ValidationError("membrane_id", self.membrane_id, "1..128 characters")
