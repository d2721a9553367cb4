"""A deep echo state network: the computation a DTESN membrane service hosts.

A :class:`DeepReservoir` is a stack of leaky-integrator reservoirs, one per membrane level.
Level 0 is driven by the input sequence, every level above by the states of the level
below. Each level's recurrent weights are sparse and random, rescaled so their spectral
radius is below 1 (the echo state property: the influence of old inputs fades). A linear
readout maps the concatenated final states of all levels to the output.

Everything is seeded: the same :class:`MembraneSpec` builds the same weights, and the same
input gives the same states, in every process. Pure numpy, no I/O, no clock.

The three membrane kinds of the spec differ in how long they remember:

========== ======= ============== ======== ====== ===================================
kind        leak    spectral rad.  density  size   character
========== ======= ============== ======== ====== ===================================
memory      0.15    0.95           0.10     64     slow, long fading memory
reasoning   0.50    0.90           0.15     48     balanced
grammar     0.85    0.80           0.25     32     fast, reacts to the latest symbols
========== ======= ============== ======== ====== ===================================
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from ..errors import ValidationError

__all__ = [
    "DEFAULT_INPUT_DIM",
    "DEFAULT_LEVELS",
    "DEFAULT_OUTPUT_DIM",
    "MAX_LEVELS",
    "DeepReservoir",
    "LevelParams",
    "MembraneKind",
    "MembraneSpec",
    "ReservoirResult",
    "spectral_radius",
]

FloatArray = npt.NDArray[np.float64]

DEFAULT_INPUT_DIM: Final = 8
DEFAULT_OUTPUT_DIM: Final = 4
DEFAULT_LEVELS: Final = 4
MAX_LEVELS: Final = 16
MAX_LEVEL_SIZE: Final = 1024


class MembraneKind(StrEnum):
    """The spec's membrane kinds."""

    MEMORY = "memory"
    REASONING = "reasoning"
    GRAMMAR = "grammar"


@dataclass(frozen=True, slots=True)
class LevelParams:
    """One reservoir level: ``size`` units, leak rate ``leak_rate`` (0 < a <= 1),
    recurrent ``spectral_radius`` (0 < rho < 1), connection ``density`` (0 < d <= 1),
    and ``input_scaling`` of the weights that feed it."""

    size: int
    leak_rate: float
    spectral_radius: float
    density: float
    input_scaling: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise ValidationError("size", self.size, "an integer")
        if not 2 <= self.size <= MAX_LEVEL_SIZE:
            raise ValidationError("size", self.size, f"an integer in 2..{MAX_LEVEL_SIZE}")
        if not 0.0 < self.leak_rate <= 1.0:
            raise ValidationError("leak_rate", self.leak_rate, "a number in (0, 1]")
        if not 0.0 < self.spectral_radius < 1.0:
            raise ValidationError(
                "spectral_radius", self.spectral_radius, "a number in (0, 1) (echo state)"
            )
        if not 0.0 < self.density <= 1.0:
            raise ValidationError("density", self.density, "a number in (0, 1]")
        if not 0.0 < self.input_scaling <= 10.0:
            raise ValidationError("input_scaling", self.input_scaling, "a number in (0, 10]")


_KIND_LEVEL: Final[dict[MembraneKind, LevelParams]] = {
    MembraneKind.MEMORY: LevelParams(size=64, leak_rate=0.15, spectral_radius=0.95, density=0.10),
    MembraneKind.REASONING: LevelParams(size=48, leak_rate=0.5, spectral_radius=0.9, density=0.15),
    MembraneKind.GRAMMAR: LevelParams(
        size=32, leak_rate=0.85, spectral_radius=0.8, density=0.25, input_scaling=1.5
    ),
}


