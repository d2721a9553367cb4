"""The deep reservoir: echo state weights, reproducibility, shapes, kinds, readout."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend_services.dtesn.reservoir import (
    DeepReservoir,
    LevelParams,
    MembraneKind,
    MembraneSpec,
    spectral_radius,
)
from backend_services.errors import ValidationError


def _inputs(steps: int, dim: int = 8, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (steps, dim))


class TestWeights:
    @pytest.mark.parametrize("kind", list(MembraneKind))
    def test_every_level_has_the_configured_spectral_radius(self, kind: MembraneKind) -> None:
        """Each level's recurrent matrix is rescaled to exactly its spectral radius (< 1)."""
        spec = MembraneSpec.for_kind(kind, levels=3, seed=7)
        reservoir = DeepReservoir(spec)
        for i, params in enumerate(spec.levels):
            rho = spectral_radius(reservoir.recurrent_weights(i))
            assert rho == pytest.approx(params.spectral_radius, rel=1e-9)
            assert rho < 1.0

    def test_recurrent_weights_are_sparse_at_the_configured_density(self) -> None:
        """The share of non-zero recurrent weights is close to the level's density."""
        spec = MembraneSpec.for_kind("memory", levels=1, seed=3)
        w = DeepReservoir(spec).recurrent_weights(0)
        density = np.count_nonzero(w) / w.size
        assert density == pytest.approx(spec.levels[0].density, abs=0.03)

    def test_each_level_is_driven_by_the_level_below(self) -> None:
        """Level 0 reads the input; level i reads level i-1's states (fan-in = its size)."""
        spec = MembraneSpec.for_kind("reasoning", levels=3, input_dim=5)
        reservoir = DeepReservoir(spec)
        assert reservoir.input_weights(0).shape == (spec.levels[0].size, 5)
        for i in (1, 2):
            assert reservoir.input_weights(i).shape == (
                spec.levels[i].size,
                spec.levels[i - 1].size,
            )

    def test_kinds_have_different_parameters(self) -> None:
        """memory, reasoning and grammar differ in leak rate, spectral radius and size."""
        params = [MembraneSpec.for_kind(k).levels[0] for k in MembraneKind]
        assert len({p.leak_rate for p in params}) == 3
        assert len({p.spectral_radius for p in params}) == 3
        assert len({p.size for p in params}) == 3

    def test_memory_remembers_longer_than_grammar(self) -> None:
        """An input pulse fades more slowly in a memory membrane than in a grammar one."""

        def fade(kind: str) -> float:
            reservoir = DeepReservoir(MembraneSpec.for_kind(kind, levels=1, seed=2))
            pulse = np.zeros((40, 8))
            pulse[0] = 1.0
            base = reservoir.collect(np.zeros((40, 8)))[0]
            states = reservoir.collect(pulse)[0]
            diff = np.linalg.norm(states - base, axis=1)
            return float(diff[30] / diff[0])

        assert fade("memory") > fade("grammar")


class TestReproducibility:
    def test_same_spec_same_weights_and_outputs(self) -> None:
        """Two reservoirs from the same spec give bit-identical states and readouts."""
        spec = MembraneSpec.for_kind("memory", seed=42)
        a, b = DeepReservoir(spec), DeepReservoir(spec)
        x = _inputs(25)
        ra, rb = a.run(x), b.run(x)
        assert all(np.array_equal(p, q) for p, q in zip(ra.states, rb.states, strict=True))
        assert np.array_equal(ra.readout, rb.readout)

    def test_different_seed_different_weights(self) -> None:
        """A different seed draws different weights."""
        a = DeepReservoir(MembraneSpec.for_kind("memory", seed=1))
        b = DeepReservoir(MembraneSpec.for_kind("memory", seed=2))
        assert not np.array_equal(a.recurrent_weights(0), b.recurrent_weights(0))

    def test_runs_are_independent(self) -> None:
        """Every run starts from a zero state: earlier runs do not change later results."""
        reservoir = DeepReservoir(MembraneSpec.for_kind("grammar", seed=5))
        x = _inputs(10)
        first = reservoir.run(x).readout
        reservoir.run(_inputs(50, seed=9))
        assert np.array_equal(first, reservoir.run(x).readout)


class TestRun:
    @given(
        steps=st.integers(1, 30),
        levels=st.integers(1, 5),
        depth_share=st.floats(0.0, 1.0),
    )
    def test_shapes_and_bounded_states(self, steps: int, levels: int, depth_share: float) -> None:
        """Final states have each level's size, the readout the output size, |state| < 1."""
        spec = MembraneSpec.for_kind("reasoning", levels=levels, output_dim=3, seed=11)
        reservoir = DeepReservoir(spec)
        depth = max(1, round(depth_share * levels))
        result = reservoir.run(_inputs(steps), depth)
        assert result.depth == depth == len(result.states)
        assert [s.shape for s in result.states] == [(p.size,) for p in spec.levels[:depth]]
        assert result.readout.shape == (3,)
        assert all(np.all(np.abs(s) < 1.0) for s in result.states)

    def test_reduced_depth_computes_the_same_lower_levels(self) -> None:
        """Depth 2 gives exactly the first two levels of a full-depth run."""
        reservoir = DeepReservoir(MembraneSpec.for_kind("memory", levels=4))
        x = _inputs(12)
        full, part = reservoir.run(x), reservoir.run(x, 2)
        for p, q in zip(full.states[:2], part.states, strict=True):
            assert np.array_equal(p, q)
        assert not np.array_equal(full.readout, part.readout)

    def test_trajectory_norms_on_request(self) -> None:
        """trajectory=True gives one norm per step per level."""
        reservoir = DeepReservoir(MembraneSpec.for_kind("grammar", levels=2))
        result = reservoir.run(_inputs(6), trajectory=True)
        assert [len(n) for n in result.trajectory_norms] == [6, 6]

    @pytest.mark.parametrize(
        ("inputs", "depth", "field"),
        [
            (np.zeros((3, 7)), None, "inputs"),
            (np.zeros((0, 8)), None, "inputs"),
            (np.full((2, 8), np.nan), None, "inputs"),
            (np.zeros((2, 8)), 0, "depth"),
            (np.zeros((2, 8)), 5, "depth"),
        ],
    )
    def test_bad_input_is_rejected_with_the_field(
        self, inputs: np.ndarray, depth: int | None, field: str
    ) -> None:
        """Wrong shape, no steps, NaN, or a depth out of range raise ValidationError."""
        reservoir = DeepReservoir(MembraneSpec.for_kind("memory", levels=4))
        with pytest.raises(ValidationError) as info:
            reservoir.run(inputs, depth)
        assert info.value.field == field


class TestReadout:
    def test_ridge_readout_learns_a_linear_target(self) -> None:
        """Fitting the readout to the mean of the last input brings the error near zero."""
        reservoir = DeepReservoir(MembraneSpec.for_kind("grammar", levels=2, output_dim=1))
        sequences = [_inputs(5, seed=s) for s in range(300)]
        targets = np.array([[float(np.mean(seq[-1]))] for seq in sequences])
        before = float(
            np.mean((np.stack([reservoir.run(s).readout for s in sequences]) - targets) ** 2)
        )
        mse = reservoir.fit_readout(sequences, targets, ridge=1e-6)
        assert mse < 0.01 < before

    def test_targets_of_the_wrong_shape_are_rejected(self) -> None:
        """A target matrix that does not match sequences x output_dim is a clear error."""
        reservoir = DeepReservoir(MembraneSpec.for_kind("memory", levels=1, output_dim=2))
        with pytest.raises(ValidationError, match="targets"):
            reservoir.fit_readout([_inputs(3)], np.zeros((1, 3)))


class TestSpecValidation:
    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"size": 1}, "size"),
            ({"leak_rate": 0.0}, "leak_rate"),
            ({"spectral_radius": 1.0}, "spectral_radius"),
            ({"density": 0.0}, "density"),
            ({"input_scaling": -1.0}, "input_scaling"),
        ],
    )
    def test_level_params_are_checked(self, kwargs: dict[str, float], field: str) -> None:
        """Level parameters outside their ranges name the field."""
        base = {"size": 8, "leak_rate": 0.5, "spectral_radius": 0.9, "density": 0.2}
        with pytest.raises(ValidationError) as info:
            LevelParams(**{**base, **kwargs})  # type: ignore[arg-type]
        assert info.value.field == field

    def test_unknown_kind_lists_the_kinds(self) -> None:
        """An unknown membrane kind names the valid ones."""
        with pytest.raises(ValidationError, match="memory, reasoning, grammar"):
            MembraneSpec.for_kind("vision")