@dataclass(frozen=True, slots=True)
class MembraneSpec:
    """Everything that decides a membrane's weights: kind, dimensions, levels, seed."""

    kind: MembraneKind
    levels: tuple[LevelParams, ...]
    input_dim: int = DEFAULT_INPUT_DIM
    output_dim: int = DEFAULT_OUTPUT_DIM
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.kind, MembraneKind):
            raise ValidationError("kind", self.kind, "a MembraneKind")
        if not 1 <= len(self.levels) <= MAX_LEVELS:
            raise ValidationError("levels", len(self.levels), f"1..{MAX_LEVELS} levels")
        for name, dim in (("input_dim", self.input_dim), ("output_dim", self.output_dim)):
            if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= 1024:
                raise ValidationError(name, dim, "an integer in 1..1024")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValidationError("seed", self.seed, "an integer >= 0")

    @classmethod
    def for_kind(
        cls,
        kind: MembraneKind | str,
        *,
        levels: int = DEFAULT_LEVELS,
        input_dim: int = DEFAULT_INPUT_DIM,
        output_dim: int = DEFAULT_OUTPUT_DIM,
        seed: int = 0,
    ) -> MembraneSpec:
        """The preset of a kind with ``levels`` levels (upper levels a little smaller)."""
        try:
            kind = MembraneKind(kind)
        except ValueError:
            raise ValidationError(
                "kind", kind, "one of " + ", ".join(k.value for k in MembraneKind)
            ) from None
        if not isinstance(levels, int) or not 1 <= levels <= MAX_LEVELS:
            raise ValidationError("levels", levels, f"an integer in 1..{MAX_LEVELS}")
        base = _KIND_LEVEL[kind]
        stack = tuple(replace(base, size=max(8, int(base.size * (0.85**i)))) for i in range(levels))
        return cls(kind, stack, input_dim=input_dim, output_dim=output_dim, seed=seed)

    @property
    def depth(self) -> int:
        """Number of levels."""
        return len(self.levels)

    @property
    def state_size(self) -> int:
        """Units over all levels (the readout's input size, without the bias)."""
        return sum(level.size for level in self.levels)


@dataclass(frozen=True, slots=True)
class ReservoirResult:
    """Final state of each computed level (oldest level first), the readout, the depth."""

    states: list[FloatArray]
    readout: FloatArray
    depth: int
    steps: int
    trajectory_norms: list[list[float]] = field(default_factory=list)


def spectral_radius(matrix: FloatArray) -> float:
    """The largest absolute eigenvalue of a square matrix."""
    if matrix.size == 0:
        return 0.0
    return float(np.max(np.abs(np.linalg.eigvals(matrix))))


@dataclass(frozen=True, slots=True)
class _Level:
    params: LevelParams
    w_in: FloatArray  # (size, fan_in)
    w: FloatArray  # (size, size), spectral radius = params.spectral_radius
    bias: FloatArray  # (size,)


def _build_level(params: LevelParams, fan_in: int, rng: np.random.Generator) -> _Level:
    size = params.size
    for _ in range(32):
        mask = rng.random((size, size)) < params.density
        w = np.where(mask, rng.uniform(-1.0, 1.0, (size, size)), 0.0)
        rho = spectral_radius(w)
        if rho > 1e-6:
            break
    else:  # pragma: no cover - a nilpotent draw 32 times in a row is vanishingly unlikely
        w = np.diag(np.full(size, 1.0))
        rho = 1.0
    w *= params.spectral_radius / rho
    w_in = rng.uniform(-1.0, 1.0, (size, fan_in)) * params.input_scaling
    bias = rng.uniform(-0.1, 0.1, size)
    return _Level(params, w_in, w, bias)


class DeepReservoir:
    """The seeded weights of a :class:`MembraneSpec`, and the computation over them."""

    def __init__(self, spec: MembraneSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        levels: list[_Level] = []
        fan_in = spec.input_dim
        for params in spec.levels:
            levels.append(_build_level(params, fan_in, rng))
            fan_in = params.size
        self._levels = levels
        scale = 1.0 / np.sqrt(spec.state_size + 1)
        self.w_out: FloatArray = rng.normal(0.0, scale, (spec.output_dim, spec.state_size + 1))

    @property
    def depth(self) -> int:
        """Number of levels this reservoir has (the most :meth:`run` can compute)."""
        return len(self._levels)

    def recurrent_weights(self, level: int) -> FloatArray:
        """A copy of one level's recurrent weight matrix."""
        return self._levels[level].w.copy()

    def input_weights(self, level: int) -> FloatArray:
        """A copy of one level's input weight matrix (``size x fan_in``)."""
        return self._levels[level].w_in.copy()

    def _check(self, inputs: FloatArray, depth: int | None) -> int:
        if inputs.ndim != 2 or inputs.shape[1] != self.spec.input_dim:
            raise ValidationError(
                "inputs", f"shape {inputs.shape}", f"shape (steps, {self.spec.input_dim})"
            )
        if inputs.shape[0] < 1:
            raise ValidationError("inputs", "0 steps", "at least one input vector")
        if not np.all(np.isfinite(inputs)):
            raise ValidationError("inputs", "non-finite values", "finite numbers only")
        if depth is None:
            return self.depth
        if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= self.depth:
            raise ValidationError("depth", depth, f"an integer in 1..{self.depth}")
        return depth

    def collect(self, inputs: FloatArray, depth: int | None = None) -> list[FloatArray]:
        """States of every computed level at every step: a list of ``(steps, size)``."""
        depth = self._check(inputs, depth)
        drive = inputs
        out: list[FloatArray] = []
        for level in self._levels[:depth]:
            a = level.params.leak_rate
            pre_in = drive @ level.w_in.T + level.bias  # (steps, size), all steps at once
            w_t = level.w.T
            x = np.zeros(level.params.size)
            states = np.empty((drive.shape[0], level.params.size))
            for t in range(drive.shape[0]):
                x = (1.0 - a) * x + a * np.tanh(pre_in[t] + x @ w_t)
                states[t] = x
            out.append(states)
            drive = states
        return out

    def features(self, final_states: list[FloatArray]) -> FloatArray:
        """The readout's input: final states of all levels (levels not computed are
        zero) and a constant 1 for the bias."""
        parts = list(final_states)
        parts += [np.zeros(level.params.size) for level in self._levels[len(final_states) :]]
        parts.append(np.ones(1))
        return np.concatenate(parts)

    def run(
        self, inputs: FloatArray, depth: int | None = None, *, trajectory: bool = False
    ) -> ReservoirResult:
        """Drive the stack from a zero state with ``inputs`` (``steps x input_dim``),
        computing the lowest ``depth`` levels (all when ``None``)."""
        collected = self.collect(inputs, depth)
        finals = [states[-1].copy() for states in collected]
        readout = self.w_out @ self.features(finals)
        norms = (
            [np.linalg.norm(states, axis=1).round(6).tolist() for states in collected]
            if trajectory
            else []
        )
        return ReservoirResult(finals, readout, len(collected), int(inputs.shape[0]), norms)

    def fit_readout(
        self,
        sequences: list[FloatArray],
        targets: FloatArray,
        *,
        ridge: float = 1e-6,
    ) -> float:
        """Train the linear readout by ridge regression: the readout of sequence ``i``
        should be ``targets[i]``. Returns the training mean squared error."""
        if targets.ndim != 2 or targets.shape != (len(sequences), self.spec.output_dim):
            raise ValidationError(
                "targets",
                f"shape {targets.shape}",
                f"shape ({len(sequences)}, {self.spec.output_dim})",
            )
        if not ridge >= 0.0:
            raise ValidationError("ridge", ridge, "a number >= 0")
        x = np.stack([self.features([s[-1] for s in self.collect(seq)]) for seq in sequences])
        gram = x.T @ x + ridge * np.eye(x.shape[1])
        self.w_out = np.asarray(np.linalg.solve(gram, x.T @ targets).T, dtype=np.float64)
        predicted = x @ self.w_out.T
        return float(np.mean((predicted - targets) ** 2))
